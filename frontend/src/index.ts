// The NIPGBoard panel. TensorBoard loads this module inside the tab's iframe and calls render().
// This file wires the parts: the dataset and networks on the left, the 3-D view in the centre,
// labelling and the tabs (the Next queue, clusters, similar, near duplicates, review) on the right.
import { getKinds, getNetworks, getRuns, getSummary } from './api';
import { Centre } from './centre';
import { errorText, h, Notices } from './dom';
import { Pipelines } from './jobs';
import { Labels } from './labels';
import { StepOptionForms } from './options';
import { ClustersPanel } from './panels/clusters';
import { DatasetPanel } from './panels/dataset';
import { DuplicatesPanel } from './panels/duplicates';
import { NextPanel } from './panels/next';
import { NetworksPanel } from './panels/networks';
import { onboarding } from './panels/onboarding';
import { ReviewPanel } from './panels/review';
import { SimilarPanel } from './panels/similar';
import { State, type Tab } from './state';
import { CSS as STYLE } from './style';

const TABS: [Tab, string, string][] = [
  ['next', 'Next', 'The images to label or check next, one round at a time'],
  ['clusters', 'Clusters', 'Groups of similar images: label a whole group at once'],
  ['similar', 'Similar', 'The images most like the current one'],
  ['duplicates', 'Duplicates', 'Groups of near-identical images'],
  ['review', 'Review', 'Every unlabelled image the networks disagree on or are unsure of, most doubtful first (the Next tab picks the ones worth a look from these)'],
];

export class App {
  state = new State();
  notices = new Notices();
  root = h('div', { class: 'nb-root' });
  left = h('div', { class: 'nb-left' });
  right = h('div', { class: 'nb-right' });
  tabBar = h('div', { class: 'tabs' });
  pane = h('div', { class: 'pane', id: 'nb-pane' });
  options = new StepOptionForms();
  pipelines = new Pipelines(this);
  dataset = new DatasetPanel(this);
  networks = new NetworksPanel(this);
  next = new NextPanel(this);
  review = new ReviewPanel(this);
  clusters = new ClustersPanel(this);
  similar = new SimilarPanel(this);
  duplicates = new DuplicatesPanel(this);
  labels = new Labels(this);
  centre: Centre;

  constructor() {
    document.head.append(h('style', {}, STYLE));
    const centre = h('div', { class: 'nb-centre' });
    this.root.append(this.left, centre, this.right);
    document.body.append(this.root);
    this.centre = new Centre(this, centre);
    document.body.append(this.centre.tip, this.notices.toasts);
  }

  async start() {
    const { state, notices } = this;
    notices.status('Loading…');
    try {
      const [answer, kinds] = await Promise.all([getRuns(), getKinds()]);
      state.kinds = new Map(kinds.kinds.map((k) => [k.kind, k]));
      this.options.setKinds(state.kinds);
      state.runs = answer.runs.filter((r) => r.dataset);
      if (!state.runs.length) { onboarding(this, answer.onboarding); return; }
    } catch (e) {
      notices.message(h('div', { class: 'err', text: 'Cannot reach the NIPGBoard plugin: ' + errorText(e) }));
      return;
    }
    await this.openRun(state.initialRun());
  }

  /** Show a run: its summary and networks, the jobs still running for it, and a network's view. */
  async openRun(run: string) {
    const { state, notices } = this;
    state.setRun(run);
    this.pipelines.reset();
    const [summary, nets] = await Promise.all([getSummary(run), getNetworks(run)]);
    state.summary = summary;
    state.networks = nets.networks;
    this.renderLeft();
    this.renderRight();
    // The jobs first: a network whose pipeline still places its images opens as that preview.
    this.centre.opening = true;
    try {
      await this.pipelines.resume().catch((e) => notices.toast('Jobs not read: ' + errorText(e), 5000));
      const saved = state.savedNetwork();
      const order = [...(saved ? [saved] : []), ...state.networks.filter((n) => n.available).map((n) => n.id)];
      for (const net of order) {
        if (await this.centre.loadView(net, true)) return;
      }
    } finally { this.centre.opening = false; }
    notices.status('');
    notices.message(h('div', {}, h('h3', { text: `${summary.images} images, ${summary.labelled} labelled` }),
      h('p', { text: 'Click a network on the left: it extracts every image\'s features, projects them to 3-D, groups them into clusters and predicts a label for every image. It runs on the server: progress shows beside the network, and it goes on if you close this tab.' }),
      summary.labelled ? null : h('p', { text: 'No labels yet: that is fine. Once the network is done, the Next tab on the right lists the few images to label first; type each one\'s class and the predictions label the rest.' })));
  }

  async refreshNetworks() {
    try {
      this.state.networks = (await getNetworks(this.state.run)).networks;
      this.networks.updateCards();
    } catch { /* keep the ones shown */ }
  }

  renderLeft() {
    this.left.replaceChildren(...this.dataset.top(), this.next.accuracy.el, ...this.networks.section(), ...this.dataset.bottom());
    void this.dataset.loadMetrics();
  }

  renderRight() {
    const { state } = this;
    this.right.replaceChildren(h('h2', { text: 'Label' }), this.labels.el, this.tabBar, this.pane);
    this.tabBar.replaceChildren(...TABS.map(([t, label, title]) => h('button', {
      class: state.tab === t ? 'on' : '', text: label, title, 'data-tab': t, onClick: () => { state.tab = t; this.renderRight(); },
    })));
    this.labels.render();
    this.renderTab();
    void this.next.accuracy.load();
  }

  /** Draw the open tab. Each call draws into a fresh box, so a slower earlier call draws nowhere. */
  renderTab() {
    const { state } = this;
    const box = h('div', {});
    this.pane.replaceChildren(box);
    if (!state.meta) { box.append(h('p', { class: 'muted', text: 'Run a network to see the images to label next and its clusters.' })); return; }
    const panel = { next: this.next, review: this.review, clusters: this.clusters, similar: this.similar, duplicates: this.duplicates }[state.tab];
    void panel.render(box);
  }
}

let app: App | null = null;

/** Entry point called by TensorBoard's plugin loader (and by the standalone page). */
export function render() {
  if (app) return;
  app = new App();
  (window as unknown as { nipgboard: App }).nipgboard = app;
  void app.start();
}
