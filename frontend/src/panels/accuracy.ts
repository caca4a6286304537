// When to stop: the estimated accuracy after each prediction against the number of labels given
// (/accuracy), as a small SVG plot (on the left, under the dataset's counts) and the latest estimate
// in words (in the Next tab's round line).
import { ApiError, getAccuracy } from '../api';
import { errorText, h } from '../dom';
import type { App } from '../index';
import type { AccuracyAnswer, AccuracyPoint } from '../types';

const W = 264, H = 120, L = 34, R = 8, T = 8, B = 22;
const NS = 'http://www.w3.org/2000/svg';
const pct = (v: number) => `${Math.round(v * 100)}%`;

function svg(tag: string, attrs: Record<string, string | number>, text?: string): SVGElement {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  if (text !== undefined) el.textContent = text;
  return el;
}

/** The latest estimate in words: "about 93% of all images right; the last 200 labels gained 1 point". */
export function words(points: AccuracyPoint[]): string {
  const p = points[points.length - 1];
  let s = `About ${pct(p.overall)} of all images have a right label (predictions on the unlabelled: ${pct(p.accuracy)}, between ${pct(p.low)} and ${pct(p.high)}), after ${p.labels} labels`;
  const prev = points.length > 1 ? points[points.length - 2] : null;
  if (prev && p.labels > prev.labels) {
    const gain = (p.overall - prev.overall) * 100;
    const pts = Math.abs(gain) < 1 ? Math.abs(gain).toFixed(1) : String(Math.round(Math.abs(gain)));
    s += pts === '0.0' ? `; the last ${p.labels - prev.labels} labels changed it by less than 0.1 point`
      : `; the last ${p.labels - prev.labels} labels ${gain >= 0 ? 'gained' : 'lost'} ${pts} point${pts === '1' ? '' : 's'}`;
    if (gain < 0.5 && p.labels - prev.labels >= 20) s += ': more labels now change little, so this may be a good time to stop and export';
  }
  return s + '.';
}

export class AccuracyPlot {
  /** The plot; `words` the latest estimate in a line (shown apart, where it stays in sight). */
  el = h('div', { class: 'acc', id: 'nb-accuracy' });
  words = h('div', { class: 'acc-words', id: 'nb-accuracy-words' });
  private loaded = '';

  constructor(private app: App) {}

  /** Fetch the estimates of the shown network (again when `force`, e.g. after a prediction). */
  async load(force = false) {
    const { state } = this.app;
    const key = `${state.run}\t${state.network}`;
    if (!state.network || (!force && key === this.loaded)) return;
    this.loaded = key;
    let a: AccuracyAnswer | null = null;
    try { a = await getAccuracy(state.run, state.network); } catch (e) {
      if (!(e instanceof ApiError && (e.status === 404 || e.status === 409))) {
        this.words.textContent = 'Accuracy not read: ' + errorText(e);
        this.el.replaceChildren();
        return;
      }
    }
    if (key !== `${state.run}\t${state.network}`) return;
    this.draw(a);
  }

  draw(a: AccuracyAnswer | null) {
    const points = (a?.points ?? []).slice().sort((x, y) => x.labels - y.labels);
    if (!points.length) {
      this.words.textContent = 'Predict to see how accurate the labels are.';
      this.el.replaceChildren();
      this.el.style.display = 'none';
      return;
    }
    this.el.style.display = '';
    this.words.textContent = words(points);
    const x0 = points[0].labels, x1 = points[points.length - 1].labels;
    const lo = Math.max(0, Math.floor(Math.min(...points.map((p) => Math.min(p.low, p.overall))) * 10) / 10);
    const X = (v: number) => x1 === x0 ? (L + W - R) / 2 : L + ((v - x0) / (x1 - x0)) * (W - L - R);
    const Y = (v: number) => T + ((1 - v) / Math.max(1 - lo, 1e-6)) * (H - T - B);
    const plot = svg('svg', { width: W, height: H, viewBox: `0 0 ${W} ${H}`, class: 'acc-plot', role: 'img',
      'aria-label': 'estimated accuracy against labels given' });
    for (const v of [lo, (lo + 1) / 2, 1]) {
      plot.append(svg('line', { x1: L, x2: W - R, y1: Y(v), y2: Y(v), class: 'grid-line' }),
        svg('text', { x: L - 4, y: Y(v) + 3, 'text-anchor': 'end' }, pct(v)));
    }
    plot.append(svg('text', { x: L, y: H - 6 }, String(x0)), svg('text', { x: W - R, y: H - 6, 'text-anchor': 'end' }, `${x1} labels`));
    const band = points.map((p) => `${X(p.labels)},${Y(p.high)}`).concat(points.slice().reverse().map((p) => `${X(p.labels)},${Y(p.low)}`));
    plot.append(svg('polygon', { points: band.join(' '), class: 'band' }));
    for (const [key, cls] of [['accuracy', 'pool'], ['overall', 'all']] as const) {
      plot.append(svg('polyline', { points: points.map((p) => `${X(p.labels)},${Y(p[key])}`).join(' '), class: 'line ' + cls }));
      for (const p of points) {
        const dot = svg('circle', { cx: X(p.labels), cy: Y(p[key]), r: 3, class: 'dot ' + cls });
        dot.append(svg('title', {}, `${p.labels} labels: ${pct(p[key])}${key === 'accuracy' ? ` (${pct(p.low)}–${pct(p.high)})` : ''}`));
        plot.append(dot);
      }
    }
    this.el.replaceChildren(
      h('h2', { text: 'How accurate' }),
      h('div', { class: 'prog', text: `About ${pct(points[points.length - 1].overall)} of all images right, after ${x1} labels (estimated)` }), plot,
      h('div', { class: 'hint' }, h('span', { class: 'sw all' }), ' all images right ', h('span', { class: 'sw pool' }),
        ' predictions on the unlabelled (band: likely range)'),
      ...(a?.method ? [h('div', { class: 'hint', text: a.method })] : []));
  }
}
