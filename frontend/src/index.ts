// The NIPGBoard panel. TensorBoard loads this module inside the tab's iframe and calls render().
import { ApiError, Job, cancelJob, getBinary, getJSON, getJob, jobWhy, loadImage, post, startJob, url } from './api';
import { CSS as STYLE } from './style';
import { Atlas, PointView, Tool } from './view';

type Overlay = 'label' | 'predicted' | 'cluster' | 'split' | 'disagreement';
const OVERLAYS: [Overlay, string][] = [['label', 'Colour: expert label'], ['predicted', 'Colour: predicted label'],
  ['cluster', 'Colour: cluster'], ['split', 'Colour: split'], ['disagreement', 'Colour: disagreement']];

interface Meta {
  count: number; ids: number[]; paths: string[]; split: string[]; label: (string | null)[];
  cluster?: (number | null)[]; cluster_label?: (string | null)[]; predicted?: (string | null)[]; confidence?: (number | null)[];
}

const PALETTE = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b', '#e377c2', '#17becf', '#bcbd22',
  '#7f7f7f', '#aec7e8', '#ffbb78', '#98df8a', '#ff9896', '#c5b0d5', '#c49c94', '#f7b6d2', '#9edae5', '#dbdb8d', '#393b79'];
const FIXED: Record<string, string> = {
  '(no label)': '#5f6368', train: '#1e88e5', test: '#fdd835', pool: '#8d8d8d',
  'networks disagree': '#e53935', 'unsure': '#fb8c00', 'agree': '#43a047', 'expert label': '#1e88e5',
};
const PIPELINE = ['embed', 'project', 'cluster', 'predict'];
const THUMB_LIMIT = 150_000; // above this many points the view draws dots only

function h<K extends keyof HTMLElementTagNameMap>(tag: K, attrs: Record<string, any> = {}, ...kids: (Node | string | null | undefined)[]) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) (el as any)[k.toLowerCase()] = v;
    else if (k === 'text') el.textContent = String(v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of kids) if (c !== null && c !== undefined) el.append(c);
  return el;
}

function hexRGB(hex: string): [number, number, number] {
  const n = parseInt(hex.slice(1), 16);
  return [(n >> 16) & 255, (n >> 8) & 255, n & 255];
}

function catColour(key: string, rank: number) {
  if (FIXED[key]) return FIXED[key];
  if (rank < PALETTE.length) return PALETTE[rank];
  const hue = (rank * 137.508) % 360;
  const c = (1 - Math.abs(2 * 0.55 - 1)) * 0.65, x = c * (1 - Math.abs(((hue / 60) % 2) - 1)), m = 0.55 - c / 2;
  const [r, g, b] = hue < 60 ? [c, x, 0] : hue < 120 ? [x, c, 0] : hue < 180 ? [0, c, x] : hue < 240 ? [0, x, c] : hue < 300 ? [x, 0, c] : [c, 0, x];
  return '#' + [r, g, b].map((v) => Math.round((v + m) * 255).toString(16).padStart(2, '0')).join('');
}

const fmtSecs = (s: number | null | undefined) => s == null || !isFinite(s) ? '' : s < 90 ? `${Math.round(s)} s` : `${Math.round(s / 60)} min`;

class App {
  root = h('div', { class: 'nb-root' });
  left = h('div', { class: 'nb-left' });
  centre = h('div', { class: 'nb-centre' });
  right = h('div', { class: 'nb-right' });
  view: PointView;
  run = '';
  runs: any[] = [];
  summary: any = null;
  networks: any[] = [];
  network = '';
  meta: Meta | null = null;
  idIndex = new Map<number, number>();
  overlay: Overlay = 'label';
  // What the user picked in the colour select; kept for the browser session, over any default.
  chosenOverlay = OVERLAYS.find(([o]) => o === sessionStorage.getItem('nipgboard.overlay'))?.[0] ?? null;
  categories: string[] = [];      // per point, the overlay category
  selection = new Set<number>();  // point indices
  current = -1;                   // point index the keyboard acts on
  target: { kind: 'none' | 'image' | 'selection' | 'cluster'; cluster?: number } = { kind: 'none' };
  review: any = null;
  reviewPos = 0;
  clusters: any = null;
  undo: { run: string; assignments: [number, string | null][] }[] = [];
  running = new Map<string, { job: Job | null; stage: string; cancel: boolean }>();
  // Why a network's last run failed, by network id (apart from `networks`, which is re-fetched mid-run).
  failures = new Map<string, string>();
  /** Labels saved since the review queue was last loaded: its predictions no longer know them. */
  editsSinceQueue = 0;
  updating: string | null = null;
  // Predict again by itself after every 1% of the unlabelled images labelled: reviewing in such rounds
  // finds more of the wrong labels than one fixed ordering (bench/quality.py).
  autoUpdate = localStorage.getItem('nipgboard.autoUpdate') !== 'off';
  autoRetryAt = 0;  // after a failed automatic update: try again one round later, not at every label
  tab: 'review' | 'clusters' | 'similar' | 'duplicates' = 'review';
  search = '';
  opts = { method: 'umap', dims: 3, mode: 'supervised', n_neighbors: 15, min_dist: 0.1, graph: 'mst', resolution: 1.0,
    ...JSON.parse(localStorage.getItem('nipgboard.options') || '{}') };
  tip = h('div', { class: 'tip', style: 'display:none' });
  toasts = h('div', { class: 'toasts' });  // stacked, so that two at once stay readable
  statusEl = h('div', { class: 'status' });
  legendEl = h('div', { class: 'legend', style: 'display:none' });
  msgEl = h('div', { class: 'centre-msg' });
  toolbar = h('div', { class: 'toolbar' });
  firstPictureMs = 0;
  loadToken = 0;

  constructor() {
    document.head.append(h('style', {}, STYLE));
    document.body.append(this.root, this.tip, this.toasts);
    this.root.append(this.left, this.centre, this.right);
    this.view = new PointView(this.centre);
    this.centre.append(this.toolbar, this.legendEl, this.statusEl, this.msgEl);
    this.view.onHover = (i, x, y) => this.hover(i, x, y);
    this.view.onClick = (i, ev) => this.clickPoint(i, ev);
    this.view.onSelect = (idx, add) => this.select(idx, add);
    document.addEventListener('keydown', (e) => this.key(e));
    this.buildToolbar();
    (window as any).nipgboard = this;
  }

  // -- status ---------------------------------------------------------------------------------------
  status(text: string) { this.statusEl.textContent = text; this.statusEl.style.display = text ? '' : 'none'; }
  toast(text: string, ms = 2500) {
    const t = h('div', { class: 'toast', text });
    this.toasts.append(t);
    setTimeout(() => t.remove(), ms);
  }
  message(node: Node | null) {
    this.msgEl.replaceChildren();
    if (node) this.msgEl.append(h('div', {}, node));
    this.msgEl.style.display = node ? '' : 'none';
  }

  // -- start ----------------------------------------------------------------------------------------
  async start() {
    this.status('Loading…');
    let answer: any;
    try { answer = await getJSON('runs'); } catch (e: any) { this.message(h('div', { class: 'err', text: 'Cannot reach the NIPGBoard plugin: ' + e.message })); return; }
    this.runs = (answer.runs || []).filter((r: any) => r.dataset);
    if (!this.runs.length) { this.onboarding(answer); return; }
    const saved = localStorage.getItem('nipgboard.run');
    this.run = this.runs.find((r) => r.name === saved) ? saved! : this.runs[0].name;
    await this.loadRun();
  }

  onboarding(answer: any) {
    this.status('');
    this.left.replaceChildren(h('h2', { text: 'NIPGBoard' }), h('p', { class: 'muted', text: 'No dataset yet.' }));
    const folder = h('input', { placeholder: '/absolute/path/to/images', id: 'nb-folder' }) as HTMLInputElement;
    const csv = h('input', { placeholder: '/path/to/labels.csv (optional)' }) as HTMLInputElement;
    const name = h('input', { value: 'images' }) as HTMLInputElement;
    const sub = h('input', { type: 'checkbox' }) as HTMLInputElement;
    const out = h('div', { class: 'prog' });
    const go = h('button', {
      class: 'primary', text: 'Add folder', onClick: async () => {
        const params: any = { images: folder.value.trim() };
        if (csv.value.trim()) params.labels_csv = csv.value.trim();
        if (sub.checked) params.folder_labels = true;
        try {
          const job = await startJob(name.value.trim() || 'images', 'ingest', params);
          await this.follow(name.value.trim() || 'images', job, (j) => { out.textContent = this.describeJob(j); });
          location.reload();
        } catch (e: any) { out.textContent = e.message; out.className = 'err'; }
      },
    });
    this.message(h('div', {},
      h('h3', { text: 'Add an image folder' }),
      h('p', { text: answer.onboarding || 'This logdir holds no NIPGBoard dataset.' }),
      h('div', { text: 'Image folder (searched recursively):' }), folder,
      h('div', { text: 'Labels you already have, as a CSV of path,label rows:' }), csv,
      h('label', {}, sub, ' or: each image\'s first subfolder is its label'), h('br'),
      h('div', { text: 'Name of the new run:' }), name, go, out,
      h('p', { class: 'hint', text: 'Or in a shell: nipgboard init LOGDIR/RUN --images FOLDER [--labels CSV], then reload.' })));
  }

  async loadRun() {
    localStorage.setItem('nipgboard.run', this.run);
    this.failures.clear();
    const [summary, nets] = await Promise.all([getJSON('summary', { run: this.run }), getJSON('networks', { run: this.run })]);
    this.summary = summary;
    this.networks = nets.networks || [];
    this.renderLeft();
    this.renderRight();
    // A network's latest job, started before a reload or by a script: follow it while it runs, show
    // why it failed otherwise (newest first, so the first job seen per network is its latest).
    try {
      const jobs = await getJSON('jobs', { run: this.run, limit: 100 });
      const seen = new Set<string>();
      for (const j of jobs.jobs || []) {
        const net = j.params && j.params.network;
        if (!net || seen.has(net) || !PIPELINE.concat('search').includes(j.kind)) continue;
        seen.add(net);
        if ((j.state === 'queued' || j.state === 'running') && !this.running.has(net)) this.runPipeline(net, j);
        else if (j.state === 'failed' && !this.running.has(net)) { this.failures.set(net, `${j.kind} failed: ${jobWhy(j)}`); this.updateCard(net); }
      }
    } catch { /* no jobs */ }
    const withProjection = this.networks.filter((n) => n.available !== false);
    const saved = localStorage.getItem('nipgboard.network:' + this.run);
    const order = [saved, ...withProjection.map((n) => n.id)].filter(Boolean) as string[];
    for (const net of order) {
      if (await this.loadView(net, true)) return;
    }
    this.status('');
    this.message(h('div', {}, h('h3', { text: `${summary.images} images, ${summary.labelled} labelled` }),
      h('p', { text: 'Click a network on the left: it extracts every image\'s features, projects them to 3-D, groups them into clusters and predicts a label for every image. Progress shows beside the network.' })));
  }

  // -- left panel -----------------------------------------------------------------------------------
  renderLeft() {
    const s = this.summary;
    const runSel = h('select', { onChange: (e: any) => { this.run = e.target.value; this.loadRun(); } }) as HTMLSelectElement;
    for (const r of this.runs) runSel.append(h('option', { value: r.name, text: `${r.name} (${r.images})`, selected: r.name === this.run }));
    const share = s.images ? Math.round((100 * s.labelled) / s.images) : 0;
    const unreadable = h('details', {}, h('summary', { text: `${s.unreadable.length} unreadable files` }),
      ...s.unreadable.slice(0, 200).map((u: any) => h('div', { class: 'prog' }, h('b', { text: u.path }), ': ' + u.reason)));
    const dups = h('details', {}, h('summary', { text: `${s.duplicates.length} exact duplicates removed` }),
      ...s.duplicates.slice(0, 200).map((d: any) => h('div', { class: 'prog', text: `${d.path} = ${d.kept}` })));
    const classes = Object.entries(s.classes || {}).map(([k, v]) => `${k} ${v}`).join(', ');
    this.left.replaceChildren(
      h('h2', { text: 'Dataset' }), runSel,
      h('div', { class: 'kv', id: 'nb-summary' },
        h('b', { text: String(s.images) }), h('span', { text: 'images' }),
        h('b', { text: `${s.labelled} (${share}%)` }), h('span', { text: 'labelled' }),
        h('b', { text: `${s.splits.train}/${s.splits.test}/${s.splits.pool}` }), h('span', { text: 'train / test / unlabelled' })),
      h('div', { class: 'prog', text: classes }), unreadable, dups,
      h('h2', { text: 'Networks' }),
      h('div', { id: 'nb-networks' }, ...this.networks.filter((n) => n.available !== false).map((n) => this.networkCard(n))),
      this.networks.some((n) => n.available === false) ? h('details', {},
        h('summary', { text: `${this.networks.filter((n) => n.available === false).length} more networks not available here (why)` }),
        ...this.networks.filter((n) => n.available === false).map((n) => this.networkCard(n))) : '',
      h('h2', { text: 'Projection and clusters' }), this.optionsForm(),
      h('h2', { text: 'Metrics' }), h('div', { id: 'nb-metrics', class: 'muted', text: '—' }),
      h('p', {}, h('a', { href: url('export', { run: this.run }), download: 'labels.csv', text: 'Export labels (CSV)' })));
    this.loadMetrics();
  }

  networkCard(n: any) {
    const id = n.id;
    const card = h('div', { class: 'net' + (n.available === false ? ' unavail' : ''), 'data-network': id });
    const run = this.running.get(id);
    const btn = h('button', {
      class: this.network === id ? 'on' : '', text: n.name || id, title: n.description || id, disabled: n.available === false,
      onClick: () => this.runPipeline(id),
    });
    const show = h('button', { text: 'Show', title: 'Show this network\'s view', onClick: () => this.loadView(id) });
    const info = h('span', { class: 'prog', text: n.cached ? `${n.cached} cached` : (n.feature_dim ? `${n.feature_dim}-d` : '') });
    card.append(h('div', { class: 'row' }, btn, info, show));
    if (n.available === false) card.append(h('div', { class: 'why', text: n.message || 'not available here' }));
    if (run) {
      const j = run.job;
      const frac = j && j.fraction != null ? j.fraction : 0;
      card.append(h('div', { class: 'bar' }, h('div', { style: `width:${Math.round(frac * 100)}%` })));
      card.append(h('div', { class: 'row' }, h('span', { class: 'prog', text: j ? this.describeJob(j) : `${run.stage}: queued` }),
        h('button', { text: 'Cancel', onClick: () => { run.cancel = true; if (run.job) cancelJob(this.run, run.job.id).catch(() => {}); } })));
    } else if (this.failures.has(id)) {
      card.append(h('div', { class: 'why err', text: this.failures.get(id)! }));
    }
    return card;
  }

  describeJob(j: Job) {
    const parts = [`${j.kind}${j.stage ? ' · ' + j.stage : ''}: ${j.state}`];
    if (j.total) parts.push(`${j.done}/${j.total}`);
    if (j.rate) parts.push(`${j.rate.toFixed(1)}/s`);
    if (j.eta) parts.push(`${fmtSecs(j.eta)} left`);
    return parts.join(' · ');
  }

  updateCard(id: string) {
    const old = this.left.querySelector(`.net[data-network="${CSS.escape(id)}"]`);
    const n = this.networks.find((x) => x.id === id);
    if (old && n) old.replaceWith(this.networkCard(n));
  }

  optionsForm() {
    const o = this.opts;
    const sel = (key: keyof typeof o, values: [string, string][]) => {
      const s = h('select', { name: key, onChange: (e: any) => { (o as any)[key] = key === 'dims' ? Number(e.target.value) : e.target.value; this.saveOpts(); } }) as HTMLSelectElement;
      for (const [v, t] of values) s.append(h('option', { value: v, text: t, selected: String(o[key]) === v }));
      return s;
    };
    const num = (key: keyof typeof o, step: string) => h('input', { type: 'number', name: key, step, value: String(o[key]), onChange: (e: any) => { (o as any)[key] = Number(e.target.value); this.saveOpts(); } });
    const auto = h('button', {
      text: 'Auto (grid search)', title: 'Try several UMAP and graph settings; keep the best by cross-validated accuracy on the train images',
      onClick: () => { if (this.network) this.runPipeline(this.network, null, true); else this.toast('Pick a network first'); },
    });
    return h('div', {},
      h('div', { class: 'opts' },
        h('span', { text: 'Method' }), sel('method', [['umap', 'UMAP'], ['pca', 'PCA (fast)']]),
        h('span', { text: 'View' }), sel('dims', [['3', '3-D'], ['2', '2-D']]),
        h('span', { text: 'Fit' }), sel('mode', [['supervised', 'with labels'], ['semi-supervised', 'with labels + unlabelled'], ['unsupervised', 'without labels']]),
        h('span', { text: 'Neighbours' }), num('n_neighbors', '1'),
        h('span', { text: 'Min. distance' }), num('min_dist', '0.05'),
        h('span', { text: 'Graph' }), sel('graph', [['mst', 'minimum spanning tree'], ['knn', 'kNN graph']]),
        h('span', { text: 'Resolution' }), num('resolution', '0.1')),
      h('div', { style: 'margin-top:5px' }, auto),
      h('div', { class: 'hint', text: 'Changes apply the next time you click a network.' }));
  }

  saveOpts() { localStorage.setItem('nipgboard.options', JSON.stringify(this.opts)); }

  async loadMetrics() {
    const el = this.left.querySelector('#nb-metrics');
    if (!el) return;
    try {
      const m = await getJSON('metrics', { run: this.run });
      const rows: any[] = m.rows || m.table || [];
      if (!rows.length) { el.textContent = 'No metrics yet.'; return; }
      const want = ['network', 'method', 'split', 'n', 'accuracy', 'precision', 'specificity', 'recall', 'f1', 'silhouette'];
      const keys = want.filter((k) => rows.some((r) => r[k] !== undefined && typeof r[k] !== 'object'));
      const fmt = (v: any) => typeof v === 'number' ? (Number.isInteger(v) ? String(v) : v.toFixed(3)) : v == null ? '' : String(v);
      el.replaceChildren(h('table', { class: 't' }, h('tr', {}, ...keys.map((k) => h('th', { text: k === 'specificity' ? 'spec.' : k === 'precision' ? 'prec.' : k }))),
        ...rows.map((r) => h('tr', {}, ...keys.map((k) => h('td', { text: fmt(r[k]) }))))));
      el.className = '';
    } catch (e: any) {
      el.textContent = e instanceof ApiError && e.status === 409 ? 'No metrics yet: run a network.' : e.message;
    }
  }

  // -- jobs -----------------------------------------------------------------------------------------
  async follow(run: string, job: Job, onUpdate: (j: Job) => void, shouldCancel = () => false): Promise<Job> {
    let j = job;
    let cancelled = false;
    while (j.state === 'queued' || j.state === 'running') {
      onUpdate(j);
      await new Promise((r) => setTimeout(r, 400));
      if (shouldCancel() && !cancelled) { cancelled = true; await cancelJob(run, j.id).catch(() => {}); }
      try { j = await getJob(run, j.id); } catch (e) { await new Promise((r) => setTimeout(r, 1000)); }
    }
    onUpdate(j);
    return j;
  }

  /** One click: embed, project, cluster, predict (each skipped quickly by the backend's caches), then show. */
  async runPipeline(network: string, resume: Job | null = null, search = false) {
    if (this.running.has(network)) return;
    this.failures.delete(network);
    const state = { job: null as Job | null, stage: 'embed', cancel: false };
    this.running.set(network, state);
    this.updateCard(network);
    const run = this.run;
    const o = this.opts;
    const params: Record<string, any> = {
      embed: { network },
      project: o.method === 'pca' ? { network, method: 'pca', n_components: o.dims, mode: o.mode }
        : { network, method: 'umap', n_components: o.dims, mode: o.mode, n_neighbors: o.n_neighbors, min_dist: o.min_dist },
      cluster: { network, graph: o.graph, resolution: o.resolution },
      predict: { network },
      search: { network, n_components: o.dims, apply: true },
    };
    let stages = search ? ['embed', 'search', 'predict'] : PIPELINE;
    if (resume) stages = stages.slice(Math.max(0, stages.indexOf(resume.kind)));
    let failed = '';
    try {
      for (const stage of stages) {
        if (state.cancel) { failed = 'cancelled'; break; }
        state.stage = stage;
        const job = resume && resume.kind === stage ? resume : await startJob(run, stage, params[stage]);
        resume = null;
        const done = await this.follow(run, job, (j) => { state.job = j; this.updateCard(network); }, () => state.cancel);
        if (done.state !== 'done') { failed = done.state === 'cancelled' ? 'cancelled' : `${stage} failed: ${jobWhy(done)}`; break; }
        if (stage === 'embed') this.refreshNetworks();
      }
    } catch (e: any) {
      failed = e.message;
    }
    this.running.delete(network);
    if (failed) this.failures.set(network, failed);
    this.updateCard(network);
    if (failed) { this.toast(`${network}: ${failed}`, 5000); return; }
    this.toast(`${network}: done`);
    await this.loadView(network);
    this.loadMetrics();
  }

  async refreshNetworks() {
    try { this.networks = (await getJSON('networks', { run: this.run })).networks || this.networks; } catch { /* keep */ }
  }

  // -- the view -------------------------------------------------------------------------------------
  async loadView(network: string, quiet = false): Promise<boolean> {
    const token = ++this.loadToken;
    const t0 = performance.now();
    let pts: { buf: ArrayBuffer; headers: Headers };
    try {
      this.status(`Loading ${network}…`);
      pts = await getBinary('points', { run: this.run, network }, (d, t) => this.status(`Loading ${network} points… ${t ? Math.round((100 * d) / t) + '%' : Math.round(d / 1024) + ' KiB'}`));
    } catch (e: any) {
      if (!quiet) this.toast(e.message, 5000);
      this.status('');
      return false;
    }
    if (token !== this.loadToken) return true;
    const meta: Meta = await getJSON('metadata', { run: this.run, network });
    if (token !== this.loadToken) return true;
    const dims = Number(pts.headers.get('X-NIPGBoard-Dims') || 3);
    const count = Number(pts.headers.get('X-NIPGBoard-Count') || meta.count);
    const raw = new Float32Array(pts.buf);
    const pos = new Float32Array(count * 3);
    for (let i = 0; i < count; i++) for (let k = 0; k < dims && k < 3; k++) pos[i * 3 + k] = raw[i * dims + k];
    this.network = network;
    localStorage.setItem('nipgboard.network:' + this.run, network);
    this.meta = meta;
    this.idIndex = new Map(meta.ids.map((id, i) => [id, i]));
    this.selection.clear();
    this.current = -1;
    this.message(null);
    this.view.thumbs = count <= THUMB_LIMIT;
    this.view.setPoints(pos, dims, []);
    this.setOverlay(this.chosenOverlay ?? this.defaultOverlay(meta));
    this.view.renderNow();
    this.firstPictureMs = performance.now() - t0;
    this.status(`${count} images · ${network} · ${dims}-D${this.view.thumbs ? ' · loading thumbnails…' : ' · dots'}`);
    for (const n of this.networks) this.updateCard(n.id);
    this.renderRight();
    if (this.view.thumbs) this.loadSprites(pos, dims, count, token);
    return true;
  }

  async loadSprites(pos: Float32Array, dims: number, count: number, token: number) {
    const tile = count > 20000 ? 32 : 64;
    try {
      let index = await getJSON('sprite_index', { run: this.run, tile });
      if (!index.pages.every((p: any) => p.ready)) {
        // Draw missing pages in the worker (a first visit on a big set); the dots stay meanwhile.
        try { await getBinary('sprite', { run: this.run, page: 0, tile }); }
        catch (e: any) {
          if (e instanceof ApiError && e.status === 409) {
            const job = await startJob(this.run, 'sprites', { tile });
            await this.follow(this.run, job, (j) => this.status(`Drawing thumbnails… ${j.done || 0}/${j.total || count}`));
          } else throw e;
        }
        index = await getJSON('sprite_index', { run: this.run, tile });
      }
      const atlases: Atlas[] = [];
      let loaded = 0;
      for (const p of index.pages) {
        if (token !== this.loadToken) return;
        const img = await loadImage(url('sprite', { run: this.run, page: p.page, tile }));
        const bmp = 'createImageBitmap' in window ? await createImageBitmap(img) : img;
        atlases.push({ image: bmp as any, width: p.width, height: p.height, cell: tile, perRow: p.columns, start: p.first, count: p.count });
        loaded += p.count;
        this.status(`Loading thumbnails… ${Math.round((100 * loaded) / count)}%`);
      }
      if (token !== this.loadToken) return;
      const cam = this.view.camera.position.clone(), target = this.view.controls.target.clone();
      const colors = this.view.colors.slice(), flags = this.view.flags.slice();
      this.view.setPoints(pos, dims, atlases);
      this.view.colors.set(colors); this.view.flags.set(flags);
      this.view.colorsChanged(); this.view.flagsChanged();
      this.view.camera.position.copy(cam); this.view.controls.target.copy(target); this.view.controls.update();
      this.status(`${count} images · ${this.network} · ${dims}-D · thumbnails`);
    } catch (e: any) {
      this.status(`${count} images · ${this.network} · dots (thumbnails unavailable: ${e.message})`);
    }
  }

  buildToolbar() {
    const tools: [Tool, string, string][] = [['orbit', 'Orbit', 'drag: rotate (3-D) / pan (2-D); wheel: zoom; right drag: pan; shift-drag: box select'], ['box', 'Box', 'drag a box to select'], ['lasso', 'Lasso', 'draw around points to select']];
    const toolBtns = tools.map(([t, label, title]) => h('button', {
      text: label, title, class: t === 'orbit' ? 'on' : '', 'data-tool': t,
      onClick: () => { this.view.tool = t; toolBtns.forEach((b) => b.classList.toggle('on', b.dataset.tool === t)); },
    }));
    const overlay = h('select', { id: 'nb-overlay', title: 'Colour by', onChange: (e: any) => {
      this.chosenOverlay = e.target.value;
      sessionStorage.setItem('nipgboard.overlay', e.target.value);
      this.setOverlay(e.target.value);
    } }) as HTMLSelectElement;
    for (const [v, t] of OVERLAYS) overlay.append(h('option', { value: v, text: t }));
    const search = h('input', { type: 'search', placeholder: 'Search path or label…', id: 'nb-search' }) as HTMLInputElement;
    search.addEventListener('input', () => { this.search = search.value.trim().toLowerCase(); this.applyFlags(); });
    search.addEventListener('keydown', (e) => {
      if (e.key === 'Enter' && this.search) {
        const m = this.matches();
        this.select(m, false);
        this.toast(`${m.length} selected`);
      }
    });
    const size = h('input', { type: 'range', min: '0.2', max: '4', step: '0.1', value: '1', title: 'Thumbnail size' }) as HTMLInputElement;
    size.addEventListener('input', () => this.view.setSizeFactor(Number(size.value)));
    const thumbs = h('button', { text: 'Dots', title: 'Switch between thumbnails and dots', onClick: () => {
      if (!this.network) return;
      this.view.thumbs = !this.view.thumbs; thumbs.textContent = this.view.thumbs ? 'Dots' : 'Thumbnails';
      this.loadView(this.network);
    } });
    this.toolbar.append(...toolBtns, overlay, search, h('label', {}, 'size ', size), thumbs,
      h('button', { text: 'Reset view', onClick: () => this.view.resetCamera() }),
      h('button', { text: 'Clear selection', onClick: () => this.select([], false) }));
  }

  setOverlay(o: Overlay) {
    this.overlay = o;
    (this.toolbar.querySelector('#nb-overlay') as HTMLSelectElement).value = o;
    this.applyOverlay();
  }

  /** The most informative colouring a network's results allow: with few expert labels most points would be grey. */
  defaultOverlay(m: Meta): Overlay {
    if (m.predicted?.some((p) => p != null)) return 'predicted';
    if (m.cluster?.some((c) => c != null)) return 'cluster';
    return 'label';
  }

  category(i: number): string {
    const m = this.meta!;
    switch (this.overlay) {
      case 'label': return m.label[i] ?? '(no label)';
      case 'predicted': return m.label[i] ?? m.predicted?.[i] ?? m.cluster_label?.[i] ?? '(no label)';
      case 'cluster': { const c = m.cluster?.[i]; return c == null || c < 0 ? '(no cluster)' : `cluster ${c}`; }
      case 'split': return m.split[i];
      case 'disagreement': {
        if (m.label[i] != null) return 'expert label';
        const r = this.reviewItem(m.ids[i]);
        if (!r) return 'agree';
        return (r.dissenters && r.dissenters.length) || (r.reasons || []).some((x: string) => /^networks disagree/i.test(x)) ? 'networks disagree' : 'unsure';
      }
    }
  }

  reviewById = new Map<number, any>();
  reviewItem(id: number) { return this.reviewById.get(id); }

  applyOverlay() {
    if (!this.meta) return;
    const n = this.meta.count;
    const cats = new Array<string>(n);
    const counts = new Map<string, number>();
    for (let i = 0; i < n; i++) { const c = this.category(i); cats[i] = c; counts.set(c, (counts.get(c) || 0) + 1); }
    this.categories = cats;
    const keys = [...counts.keys()].sort((a, b) => {
      const na = /^cluster (\d+)$/.exec(a), nb = /^cluster (\d+)$/.exec(b);
      if (na && nb) return Number(na[1]) - Number(nb[1]);
      return a.localeCompare(b);
    });
    const colour = new Map<string, string>();
    keys.forEach((k, r) => colour.set(k, catColour(k, r)));
    const C = this.view.colors;
    for (let i = 0; i < n; i++) { const [r, g, b] = hexRGB(colour.get(cats[i])!); C[i * 3] = r; C[i * 3 + 1] = g; C[i * 3 + 2] = b; }
    this.view.colorsChanged();
    const byCount = [...keys].sort((a, b) => counts.get(b)! - counts.get(a)!);
    const shown = this.overlay === 'cluster' ? keys.slice(0, 60) : byCount.slice(0, 60);
    this.legendEl.replaceChildren(h('div', { class: 'muted', text: `${keys.length} groups — click one to select it` }),
      ...shown.map((k) => h('div', { class: 'it', title: 'select these images', onClick: () => this.select(this.indicesOf(k), false) },
        h('span', { class: 'sw', style: `background:${colour.get(k)}` }), h('span', { text: `${k}` }), h('span', { class: 'muted', text: String(counts.get(k)) }))),
      keys.length > shown.length ? h('div', { class: 'muted', text: `… ${keys.length - shown.length} more` }) : '');
    this.legendEl.style.display = '';
  }

  indicesOf(cat: string) {
    const out: number[] = [];
    this.categories.forEach((c, i) => { if (c === cat) out.push(i); });
    return out;
  }

  matches(): number[] {
    if (!this.meta || !this.search) return [];
    const q = this.search, m = this.meta, out: number[] = [];
    for (let i = 0; i < m.count; i++) {
      if (m.paths[i].toLowerCase().includes(q) || (m.label[i] || '').toLowerCase() === q || (m.predicted?.[i] || '').toLowerCase() === q || String(m.ids[i]) === q) out.push(i);
    }
    return out;
  }

  applyFlags() {
    if (!this.meta) return;
    const F = this.view.flags;
    const n = this.meta.count;
    if (this.search) { F.fill(2); for (const i of this.matches()) F[i] = 0; } else F.fill(0);
    for (const i of this.selection) F[i] = 1;
    if (this.current >= 0) F[this.current] = 3;
    this.view.flagsChanged();
    void n;
  }

  // -- pointer --------------------------------------------------------------------------------------
  hover(i: number, x: number, y: number) {
    if (i < 0 || !this.meta) { this.tip.style.display = 'none'; return; }
    const m = this.meta, id = m.ids[i];
    const r = this.view.canvas.getBoundingClientRect();
    const img = h('img', { src: url('image', { run: this.run, id }) });
    const lines = [`#${id} ${m.paths[i]}`, `split: ${m.split[i]}`, `label: ${m.label[i] ?? '—'}`];
    if (m.predicted) lines.push(`predicted: ${m.predicted[i] ?? '—'}${m.confidence?.[i] != null ? ` (${(m.confidence![i]! * 100).toFixed(0)}%)` : ''}`);
    if (m.cluster) lines.push(`cluster: ${m.cluster[i] ?? '—'}${m.cluster_label?.[i] ? ' → ' + m.cluster_label[i] : ''}`);
    this.tip.replaceChildren(img, ...lines.map((l) => h('div', { text: l })));
    this.tip.style.display = '';
    const px = r.left + x + 16, py = r.top + y + 16;
    this.tip.style.left = Math.min(px, window.innerWidth - 290) + 'px';
    this.tip.style.top = Math.min(py, window.innerHeight - 340) + 'px';
  }

  clickPoint(i: number, ev: MouseEvent) {
    if (i < 0) { if (!ev.shiftKey) this.select([], false); return; }
    if (ev.ctrlKey || ev.metaKey) {
      if (this.selection.has(i)) this.selection.delete(i); else this.selection.add(i);
      this.target = { kind: this.selection.size > 1 ? 'selection' : 'image' };
      this.current = i;
      this.applyFlags(); this.renderLabelBar();
      return;
    }
    this.setCurrent(i);
  }

  setCurrent(i: number, focus = false) {
    this.selection = new Set(i >= 0 ? [i] : []);
    this.current = i;
    this.target = { kind: i >= 0 ? 'image' : 'none' };
    this.applyFlags();
    this.renderLabelBar();
    if (focus && i >= 0) this.view.focus(i);
    if (this.tab === 'similar') this.renderTab();
  }

  select(indices: number[], additive: boolean) {
    if (!additive) this.selection.clear();
    for (const i of indices) this.selection.add(i);
    this.current = this.selection.size === 1 ? [...this.selection][0] : -1;
    this.target = { kind: this.selection.size === 0 ? 'none' : this.selection.size === 1 ? 'image' : 'selection' };
    this.applyFlags();
    this.renderLabelBar();
  }

  // -- labelling ------------------------------------------------------------------------------------
  classes(): string[] {
    const set = new Set<string>(Object.keys(this.summary?.classes || {}));
    if (this.review?.classes) for (const c of this.review.classes) set.add(c);
    if (this.meta) for (const l of this.meta.label) if (l) set.add(l);
    return [...set].sort();
  }

  targetIds(): number[] {
    if (!this.meta) return [];
    if (this.target.kind === 'cluster' && this.meta.cluster) {
      const out: number[] = [];
      this.meta.cluster.forEach((c, i) => { if (c === this.target.cluster) out.push(this.meta!.ids[i]); });
      return out;
    }
    return [...this.selection].map((i) => this.meta!.ids[i]);
  }

  suggestion(): string | null {
    if (!this.meta || this.current < 0) return null;
    const m = this.meta, i = this.current;
    const r = this.reviewItem(m.ids[i]);
    return r?.consensus ?? m.predicted?.[i] ?? m.cluster_label?.[i] ?? null;
  }

  async setLabel(label: string | null) {
    const ids = this.targetIds();
    if (!ids.length || !this.meta) { this.toast('Select an image, a selection or a cluster first'); return; }
    const run = this.run;
    const prev: [number, string | null][] = ids.map((id) => [id, this.meta!.label[this.idIndex.get(id)!] ?? null]);
    try {
      await post('set_labels', { run, ids, label });
    } catch (e: any) { this.toast('Not saved: ' + e.message, 5000); return; }
    this.undo.push({ run, assignments: prev });
    for (const id of ids) { const i = this.idIndex.get(id); if (i !== undefined) this.meta.label[i] = label; }
    this.toast(`${ids.length} image${ids.length > 1 ? 's' : ''} → ${label ?? '(no label)'} · saved`);
    this.editsSinceQueue += ids.length;
    this.afterEdit();
    if (this.autoUpdate && this.review && this.editsSinceQueue >= Math.max(this.updateEvery(), this.autoRetryAt)) this.updatePredictions();
  }

  /** Labels per round of review: 1% of the unlabelled images, at least one. */
  updateEvery(): number { return Math.max(1, Math.round(0.01 * (this.review?.unlabelled || 0))); }

  async undoLast() {
    const u = this.undo.pop();
    if (!u) { this.toast('Nothing to undo'); return; }
    try { await post('set_labels', { run: u.run, assignments: u.assignments }); }
    catch (e: any) { this.undo.push(u); this.toast('Undo failed: ' + e.message, 5000); return; }
    if (u.run === this.run && this.meta) for (const [id, lab] of u.assignments) { const i = this.idIndex.get(id); if (i !== undefined) this.meta.label[i] = lab; }
    this.toast(`Undone: ${u.assignments.length} label${u.assignments.length > 1 ? 's' : ''} restored`);
    this.editsSinceQueue = Math.max(0, this.editsSinceQueue - u.assignments.length);
    this.afterEdit();
  }

  afterEdit() {
    this.applyOverlay();
    this.renderLabelBar();
    if (this.tab === 'review') this.renderReviewList();
    if (this.tab === 'clusters') this.renderTab();
  }

  key(e: KeyboardEvent) {
    const t = e.target as HTMLElement;
    if (t && (t.tagName === 'INPUT' || t.tagName === 'SELECT' || t.tagName === 'TEXTAREA')) return;
    if ((e.ctrlKey || e.metaKey) && e.key.toLowerCase() === 'z' || e.key === 'u') { e.preventDefault(); this.undoLast(); return; }
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    const classes = this.classes();
    if (/^[1-9]$/.test(e.key)) {
      const c = classes[Number(e.key) - 1];
      if (c) { e.preventDefault(); this.setLabel(c).then(() => this.tab === 'review' && this.target.kind === 'image' && this.nextReview()); }
      return;
    }
    switch (e.key) {
      case 'a': case 'Enter': {
        const s = this.target.kind === 'image' ? this.suggestion() : null;
        if (s) { e.preventDefault(); this.setLabel(s).then(() => this.tab === 'review' && this.nextReview()); }
        else this.toast('No suggestion to accept: press a number key');
        break;
      }
      case 's': case 'ArrowDown': case 'j': e.preventDefault(); this.nextReview(); break;
      case 'ArrowUp': case 'k': e.preventDefault(); this.nextReview(-1); break;
      case 'Escape': this.select([], false); break;
      case 'f': if (this.current >= 0) this.view.focus(this.current); break;
    }
  }

  // -- right panel ----------------------------------------------------------------------------------
  labelBar = h('div', { class: 'labelbar', id: 'nb-labelbar' });
  tabBar = h('div', { class: 'tabs' });
  pane = h('div', { class: 'pane', id: 'nb-pane' });

  renderRight() {
    this.right.replaceChildren(h('h2', { text: 'Label' }), this.labelBar, this.tabBar, this.pane);
    const tabs: [typeof this.tab, string][] = [['review', 'Review queue'], ['clusters', 'Clusters'], ['similar', 'Similar'], ['duplicates', 'Near duplicates']];
    this.tabBar.replaceChildren(...tabs.map(([t, label]) => h('button', { class: this.tab === t ? 'on' : '', text: label, 'data-tab': t, onClick: () => { this.tab = t; this.renderRight(); } })));
    this.renderLabelBar();
    this.renderTab();
  }

  renderLabelBar() {
    const m = this.meta;
    let what = 'Nothing selected: click a point, drag a box or lasso, click a cluster or a legend entry.';
    if (m && this.target.kind === 'image' && this.current >= 0) what = `Image #${m.ids[this.current]} ${m.paths[this.current]} — label: ${m.label[this.current] ?? 'none'}`;
    else if (this.target.kind === 'selection') what = `${this.selection.size} selected images`;
    else if (this.target.kind === 'cluster') what = `Cluster ${this.target.cluster} (${this.targetIds().length} images)`;
    const sug = this.target.kind === 'image' ? this.suggestion() : null;
    const input = h('input', { placeholder: 'new label', style: 'width:100px' }) as HTMLInputElement;
    input.addEventListener('keydown', (e) => { if (e.key === 'Enter' && input.value.trim()) this.setLabel(input.value.trim()); });
    this.labelBar.replaceChildren(
      h('div', { text: what, style: 'word-break:break-all' }),
      h('div', { class: 'classes' }, ...this.classes().map((c, k) => h('button', { 'data-label': c, onClick: () => this.setLabel(c) }, k < 9 ? h('kbd', { text: String(k + 1) }) : null, c))),
      h('div', { class: 'row', style: 'display:flex;gap:4px;flex-wrap:wrap' },
        sug ? h('button', { class: 'primary', text: `Accept “${sug}” (A)`, onClick: () => this.setLabel(sug).then(() => this.tab === 'review' && this.nextReview()) }) : null,
        h('button', { text: 'Skip (S)', onClick: () => this.nextReview() }),
        h('button', { text: 'Remove label', onClick: () => this.setLabel(null) }),
        h('button', { text: `Undo (U)${this.undo.length ? ' · ' + this.undo.length : ''}`, onClick: () => this.undoLast(), disabled: !this.undo.length }),
        input),
      h('div', { class: 'hint', text: 'Keys: 1–9 label · A/Enter accept · S/↓ skip · ↑ back · U or Ctrl+Z undo · F focus' }));
  }

  async renderTab() {
    const pane = this.pane;
    pane.replaceChildren();
    if (!this.meta) { pane.append(h('p', { class: 'muted', text: 'Run a network to see its clusters and review queue.' })); return; }
    const run = this.run, network = this.network;
    if (this.tab === 'review') {
      pane.append(h('p', { class: 'muted', text: 'Loading the review queue…' }));
      try {
        this.review = await getJSON('review', { run, limit: 500 });
        if (!this.review.queue_length) {
          // Nothing flagged (e.g. one network only): list every unlabelled image, least confident first.
          const all = await getJSON('review', { run, limit: 500, all: true });
          all.notes = [...(all.notes || []), 'Nothing flagged: showing every unlabelled image, least confident first. Run a second network to find disagreements.'];
          this.review = all;
        }
        this.reviewById = new Map(this.review.items.map((it: any) => [it.id, it]));
        this.editsSinceQueue = 0;
        this.autoRetryAt = 0;
        if (this.overlay === 'disagreement') this.applyOverlay();
      } catch (e: any) { pane.replaceChildren(h('p', { class: 'muted', text: e.message })); return; }
      this.renderReviewList();
    } else if (this.tab === 'clusters') {
      try { this.clusters = await getJSON('clusters', { run, network }); } catch (e: any) { pane.replaceChildren(h('p', { class: 'muted', text: e.message })); return; }
      const classes: string[] = this.clusters.classes || [];
      const table: any[] = this.clusters.clusters || this.clusters.table || [];
      const rows = table.map((c) => h('tr', {
        class: 'click' + (this.target.kind === 'cluster' && this.target.cluster === c.cluster ? ' cur' : ''), 'data-cluster': c.cluster,
        onClick: () => {
          const idx: number[] = [];
          this.meta!.cluster?.forEach((x, i) => { if (x === c.cluster) idx.push(i); });
          this.select(idx, false);
          this.target = { kind: 'cluster', cluster: c.cluster };
          this.renderLabelBar();
          this.renderTab();
        },
      }, h('td', { text: String(c.cluster) }), h('td', { text: String(c.size) }),
        h('td', { text: c.needs_label ? 'needs a label' : (classes[c.label] ?? String(c.label)), class: c.needs_label ? 'err' : '' }),
        h('td', { text: c.needs_label ? '' : (c.purity * 100).toFixed(0) + '%' }), h('td', { text: String(c.n_labelled ?? '') })));
      pane.append(h('div', { class: 'muted', text: `${table.length} clusters; ${table.filter((c) => c.needs_label).length} need a label. Click one, then label it (keys 1–9).` }),
        h('table', { class: 't' }, h('tr', {}, h('th', { text: 'cluster' }), h('th', { text: 'size' }), h('th', { text: 'majority' }), h('th', { text: 'purity' }), h('th', { text: 'labelled' })), ...rows));
    } else if (this.tab === 'similar') {
      if (this.current < 0) { pane.append(h('p', { class: 'muted', text: 'Select one image to see the most similar ones.' })); return; }
      const id = this.meta.ids[this.current];
      try {
        const s = await getJSON('similar', { run, network, id, k: 24 });
        pane.append(h('div', { class: 'muted', text: `Most similar to #${id} (feature distance)` }),
          h('div', { class: 'grid' }, ...s.similar.map((x: any) => h('img', {
            src: url('thumbnail', { run, id: x.id, size: 64 }), title: `#${x.id} ${x.path} · d=${x.distance}`,
            onClick: () => { const i = this.idIndex.get(x.id); if (i !== undefined) this.setCurrent(i, true); },
          }))));
      } catch (e: any) { pane.append(h('p', { class: 'muted', text: e.message })); }
    } else {
      const th = h('input', { type: 'number', step: '0.1', value: '0.3', min: '0', max: '2', style: 'width:60px' }) as HTMLInputElement;
      const out = h('div', {});
      // Only the latest Find shows its result; an older search still running is cancelled, as is
      // one left running when the tab is closed.
      let latest = 0;
      const searching = (j: Job) => 'Searching…' + (j.state === 'queued' ? ' waiting for the worker'
        : j.total ? ` ${Math.floor((100 * (j.done || 0)) / j.total)}%` : '');
      const load = async () => {
        const mine = ++latest;
        const current = () => mine === latest && out.isConnected;
        out.replaceChildren(h('p', { class: 'muted', text: 'Searching…' }));
        try {
          const job = await this.follow(run, await startJob(run, 'duplicates', { network, threshold: th.value }), (j) => {
            if (current()) out.replaceChildren(h('p', { class: 'muted', text: searching(j) }));
          }, () => !current());
          if (!current()) return;
          if (job.state !== 'done') { out.replaceChildren(h('p', { class: 'muted', text: jobWhy(job) })); return; }
          const d = job.result;
          const none = `No near duplicates at distance ≤ ${d.threshold}.`;
          out.replaceChildren(h('div', { class: 'muted', text: d.groups.length ? `${d.groups.length} group${d.groups.length > 1 ? 's' : ''} at distance ≤ ${d.threshold}` : none }), ...d.groups.slice(0, 100).map((g: number[]) => h('div', { class: 'group' },
            h('div', { class: 'grid' }, ...g.slice(0, 12).map((id) => h('img', { src: url('thumbnail', { run, id, size: 64 }), title: `#${id}`, onClick: () => { const i = this.idIndex.get(id); if (i !== undefined) this.setCurrent(i, true); } }))),
            h('button', { text: `Select ${g.length}`, onClick: () => this.select(g.map((id) => this.idIndex.get(id)!).filter((i) => i !== undefined), false) }))));
        } catch (e: any) { if (current()) out.replaceChildren(h('p', { class: 'muted', text: e.message })); }
      };
      pane.append(h('div', {}, 'Distance ≤ ', th, ' ', h('button', { text: 'Find', onClick: load }), h('span', { class: 'hint', text: ' 0.3 · 0.6 · 1.0 as in the paper' })), out);
      load();
    }
  }

  renderReviewList() {
    const pane = this.pane;
    const r = this.review;
    if (!r) return;
    const items: any[] = r.items || [];
    const run = this.run;
    pane.replaceChildren(
      h('div', { class: 'muted', text: `${r.queue_length} to review (${r.disagreements} disagreements, ${r.low_confidence} unsure) of ${r.unlabelled} unlabelled; networks: ${(r.networks || []).join(', ')}` }),
      // bench/quality.py: a third network's vote puts more of the wrong labels at the top of the queue
      ...((r.networks || []).length === 2 ? [h('div', { class: 'hint', text: 'Run a third network to find more of the wrong labels.' })] : []),
      h('label', { class: 'hint', title: 'Each round\'s labels join the training set before the queue is ordered again' },
        h('input', { type: 'checkbox', id: 'nb-auto-update', checked: this.autoUpdate, onChange: (e: Event) => {
          this.autoUpdate = (e.target as HTMLInputElement).checked;
          localStorage.setItem('nipgboard.autoUpdate', this.autoUpdate ? 'on' : 'off');
        } }), ` Update predictions after every ${this.updateEvery()} label${this.updateEvery() > 1 ? 's' : ''} (1% of the unlabelled)`),
      ...this.updateBar(r),
      ...items.map((it, k) => {
        const i = this.idIndex.get(it.id);
        const labelled = i !== undefined && this.meta!.label[i] != null;
        const votes = it.votes ? Object.entries(it.votes).map(([n, v]) => `${n}: ${v}`).join(' · ') : '';
        return h('div', {
          class: 'item' + (k === this.reviewPos && this.current === i ? ' cur' : '') + (labelled ? ' done' : ''), 'data-id': it.id,
          onClick: () => { this.reviewPos = k; if (i !== undefined) this.setCurrent(i, true); this.renderReviewList(); },
        }, h('img', { src: url('thumbnail', { run, id: it.id, size: 64 }), loading: 'lazy' }),
          h('div', { class: 'meta' }, h('div', {}, h('b', { text: labelled ? `✓ ${this.meta!.label[i!]}` : `→ ${it.consensus}` }), ` · ${(it.confidence * 100).toFixed(0)}%`),
            h('div', { class: 'muted', text: votes }), h('div', { class: 'muted', text: (it.reasons || []).join(', ') })));
      }));
    const cur = pane.querySelector('.item.cur');
    if (cur) (cur as HTMLElement).scrollIntoView({ block: 'nearest' });
  }

  /** The offer to predict again once labels changed (or its progress), replacing the stale-prediction notes. */
  updateBar(r: any): HTMLElement[] {
    const stale = (r.stale || []).length > 0 || this.editsSinceQueue > 0;
    if (!stale && !this.updating) return (r.notes || []).map((n: string) => h('div', { class: 'hint', text: n }));
    const n = this.editsSinceQueue;
    const text = this.updating ?? `${n ? `${n} label${n > 1 ? 's' : ''} saved since this queue was made.` : 'Labels changed since the predictions.'}`
      + ' Predicting again with them corrects similar images and re-orders the queue.';
    return [h('div', { class: 'update', id: 'nb-update' }, h('span', { text }),
      this.updating ? null : h('button', { class: 'primary', text: 'Update predictions', onClick: () => this.updatePredictions() }))];
  }

  /** Predict again with every network of the queue (the saved labels join the training set), then reload. */
  async updatePredictions() {
    const networks: string[] = this.review?.networks || [];
    if (this.updating || !networks.length) return;
    const run = this.run;
    const pendingAtStart = this.editsSinceQueue;
    let failed = '';
    for (const [k, network] of networks.entries()) {
      const show = (j: Job) => {
        const first = !this.updating;
        this.updating = `Predicting with ${network} (${k + 1}/${networks.length})… ${j.stage || j.state}`;
        const bar = document.querySelector('#nb-update span');
        if (bar && !first) bar.textContent = this.updating;
        else if (this.tab === 'review') this.renderReviewList();
      };
      try {
        const done = await this.follow(run, await startJob(run, 'predict', { network }), show);
        if (done.state !== 'done') { failed = `${network}: ${jobWhy(done)}`; break; }
      } catch (e: any) { failed = `${network}: ${e.message}`; break; }
    }
    this.updating = null;
    if (failed) {
      this.autoRetryAt = this.editsSinceQueue + this.updateEvery();
      this.toast('Predictions not updated: ' + failed, 5000);
      if (this.tab === 'review') this.renderReviewList();
      return;
    }
    this.toast('Predictions updated');
    this.reviewPos = 0;
    const late = this.editsSinceQueue - pendingAtStart;  // labels saved while predicting: not in this update
    if (run === this.run && this.network) await this.loadView(this.network, true);
    if (late > 0) { this.editsSinceQueue = late; if (this.tab === 'review') this.renderReviewList(); }
    this.loadMetrics();
  }

  nextReview(step = 1) {
    const items: any[] = this.review?.items || [];
    if (!items.length || !this.meta) return;
    let k = this.reviewPos;
    const isCur = this.current >= 0 && items[k] && this.idIndex.get(items[k].id) === this.current;
    if (!isCur) k = step > 0 ? -1 : items.length;
    for (let n = 0; n < items.length; n++) {
      k += step;
      if (k < 0 || k >= items.length) break;
      const i = this.idIndex.get(items[k].id);
      if (i !== undefined && (step < 0 || this.meta.label[i] == null)) {
        this.reviewPos = k;
        this.setCurrent(i, true);
        if (this.tab === 'review') this.renderReviewList();
        return;
      }
    }
    this.toast('End of the review queue');
  }
}

let app: App | null = null;

/** Entry point called by TensorBoard's plugin loader (and by the standalone page). */
export function render() {
  if (app) return;
  app = new App();
  app.start();
}
