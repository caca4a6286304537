// The first picture early, in headless Chromium against a running TensorBoard: a pipeline that streams
// its images in (early_view) shows those placed so far before the embedding ends.
//   TB_URL=... NETWORK=efficientnet_lite0 ARTIFACTS=test-artifacts/e2e HOLD=/tmp/hold node e2e/early_view.mjs
//
// The test (tests/test_e2e_early_view.py) holds the job mid-way without racing it: the labelled images'
// features are cached beforehand, so the pipeline fits its first view on them without writing, and its
// next write waits on SQLite's write lock of the feature cache, which the test holds from when this
// script writes HOLD/take (it answers HOLD/taken) until this script writes HOLD/release.
//
//  1. A page reloaded while the pipeline streams opens on its preview: the images placed so far as dots,
//     fewer than the images of the run; the status line says how many are still coming.
//  2. Images without a place are neither drawn nor picked nor box-selected.
//  3. The Clusters and Next tabs say what is still coming instead of an error; no suggest job starts.
//  4. Showing the network again during the preview keeps the camera and reads no metadata again; no
//     thumbnails are drawn or loaded during the preview.
//  5. When the pipeline ends, every image is shown with its thumbnail (the camera where the user left
//     it), and the clusters are listed.
import { chromium } from 'playwright-core';
import fs from 'node:fs';
import path from 'node:path';
import { launchOptions, reporter, sleep } from './browser.mjs';

const TB = process.env.TB_URL || 'http://127.0.0.1:6006';
const NETWORK = process.env.NETWORK || 'efficientnet_lite0';
const OUT = path.resolve(process.env.ARTIFACTS || 'test-artifacts');
const HOLD = process.env.HOLD;
fs.mkdirSync(OUT, { recursive: true });

const { log, check } = reporter('early');
const API = `${TB}/data/plugin/nipgboard/`;
async function get(route, params = {}) {
  const res = await fetch(API + route + '?' + new URLSearchParams(params));
  const body = await res.json();
  if (!res.ok) throw new Error(`GET ${route}: ${res.status} ${body.error}`);
  return body;
}
async function post(route, body) {
  const res = await fetch(API + route, { method: 'POST', headers: { 'Content-Type': 'application/json', 'X-NIPGBoard': '1' }, body: JSON.stringify(body) });
  return { status: res.status, body: await res.json() };
}
async function until(what, fn, ms = 30000) {
  const t0 = Date.now();
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() - t0 > ms) throw new Error(`timed out after ${ms / 1000} s waiting for ${what}`);
    await sleep(100);
  }
}
const holdFile = (name) => path.join(HOLD, name);
let held = false;
function release() {
  if (held) { fs.writeFileSync(holdFile('release'), ''); held = false; log('the feature cache is free again'); }
}

const browser = await chromium.launch(launchOptions());
const context = await browser.newContext({ viewport: { width: 1500, height: 900 } });
const errors = [];
const page = await context.newPage();
page.on('pageerror', (e) => errors.push(String(e)));
page.on('console', (m) => { if (m.type() === 'error' && !/404|409/.test(m.text())) errors.push(m.text()); });
// The panel's requests: which routes it read, and when.
const requests = [];
page.on('request', (r) => { const u = new URL(r.url()); if (u.pathname.includes('/plugin/nipgboard/')) requests.push({ route: u.pathname.split('/').pop(), params: u.searchParams }); });
const asked = (route) => requests.filter((r) => r.route === route).length;
const shot = async (name) => { await page.screenshot({ path: path.join(OUT, name) }); log('screenshot', name); };
async function waitIn(frame, what, fn, arg, timeout = 30000) {
  try { await frame.waitForFunction(fn, arg, { timeout, polling: 100 }); } catch {
    throw new Error(`timed out after ${timeout / 1000} s waiting for ${what}`);
  }
}
async function pluginFrame() {
  for (let t = 0; t < 300; t++) {
    const f = page.frames().find((fr) => fr.url().includes('plugin_entry.html') && fr.url().includes('nipgboard'));
    if (f) {
      try { await f.waitForFunction(() => !!window.nipgboard, null, { timeout: 1000 }); return f; } catch { /* not ready */ }
    }
    await page.waitForTimeout(100);
  }
  throw new Error('the NIPGBoard iframe did not load');
}
const num = (s) => Number(s.replace(/,/g, ''));

try {
  const t0 = Date.now();
  await page.goto(`${TB}/#nipgboard`, { waitUntil: 'domcontentloaded', timeout: 120000 });
  let frame = await pluginFrame();
  await frame.locator(`.net[data-network="${NETWORK}"]`).waitFor({ timeout: 60000 });
  const run = await frame.evaluate(() => window.nipgboard.state.run);
  const summary = await get('summary', { run });
  check(await frame.evaluate(() => window.nipgboard.state.network) === '', `no view yet: ${summary.images} images, ${summary.labelled} labelled, none projected`);

  // The pipeline, held after its first view: the test takes the feature cache's write lock first.
  fs.writeFileSync(holdFile('take'), '');
  await until('the test to take the write lock', () => fs.existsSync(holdFile('taken')));
  held = true;
  const started = await post('start_job', { run, kind: 'pipeline', params: { network: NETWORK, early_view: 1, options: { project: { method: 'pca', pool_sample: 20 } } } });
  check(started.status === 202, `the pipeline with early_view=1 is accepted (${started.status} ${started.body.error ?? ''})`);
  const jobId = started.body.id;
  const job = await until('the pipeline\'s first preview', async () => {
    const j = await get('job', { run, id: jobId });
    if (j.state !== 'queued' && j.state !== 'running') throw new Error(`the pipeline ended before any preview: ${j.state} ${j.error ?? ''}`);
    return j.result?.preview ? j : null;
  }, 120000);
  const { placed, images } = job.result.preview;
  const tHeld = Date.now();
  check(placed > 0 && placed < images && images === summary.images, `the job reports a preview: ${placed} of ${images} images placed (${job.result.preview.phase})`);

  // 1. A page (re)loaded while the pipeline streams opens on its preview.
  await page.reload({ waitUntil: 'domcontentloaded' });
  frame = await pluginFrame();
  await waitIn(frame, 'the preview', (n) => {
    const a = window.nipgboard;
    return a.state.network === n && a.centre.previews.length > 0 && a.centre.view.n > 0;
  }, NETWORK);
  log(`preview shown ${((Date.now() - tHeld) / 1000).toFixed(1)} s after the hold began`);
  const view = await frame.evaluate(() => {
    const { centre } = window.nipgboard, v = centre.view;
    return { n: v.n, placed: v.placedCount, previews: centre.previews, status: document.querySelector('.status').textContent };
  });
  check(view.n === images && view.placed === placed, `the view holds all ${view.n} images, ${view.placed} of them placed`);
  const m = /^([\d,]+) of ([\d,]+) images placed · ([\d,]+) still coming · (.+) · dots until the embedding ends$/.exec(view.status);
  check(m && num(m[1]) === placed && num(m[2]) === images && num(m[3]) === images - placed, `the status line says what is still coming: "${view.status}"`);
  const legend = await frame.locator('.legend .it').evaluateAll((els) => els.map((e) => [e.children[1].textContent, Number(e.lastElementChild.textContent)]));
  check(legend.reduce((a, [, k]) => a + k, 0) === placed, `the legend counts the images in the view: ${legend.map(([c, k]) => `${c} ${k}`).join(', ')}`);

  // 2. Images without a place: not drawn (outside the clip volume), not picked, not selected.
  const picking = await frame.evaluate(() => {
    const v = window.nipgboard.centre.view, canvas = document.querySelector('canvas.nb-gl'), r = canvas.getBoundingClientRect();
    const hidden = [];
    for (let i = 0; i < v.n; i++) if (!v.placed[i]) hidden.push(i);
    const offScreen = hidden.every((i) => v.screenPos(i)[0] < -1e8);
    const picked = new Set();
    for (let y = 2; y < r.height; y += 6) for (let x = 2; x < r.width; x += 6) { const i = v.pick(x, y); if (i >= 0) picked.add(i); }
    return { hidden: hidden.length, offScreen, picked: [...picked], centre: v.pick(r.width / 2, r.height / 2) };
  });
  check(picking.hidden === images - placed && picking.offScreen, `the ${picking.hidden} images without a place have no place on screen`);
  const placedFlags = await frame.evaluate(() => Array.from(window.nipgboard.centre.view.placed));
  check(picking.picked.length > 0 && picking.picked.every((i) => placedFlags[i]), `picking over the whole canvas finds ${picking.picked.length} points, every one placed`);
  check(picking.centre < 0 || placedFlags[picking.centre], 'the middle of the view (where a point without coordinates would sit) picks no unplaced image');
  const box = await frame.locator('canvas.nb-gl').boundingBox();
  await frame.locator('button[data-tool=box]').click();
  await page.mouse.move(box.x + 3, box.y + 3);
  await page.mouse.down();
  await page.mouse.move(box.x + box.width / 2, box.y + box.height / 2, { steps: 3 });
  await page.mouse.move(box.x + box.width - 3, box.y + box.height - 3, { steps: 3 });
  await page.mouse.up();
  await frame.locator('button[data-tool=orbit]').click();
  const selected = await frame.evaluate(() => [...window.nipgboard.state.selection]);
  check(selected.length > 0 && selected.every((i) => placedFlags[i]), `a box over the whole view selects ${selected.length} images, all placed`);
  await frame.locator('button', { hasText: 'Clear selection' }).click();

  // 3. The tabs say what is still coming.
  await frame.locator('button[data-tab=clusters]').click();
  const wait = frame.locator('#nb-clusters-wait');
  await wait.waitFor({ timeout: 10000 });
  const clustersLine = await wait.textContent();
  check(clustersLine === `Clusters come once every image is embedded (${images - placed} still coming).`, `the Clusters tab: "${clustersLine}"`);
  await shot('ev-01-preview.png');
  await frame.locator('button[data-tab=next]').click();
  const nextLine = await frame.locator('#nb-next-status span').first().textContent();
  check(/^The images to label next are chosen once every image is embedded \(\d+ still coming\)\.$/.test(nextLine)
    && await frame.locator('#nb-next-round').isDisabled(), `the Next tab: "${nextLine}" (its round button waits)`);

  // 4. Showing the network again during the preview: the camera stays, the metadata is not read again.
  await page.mouse.move(box.x + box.width * 0.45, box.y + box.height * 0.5);
  await page.mouse.down();
  await page.mouse.move(box.x + box.width * 0.55, box.y + box.height * 0.45, { steps: 4 });
  await page.mouse.up();
  const camera = () => frame.evaluate(() => window.nipgboard.centre.view.camera.position.toArray());
  const before = { cam: await camera(), meta: asked('metadata'), points: asked('points'), previews: await frame.evaluate(() => window.nipgboard.centre.previews.length) };
  await frame.locator(`.net[data-network="${NETWORK}"] button`, { hasText: 'Show' }).click();
  await waitIn(frame, 'the preview shown again', (k) => window.nipgboard.centre.previews.length > k, before.previews);
  const after = await camera();
  check(asked('points') > before.points && asked('metadata') === before.meta, `showing it again read the points again, not the metadata (${before.meta} metadata reads in all)`);
  check(after.every((c, k) => Math.abs(c - before.cam[k]) < 1e-6), `the camera moved by the user stayed (${after.map((c) => c.toFixed(2)).join(', ')})`);
  const still = await get('job', { run, id: jobId });
  check(still.state === 'running' && still.result?.preview?.placed === placed, `the pipeline is still held at ${placed} placed (${Math.round((Date.now() - tHeld) / 1000)} s into the hold)`);
  check(!requests.some((r) => r.route.startsWith('sprite')), 'no thumbnails were asked for during the preview');
  const kinds = (await get('jobs', { run })).jobs.map((j) => j.kind);
  check(!kinds.includes('sprites') && !kinds.includes('suggest'), `no sprites or suggest job started during the preview (jobs: ${kinds.join(', ')})`);
  release();

  // 5. The end: every image, with its thumbnail.
  const end = await until('the pipeline to end', async () => { const j = await get('job', { run, id: jobId }); return j.state !== 'queued' && j.state !== 'running' ? j : null; }, 300000);
  check(end.state === 'done', `the pipeline finished: ${end.state} ${end.error ?? ''} (${Object.keys(end.result?.steps ?? {}).join(', ')})`);
  await waitIn(frame, 'the full view with thumbnails', (n) => {
    const a = window.nipgboard, v = a.centre.view;
    return !a.pipelines.running.has(n) && a.state.network === n && v.n > 0 && v.placedCount === v.n
      && /· thumbnails$/.test(document.querySelector('.status').textContent);
  }, NETWORK, 120000);
  const final = await frame.evaluate(() => {
    const { centre } = window.nipgboard, v = centre.view;
    return { n: v.n, placed: v.placedCount, share: v.nonBackgroundShare(), status: document.querySelector('.status').textContent, previews: centre.previews };
  });
  check(final.n === images && final.placed === images, `every one of the ${images} images is placed: "${final.status}"`);
  const finalCam = await camera();
  check(finalCam.every((c, k) => Math.abs(c - after[k]) < 1e-6), 'the whole view opened where the user left the camera');
  check(final.share > 0.005, `the thumbnails fill ${(final.share * 100).toFixed(1)}% of the canvas`);
  check(final.previews.every((p) => p.placed <= p.images) && final.previews[0].placed < images,
    `the previews shown: ${final.previews.map((p) => `${p.placed}/${p.images}`).join(', ')}`);
  const clusters = await get('clusters', { run, network: NETWORK });
  await frame.locator('button[data-tab=next]').click();
  await frame.locator('button[data-tab=clusters]').click();
  await waitIn(frame, 'the clusters table', (k) => document.querySelectorAll('tr[data-cluster]').length === k, clusters.clusters.length);
  check(await frame.locator('#nb-clusters-wait').count() === 0, `the Clusters tab lists the ${clusters.clusters.length} clusters`);
  await page.waitForTimeout(300);
  await shot('ev-02-final.png');
  check(errors.length === 0, 'no errors in the page' + (errors.length ? ': ' + errors.join(' | ') : ''));
  log(`PASS in ${Math.round((Date.now() - t0) / 1000)} s`);
} catch (e) {
  release();
  log('FAIL', e.stack || e);
  await shot('ev-failure.png').catch(() => undefined);
  process.exitCode = 1;
} finally {
  release();
  await browser.close();
}
