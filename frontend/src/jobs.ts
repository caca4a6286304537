// Starting and following background jobs. The one-click pipeline of a network (embed, project,
// cluster, predict) is one server-side `pipeline` job: the panel starts it, follows it, and after a
// reload finds it again among the run's active jobs, so closing the tab never stops it.
import { cancelJob, getJob, getJobs, startJob } from './api';
import { errorText, fmtCount, fmtSecs } from './dom';
import type { App } from './index';
import { ACTIVE, type Job, type JobParams, type PipelinePreview, type PipelineResult, type PreviewResult } from './types';

const POLL_MS = 400;
/** The jobs a network's card shows: its pipelines (the one click, and "Auto"), or a script's search. */
const NETWORK_JOBS = ['pipeline', 'search'];

/** Why a job did not finish: its error, else its last message, else its state. */
export const jobWhy = (j: Job) => j.error || j.message || j.state;

export const isActive = (j: Job) => ACTIVE.includes(j.state);

/** What a running pipeline has placed so far while it streams a big dataset's images in, else null. */
export function previewOf(j: Job | undefined): PipelinePreview | null {
  if (!j || j.kind !== 'pipeline' || !isActive(j) || !j.result || typeof j.result !== 'object') return null;
  const p = (j.result as Partial<PreviewResult>).preview;
  return p && typeof p.placed === 'number' && typeof p.images === 'number' ? p : null;
}

/** Why something of a network is not there yet while its pipeline places the images: "Clusters come
 * once every image is embedded (64,400 still coming)." */
export function waitLine(what: string, p: PipelinePreview): string {
  const left = p.images - p.placed;
  return left > 0 ? `${what} once every image is embedded (${fmtCount(left)} still coming).`
    : `${what} once the pipeline ends (every image is placed${p.phase ? `; now: ${p.phase}` : ''}).`;
}

/** The progress line of a job: "pipeline · 2/4 project: projecting · running · 40/200 · 5.0/s · 8 s left". */
export function describeJob(j: Job) {
  const parts = [j.kind, ...(j.stage ? [j.stage] : []), j.state];
  if (j.total) parts.push(`${j.done}/${j.total}`);
  if (j.rate) parts.push(`${j.rate.toFixed(1)}/s`);
  if (j.eta) parts.push(`${fmtSecs(j.eta)} left`);
  return parts.join(' · ');
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Poll a job until it ends, calling onUpdate with each state. `cancel` returning true cancels the
 * job on the server (once); `stop` returning true only stops watching it (the job goes on) and
 * returns its latest known state.
 */
export async function follow<R>(run: string, job: Job<R>, onUpdate: (j: Job<R>) => void,
  opts: { cancel?: () => boolean; stop?: () => boolean } = {}): Promise<Job<R>> {
  let j = job;
  let cancelled = false;
  while (isActive(j)) {
    onUpdate(j);
    await sleep(POLL_MS);
    if (opts.stop?.()) return j;
    if (opts.cancel?.() && !cancelled) { cancelled = true; await cancelJob(run, j.id).catch(() => undefined); }
    try { j = await getJob<R>(run, j.id); } catch { await sleep(1000); }
  }
  onUpdate(j);
  return j;
}

/** The pipeline jobs of the shown run, by network: what each network's card shows. */
export class Pipelines {
  /** Active pipeline job per network, as last polled. */
  running = new Map<string, Job>();
  /** Why a network's last job failed. */
  failures = new Map<string, string>();
  /** Networks whose job is being submitted (a second click meanwhile starts nothing). */
  private submitting = new Set<string>();
  /** Bumped when the run changes: the previous run's jobs are no longer watched (they go on). */
  private generation = 0;

  constructor(private app: App) {}

  /** Forget the previous run's jobs. */
  reset() {
    this.generation++;
    this.running.clear();
    this.failures.clear();
  }

  /** One click on a network: start its pipeline with the options the user changed, and follow it. */
  async start(network: string, steps?: string[]) {
    const options = this.app.options.changed(steps);
    await this.submit(network, 'pipeline', { network, ...(steps ? { steps } : {}), ...(options ? { options } : {}) });
  }

  /**
   * "Auto": one pipeline on the server: a grid search of the projection and clustering options by
   * cross-validated accuracy, applying the best, then the predictions again.
   */
  async search(network: string) {
    // The project options the user changed that the search takes as they are (e.g. the view's dimensions).
    const own = this.app.state.kinds.get('search')?.params ?? [];
    const shared = Object.entries(this.app.options.changedFor('project'))
      .filter(([name]) => own.some((p) => p.name === name && !p.type.endsWith('_list')));
    const predict = this.app.options.changedFor('predict');
    await this.submit(network, 'pipeline', {
      network, steps: ['search', 'predict'],
      options: { search: { ...Object.fromEntries(shared), apply: true }, ...(Object.keys(predict).length ? { predict } : {}) },
    });
  }

  private async submit(network: string, kind: string, params: JobParams) {
    if (this.running.has(network) || this.submitting.has(network)) return;
    this.failures.delete(network);
    let job: Job;
    this.submitting.add(network);
    try {
      job = await startJob(this.app.state.run, kind, params);
    } catch (e) {
      this.failures.set(network, errorText(e));
      this.app.networks.updateCard(network);
      this.app.notices.toast(`${network}: ${errorText(e)}`, 5000);
      return;
    } finally {
      this.submitting.delete(network);
    }
    await this.follow(network, job);
  }

  /** The running pipeline's preview of `network` (the images placed so far), else null. */
  preview(network: string): PipelinePreview | null { return previewOf(this.running.get(network)); }

  cancel(network: string) {
    const job = this.running.get(network);
    if (job) cancelJob(this.app.state.run, job.id).catch((e) => this.app.notices.toast(errorText(e), 5000));
  }

  /**
   * After the page or the run is (re)loaded: follow again every pipeline still queued or running
   * (started before a reload, in a closed tab or by a script), and show why a network's latest job
   * failed.
   */
  async resume() {
    const run = this.app.state.run, generation = this.generation;
    const [active, recent] = await Promise.all([getJobs(run, { active: true }), getJobs(run, { limit: 100 })]);
    if (generation !== this.generation) return;
    for (const j of active.jobs) {
      const net = j.params.network;
      if (NETWORK_JOBS.includes(j.kind) && net && !this.running.has(net)) void this.follow(net, j);
    }
    // Newest first: the first job seen per network is its latest.
    const seen = new Set<string>();
    for (const j of recent.jobs) {
      const net = j.params.network;
      if (!net || seen.has(net)) continue;
      seen.add(net);
      if (j.state === 'failed' && !this.running.has(net)) {
        this.failures.set(net, `${j.kind} failed: ${jobWhy(j)}`);
        this.app.networks.updateCard(net);
      }
    }
  }

  private async follow(network: string, job: Job) {
    const generation = this.generation, run = this.app.state.run;
    const current = () => generation === this.generation;
    this.running.set(network, job);
    this.app.networks.updateCard(network);
    const end = await follow(run, job, (j) => {
      if (!current()) return;
      this.running.set(network, j);
      this.app.networks.updateCard(network);
      // A big dataset's images arrive chunk by chunk: show those placed so far, as dots.
      const preview = previewOf(j);
      if (preview) this.app.centre.preview(network, j.id, preview);
    }, { stop: () => !current() });
    if (!current()) return;
    this.running.delete(network);
    if (end.state !== 'done') {
      const why = end.state === 'cancelled' ? 'cancelled' : `${end.kind} failed: ${jobWhy(end)}`;
      this.app.centre.previewEnded(network, why);
      this.failures.set(network, why);
      this.app.networks.updateCard(network);
      this.app.notices.toast(`${network}: ${why}`, 5000);
      return;
    }
    this.app.networks.updateCard(network);
    const result = end.kind === 'pipeline' ? end.result as PipelineResult | null : null;
    const embedded = result?.steps.embed;
    if (embedded?.device_fallback) this.app.notices.toast(`${network}: ${embedded.device_note}`, 8000);
    else this.app.notices.toast(`${network}: done` + (embedded?.device ? ` (features on the ${embedded.device})` : ''));
    // e.g. from zero labels: projected without labels, predict skipped until two classes have labels
    for (const note of result?.notes ?? []) this.app.notices.toast(note, 8000);
    // which images the view was fitted on, and why (e.g. a sample of the unlabelled ones with few labels)
    for (const note of result?.steps.project?.notes ?? []) this.app.notices.toast(`${network}: ${note}`, 8000);
    await this.app.refreshNetworks();
    await this.app.centre.loadView(network);
    this.app.dataset.loadMetrics();
  }
}
