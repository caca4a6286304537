// Geometry helpers of the 3-D view.

export function pointInPolygon(x: number, y: number, poly: [number, number][]) {
  let inside = false;
  for (let i = 0, j = poly.length - 1; i < poly.length; j = i++) {
    const [xi, yi] = poly[i], [xj, yj] = poly[j];
    if ((yi > y) !== (yj > y) && x < ((xj - xi) * (y - yi)) / (yj - yi || 1e-12) + xi) inside = !inside;
  }
  return inside;
}

/** 1 where a point has a place (every one of its `dims` coordinates finite), else 0: a running pipeline
 * places images chunk by chunk, and the server sends NaN for those it has not placed yet. */
export function placedMask(src: Float32Array, dims: number): Uint8Array<ArrayBuffer> {
  const n = src.length / 3;
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) {
    let ok = 1;
    for (let k = 0; k < dims; k++) if (!Number.isFinite(src[i * 3 + k])) ok = 0;
    out[i] = ok;
  }
  return out;
}

/** Centre the points and scale them into a cube of edge 20 (2-D: z = 0). Points without a place
 * (non-finite coordinates) take no part in the bounds and land at 0. */
export function normalise(src: Float32Array, dims: number): Float32Array<ArrayBuffer> {
  const n = src.length / 3;
  const out = new Float32Array(src.length);
  const lo = [Infinity, Infinity, Infinity], hi = [-Infinity, -Infinity, -Infinity];
  for (let i = 0; i < n; i++) for (let k = 0; k < 3; k++) {
    const v = src[i * 3 + k];
    if (!Number.isFinite(v)) continue;
    if (v < lo[k]) lo[k] = v;
    if (v > hi[k]) hi[k] = v;
  }
  let span = 1e-9;
  for (let k = 0; k < dims; k++) span = Math.max(span, hi[k] - lo[k]);
  const s = 20 / span;
  for (let i = 0; i < n; i++) for (let k = 0; k < 3; k++) {
    const v = src[i * 3 + k];
    out[i * 3 + k] = k >= dims || !Number.isFinite(v) ? 0 : (v - (lo[k] + hi[k]) / 2) * s;
  }
  return out;
}

/** Median distance from a sample of points to their nearest neighbour among all points (among the
 * placed ones when `placed` is given). */
export function medianNearest(P: Float32Array, n: number, samples: number, placed?: Uint8Array): number {
  const idx = new Int32Array(n);
  let count = 0;
  for (let i = 0; i < n; i++) if (!placed || placed[i]) idx[count++] = i;
  if (count < 2) return 0;
  const m = Math.min(count, samples);
  const d: number[] = [];
  for (let s = 0; s < m; s++) {
    const i = idx[Math.floor((s * count) / m)];
    const x = P[i * 3], y = P[i * 3 + 1], z = P[i * 3 + 2];
    let best = Infinity;
    for (let t = 0; t < count; t++) {
      const j = idx[t];
      if (j === i) continue;
      const dx = P[j * 3] - x, dy = P[j * 3 + 1] - y, dz = P[j * 3 + 2] - z;
      const q = dx * dx + dy * dy + dz * dz;
      if (q < best && q > 1e-12) best = q;
    }
    if (best < Infinity) d.push(Math.sqrt(best));
  }
  d.sort((a, b) => a - b);
  return d.length ? d[d.length >> 1] : 0;
}
