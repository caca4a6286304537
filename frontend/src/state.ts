// The panel's state: which run and network are shown, their data, what is selected, how points are
// coloured, the review queue and the undo stack. Modules read and change it; the DOM is drawn from it.
import type { Kind, Metadata, Network, ReviewAnswer, ReviewItem, Run, SuggestItem, SuggestResult, Summary } from './types';

export type Overlay = 'label' | 'predicted' | 'cluster' | 'split' | 'disagreement';
export const OVERLAYS: [Overlay, string][] = [['label', 'Colour: expert label'], ['predicted', 'Colour: predicted label'],
  ['cluster', 'Colour: cluster'], ['split', 'Colour: split'], ['disagreement', 'Colour: disagreement']];

export type Tab = 'next' | 'clusters' | 'similar' | 'duplicates' | 'review';
export type Target = { kind: 'none' | 'image' | 'selection' } | { kind: 'cluster'; cluster: number };

/** One labelling action, as the labels it replaced: undo gives them back. */
export interface UndoEntry { run: string; assignments: [number, string | null][] }

const stored = (key: string) => localStorage.getItem(key);

export class State {
  runs: Run[] = [];
  run = '';
  summary: Summary | null = null;
  networks: Network[] = [];
  /** Job kinds and their parameters (/kinds), by kind. */
  kinds = new Map<string, Kind>();

  /** The network whose view is shown, and its per-image columns. */
  network = '';
  meta: Metadata | null = null;
  idIndex = new Map<number, number>();   // image id -> point index
  loadToken = 0;                         // the latest view load; older ones stop

  overlay: Overlay = 'label';
  /** What the user picked in the colour select; kept for the browser session, over any default. */
  chosenOverlay: Overlay | null = OVERLAYS.find(([o]) => o === sessionStorage.getItem('nipgboard.overlay'))?.[0] ?? null;
  categories: string[] = [];             // per point, the overlay category
  search = '';

  selection = new Set<number>();         // point indices
  current = -1;                          // point index the keyboard acts on
  target: Target = { kind: 'none' };

  tab: Tab = 'next';
  /** The "Next" queue: the latest suggest round of `nextRun`, the keyboard's place in it, the images
   * labelled from it (undo takes them out again), and what the round is doing now (null: waiting for
   * the expert). `nextNote`: how the last round went, in a line. */
  next: SuggestResult | null = null;
  nextRun = '';
  nextPos = 0;
  nextDone = new Set<number>();
  nextBusy: string | null = null;
  nextNote = '';
  round = 0;
  review: ReviewAnswer | null = null;
  reviewById = new Map<number, ReviewItem>();
  reviewPos = 0;
  /** Labels saved since the review queue was last loaded: its predictions no longer know them. */
  editsSinceQueue = 0;
  /** Progress text while the predictions are updated, else null. */
  updating: string | null = null;
  /** Predict again by itself after every 1% of the unlabelled images labelled: reviewing in such rounds
   * finds more of the wrong labels than one fixed ordering (bench/quality.py). */
  autoUpdate = stored('nipgboard.autoUpdate') !== 'off';
  autoRetryAt = 0;  // after a failed automatic update: try again one round later, not at every label

  undo: UndoEntry[] = [];

  setRun(run: string) {
    this.run = run;
    localStorage.setItem('nipgboard.run', run);
  }

  /** The run to open: the one last shown, if it still exists. */
  initialRun(): string {
    const saved = stored('nipgboard.run');
    return this.runs.find((r) => r.name === saved) ? saved! : this.runs[0].name;
  }

  /** The network last shown for this run, if any. */
  savedNetwork(): string | null { return stored('nipgboard.network:' + this.run); }

  setMeta(network: string, meta: Metadata) {
    this.network = network;
    localStorage.setItem('nipgboard.network:' + this.run, network);
    this.meta = meta;
    this.idIndex = new Map(meta.ids.map((id, i) => [id, i]));
    this.selection.clear();
    this.current = -1;
    this.target = { kind: 'none' };
  }

  setReview(review: ReviewAnswer) {
    this.review = review;
    this.reviewById = new Map(review.items.map((it) => [it.id, it]));
    this.editsSinceQueue = 0;
    this.autoRetryAt = 0;
  }

  setAutoUpdate(on: boolean) {
    this.autoUpdate = on;
    localStorage.setItem('nipgboard.autoUpdate', on ? 'on' : 'off');
  }

  chooseOverlay(o: Overlay) {
    this.chosenOverlay = o;
    sessionStorage.setItem('nipgboard.overlay', o);
  }

  /** Class names: the expert's, the review queue's and those given in this session. */
  classes(): string[] {
    const set = new Set<string>(Object.keys(this.summary?.classes ?? {}));
    if (this.review) for (const c of this.review.classes) set.add(c);
    if (this.meta) for (const l of this.meta.label) if (l) set.add(l);
    return [...set].sort();
  }

  /** The Next queue's item of the current image, if it is one. */
  nextItem(): SuggestItem | null {
    const m = this.meta, i = this.current;
    if (!m || i < 0 || !this.next) return null;
    return this.next.items.find((it) => it.id === m.ids[i]) ?? null;
  }

  /** Expert labels per class among the images a prediction learns from (not the test split). */
  trainCounts(): Map<string, number> {
    const out = new Map<string, number>();
    const m = this.meta;
    m?.label.forEach((l, i) => { if (l != null && m.split[i] !== 'test') out.set(l, (out.get(l) ?? 0) + 1); });
    return out;
  }

  /** Image ids a label would go to: the cluster's, or the selection's. */
  targetIds(): number[] {
    const m = this.meta;
    if (!m) return [];
    const t = this.target;
    if (t.kind === 'cluster' && m.cluster) {
      const out: number[] = [];
      m.cluster.forEach((c, i) => { if (c === t.cluster) out.push(m.ids[i]); });
      return out;
    }
    return [...this.selection].map((i) => m.ids[i]);
  }

  /** Point indices of a cluster. */
  clusterIndices(cluster: number): number[] {
    const out: number[] = [];
    this.meta?.cluster?.forEach((c, i) => { if (c === cluster) out.push(i); });
    return out;
  }

  /** The label the networks suggest for the current image. */
  suggestion(): string | null {
    const m = this.meta, i = this.current;
    if (!m || i < 0) return null;
    const item = this.tab === 'next' ? this.nextItem() : null;
    if (item?.prediction) return item.prediction;
    return this.reviewById.get(m.ids[i])?.consensus ?? m.predicted?.[i] ?? m.cluster_label?.[i] ?? null;
  }

  /** Labels per round of review: 1% of the unlabelled images, at least one. */
  updateEvery(): number { return Math.max(1, Math.round(0.01 * (this.review?.unlabelled ?? 0))); }
}
