// Geometry helpers of the 3-D view.

export function pointInPolygon(x: number, y: number, poly: [number, number][]) {
  let inside = false;
  for (let i = 0, j = poly.length - 1; i < poly.length; j = i++) {
    const [xi, yi] = poly[i], [xj, yj] = poly[j];
    if ((yi > y) !== (yj > y) && x < ((xj - xi) * (y - yi)) / (yj - yi || 1e-12) + xi) inside = !inside;
  }
  return inside;
}

/** Centre the points and scale them into a cube of edge 20 (2-D: z = 0). */
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

/** Median distance from a sample of points to their nearest neighbour among all points. */
export function medianNearest(P: Float32Array, n: number, samples: number): number {
  if (n < 2) return 0;
  const m = Math.min(n, samples);
  const d: number[] = [];
  for (let s = 0; s < m; s++) {
    const i = Math.floor((s * n) / m);
    const x = P[i * 3], y = P[i * 3 + 1], z = P[i * 3 + 2];
    let best = Infinity;
    for (let j = 0; j < n; j++) {
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
