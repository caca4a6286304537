// Labelling: the label bar above the tabs, the keyboard, saving labels at once and undoing them.
// A class is named by a digit, a button, or by typing its name (or its first letters) into the bar's
// field; a name no class has yet makes a new class, which is how the first labels of a folder come.
// A label for many images at once is applied after a look at them (bulk.ts).
import { setLabels } from './api';
import { BulkPreview } from './bulk';
import { errorText, h } from './dom';
import type { App } from './index';

/** Single-letter commands; any other letter typed outside a field starts typing a class name. */
const COMMANDS = new Set(['a', 's', 'j', 'k', 'u', 'f', 'n']);

/** What typed text names: an existing class, a new one, several (type more), or nothing. */
export type Resolved = { label: string; isNew: boolean } | { several: string[] } | null;

export function resolveClass(text: string, classes: string[]): Resolved {
  const t = text.trim();
  if (!t) return null;
  const low = t.toLowerCase();
  const exact = classes.find((c) => c.toLowerCase() === low);
  if (exact !== undefined) return { label: exact, isNew: false };
  const starts = classes.filter((c) => c.toLowerCase().startsWith(low));
  if (starts.length === 1) return { label: starts[0], isNew: false };
  if (starts.length > 1) return { several: starts };
  return { label: t, isNew: true };
}

export class Labels {
  el = h('div', { class: 'labelbar', id: 'nb-labelbar' });
  private info = h('div', { style: 'word-break:break-all' });
  private classesEl = h('div', { class: 'classes' });
  private actions = h('div', { class: 'row', style: 'display:flex;gap:4px;flex-wrap:wrap' });
  /** Kept across renders, so that it keeps the focus while the expert types label after label. */
  input = h('input', { id: 'nb-label-input', placeholder: 'type a class name, Enter (n)', autocomplete: 'off', spellcheck: 'false' }) as HTMLInputElement;
  private match = h('span', { class: 'hint', id: 'nb-label-match' });
  bulk = new BulkPreview();

  constructor(private app: App) {
    this.el.append(this.info, this.classesEl, h('div', { class: 'typer' }, this.input, this.match), this.actions,
      h('div', { class: 'hint', text: 'Keys: a class name (or n, name) + Enter · 1–9 · Enter/A accept · j/k move · U undo',
        title: 'Type a class name, or its first letters, and Enter: a name no class has makes a new class. n (or /) goes to the field first, e.g. for a class that begins with a, s, j, k, u or f. 1–9: the numbered class. Enter or A: accept the prediction shown. S, j or ↓: skip; k or ↑: back. U or Ctrl+Z: undo the last labelling. F: show the image in the view. Esc: clear the selection.' }));
    // A click on a class or action button leaves the keyboard to the page (Enter must not press it again).
    this.el.addEventListener('click', (e) => { if ((e.target as HTMLElement).closest('button')) (document.activeElement as HTMLElement | null)?.blur?.(); });
    this.input.addEventListener('input', () => this.showMatch());
    this.input.addEventListener('keydown', (e) => this.inputKey(e));
    document.addEventListener('keydown', (e) => this.key(e));
  }

  render() {
    const { state } = this.app;
    const m = state.meta, t = state.target;
    let what = 'Nothing selected: click a point, drag a box or lasso, click a cluster or a legend entry.';
    if (m && t.kind === 'image' && state.current >= 0) what = `Image #${m.ids[state.current]} ${m.paths[state.current]} — label: ${m.label[state.current] ?? 'none'}`;
    else if (t.kind === 'selection') what = `${state.selection.size} selected images`;
    else if (t.kind === 'cluster') what = `Cluster ${t.cluster} (${state.targetIds().length} images)`;
    this.info.textContent = what;
    const classes = state.classes();
    this.classesEl.replaceChildren(...(classes.length ? classes.map((c, k) => h('button', { 'data-label': c, onClick: () => this.label(c) }, k < 9 ? h('kbd', { text: String(k + 1) }) : null, c))
      : [h('span', { class: 'muted', text: 'No classes yet: type the first image\'s class below and press Enter.' })]));
    const sug = t.kind === 'image' ? state.suggestion() : null;
    this.actions.replaceChildren(
      ...(sug ? [h('button', { class: 'primary', text: `Accept “${sug}” (A)`, onClick: () => this.accept() })] : []),
      h('button', { text: 'Skip (S)', onClick: () => this.move(1) }),
      h('button', { text: 'Remove label', onClick: () => this.set(null) }),
      h('button', { text: `Undo (U)${state.undo.length ? ' · ' + state.undo.length : ''}`, id: 'nb-undo', onClick: () => this.undo(), disabled: !state.undo.length }));
    this.showMatch();
  }

  /** Under the field: the class the typed text names, or that it makes a new one. */
  private showMatch() {
    const r = resolveClass(this.input.value, this.app.state.classes());
    this.match.textContent = !r ? '' : 'several' in r ? `${r.several.join(', ')}: type more`
      : r.isNew ? `new class “${r.label}”` : `→ ${r.label}`;
  }

  private inputKey(e: KeyboardEvent) {
    const text = this.input.value.trim();
    // Keys the field handles stop here: the page's own keys (Enter applies a look-first label) must not see them again.
    if (['Enter', 'Escape', 'ArrowDown', 'ArrowUp'].includes(e.key) || (!text && /^[1-9]$/.test(e.key))) e.stopPropagation();
    if (e.key === 'Enter') {
      e.preventDefault();
      if (!text) { this.accept(); return; }
      const r = resolveClass(text, this.app.state.classes());
      if (r && 'several' in r) { this.app.notices.toast(`“${text}” begins ${r.several.join(', ')}: type more`); return; }
      if (!r) return;
      void this.label(r.label, r.isNew ? ' (a new class)' : '').then((saved) => {
        if (saved && this.input.value.trim() === text) { this.input.value = ''; this.showMatch(); }
      });
    } else if (e.key === 'Escape') {
      this.input.value = ''; this.showMatch(); this.input.blur();
    } else if (e.key === 'ArrowDown' || e.key === 'ArrowUp') {
      e.preventDefault(); this.move(e.key === 'ArrowDown' ? 1 : -1);
    } else if (!text && /^[1-9]$/.test(e.key)) {
      e.preventDefault(); this.digit(Number(e.key));
    } else if (!text && (e.ctrlKey || e.metaKey) && e.key.toLowerCase() === 'z') {
      e.preventDefault(); void this.undo();
    } else if (e.key === 'Tab' && text) {
      const r = resolveClass(text, this.app.state.classes());
      const first = r && ('several' in r ? r.several[0] : r.isNew ? null : r.label);
      if (first) { e.preventDefault(); this.input.value = first; this.showMatch(); }
    }
  }

  /** The queue the keyboard walks: the review tab's, else the Next queue. */
  private move(step: number) { if (this.app.state.tab === 'review') this.app.review.next(step); else this.app.next.next(step); }

  /** After labelling one image from a queue, move on to the next one. */
  private after() {
    const { tab } = this.app.state;
    if (tab === 'review') this.app.review.next(); else if (tab === 'next') this.app.next.next();
  }

  /** Label the target with a class; one image of a queue moves the queue on. */
  async label(c: string, note = ''): Promise<boolean> {
    const single = this.app.state.target.kind === 'image';
    const saved = await this.set(c, note);
    if (saved && single) this.after();
    return saved;
  }

  private digit(k: number) {
    const c = this.app.state.classes()[k - 1];
    if (c) void this.label(c);
    else this.app.notices.toast(`No class ${k} yet: type a class name and press Enter`);
  }

  private accept() {
    const s = this.app.state.target.kind === 'image' ? this.app.state.suggestion() : null;
    if (s) void this.label(s);
    else this.app.notices.toast('No prediction to accept: type the class, or press its number');
  }

  /** Give `label` (null removes it) to the current target; saved at once, undoable. False: not saved. */
  async set(label: string | null, note = ''): Promise<boolean> {
    const { state, notices } = this.app;
    const ids = state.targetIds();
    const m = state.meta;
    if (!ids.length || !m) { notices.toast('Select an image, a selection or a cluster first'); return false; }
    const run = state.run, t = state.target;
    const current = (id: number) => m.label[state.idIndex.get(id)!] ?? null;
    if (ids.length > 1) {
      const what = t.kind === 'cluster' ? `cluster ${t.cluster}` : 'the selection';
      if (!await this.bulk.confirm({ run, ids, label, what, current })) { notices.toast('Cancelled: no label changed'); return false; }
    }
    const prev: [number, string | null][] = ids.map((id) => [id, current(id)]);
    try {
      await setLabels(run, { ids, label });
    } catch (e) { notices.toast('Not saved: ' + errorText(e), 5000); return false; }
    state.undo.push({ run, assignments: prev });
    for (const id of ids) { const i = state.idIndex.get(id); if (i !== undefined) m.label[i] = label; }
    if (state.next && label !== null) for (const id of ids) state.nextDone.add(id);
    notices.toast(`${ids.length} image${ids.length > 1 ? 's' : ''} → ${label ?? '(no label)'}${note} · saved`);
    state.editsSinceQueue += ids.length;
    this.afterEdit();
    if (state.tab === 'review' && state.autoUpdate && state.review && state.editsSinceQueue >= Math.max(state.updateEvery(), state.autoRetryAt)) {
      void this.app.review.updatePredictions();
    }
    return true;
  }

  /** Give back the labels the last labelling replaced. */
  async undo() {
    const { state, notices } = this.app;
    const u = state.undo.pop();
    if (!u) { notices.toast('Nothing to undo'); return; }
    try { await setLabels(u.run, { assignments: u.assignments }); } catch (e) {
      state.undo.push(u);
      notices.toast('Undo failed: ' + errorText(e), 5000);
      return;
    }
    if (u.run === state.run && state.meta) {
      for (const [id, lab] of u.assignments) { const i = state.idIndex.get(id); if (i !== undefined) state.meta.label[i] = lab; }
    }
    for (const [id] of u.assignments) state.nextDone.delete(id);
    notices.toast(`Undone: ${u.assignments.length} label${u.assignments.length > 1 ? 's' : ''} restored`);
    state.editsSinceQueue = Math.max(0, state.editsSinceQueue - u.assignments.length);
    // Undoing one label of the Next queue goes back to that image.
    if (state.tab === 'next' && u.assignments.length === 1) this.app.next.goTo(u.assignments[0][0]);
    this.afterEdit();
  }

  private afterEdit() {
    const { state } = this.app;
    this.app.dataset.drawCounts();
    this.app.centre.applyOverlay();
    this.render();
    if (state.tab === 'review') this.app.review.renderList();
    if (state.tab === 'next') this.app.next.renderList();
    if (state.tab === 'clusters') this.app.renderTab();
  }

  private key(e: KeyboardEvent) {
    const { state } = this.app;
    if (this.bulk.key(e)) return;
    const t = e.target as HTMLElement | null;
    if (t && (t.tagName === 'INPUT' || t.tagName === 'SELECT' || t.tagName === 'TEXTAREA')) return;
    if (e.key === 'Enter' && t && (t.tagName === 'BUTTON' || t.tagName === 'A')) return;  // it presses the focused button
    if ((e.ctrlKey || e.metaKey) && e.key.toLowerCase() === 'z' || e.key === 'u') { e.preventDefault(); void this.undo(); return; }
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    if (/^[1-9]$/.test(e.key)) { e.preventDefault(); this.digit(Number(e.key)); return; }
    if (e.key === 'n' || e.key === '/') { e.preventDefault(); this.input.focus(); return; }
    if (/^[a-zA-Z]$/.test(e.key) && !COMMANDS.has(e.key)) {
      // The first letters of a class: the field takes them, Enter labels.
      e.preventDefault();
      this.input.value = e.key;
      this.input.focus();
      this.showMatch();
      return;
    }
    switch (e.key) {
      case 'a': case 'Enter': e.preventDefault(); this.accept(); break;
      case 's': case 'ArrowDown': case 'j': e.preventDefault(); this.move(1); break;
      case 'ArrowUp': case 'k': e.preventDefault(); this.move(-1); break;
      case 'Escape': this.app.centre.select([], false); break;
      case 'f': if (state.current >= 0) this.app.centre.view.focus(state.current); break;
    }
  }
}
