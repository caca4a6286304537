// Labelling: the label bar above the tabs, the keyboard, saving labels at once and undoing them.
import { setLabels } from './api';
import { errorText, h } from './dom';
import type { App } from './index';

export class Labels {
  el = h('div', { class: 'labelbar', id: 'nb-labelbar' });

  constructor(private app: App) {
    document.addEventListener('keydown', (e) => this.key(e));
  }

  render() {
    const { state } = this.app;
    const m = state.meta, t = state.target;
    let what = 'Nothing selected: click a point, drag a box or lasso, click a cluster or a legend entry.';
    if (m && t.kind === 'image' && state.current >= 0) what = `Image #${m.ids[state.current]} ${m.paths[state.current]} — label: ${m.label[state.current] ?? 'none'}`;
    else if (t.kind === 'selection') what = `${state.selection.size} selected images`;
    else if (t.kind === 'cluster') what = `Cluster ${t.cluster} (${state.targetIds().length} images)`;
    const sug = t.kind === 'image' ? state.suggestion() : null;
    const input = h('input', { placeholder: 'new label', style: 'width:100px' }) as HTMLInputElement;
    input.addEventListener('keydown', (e) => { if (e.key === 'Enter' && input.value.trim()) void this.set(input.value.trim()); });
    this.el.replaceChildren(
      h('div', { text: what, style: 'word-break:break-all' }),
      h('div', { class: 'classes' }, ...state.classes().map((c, k) => h('button', { 'data-label': c, onClick: () => this.set(c) }, k < 9 ? h('kbd', { text: String(k + 1) }) : null, c))),
      h('div', { class: 'row', style: 'display:flex;gap:4px;flex-wrap:wrap' },
        sug ? h('button', { class: 'primary', text: `Accept “${sug}” (A)`, onClick: () => this.set(sug).then(() => this.next()) }) : null,
        h('button', { text: 'Skip (S)', onClick: () => this.app.review.next() }),
        h('button', { text: 'Remove label', onClick: () => this.set(null) }),
        h('button', { text: `Undo (U)${state.undo.length ? ' · ' + state.undo.length : ''}`, id: 'nb-undo', onClick: () => this.undo(), disabled: !state.undo.length }),
        input),
      h('div', { class: 'hint', text: 'Keys: 1–9 label · A/Enter accept · S/↓ skip · ↑ back · U or Ctrl+Z undo · F focus' }));
  }

  /** In the review tab, move on to the next image after labelling the current one. */
  private next() { if (this.app.state.tab === 'review') this.app.review.next(); }

  /** Give `label` (null removes it) to the current target; saved at once, undoable. */
  async set(label: string | null) {
    const { state, notices } = this.app;
    const ids = state.targetIds();
    const m = state.meta;
    if (!ids.length || !m) { notices.toast('Select an image, a selection or a cluster first'); return; }
    const run = state.run;
    const prev: [number, string | null][] = ids.map((id) => [id, m.label[state.idIndex.get(id)!] ?? null]);
    try {
      await setLabels(run, { ids, label });
    } catch (e) { notices.toast('Not saved: ' + errorText(e), 5000); return; }
    state.undo.push({ run, assignments: prev });
    for (const id of ids) { const i = state.idIndex.get(id); if (i !== undefined) m.label[i] = label; }
    notices.toast(`${ids.length} image${ids.length > 1 ? 's' : ''} → ${label ?? '(no label)'} · saved`);
    state.editsSinceQueue += ids.length;
    this.afterEdit();
    if (state.autoUpdate && state.review && state.editsSinceQueue >= Math.max(state.updateEvery(), state.autoRetryAt)) {
      void this.app.review.updatePredictions();
    }
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
    notices.toast(`Undone: ${u.assignments.length} label${u.assignments.length > 1 ? 's' : ''} restored`);
    state.editsSinceQueue = Math.max(0, state.editsSinceQueue - u.assignments.length);
    this.afterEdit();
  }

  private afterEdit() {
    const { state } = this.app;
    this.app.centre.applyOverlay();
    this.render();
    if (state.tab === 'review') this.app.review.renderList();
    if (state.tab === 'clusters') this.app.renderTab();
  }

  private key(e: KeyboardEvent) {
    const { state } = this.app;
    const t = e.target as HTMLElement | null;
    if (t && (t.tagName === 'INPUT' || t.tagName === 'SELECT' || t.tagName === 'TEXTAREA')) return;
    if ((e.ctrlKey || e.metaKey) && e.key.toLowerCase() === 'z' || e.key === 'u') { e.preventDefault(); void this.undo(); return; }
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    if (/^[1-9]$/.test(e.key)) {
      const c = state.classes()[Number(e.key) - 1];
      if (c) {
        e.preventDefault();
        const single = state.target.kind === 'image';
        void this.set(c).then(() => { if (single) this.next(); });
      }
      return;
    }
    switch (e.key) {
      case 'a': case 'Enter': {
        const s = state.target.kind === 'image' ? state.suggestion() : null;
        if (s) { e.preventDefault(); void this.set(s).then(() => this.next()); }
        else this.app.notices.toast('No suggestion to accept: press a number key');
        break;
      }
      case 's': case 'ArrowDown': case 'j': e.preventDefault(); this.app.review.next(); break;
      case 'ArrowUp': case 'k': e.preventDefault(); this.app.review.next(-1); break;
      case 'Escape': this.app.centre.select([], false); break;
      case 'f': if (state.current >= 0) this.app.centre.view.focus(state.current); break;
    }
  }
}
