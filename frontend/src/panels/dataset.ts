// The dataset side of the left panel: the run picker, counts, unreadable files and exact duplicates;
// below the networks, the metrics table and the labels export.
import { ApiError, getMetrics, url } from '../api';
import { errorText, h } from '../dom';
import type { App } from '../index';
import type { MetricName } from '../types';

const METRICS: [MetricName, string][] = [['accuracy', 'accuracy'], ['precision', 'prec.'], ['specificity', 'spec.'], ['recall', 'recall'], ['f1', 'f1']];
const fmt = (v: number | null) => v == null ? '' : Number.isInteger(v) ? String(v) : v.toFixed(3);

export class DatasetPanel {
  metricsEl = h('div', { id: 'nb-metrics', class: 'muted', text: '—' });
  private countsEl = h('div', { class: 'kv', id: 'nb-summary' });
  private classesEl = h('div', { class: 'prog' });

  constructor(private app: App) {}

  /** The run picker and the dataset's summary. */
  top(): HTMLElement[] {
    const { state } = this.app;
    const s = state.summary!;
    const runSel = h('select', { id: 'nb-run', onChange: (e: Event) => this.app.openRun((e.target as HTMLSelectElement).value) });
    for (const r of state.runs) runSel.append(h('option', { value: r.name, text: `${r.name} (${r.images})`, selected: r.name === state.run }));
    this.drawCounts();
    return [
      h('h2', { text: 'Dataset' }), runSel, this.countsEl, this.classesEl,
      h('details', {}, h('summary', { text: `${s.unreadable.length} unreadable files` }),
        ...s.unreadable.slice(0, 200).map((u) => h('div', { class: 'prog' }, h('b', { text: u.path }), ': ' + u.reason))),
      h('details', {}, h('summary', { text: `${s.duplicates.length} exact duplicates removed` }),
        ...s.duplicates.slice(0, 200).map((d) => h('div', { class: 'prog', text: `${d.path} = ${d.kept}` }))),
    ];
  }

  /** The counts of images and labels; after labels change in this page, from the labels it shows. */
  drawCounts() {
    const s = this.app.state.summary!, m = this.app.state.meta;
    if (m && m.count === s.images) {
      const classes: Record<string, number> = {};
      for (const l of m.label) if (l != null) classes[l] = (classes[l] ?? 0) + 1;
      s.classes = classes;
      s.labelled = Object.values(classes).reduce((a, b) => a + b, 0);
    }
    const share = s.images ? Math.round((100 * s.labelled) / s.images) : 0;
    this.countsEl.replaceChildren(
      h('b', { text: String(s.images) }), h('span', { text: 'images' }),
      h('b', { text: `${s.labelled} (${share}%)` }), h('span', { text: 'labelled' }),
      h('b', { text: String(s.images - s.labelled) }), h('span', { text: 'not labelled yet' }),
      // Labels given in the panel join the training set; only the test split is held out.
      ...(s.splits.test ? [h('b', { text: String(s.splits.test) }), h('span', { text: 'labelled, held out to test' })] : []));
    this.classesEl.textContent = Object.entries(s.classes).map(([k, v]) => `${k} ${v}`).join(', ');
  }

  /** The metrics table and the export link. */
  bottom(): HTMLElement[] {
    return [h('h2', { text: 'Metrics' }), this.metricsEl,
      h('p', {}, h('a', { href: url('export', { run: this.app.state.run }), download: 'labels.csv', text: 'Export labels (CSV)' }))];
  }

  async loadMetrics() {
    const el = this.metricsEl;
    try {
      const m = await getMetrics(this.app.state.run);
      if (!m.rows.length) { el.textContent = 'No metrics yet.'; el.className = 'muted'; return; }
      const silhouette = (net: string) => m.silhouette[net] ?? null;
      el.replaceChildren(h('table', { class: 't' },
        h('tr', {}, ...['network', 'method', 'split', 'n', ...METRICS.map(([, t]) => t), 'silh.'].map((t) => h('th', { text: t }))),
        ...m.rows.map((r) => h('tr', {}, h('td', { text: r.network }), h('td', { text: r.method }), h('td', { text: r.split }),
          h('td', { text: String(r.n) }), ...METRICS.map(([k]) => h('td', { text: fmt(r[k]) })),
          h('td', { text: fmt(silhouette(r.network)), title: 'silhouette of the clusters in the projection' })))));
      el.className = '';
    } catch (e) {
      el.textContent = e instanceof ApiError && e.status === 409 ? 'No metrics yet: run a network.' : errorText(e);
      el.className = 'muted';
    }
  }
}
