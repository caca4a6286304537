// Benchmark page: synthetic clustered points with JPEG sprite atlases, drawn by the panel's PointView.
import { Atlas, PointView } from '../src/view';

function gauss(r: () => number) { return Math.sqrt(-2 * Math.log(r() + 1e-12)) * Math.cos(2 * Math.PI * r()); }
function rng(seed: number) { return () => ((seed = (seed * 1664525 + 1013904223) >>> 0) / 4294967296); }

async function makeAtlases(n: number, tile: number): Promise<{ blob: Blob; meta: Omit<Atlas, 'image'> }[]> {
  const per = Math.floor(8192 / tile) ** 2;
  const out = [];
  for (let start = 0; start < n; start += per) {
    const count = Math.min(per, n - start);
    const cols = Math.min(8192 / tile, Math.ceil(Math.sqrt(count)));
    const rows = Math.ceil(count / cols);
    const c = new OffscreenCanvas(cols * tile, rows * tile);
    const g = c.getContext('2d')!;
    for (let i = 0; i < count; i++) {
      const x = (i % cols) * tile, y = Math.floor(i / cols) * tile;
      g.fillStyle = `hsl(${(start + i) * 7 % 360},60%,55%)`;
      g.fillRect(x, y, tile, tile);
      g.fillStyle = '#fff';
      g.fillRect(x + tile / 4, y + tile / 4, tile / 2, tile / 2);
    }
    out.push({ blob: await c.convertToBlob({ type: 'image/jpeg', quality: 0.85 }),
      meta: { width: cols * tile, height: rows * tile, cell: tile, perRow: cols, start, count } });
  }
  return out;
}

function positions(n: number) {
  const r = rng(7), P = new Float32Array(n * 3);
  const centres = Array.from({ length: 40 }, () => [gauss(r) * 8, gauss(r) * 8, gauss(r) * 8]);
  for (let i = 0; i < n; i++) { const c = centres[i % 40]; for (let k = 0; k < 3; k++) P[i * 3 + k] = c[k] + gauss(r); }
  return P;
}

function sync(view: PointView) {
  const gl = (view as any).renderer.getContext() as WebGL2RenderingContext;
  const px = new Uint8Array(4);
  gl.readPixels(0, 0, 1, 1, gl.RGBA, gl.UNSIGNED_BYTE, px);
}

export async function run(n: number, thumbs: boolean, frames = 60) {
  const host = document.getElementById('host')!;
  host.replaceChildren();
  const view = new PointView(host);
  const pos = positions(n);
  const tile = 32;
  const prepared = thumbs ? await makeAtlases(n, tile) : [];
  // Time to first picture: decode the atlases (as the panel does after fetching them), upload, draw.
  const t0 = performance.now();
  const atlases: Atlas[] = [];
  for (const p of prepared) atlases.push({ ...p.meta, image: await createImageBitmap(p.blob) });
  view.thumbs = thumbs;
  view.setPoints(pos, 3, atlases);
  view.renderNow();
  sync(view);
  const first = performance.now() - t0;
  const times: number[] = [];
  for (let f = 0; f < frames; f++) {
    const a = performance.now();
    view.orbit(0.03);
    view.renderNow();
    sync(view);
    times.push(performance.now() - a);
  }
  times.sort((a, b) => a - b);
  const share = view.nonBackgroundShare();
  return { n, thumbs, atlases: atlases.length, firstPictureMs: Math.round(first), medianFrameMs: +times[times.length >> 1].toFixed(1),
    p90FrameMs: +times[Math.floor(times.length * 0.9)].toFixed(1), drawnShare: +share.toFixed(3) };
}
(window as any).bench = { run };
