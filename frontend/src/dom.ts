// Small DOM helpers shared by the panel's modules.

type Handler = (ev: never) => unknown;
type AttrValue = string | number | boolean | null | undefined | Handler;
type Child = Node | string | null | undefined;

/** An element: `on*` attributes become listeners, `text` its text, false/null/undefined are left out. */
export function h<K extends keyof HTMLElementTagNameMap>(tag: K, attrs: Record<string, AttrValue> = {}, ...kids: Child[]) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (typeof v === 'function') (el as unknown as Record<string, unknown>)[k.toLowerCase()] = v;
    else if (k === 'text') el.textContent = String(v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of kids) if (c !== null && c !== undefined) el.append(c);
  return el;
}

export const fmtSecs = (s: number | null | undefined) =>
  s == null || !isFinite(s) ? '' : s < 90 ? `${Math.round(s)} s` : `${Math.round(s / 60)} min`;

/** 70000 -> "70,000". */
export const fmtCount = (n: number) => n.toLocaleString('en-US');

export const errorText = (e: unknown) => e instanceof Error ? e.message : String(e);

/** Status line, toasts and the centre message of the panel. */
export class Notices {
  toasts = h('div', { class: 'toasts' });  // stacked, so that two at once stay readable
  statusEl = h('div', { class: 'status' });
  msgEl = h('div', { class: 'centre-msg' });

  status(text: string) { this.statusEl.textContent = text; this.statusEl.style.display = text ? '' : 'none'; }

  toast(text: string, ms = 2500) {
    const t = h('div', { class: 'toast', text });
    this.toasts.append(t);
    // The latest few only: a fast run of labels must not pile notes over the view.
    while (this.toasts.childElementCount > 3) this.toasts.firstElementChild!.remove();
    setTimeout(() => t.remove(), ms);
  }

  message(node: Node | null) {
    this.msgEl.replaceChildren();
    if (node) this.msgEl.append(h('div', {}, node));
    this.msgEl.style.display = node ? '' : 'none';
  }
}
