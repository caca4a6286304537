// The networks of the left panel: one button per network runs its pipeline on the server (embed,
// project, cluster, predict) with a progress bar and Cancel; below them, the steps' option forms.
import { h } from '../dom';
import type { App } from '../index';
import { describeJob } from '../jobs';
import type { Network } from '../types';

export class NetworksPanel {
  constructor(private app: App) {}

  section(): HTMLElement[] {
    const nets = this.app.state.networks;
    const available = nets.filter((n) => n.available), missing = nets.filter((n) => !n.available);
    const out: (HTMLElement | null)[] = [
      h('h2', { text: 'Networks' }),
      h('div', { id: 'nb-networks' }, ...available.map((n) => this.card(n))),
      missing.length ? h('details', {}, h('summary', { text: `${missing.length} more networks not available here (why)` }),
        ...missing.map((n) => this.card(n))) : null,
      h('h2', { text: 'Options' }),
      h('div', { id: 'nb-options' }, ...this.app.options.forms(() => undefined)),
      h('button', {
        text: 'Auto (grid search)', title: 'Try several UMAP and graph settings on the shown network; keep the best by cross-validated accuracy on the train images',
        onClick: () => { const net = this.app.state.network; if (net) void this.app.pipelines.search(net); else this.app.notices.toast('Show a network first'); },
      }),
      h('div', { class: 'hint', text: 'Changes apply the next time you click a network.' }),
    ];
    return out.filter((x): x is HTMLElement => x !== null);
  }

  card(n: Network) {
    const { state } = this.app;
    const pipelines = this.app.pipelines;
    const id = n.id;
    const card = h('div', { class: 'net' + (n.available ? '' : ' unavail'), 'data-network': id });
    const job = pipelines.running.get(id);
    const btn = h('button', {
      class: state.network === id ? 'on' : '', text: n.name || id, title: `${id}: ${n.weights}`, disabled: !n.available,
      onClick: () => pipelines.start(id),
    });
    const show = h('button', { text: 'Show', title: 'Show this network\'s view', onClick: () => this.app.centre.loadView(id) });
    const info = h('span', { class: 'prog', text: n.cached ? `${n.cached} cached` : `${n.feature_dim}-d` });
    card.append(h('div', { class: 'row' }, btn, info, show));
    card.append(h('div', { class: 'hint', text: spec(n), title: n.weights, style: 'word-break: break-word' }));
    if (!n.available) card.append(h('div', { class: 'why', text: n.message || 'not available here' }));
    if (job) {
      card.append(h('div', { class: 'bar' }, h('div', { style: `width:${Math.round((job.fraction ?? 0) * 100)}%` })));
      card.append(h('div', { class: 'row' }, h('span', { class: 'prog', text: describeJob(job) }),
        h('button', { text: job.cancel_requested ? 'Cancelling…' : 'Cancel', disabled: job.cancel_requested, onClick: () => pipelines.cancel(id) })));
    } else if (pipelines.failures.has(id)) {
      card.append(h('div', { class: 'why err', text: pipelines.failures.get(id)! }));
    }
    return card;
  }

  updateCard(id: string) {
    const old = this.app.left.querySelector(`.net[data-network="${CSS.escape(id)}"]`);
    const n = this.app.state.networks.find((x) => x.id === id);
    if (old && n) old.replaceWith(this.card(n));
  }

  updateCards() { for (const n of this.app.state.networks) this.updateCard(n.id); }
}

/** '224×224 px → 384-d · 85 img/s (cpu) · weights: …': what the server's `networks` lists, on one line. */
export function spec(n: Network): string {
  const speed = Object.entries(n.speed ?? {}).map(([dev, v]) => `${v >= 10 ? Math.round(v) : v.toFixed(1)} img/s (${dev})`);
  return [`${n.input_size[0]}×${n.input_size[1]} px → ${n.feature_dim}-d`,
    speed.length ? speed.join(', ') : 'speed not measured here yet',
    n.extra?.zero_shot ? 'zero-shot' : null, `weights: ${n.weights}`].filter(Boolean).join(' · ');
}
