// The "Next" tab: the one list the expert works through. A `suggest` job picks the images worth a look
// (from zero labels the most typical image of each group of the data, later the ones the predictions
// are least sure of), each with its one-line reason; the keyboard labels them one after another. When
// the list is worked through (or on the button) the panel predicts again with the new labels (once
// every class has two) and asks for the next round, saying in a line what it is doing.
import { getSummary, startJob, url } from '../api';
import { errorText, h } from '../dom';
import type { App } from '../index';
import { follow, jobWhy, waitLine } from '../jobs';
import type { Job, SuggestItem, SuggestResult } from '../types';
import { AccuracyPlot } from './accuracy';

/** Images per round (a UI choice: a screenful to label before the predictions learn from them). */
export const ROUND = 20;
/** A prediction needs this many labels of every class (as the suggest step's own threshold). */
export const MIN_PER_CLASS = 2;

const KIND_TEXT: Record<string, string> = { label: 'label it', check: 'check the prediction', recheck: 'check your label' };

export class NextPanel {
  accuracy: AccuracyPlot;
  private line = h('div', { class: 'update', id: 'nb-next-status' });
  /** The run whose round is being prepared (state.nextBusy is about it): another run's page starts its own. */
  private busyRun = '';

  constructor(private app: App) { this.accuracy = new AccuracyPlot(app); }

  /** Draw the tab; the first time for a run, ask for a round. */
  render(_pane: HTMLElement) {
    const { state } = this.app;
    if (state.nextRun !== state.run) { state.next = null; state.nextDone.clear(); state.round = 0; }
    // While the network's pipeline still places its images, the round waits until the pipeline ends.
    if (!state.next && !this.waiting() && (!state.nextBusy || this.busyRun !== state.run)) void this.suggest();
    this.renderList();
  }

  private done(it: SuggestItem): boolean {
    const { state } = this.app;
    if (state.nextDone.has(it.id)) return true;
    const i = state.idIndex.get(it.id);
    return (it.kind ?? 'label') === 'label' && i !== undefined && state.meta?.label[i] != null;
  }

  remaining(): number { return this.app.state.next?.items.filter((it) => !this.done(it)).length ?? 0; }

  renderList() {
    const { state } = this.app;
    const pane = this.app.pane, r = state.next, m = state.meta;
    if (state.tab !== 'next' || !m) return;
    const busy = !!state.nextBusy || !!this.waiting();
    this.line.replaceChildren(h('span', { text: state.nextBusy ?? this.idleLine() }),
      h('button', {
        class: busy ? '' : 'primary', id: 'nb-next-round', disabled: busy, text: 'Predict and suggest the next images',
        title: 'Predict again with every label given so far, then choose the next images to look at',
        onClick: () => this.round(),
      }));
    this.line.append(this.accuracy.words);
    // What the round is doing and the current image stay in sight while the list scrolls.
    const head = h('div', { class: 'next-head' }, this.line);
    const note = state.nextNote ? h('div', { class: 'hint', id: 'nb-next-note', text: state.nextNote }) : null;
    if (!r) { pane.replaceChildren(head, ...(note ? [note] : [])); return; }
    const run = state.run, cur = state.nextItem();
    if (cur) head.append(this.shown(cur));
    const items = r.items.map((it, k) => {
      const i = state.idIndex.get(it.id);
      const label = i === undefined ? null : m.label[i];
      const done = this.done(it);
      const pred = it.prediction ? `→ ${it.prediction}${it.confidence != null ? ` ${(it.confidence * 100).toFixed(0)}%` : ''}` : '';
      return h('div', {
        class: 'item' + (cur?.id === it.id ? ' cur' : '') + (done ? ' done' : ''), 'data-id': it.id, 'data-kind': it.kind ?? 'label',
        onClick: () => { state.nextPos = k; if (i !== undefined) this.app.centre.setCurrent(i, true); this.renderList(); },
      }, h('img', { src: url('thumbnail', { run, id: it.id, size: 64 }), loading: 'lazy' }),
        h('div', { class: 'meta' },
          h('div', {}, h('b', { text: label != null ? `✓ ${label}` : pred || 'no label yet' }),
            it.kind ? h('span', { class: 'kind ' + it.kind, text: KIND_TEXT[it.kind] ?? it.kind }) : null),
          h('div', { class: 'reason', text: it.reason }),
          h('div', { class: 'muted', text: it.path })));
    });
    pane.replaceChildren(head, ...(note ? [note] : []),
      h('div', { class: 'muted', text: `${r.items.length} images · ${r.mode}: ${r.why}` }), ...items);
    pane.querySelector('.item.cur')?.scrollIntoView({ block: 'nearest' });
  }

  /** The current image, large, with what to do with it. */
  private shown(it: SuggestItem): HTMLElement {
    const { state } = this.app;
    const i = state.idIndex.get(it.id);
    const label = i === undefined ? null : state.meta?.label[i];
    const pred = it.prediction ?? null;
    return h('div', { class: 'next-cur', id: 'nb-next-current' },
      h('img', { src: url('thumbnail', { run: state.run, id: it.id, size: 256 }), alt: it.path }),
      h('div', {},
        it.kind ? h('div', { class: 'kind-line', text: KIND_TEXT[it.kind] ?? it.kind }) : null,
        h('div', { class: 'reason', text: it.reason }),
        label != null ? h('div', { text: `labelled ${label}` }) : null,
        pred ? h('div', { text: `predicted ${pred}${it.confidence != null ? ` (${(it.confidence * 100).toFixed(0)}% sure)` : ''} — Enter accepts` }) : null,
        h('div', { class: 'hint', text: state.classes().length ? 'Type its class (or 1–9), Enter · j/k move · u undo'
          : 'Type its class name and press Enter: that makes the first class.' })));
  }

  private idleLine(): string {
    const { state } = this.app;
    const r = state.next;
    const preview = this.waiting();
    if (!r) return preview ? waitLine('The images to label next are chosen', preview) : 'No images chosen yet.';
    const left = this.remaining();
    const m = state.meta!;
    const labelled = m.label.filter((l) => l != null).length;
    return left ? `Round ${state.round}: ${left} of ${r.items.length} to go · ${labelled} of ${m.count} images labelled.`
      : `Round ${state.round} done · ${labelled} of ${m.count} images labelled.`;
  }

  /** The preview of the shown network's pipeline while it still places the images, else null. */
  private waiting() { return this.app.pipelines.preview(this.app.state.network); }

  private setBusy(text: string | null) {
    if (this.busyRun !== this.app.state.run) return;
    this.app.state.nextBusy = text;
    const span = this.line.querySelector('span');
    if (text && span && this.line.isConnected) span.textContent = text;
    else this.renderList();
  }

  /** Ask the server for the next images (a `suggest` job) and go to the first. */
  async suggest() {
    const { state } = this.app;
    const run = state.run;
    this.busyRun = run;
    this.setBusy('Choosing the images to look at next…');
    let job: Job<SuggestResult>;
    try {
      job = await follow(run, await startJob<SuggestResult>(run, 'suggest', { n: ROUND }), (j) => {
        if (run === state.run) this.setBusy(`Choosing the images to look at next… ${j.state === 'queued' ? 'waiting for the worker' : j.stage ?? ''}`);
      });
    } catch (e) { job = { state: 'failed', error: errorText(e) } as Job<SuggestResult>; }
    if (run !== state.run || this.busyRun !== run) return;
    state.nextBusy = null;
    if (job.state !== 'done' || !job.result) {
      state.nextNote = `No images chosen: ${jobWhy(job)}`;
      this.renderList();
      return;
    }
    state.next = job.result;
    state.nextRun = run;
    state.nextDone.clear();
    state.nextPos = -1;
    state.round += 1;
    this.renderList();
    if (state.tab === 'next' && this.remaining()) this.next();
  }

  /** Predict again with every network that has features (when every class has enough labels), then a new round. */
  async round() {
    const { state, notices } = this.app;
    if (state.nextBusy) return;
    const run = state.run;
    this.busyRun = run;
    const counts = state.trainCounts();
    const short = [...counts].filter(([, n]) => n < MIN_PER_CLASS);
    const labelled = [...counts.values()].reduce((a, b) => a + b, 0);
    if (counts.size < 2 || short.length) {
      state.nextNote = counts.size < 2
        ? `Predictions start once two classes have ${MIN_PER_CLASS} labels each (${counts.size ? `only ${[...counts.keys()][0]} so far` : 'no labels yet'}).`
        : `Predictions wait until every class has ${MIN_PER_CLASS} labels: ${short.map(([c, n]) => `${c} has ${n}`).join(', ')}`
          + ' (the Similar tab finds more like it).';
    } else {
      const nets = state.next?.networks.length ? state.next.networks : [state.network];
      const options = this.app.options.changedFor('predict');
      let failed = '';
      for (const [k, network] of nets.entries()) {
        const what = `Predicting every image with ${network}${nets.length > 1 ? ` (${k + 1}/${nets.length})` : ''} from ${labelled} labels…`;
        this.setBusy(what);
        try {
          const end = await follow(run, await startJob(run, 'predict', { ...options, network }), (j) => this.setBusy(`${what} ${j.stage ?? j.state}`));
          if (end.state !== 'done') failed = `${network}: ${jobWhy(end)}`;
        } catch (e) { failed = `${network}: ${errorText(e)}`; }
        if (failed) break;
      }
      if (run !== state.run) return;  // the other run's page prepares its own rounds
      state.nextNote = failed ? `Predictions not updated: ${failed}` : `Predicted every image from ${labelled} labels of ${counts.size} classes.`;
      if (failed) notices.toast(state.nextNote, 6000);
      else {
        state.nextBusy = 'Predicted; loading the new predictions…';
        if (state.network) await this.app.centre.loadView(state.network, true);
        void this.accuracy.load(true);
        this.app.dataset.loadMetrics();
      }
    }
    try { state.summary = await getSummary(run); this.app.renderLeft(); } catch { /* keep the counts shown */ }
    state.nextBusy = null;
    await this.suggest();
  }

  /** Make the `id` image current if it is in the queue. */
  goTo(id: number) {
    const { state } = this.app;
    const k = state.next?.items.findIndex((it) => it.id === id) ?? -1;
    const i = state.idIndex.get(id);
    if (k < 0 || i === undefined) return;
    state.nextPos = k;
    this.app.centre.setCurrent(i, true);
    this.renderList();
  }

  /** Go to the next image still to do (or back one with step -1); past the last, start the next round. */
  next(step = 1) {
    const { state } = this.app;
    const items = state.next?.items ?? [];
    if (!items.length || !state.meta) return;
    const curItem = state.nextItem();
    let k = curItem ? items.indexOf(curItem) : step > 0 ? -1 : items.length;
    for (let n = 0; n < items.length; n++) {
      k += step;
      if (k < 0 || k >= items.length) break;
      if (step < 0 || !this.done(items[k])) { this.goTo(items[k].id); return; }
    }
    if (step < 0) return;
    const left = this.remaining();
    if (!left) { void this.round(); return; }
    // Skipped images are still to do: go round to the first of them.
    const first = items.find((it) => !this.done(it));
    if (first && first.id !== curItem?.id) { this.goTo(first.id); this.app.notices.toast(`${left} skipped image${left > 1 ? 's' : ''} still to do`); }
  }
}
