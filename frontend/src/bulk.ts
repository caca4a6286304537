// Look first: before a label goes to many images at once (a cluster, a box or lasso selection) the
// panel shows them as a grid of thumbnails with their count, sampled when there are many, and applies
// the label only on Apply (Enter). Cancel (Esc) changes nothing; one undo reverts an applied label.
import { url } from './api';
import { h } from './dom';

/** At most this many thumbnails are shown; more images are sampled evenly at random. */
export const SHOWN = 240;

export interface BulkRequest {
  run: string;
  ids: number[];
  label: string | null;
  /** "cluster 3", "the selection": what the images are. */
  what: string;
  /** The label each image has now. */
  current: (id: number) => string | null;
}

/** A random sample of `n` items (all of them when fewer), in their order. */
function sample<T>(items: T[], n: number): T[] {
  if (items.length <= n) return items;
  const picked = new Set<number>();
  while (picked.size < n) picked.add(Math.floor(Math.random() * items.length));
  return [...picked].sort((a, b) => a - b).map((k) => items[k]);
}

export class BulkPreview {
  el = h('div', { class: 'bulk-back', id: 'nb-bulk', style: 'display:none', tabindex: -1 });
  private settle: ((apply: boolean) => void) | null = null;

  constructor() { document.body.append(this.el); }

  get open() { return this.settle !== null; }

  /** Show the images; resolves true on Apply, false on Cancel. */
  confirm(r: BulkRequest): Promise<boolean> {
    this.close(false);
    const shown = sample(r.ids, SHOWN);
    const before = new Map<string, number>();
    for (const id of r.ids) { const l = r.current(id) ?? '(no label)'; before.set(l, (before.get(l) ?? 0) + 1); }
    const target = r.label ?? '(no label)';
    const unchanged = before.get(target) ?? 0;
    const now = [...before].sort((a, b) => b[1] - a[1]).map(([l, n]) => `${n} ${l}`).join(', ');
    const title = r.label === null ? `Remove the label of ${r.ids.length} images (${r.what})?`
      : `Label ${r.ids.length} images (${r.what}) “${r.label}”?`;
    const apply = h('button', { class: 'primary', id: 'nb-bulk-apply', text: `Apply to ${r.ids.length} images (Enter)`, onClick: () => this.close(true) });
    this.el.replaceChildren(h('div', { class: 'bulk', role: 'dialog', 'aria-label': title },
      h('h3', { text: title }),
      h('div', { class: 'muted', id: 'nb-bulk-count', text: `Now: ${now}.` + (unchanged ? ` ${r.ids.length - unchanged} change.` : '')
        + (shown.length < r.ids.length ? ` Showing ${shown.length} of ${r.ids.length}, picked at random.` : ' Showing all of them.') }),
      h('div', { class: 'grid bulk-grid' }, ...shown.map((id) => h('img', {
        src: url('thumbnail', { run: r.run, id, size: 64 }), loading: 'lazy', title: `#${id} · now ${r.current(id) ?? 'no label'}`,
      }))),
      h('div', { class: 'row' }, apply,
        h('button', { id: 'nb-bulk-cancel', text: 'Cancel (Esc)', onClick: () => this.close(false) }),
        h('span', { class: 'hint', text: 'Look through them first: if some belong elsewhere, cancel and select fewer. One undo (U) reverts the whole labelling.' }))));
    this.el.style.display = '';
    (document.activeElement as HTMLElement | null)?.blur?.();
    this.el.focus();
    return new Promise((resolve) => { this.settle = resolve; });
  }

  /** Keys while it is open: Enter applies, Escape cancels, the rest do nothing. True when handled. */
  key(e: KeyboardEvent): boolean {
    if (!this.open) return false;
    if (e.key === 'Enter') { e.preventDefault(); this.close(true); } else if (e.key === 'Escape') { e.preventDefault(); this.close(false); }
    return true;
  }

  close(apply: boolean) {
    const s = this.settle;
    this.settle = null;
    this.el.style.display = 'none';
    this.el.replaceChildren();
    s?.(apply);
  }
}
