// The near-duplicates tab: groups of images within a feature distance, found by a `duplicates` job
// (with progress; a newer search, or leaving the tab, cancels an older one).
import { startJob, url } from '../api';
import { errorText, h } from '../dom';
import type { App } from '../index';
import { follow, jobWhy } from '../jobs';
import type { DuplicatesResult, Job } from '../types';

export class DuplicatesPanel {
  constructor(private app: App) {}

  render(pane: HTMLElement) {
    const { state } = this.app;
    const run = state.run, network = state.network;
    const p = this.app.state.kinds.get('duplicates')?.params.find((x) => x.name === 'threshold');
    const th = h('input', {
      type: 'number', step: 0.1, value: typeof p?.default === 'number' ? p.default : undefined,
      min: p?.min ?? undefined, max: p?.max ?? undefined, style: 'width:60px', title: p?.help,
    }) as HTMLInputElement;
    const out = h('div', {});
    // Only the latest Find shows its result; an older search still running is cancelled, as is
    // one left running when the tab is closed.
    let latest = 0;
    const searching = (j: Job) => 'Searching…' + (j.state === 'queued' ? ' waiting for the worker'
      : j.total ? ` ${Math.floor((100 * j.done) / j.total)}%` : '');
    const select = (ids: number[]) => this.app.centre.select(
      ids.map((id) => state.idIndex.get(id)).filter((i): i is number => i !== undefined), false);
    const load = async () => {
      const mine = ++latest;
      const current = () => mine === latest && out.isConnected;
      out.replaceChildren(h('p', { class: 'muted', text: 'Searching…' }));
      try {
        const params = th.value.trim() ? { network, threshold: Number(th.value) } : { network };
        const job = await follow(run, await startJob<DuplicatesResult>(run, 'duplicates', params), (j) => {
          if (current()) out.replaceChildren(h('p', { class: 'muted', text: searching(j) }));
        }, { cancel: () => !current() });
        if (!current()) return;
        const d = job.result;
        if (job.state !== 'done' || !d) { out.replaceChildren(h('p', { class: 'muted', text: jobWhy(job) })); return; }
        const n = d.groups.length;
        out.replaceChildren(
          h('div', { class: 'muted', text: n ? `${n} group${n > 1 ? 's' : ''} at distance ≤ ${d.threshold}` : `No near duplicates at distance ≤ ${d.threshold}.` }),
          ...d.groups.slice(0, 100).map((g) => h('div', { class: 'group' },
            h('div', { class: 'grid' }, ...g.slice(0, 12).map((e) => h('img', {
              src: url('thumbnail', { run, id: e.id, size: 64 }), title: `#${e.id} ${e.path}`, onClick: () => this.app.centre.setCurrentId(e.id),
            }))),
            h('button', { text: `Select ${g.length}`, onClick: () => select(g.map((e) => e.id)) }))));
      } catch (e) { if (current()) out.replaceChildren(h('p', { class: 'muted', text: errorText(e) })); }
    };
    pane.append(h('div', {}, 'Distance ≤ ', th, ' ', h('button', { text: 'Find', onClick: load }),
      h('span', { class: 'hint', text: ' 0.3 · 0.6 · 1.0 as in the paper' })), out);
    void load();
  }
}
