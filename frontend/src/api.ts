// Calls to the plugin's routes. Every URL is relative: inside TensorBoard the page's base is
// `plugin/nipgboard/` under `/data/`, so `runs` resolves to `/data/plugin/nipgboard/runs`.

export class ApiError extends Error {
  constructor(public status: number, message: string, public body: any = null) { super(message); }
}

function qs(params: Record<string, any>) {
  const u = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null) u.set(k, String(v));
  const s = u.toString();
  return s ? '?' + s : '';
}

export function url(route: string, params: Record<string, any> = {}) {
  return route + qs(params);
}

async function check(res: Response) {
  if (res.ok) return res;
  let msg = `${res.status} ${res.statusText}`;
  let body: any = null;
  try { body = await res.json(); if (body && body.error) msg = body.error; } catch { /* not JSON */ }
  throw new ApiError(res.status, msg, body);
}

export async function getJSON<T = any>(route: string, params: Record<string, any> = {}): Promise<T> {
  const res = await check(await fetch(url(route, params), { credentials: 'same-origin' }));
  return res.json();
}

export async function getBinary(route: string, params: Record<string, any>, onProgress?: (done: number, total: number) => void) {
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

export async function post<T = any>(route: string, body: any): Promise<T> {
  const res = await check(await fetch(route, {
    method: 'POST',
    credentials: 'same-origin',
    headers: { 'Content-Type': 'application/json', 'X-NIPGBoard': '1' },
    body: JSON.stringify(body),
  }));
  return res.json();
}

export interface Job {
  id: number; kind: string; state: string; stage?: string; done?: number; total?: number;
  fraction?: number | null; rate?: number | null; eta?: number | null; message?: string; error?: string;
  result?: any; params?: any; run?: string;
}

/** Why a job did not finish: its error, else its last message, else its state. */
export const jobWhy = (j: Job) => j.error || j.message || j.state;

export const startJob = (run: string, kind: string, params: any) => post<Job>('start_job', { run, kind, params });
export const cancelJob = (run: string, id: number) => post<Job>('cancel_job', { run, id });
export const getJob = (run: string, id: number) => getJSON<Job>('job', { run, id });

export async function loadImage(src: string): Promise<HTMLImageElement> {
  const img = new Image();
  img.decoding = 'async';
  img.src = src;
  await img.decode();
  return img;
}
