// Calls to the plugin's routes, one typed helper per route. Every URL is relative: inside TensorBoard
// the page's base is `plugin/nipgboard/` under `/data/`, so `runs` resolves to `/data/plugin/nipgboard/runs`.
import type {
  AccuracyAnswer, ClustersAnswer, Job, JobParams, JobsAnswer, KindsAnswer, Metadata, MetricsAnswer, NetworksAnswer,
  ReviewAnswer, RunsAnswer, SetLabelsAnswer, SimilarAnswer, SpriteIndex, Summary,
} from './types';

type Query = Record<string, string | number | boolean | undefined>;

export class ApiError extends Error {
  constructor(public status: number, message: string) { super(message); }
}

export function url(route: string, params: Query = {}) {
  const u = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined) u.set(k, String(v));
  const s = u.toString();
  return s ? `${route}?${s}` : route;
}

/** The response when it is a success; otherwise an ApiError with the server's `error` text. */
async function check(res: Response) {
  if (res.ok) return res;
  let msg = `${res.status} ${res.statusText}`;
  try {
    const body: unknown = await res.json();
    if (body && typeof body === 'object' && 'error' in body && typeof body.error === 'string') msg = body.error;
  } catch { /* not JSON */ }
  throw new ApiError(res.status, msg);
}

async function get<T>(route: string, params: Query = {}): Promise<T> {
  const res = await check(await fetch(url(route, params), { credentials: 'same-origin' }));
  return res.json() as Promise<T>;
}

async function post<T>(route: string, body: object): Promise<T> {
  const res = await check(await fetch(route, {
    method: 'POST',
    credentials: 'same-origin',
    headers: { 'Content-Type': 'application/json', 'X-NIPGBoard': '1' },
    body: JSON.stringify(body),
  }));
  return res.json() as Promise<T>;
}

export const getRuns = () => get<RunsAnswer>('runs');
export const getSummary = (run: string) => get<Summary>('summary', { run });
export const getNetworks = (run: string) => get<NetworksAnswer>('networks', { run });
export const getKinds = () => get<KindsAnswer>('kinds');
export const getJobs = (run: string, opts: { active?: boolean; limit?: number } = {}) =>
  get<JobsAnswer>('jobs', { run, active: opts.active ? 'true' : undefined, limit: opts.limit });
export const getJob = <R = unknown>(run: string, id: number) => get<Job<R>>('job', { run, id });
export const startJob = <R = unknown>(run: string, kind: string, params: JobParams) =>
  post<Job<R>>('start_job', { run, kind, params });
export const cancelJob = (run: string, id: number) => post<Job>('cancel_job', { run, id });
export const getMetadata = (run: string, network: string) => get<Metadata>('metadata', { run, network });
export const getClusters = (run: string, network: string) => get<ClustersAnswer>('clusters', { run, network });
export const getMetrics = (run: string) => get<MetricsAnswer>('metrics', { run });
export const getAccuracy = (run: string, network: string) => get<AccuracyAnswer>('accuracy', { run, network });
/** `limit` is how many items the panel lists; `all`: every unlabelled image, not only the flagged ones. */
export const getReview = (run: string, limit: number, all = false) =>
  get<ReviewAnswer>('review', { run, limit, all: all ? 'true' : undefined });
export const getSimilar = (run: string, network: string, id: number, k: number) =>
  get<SimilarAnswer>('similar', { run, network, id, k });
export const getSpriteIndex = (run: string, tile: number) => get<SpriteIndex>('sprite_index', { run, tile });

/** Give `label` (null removes it) to images, or restore earlier labels image by image. */
export const setLabels = (run: string, change: { ids: number[]; label: string | null } | { assignments: [number, string | null][] }) =>
  post<SetLabelsAnswer>('set_labels', { run, ...change });

export async function getBinary(route: string, params: Query, onProgress?: (done: number, total: number) => void) {
  const res = await check(await fetch(url(route, params), { credentials: 'same-origin' }));
  const total = Number(res.headers.get('Content-Length') || 0);
  if (!res.body || !onProgress) return { buf: await res.arrayBuffer(), headers: res.headers };
  const reader = res.body.getReader();
  const parts: Uint8Array[] = [];
  let done = 0;
  for (;;) {
    const r = await reader.read();
    if (r.done) break;
    parts.push(r.value);
    done += r.value.length;
    onProgress(done, total);
  }
  const out = new Uint8Array(done);
  let o = 0;
  for (const p of parts) { out.set(p, o); o += p.length; }
  return { buf: out.buffer, headers: res.headers };
}

export async function loadImage(src: string): Promise<HTMLImageElement> {
  const img = new Image();
  img.decoding = 'async';
  img.src = src;
  await img.decode();
  return img;
}
