// The centre of the panel: loads a network's points, metadata and thumbnail atlases into the 3-D
// view, colours the points by the chosen overlay (with its legend), and turns pointer actions
// (hover, click, box, lasso, search) into the selection.
import { ApiError, getBinary, getMetadata, getSpriteIndex, loadImage, startJob, url } from './api';
import { catColour, hexRGB } from './colours';
import { errorText, fmtCount, h } from './dom';
import type { App } from './index';
import { follow, previewOf } from './jobs';
import { OVERLAYS, type Overlay } from './state';
import type { Metadata, PipelinePreview } from './types';
import { type Atlas, PointView, type Tool } from './view';

const THUMB_LIMIT = 150_000; // above this many points the view draws dots only

export class Centre {
  view: PointView;
  tip = h('div', { class: 'tip', style: 'display:none' });
  legendEl = h('div', { class: 'legend', style: 'display:none' });
  toolbar = h('div', { class: 'toolbar' });
  overlaySelect = h('select', { id: 'nb-overlay', title: 'Colour by' }) as HTMLSelectElement;
  firstPictureMs = 0;
  /** Every preview shown while a pipeline placed its images: how many had a place, of all (for tests). */
  previews: { network: string; placed: number; images: number }[] = [];
  /** True while a run is being opened (it picks the network to show itself). */
  opening = false;
  /** The preview series shown: the pipeline job whose placed images are shown, and its metadata. */
  private series: { run: string; network: string; job: number; meta: Metadata; placed: number } | null = null;
  /** The token of the view load under way (0: none): previews wait until it ends, so no two overlap. */
  private loading = 0;

  constructor(private app: App, el: HTMLElement) {
    this.view = new PointView(el);
    el.append(this.toolbar, this.legendEl, app.notices.statusEl, app.notices.msgEl);
    this.view.onHover = (i, x, y) => this.hover(i, x, y);
    this.view.onClick = (i, ev) => this.clickPoint(i, ev);
    this.view.onSelect = (idx, add) => this.select(idx, add);
    this.buildToolbar();
  }

  // -- loading ------------------------------------------------------------------------------------
  /** The points of a network, as n*3 coordinates (NaN where an image has no place yet). */
  private async fetchPoints(run: string, network: string, onProgress?: (done: number, total: number) => void) {
    const pts = await getBinary('points', { run, network }, onProgress);
    const dims = Number(pts.headers.get('X-NIPGBoard-Dims') || 3);
    const raw = new Float32Array(pts.buf);
    const count = Number(pts.headers.get('X-NIPGBoard-Count') || raw.length / dims);
    const pos = new Float32Array(count * 3);
    for (let i = 0; i < count; i++) for (let k = 0; k < dims && k < 3; k++) pos[i * 3 + k] = raw[i * dims + k];
    return { pos, dims, count };
  }

  /** Show a network: its points, its metadata, then its thumbnails. False when it has no projection.
   * While the network's pipeline still places its images, its preview instead (dots only). */
  async loadView(network: string, quiet = false): Promise<boolean> {
    if (this.app.pipelines.preview(network)) return this.loadPreview(network, quiet);
    const { state, notices } = this.app;
    const token = ++state.loadToken;
    this.loading = token;
    try {
      const run = state.run;
      const t0 = performance.now();
      let pts: { pos: Float32Array; dims: number; count: number };
      try {
        notices.status(`Loading ${network}…`);
        pts = await this.fetchPoints(run, network, (d, t) =>
          notices.status(`Loading ${network} points… ${t ? Math.round((100 * d) / t) + '%' : Math.round(d / 1024) + ' KiB'}`));
      } catch (e) {
        if (!quiet) notices.toast(errorText(e), 5000);
        notices.status('');
        return false;
      }
      if (token !== state.loadToken) return true;
      const meta = await getMetadata(run, network);
      if (token !== state.loadToken) return true;
      const { pos, dims, count } = pts;
      // The end of a preview: the whole view where the user left the camera.
      const v = this.view, cam = v.camera.position.clone(), target = v.controls.target.clone();
      const keepCamera = this.series?.network === network && state.network === network && v.n === count && v.dims === dims;
      this.series = null;
      state.setMeta(network, meta);
      notices.message(null);
      v.thumbs = count <= THUMB_LIMIT;
      v.setPoints(pos, dims, []);
      if (keepCamera) { v.camera.position.copy(cam); v.controls.target.copy(target); v.controls.update(); }
      this.setOverlay(state.chosenOverlay ?? this.defaultOverlay(meta));
      this.view.renderNow();
      this.firstPictureMs = performance.now() - t0;
      notices.status(`${count} images · ${network} · ${dims}-D${this.view.thumbs ? ' · loading thumbnails…' : ' · dots'}`);
      this.app.networks.updateCards();
      this.app.renderRight();
      if (this.view.thumbs) void this.loadSprites(pos, dims, count, token);
      return true;
    } finally {
      if (this.loading === token) this.loading = 0;
    }
  }

  /**
   * A running pipeline of `network` reports more images placed: show them, unless another network is
   * shown or a load is under way (the next report brings the latest). Called on every poll of the job.
   */
  preview(network: string, job: number, p: PipelinePreview) {
    const { state } = this.app;
    if (this.opening || this.loading || (state.network && state.network !== network)) return;
    const s = this.series;
    if (s && s.run === state.run && s.network === network && s.job === job && s.placed === p.placed) return;
    void this.loadPreview(network, true);
  }

  /**
   * The images a running pipeline has placed so far, as dots: no thumbnails (drawing them would compete
   * with the embedding for the CPUs), the metadata read once per pipeline, the camera kept while the
   * same network is shown. The status line says how many images are still coming.
   */
  private async loadPreview(network: string, quiet: boolean): Promise<boolean> {
    const { state, notices } = this.app;
    const job = this.app.pipelines.running.get(network), p = previewOf(job);
    if (!job || !p) return false;
    const token = ++state.loadToken, run = state.run, v = this.view;
    this.loading = token;
    try {
      let pts: { pos: Float32Array; dims: number; count: number };
      try {
        if (!v.n) notices.status(`Loading the ${fmtCount(p.placed)} images of ${network} placed so far…`);
        pts = await this.fetchPoints(run, network);
      } catch (e) {
        if (!quiet) notices.toast(errorText(e), 5000);
        return false;
      }
      if (token !== state.loadToken) return true;
      const s = this.series;
      let meta = s && s.run === run && s.network === network && s.job === job.id ? s.meta : null;
      if (!meta || meta.count !== pts.count) {
        meta = await getMetadata(run, network);
        if (token !== state.loadToken) return true;
      }
      this.series = { run, network, job: job.id, meta, placed: p.placed };
      const { pos, dims, count } = pts;
      const keepCamera = state.network === network && v.n === count && v.dims === dims;
      const cam = v.camera.position.clone(), target = v.controls.target.clone();
      const fresh = state.network !== network || state.meta !== meta;
      if (fresh) state.setMeta(network, meta);
      notices.message(null);
      v.setPoints(pos, dims, []);
      if (keepCamera) { v.camera.position.copy(cam); v.controls.target.copy(target); v.controls.update(); }
      this.setOverlay(fresh ? state.chosenOverlay ?? this.defaultOverlay(meta) : state.overlay);
      this.applyFlags();
      v.renderNow();
      this.previews.push({ network, placed: v.placedCount, images: count });
      const left = count - v.placedCount;
      notices.status(left > 0
        ? `${fmtCount(v.placedCount)} of ${fmtCount(count)} images placed · ${fmtCount(left)} still coming · ${network} · ${dims}-D · dots until the embedding ends`
        : `${fmtCount(count)} images placed · ${network} · ${dims}-D · dots until the pipeline ends (${p.phase || 'finishing'})`);
      if (fresh) { this.app.networks.updateCards(); this.app.renderRight(); }
      else if (state.tab === 'clusters' || state.tab === 'next') this.app.renderTab();
      return true;
    } finally {
      if (this.loading === token) this.loading = 0;
    }
  }

  /** The pipeline whose preview is shown ended without finishing: say so where "still coming" was. */
  previewEnded(network: string, why: string) {
    const { state, notices } = this.app;
    if (this.series?.network !== network || state.network !== network) return;
    this.series = null;
    const v = this.view;
    notices.status(`${fmtCount(v.placedCount)} of ${fmtCount(v.n)} images placed · ${network}: ${why}; click the network to place the rest`);
    if (state.tab === 'clusters' || state.tab === 'next') this.app.renderTab();
  }

  private async loadSprites(pos: Float32Array, dims: number, count: number, token: number) {
    const { state, notices } = this.app;
    const run = state.run, tile = count > 20000 ? 32 : 64;
    try {
      let index = await getSpriteIndex(run, tile);
      if (!index.pages.every((p) => p.ready)) {
        // Draw missing pages in the worker (a first visit on a big set); the dots stay meanwhile.
        try { await getBinary('sprite', { run, page: 0, tile }); } catch (e) {
          if (!(e instanceof ApiError && e.status === 409)) throw e;
          const job = await startJob(run, 'sprites', { tile });
          await follow(run, job, (j) => notices.status(`Drawing thumbnails… ${j.done}/${j.total ?? count}`));
        }
        index = await getSpriteIndex(run, tile);
      }
      const atlases: Atlas[] = [];
      let loaded = 0;
      for (const p of index.pages) {
        if (token !== state.loadToken) return;
        const img = await loadImage(url('sprite', { run, page: p.page, tile }));
        const bmp: TexImageSource = 'createImageBitmap' in window ? await createImageBitmap(img) : img;
        atlases.push({ image: bmp, width: p.width, height: p.height, cell: tile, perRow: p.columns, start: p.first, count: p.count });
        loaded += p.count;
        notices.status(`Loading thumbnails… ${Math.round((100 * loaded) / count)}%`);
      }
      if (token !== state.loadToken) return;
      const v = this.view;
      const cam = v.camera.position.clone(), target = v.controls.target.clone();
      const colors = v.colors.slice(), flags = v.flags.slice();
      v.setPoints(pos, dims, atlases);
      v.colors.set(colors); v.flags.set(flags);
      v.colorsChanged(); v.flagsChanged();
      v.camera.position.copy(cam); v.controls.target.copy(target); v.controls.update();
      notices.status(`${count} images · ${state.network} · ${dims}-D · thumbnails`);
    } catch (e) {
      notices.status(`${count} images · ${state.network} · dots (thumbnails unavailable: ${errorText(e)})`);
    }
  }

  private buildToolbar() {
    const { state } = this.app;
    const tools: [Tool, string, string][] = [['orbit', 'Orbit', 'drag: rotate (3-D) / pan (2-D); wheel: zoom; right drag: pan; shift-drag: box select'], ['box', 'Box', 'drag a box to select'], ['lasso', 'Lasso', 'draw around points to select']];
    const toolBtns = tools.map(([t, label, title]) => h('button', {
      text: label, title, class: t === 'orbit' ? 'on' : '', 'data-tool': t,
      onClick: () => { this.view.tool = t; toolBtns.forEach((b) => b.classList.toggle('on', b.dataset.tool === t)); },
    }));
    for (const [v, t] of OVERLAYS) this.overlaySelect.append(h('option', { value: v, text: t }));
    this.overlaySelect.addEventListener('change', () => {
      const o = this.overlaySelect.value as Overlay;
      state.chooseOverlay(o);
      this.setOverlay(o);
    });
    const search = h('input', { type: 'search', placeholder: 'Search path, label or id…', id: 'nb-search' }) as HTMLInputElement;
    search.addEventListener('input', () => { state.search = search.value.trim().toLowerCase(); this.applyFlags(); });
    search.addEventListener('keydown', (e) => {
      if (e.key === 'Enter' && state.search) {
        const m = this.matches();
        this.select(m, false);
        this.app.notices.toast(`${m.length} selected`);
      }
    });
    const size = h('input', { type: 'range', min: '0.2', max: '4', step: '0.1', value: '1', title: 'Thumbnail size' }) as HTMLInputElement;
    size.addEventListener('input', () => this.view.setSizeFactor(Number(size.value)));
    const thumbs = h('button', { text: 'Dots', title: 'Switch between thumbnails and dots', onClick: () => {
      if (!state.network) return;
      this.view.thumbs = !this.view.thumbs; thumbs.textContent = this.view.thumbs ? 'Dots' : 'Thumbnails';
      void this.loadView(state.network);
    } });
    this.toolbar.append(...toolBtns, this.overlaySelect, search, h('label', {}, 'size ', size), thumbs,
      h('button', { text: 'Reset view', onClick: () => this.view.resetCamera() }),
      h('button', { text: 'Clear selection', onClick: () => this.select([], false) }));
  }

  // -- colours ----------------------------------------------------------------------------------------
  setOverlay(o: Overlay) {
    this.app.state.overlay = o;
    this.overlaySelect.value = o;
    this.applyOverlay();
  }

  /** The most informative colouring a network's results allow: with few expert labels most points would be grey. */
  defaultOverlay(m: Metadata): Overlay {
    if (m.predicted?.some((p) => p != null)) return 'predicted';
    if (m.cluster?.some((c) => c != null)) return 'cluster';
    return 'label';
  }

  private category(m: Metadata, i: number): string {
    switch (this.app.state.overlay) {
      case 'label': return m.label[i] ?? '(no label)';
      case 'predicted': return m.label[i] ?? m.predicted?.[i] ?? m.cluster_label?.[i] ?? '(no label)';
      case 'cluster': { const c = m.cluster?.[i]; return c == null || c < 0 ? '(no cluster)' : `cluster ${c}`; }
      case 'split': return m.split[i];
      case 'disagreement': {
        if (m.label[i] != null) return 'expert label';
        const r = this.app.state.reviewById.get(m.ids[i]);
        if (!r) return 'agree';
        return r.dissenters.length || r.reasons.some((x) => /^networks disagree/i.test(x)) ? 'networks disagree' : 'unsure';
      }
    }
  }

  /** Colour every point by its category and list the categories of the points in the view (those
   * with a place) in the legend. Colours come from every image's category, so they stay put while a
   * running pipeline places more images. */
  applyOverlay() {
    const { state } = this.app;
    const m = state.meta;
    if (!m) return;
    const n = m.count;
    const cats = new Array<string>(n);
    const all = new Set<string>(), counts = new Map<string, number>();
    for (let i = 0; i < n; i++) {
      const c = this.category(m, i);
      cats[i] = c;
      all.add(c);
      if (this.placed(i)) counts.set(c, (counts.get(c) || 0) + 1);
    }
    state.categories = cats;
    const keys = [...all].sort((a, b) => {
      const na = /^cluster (\d+)$/.exec(a), nb = /^cluster (\d+)$/.exec(b);
      if (na && nb) return Number(na[1]) - Number(nb[1]);
      return a.localeCompare(b);
    });
    const colour = new Map<string, string>();
    keys.forEach((k, r) => colour.set(k, catColour(k, r)));
    const C = this.view.colors;
    for (let i = 0; i < n; i++) { const [r, g, b] = hexRGB(colour.get(cats[i])!); C[i * 3] = r; C[i * 3 + 1] = g; C[i * 3 + 2] = b; }
    this.view.colorsChanged();
    const inView = keys.filter((k) => counts.has(k));
    const byCount = [...inView].sort((a, b) => counts.get(b)! - counts.get(a)!);
    const shown = state.overlay === 'cluster' ? inView.slice(0, 60) : byCount.slice(0, 60);
    this.legendEl.replaceChildren(h('div', { class: 'muted', text: `${inView.length} groups — click one to select it` }),
      ...shown.map((k) => h('div', { class: 'it', title: 'select these images', onClick: () => this.select(this.indicesOf(k), false) },
        h('span', { class: 'sw', style: `background:${colour.get(k)}` }), h('span', { text: k }), h('span', { class: 'muted', text: String(counts.get(k)) }))),
      inView.length > shown.length ? h('div', { class: 'muted', text: `… ${inView.length - shown.length} more` }) : '');
    this.legendEl.style.display = '';
  }

  /** Whether point i is in the view (has a place); every point is while the view holds other data. */
  private placed(i: number) { const p = this.view.placed; return p.length !== this.app.state.meta?.count || p[i] === 1; }

  /** The points of a legend group that are in the view. */
  private indicesOf(cat: string) {
    const out: number[] = [];
    this.app.state.categories.forEach((c, i) => { if (c === cat && this.placed(i)) out.push(i); });
    return out;
  }

  /** Points whose path contains the search text, or whose label, prediction or id is it. */
  private matches(): number[] {
    const { meta: m, search: q } = this.app.state;
    if (!m || !q) return [];
    const out: number[] = [];
    for (let i = 0; i < m.count; i++) {
      if (m.paths[i].toLowerCase().includes(q) || (m.label[i] || '').toLowerCase() === q
        || (m.predicted?.[i] || '').toLowerCase() === q || String(m.ids[i]) === q) out.push(i);
    }
    return out;
  }

  applyFlags() {
    const { state } = this.app;
    if (!state.meta) return;
    const F = this.view.flags;
    if (state.search) { F.fill(2); for (const i of this.matches()) F[i] = 0; } else F.fill(0);
    for (const i of state.selection) F[i] = 1;
    if (state.current >= 0) F[state.current] = 3;
    this.view.flagsChanged();
  }

  // -- pointer and selection ----------------------------------------------------------------------------
  private hover(i: number, x: number, y: number) {
    const { state } = this.app;
    const m = state.meta;
    if (i < 0 || !m) { this.tip.style.display = 'none'; return; }
    const id = m.ids[i];
    const r = this.view.canvas.getBoundingClientRect();
    const img = h('img', { src: url('image', { run: state.run, id }) });
    const lines = [`#${id} ${m.paths[i]}`, `split: ${m.split[i]}`, `label: ${m.label[i] ?? '—'}`];
    if (m.predicted) { const c = m.confidence?.[i]; lines.push(`predicted: ${m.predicted[i] ?? '—'}${c != null ? ` (${(c * 100).toFixed(0)}%)` : ''}`); }
    if (m.cluster) lines.push(`cluster: ${m.cluster[i] ?? '—'}${m.cluster_label?.[i] ? ' → ' + m.cluster_label[i] : ''}`);
    this.tip.replaceChildren(img, ...lines.map((l) => h('div', { text: l })));
    this.tip.style.display = '';
    const px = r.left + x + 16, py = r.top + y + 16;
    this.tip.style.left = Math.min(px, window.innerWidth - 290) + 'px';
    this.tip.style.top = Math.min(py, window.innerHeight - 340) + 'px';
  }

  private clickPoint(i: number, ev: MouseEvent) {
    const { state } = this.app;
    if (i < 0) { if (!ev.shiftKey) this.select([], false); return; }
    if (ev.ctrlKey || ev.metaKey) {
      if (state.selection.has(i)) state.selection.delete(i); else state.selection.add(i);
      state.target = { kind: state.selection.size > 1 ? 'selection' : 'image' };
      state.current = i;
      this.applyFlags(); this.app.labels.render();
      return;
    }
    this.setCurrent(i);
  }

  /** Make one image the current one (the keyboard labels it). */
  setCurrent(i: number, focus = false) {
    const { state } = this.app;
    state.selection = new Set(i >= 0 ? [i] : []);
    state.current = i;
    state.target = { kind: i >= 0 ? 'image' : 'none' };
    this.applyFlags();
    this.app.labels.render();
    if (focus && i >= 0) this.view.focus(i);
    if (state.tab === 'similar') this.app.renderTab();
  }

  setCurrentId(id: number) {
    const i = this.app.state.idIndex.get(id);
    if (i !== undefined) this.setCurrent(i, true);
  }

  select(indices: number[], additive: boolean) {
    const { state } = this.app;
    if (!additive) state.selection.clear();
    for (const i of indices) state.selection.add(i);
    state.current = state.selection.size === 1 ? [...state.selection][0] : -1;
    state.target = { kind: state.selection.size === 0 ? 'none' : state.selection.size === 1 ? 'image' : 'selection' };
    this.applyFlags();
    this.app.labels.render();
  }
}
