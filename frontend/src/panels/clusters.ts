// The clusters tab: each cluster's size, majority label and purity; a click selects the cluster so
// that one key (or a typed class) labels all of it, after a look at its images.
import { getClusters } from '../api';
import { errorText, h } from '../dom';
import type { App } from '../index';
import { waitLine } from '../jobs';
import type { ClustersAnswer } from '../types';

export class ClustersPanel {
  answer: ClustersAnswer | null = null;

  constructor(private app: App) {}

  /** Each cluster's labels as they are now (the stored table counts those of its last clustering):
   * majority class, its share of the labelled images (not of the test split), how many are labelled. */
  private live() {
    const m = this.app.state.meta;
    const counts = new Map<number, Map<string, number>>();
    m?.cluster?.forEach((c, i) => {
      const l = m.label[i];
      if (c == null || l == null || m.split[i] === 'test') return;
      const byLabel = counts.get(c) ?? new Map<string, number>();
      byLabel.set(l, (byLabel.get(l) ?? 0) + 1);
      counts.set(c, byLabel);
    });
    return (cluster: number) => {
      const byLabel = [...(counts.get(cluster) ?? [])].sort((a, b) => b[1] - a[1]);
      const n = byLabel.reduce((a, [, k]) => a + k, 0);
      return { label: byLabel[0]?.[0] ?? null, needs_label: !n, purity: n ? byLabel[0][1] / n : 0, n_labelled: n };
    };
  }

  async render(pane: HTMLElement) {
    const { state } = this.app;
    let answer: ClustersAnswer;
    try { answer = await getClusters(state.run, state.network); } catch (e) {
      // While the network's pipeline still places its images, its clusters are still to come.
      const preview = this.app.pipelines.preview(state.network);
      pane.replaceChildren(preview ? h('p', { class: 'hint', id: 'nb-clusters-wait', text: waitLine('Clusters come', preview) })
        : h('p', { class: 'muted', text: errorText(e) }));
      return;
    }
    this.answer = answer;
    const t = state.target;
    const live = this.live();
    const clusters = answer.clusters.map((c) => ({ ...c, ...live(c.cluster) }));
    const rows = clusters.map((c) => h('tr', {
      class: 'click' + (t.kind === 'cluster' && t.cluster === c.cluster ? ' cur' : ''), 'data-cluster': c.cluster,
      onClick: () => {
        this.app.centre.select(state.clusterIndices(c.cluster), false);
        state.target = { kind: 'cluster', cluster: c.cluster };
        this.app.labels.render();
        this.app.renderTab();
      },
    }, h('td', { text: String(c.cluster) }), h('td', { text: String(c.size) }),
      h('td', { text: c.needs_label ? 'needs a label' : c.label ?? '', class: c.needs_label ? 'err' : '' }),
      h('td', { text: c.needs_label ? '' : (c.purity * 100).toFixed(0) + '%' }), h('td', { text: String(c.n_labelled) })));
    const needing = clusters.filter((c) => c.needs_label).length;
    pane.replaceChildren(h('div', { class: 'muted', text: `${clusters.length} clusters; ${needing} need a label. Click one, then type its class (or 1–9): you see its images before the label is applied.` }),
      h('table', { class: 't' }, h('tr', {}, ...['cluster', 'size', 'majority', 'purity', 'labelled'].map((x) => h('th', { text: x }))), ...rows));
  }
}
