// The review queue tab: the images the networks disagree on or are unsure about, most doubtful
// first; after labels are saved it offers (or, every 1% of the unlabelled, starts) new predictions.
import { getReview, startJob, url } from '../api';
import { errorText, h } from '../dom';
import type { App } from '../index';
import { follow, jobWhy } from '../jobs';
import type { ReviewAnswer } from '../types';

/** How many images of the queue the tab lists (a UI choice, not a step parameter). */
const SHOWN = 500;

export class ReviewPanel {
  constructor(private app: App) {}

  /** Load the queue into the pane. */
  async render(pane: HTMLElement) {
    const { state } = this.app;
    const run = state.run;
    pane.append(h('p', { class: 'muted', text: 'Loading the review queue…' }));
    let review: ReviewAnswer;
    try {
      review = await getReview(run, SHOWN);
      if (!review.queue_length) {
        // Nothing flagged (e.g. one network only): list every unlabelled image, least confident first.
        review = await getReview(run, SHOWN, true);
        review.notes = [...review.notes, 'Nothing flagged: showing every unlabelled image, least confident first. Run a second network to find disagreements.'];
      }
    } catch (e) { pane.replaceChildren(h('p', { class: 'muted', text: errorText(e) })); return; }
    if (run !== state.run) return;
    state.setReview(review);
    if (state.overlay === 'disagreement') this.app.centre.applyOverlay();
    this.renderList();
  }

  renderList() {
    const { state } = this.app;
    const pane = this.app.pane, r = state.review, m = state.meta;
    if (!r || !m || state.tab !== 'review') return;
    const run = state.run, every = state.updateEvery();
    pane.replaceChildren(
      h('div', { class: 'muted', text: `${r.queue_length} to review (${r.disagreements} disagreements, ${r.low_confidence} unsure) of ${r.unlabelled} unlabelled; networks: ${r.networks.join(', ')}` }),
      // bench/quality.py: a third network's vote puts more of the wrong labels at the top of the queue
      ...(r.networks.length === 2 ? [h('div', { class: 'hint', text: 'Run a third network to find more of the wrong labels.' })] : []),
      h('label', { class: 'hint', title: 'Each round\'s labels join the training set before the queue is ordered again' },
        h('input', { type: 'checkbox', id: 'nb-auto-update', checked: state.autoUpdate, onChange: (e: Event) => {
          state.setAutoUpdate((e.target as HTMLInputElement).checked);
        } }), ` Update predictions after every ${every} label${every > 1 ? 's' : ''} (1% of the unlabelled)`),
      ...this.updateBar(r),
      ...r.items.map((it, k) => {
        const i = state.idIndex.get(it.id);
        const label = i === undefined ? null : m.label[i];
        const votes = Object.entries(it.votes).map(([n, v]) => `${n}: ${v}`).join(' · ');
        return h('div', {
          class: 'item' + (k === state.reviewPos && state.current === i ? ' cur' : '') + (label != null ? ' done' : ''), 'data-id': it.id,
          onClick: () => { state.reviewPos = k; if (i !== undefined) this.app.centre.setCurrent(i, true); this.renderList(); },
        }, h('img', { src: url('thumbnail', { run, id: it.id, size: 64 }), loading: 'lazy' }),
          h('div', { class: 'meta' }, h('div', {}, h('b', { text: label != null ? `✓ ${label}` : `→ ${it.consensus}` }), ` · ${(it.confidence * 100).toFixed(0)}%`),
            h('div', { class: 'muted', text: votes }), h('div', { class: 'muted', text: it.reasons.join(', ') })));
      }));
    const cur = pane.querySelector('.item.cur');
    if (cur) cur.scrollIntoView({ block: 'nearest' });
  }

  /** The offer to predict again once labels changed (or its progress), replacing the stale-prediction notes. */
  private updateBar(r: ReviewAnswer): HTMLElement[] {
    const { state } = this.app;
    const stale = r.stale.length > 0 || state.editsSinceQueue > 0;
    if (!stale && !state.updating) return r.notes.map((n) => h('div', { class: 'hint', text: n }));
    const n = state.editsSinceQueue;
    const text = state.updating ?? `${n ? `${n} label${n > 1 ? 's' : ''} saved since this queue was made.` : 'Labels changed since the predictions.'}`
      + ' Predicting again with them corrects similar images and re-orders the queue.';
    return [h('div', { class: 'update', id: 'nb-update' }, h('span', { text }),
      state.updating ? null : h('button', { class: 'primary', text: 'Update predictions', onClick: () => this.updatePredictions() }))];
  }

  /** Predict again with every network of the queue (the saved labels join the training set), then reload. */
  async updatePredictions() {
    const { state, notices } = this.app;
    const networks = state.review?.networks ?? [];
    if (state.updating || !networks.length) return;
    const run = state.run;
    const pendingAtStart = state.editsSinceQueue;
    const options = this.app.options.changedFor('predict');
    let failed = '';
    for (const [k, network] of networks.entries()) {
      const show = (j: { stage: string | null; state: string }) => {
        const first = !state.updating;
        state.updating = `Predicting with ${network} (${k + 1}/${networks.length})… ${j.stage || j.state}`;
        const bar = this.app.pane.querySelector('#nb-update span');
        if (bar && !first) bar.textContent = state.updating;
        else this.renderList();
      };
      try {
        const done = await follow(run, await startJob(run, 'predict', { ...options, network }), show);
        if (done.state !== 'done') { failed = `${network}: ${jobWhy(done)}`; break; }
      } catch (e) { failed = `${network}: ${errorText(e)}`; break; }
    }
    state.updating = null;
    if (failed) {
      state.autoRetryAt = state.editsSinceQueue + state.updateEvery();
      notices.toast('Predictions not updated: ' + failed, 5000);
      this.renderList();
      return;
    }
    notices.toast('Predictions updated');
    state.reviewPos = 0;
    const late = state.editsSinceQueue - pendingAtStart;  // labels saved while predicting: not in this update
    if (run === state.run && state.network) await this.app.centre.loadView(state.network, true);
    if (late > 0) { state.editsSinceQueue = late; this.renderList(); }
    this.app.dataset.loadMetrics();
  }

  /** Go to the next unlabelled image of the queue (or back one with step -1). */
  next(step = 1) {
    const { state } = this.app;
    const items = state.review?.items ?? [];
    const m = state.meta;
    if (!items.length || !m) return;
    let k = state.reviewPos;
    const isCur = state.current >= 0 && items[k] && state.idIndex.get(items[k].id) === state.current;
    if (!isCur) k = step > 0 ? -1 : items.length;
    for (let n = 0; n < items.length; n++) {
      k += step;
      if (k < 0 || k >= items.length) break;
      const i = state.idIndex.get(items[k].id);
      if (i !== undefined && (step < 0 || m.label[i] == null)) {
        state.reviewPos = k;
        this.app.centre.setCurrent(i, true);
        this.renderList();
        return;
      }
    }
    this.app.notices.toast('End of the review queue');
  }
}
