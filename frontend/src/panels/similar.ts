// The similar-images tab: the current image's nearest neighbours in the network's feature space.
import { getSimilar, url } from '../api';
import { errorText, h } from '../dom';
import type { App } from '../index';

/** How many neighbours the tab shows (a UI choice: one screenful of thumbnails). */
const SHOWN = 24;

export class SimilarPanel {
  constructor(private app: App) {}

  async render(pane: HTMLElement) {
    const { state } = this.app;
    const m = state.meta;
    if (!m || state.current < 0) { pane.append(h('p', { class: 'muted', text: 'Select one image to see the most similar ones.' })); return; }
    const run = state.run, id = m.ids[state.current];
    try {
      const s = await getSimilar(run, state.network, id, SHOWN);
      pane.append(h('div', { class: 'muted', text: `Most similar to #${id} (feature distance)` }),
        h('div', { class: 'grid' }, ...s.similar.map((x) => h('img', {
          src: url('thumbnail', { run, id: x.id, size: 64 }), title: `#${x.id} ${x.path} · d=${x.distance}`,
          onClick: () => this.app.centre.setCurrentId(x.id),
        }))));
    } catch (e) { pane.append(h('p', { class: 'muted', text: errorText(e) })); }
  }
}
