// The panel end to end, in headless Chromium against a running TensorBoard with the NIPGBoard plugin.
// Each section below is one behaviour the panel promises; every wait that must hold fails the run
// when it times out. Screenshots of each step land in ARTIFACTS.
//   TB_URL=http://127.0.0.1:6006 NETWORK=efficientnet_lite0 NETWORK2=mobilenet_v2 ARTIFACTS=test-artifacts node e2e/flow.mjs
//
//  1. The option forms of project, cluster and predict come from /kinds, pre-filled with the defaults.
//  2. One click on a network starts its pipeline on the server (with only the changed options); the
//     pipeline finishes with the tab closed, and a new tab shows its points coloured and its clusters.
//  3. The 3-D view: colour by cluster, hover, box selection; the clusters, similar and near-duplicates tabs.
//  4. The review queue: keyboard labelling, undo, "Update predictions", the automatic update.
//  5. Undo of a relabel and of a bulk (cluster) label, applied after a look at its images, gives every
//     earlier label back on the server.
//  6. A job that failed (started by a script) is explained on its network's card after a reload;
//     labels and the chosen colouring survive the reload.
//  7. A pipeline the server refuses (an option out of range) says why on the card.
//  8. A reload while one network's job runs and another's pipeline waits behind it: both cards show
//     their job again (running, queued); Cancel stops the running one; the queued pipeline then runs
//     (a reload meanwhile finds it again), here in 2-D, and with two networks the review queue
//     compares them.
import { chromium } from 'playwright-core';
import fs from 'node:fs';
import path from 'node:path';
import { launchOptions, reporter, sleep } from './browser.mjs';

const TB = process.env.TB_URL || 'http://127.0.0.1:6006';
const NETWORK = process.env.NETWORK || 'efficientnet_lite0';
const NETWORK2 = process.env.NETWORK2 || 'mobilenet_v2';
const METHOD = process.env.METHOD || 'pca';
const OUT = path.resolve(process.env.ARTIFACTS || 'test-artifacts');
fs.mkdirSync(OUT, { recursive: true });

const { log, check } = reporter('e2e');

// -- the plugin's routes, from Node (as a script or a second client would use them) -----------------
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
/** Poll a job until it leaves queued/running; fails after `ms`. */
async function jobEnd(run, id, ms) {
  const t0 = Date.now();
  for (;;) {
    const j = await get('job', { run, id });
    if (j.state !== 'queued' && j.state !== 'running') return j;
    if (Date.now() - t0 > ms) throw new Error(`job ${id} (${j.kind}) still ${j.state} after ${ms / 1000} s: ${j.stage}`);
    await sleep(500);
  }
}
/** Poll until `fn()` is truthy; fails after `ms` with `what`. */
async function until(what, fn, ms = 30000) {
  const t0 = Date.now();
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() - t0 > ms) throw new Error(`timed out after ${ms / 1000} s waiting for ${what}`);
    await sleep(300);
  }
}
const labelsNow = async (run) => { const m = await get('metadata', { run }); return new Map(m.ids.map((id, i) => [id, m.label[i]])); };
/** The panel shows these labels (it updates them once the server saved them), and the server has them. */
async function labelsAre(frame, run, want, what) {
  await waitIn(frame, what, (w) => { const { state } = window.nipgboard; return w.every(([id, l]) => state.meta.label[state.idIndex.get(id)] === l); }, [...want]);
  const server = await labelsNow(run);
  const wrong = [...want].filter(([id, l]) => server.get(id) !== l);
  check(wrong.length === 0, what + (wrong.length ? `: the server has ${wrong.map(([id]) => `#${id}=${server.get(id)}`).join(', ')}` : ''));
}

// -- the browser ---------------------------------------------------------------------------------------
const browser = await chromium.launch(launchOptions());
const context = await browser.newContext({ viewport: { width: 1500, height: 900 } });  // one localStorage for every page
const errors = [];
let page;
async function openPage() {
  page = await context.newPage();
  page.on('pageerror', (e) => errors.push(String(e)));
  page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
  await page.goto(`${TB}/#nipgboard`, { waitUntil: 'domcontentloaded' });
  return pluginFrame();
}
async function pluginFrame() {
  for (let t = 0; t < 300; t++) {
    const f = page.frames().find((fr) => fr.url().includes('plugin_entry.html') && fr.url().includes('nipgboard'));
    if (f) {
      try { await f.waitForFunction(() => !!window.nipgboard, null, { timeout: 1000 }); return f; } catch { /* not ready */ }
    }
    await page.waitForTimeout(200);
  }
  throw new Error('the NIPGBoard iframe did not load');
}
const shot = async (name) => { await page.screenshot({ path: path.join(OUT, name) }); log('screenshot', name); };
/** waitForFunction that names what it waited for when it times out. */
async function waitIn(frame, what, fn, arg, timeout = 30000) {
  try { await frame.waitForFunction(fn, arg, { timeout, polling: 200 }); } catch (e) {
    throw new Error(`timed out after ${timeout / 1000} s waiting for ${what}`);
  }
}
// The canvas shrunk to 64 x 64 RGBA, to compare two renderings.
const canvasPixels = (frame) => frame.evaluate(() => {
  const v = window.nipgboard.centre.view, c = document.createElement('canvas');
  c.width = c.height = 64;
  v.renderNow();
  const g = c.getContext('2d');
  g.drawImage(v.canvas, 0, 0, 64, 64);
  return Array.from(g.getImageData(0, 0, 64, 64).data);
});
const thumbnailsShown = (frame, timeout = 120000) => waitIn(frame, 'the thumbnails',
  () => /thumbnails$/.test(document.querySelector('.status').textContent), null, timeout);
const viewShows = (frame, net, timeout) => waitIn(frame, `the view of ${net}`, (n) => {
  const a = window.nipgboard;
  return a.state.network === n && a.state.meta && a.centre.view.n > 0;
}, net, timeout);
const card = (frame, net) => frame.locator(`.net[data-network="${net}"]`);
const cardText = (frame, net) => card(frame, net).locator('.row .prog').last().textContent();
const noBar = (frame, net, timeout) => waitIn(frame, `the ${net} card without a progress bar`,
  (n) => { const c = document.querySelector(`.net[data-network="${n}"]`); return c && !c.querySelector('.bar'); }, net, timeout);

try {
  const t0 = Date.now();
  const kinds = new Map((await get('kinds')).kinds.map((k) => [k.kind, k]));
  check(kinds.has('pipeline') && kinds.get('pipeline').available, 'the server offers the pipeline job kind');
  let frame = await openPage();
  log('tab open after', Date.now() - t0, 'ms');
  await card(frame, NETWORK).waitFor({ timeout: 60000 });
  const run = await frame.evaluate(() => window.nipgboard.state.run);
  await shot('01-opened.png');

  // 1. Option forms from /kinds, with the defaults filled in.
  for (const step of ['project', 'cluster', 'predict']) {
    const want = kinds.get(step).params.filter((p) => !['network', 'networks', 'object'].includes(p.type));
    const shown = await frame.locator(`#nb-options-${step} [name]`).evaluateAll((els) => els.map((e) => ({
      name: e.name, value: e.type === 'checkbox' ? e.checked : e.value, type: e.type || e.tagName })));
    check(shown.map((s) => s.name).join() === want.map((p) => p.name).join(), `the ${step} form has one input per parameter: ${shown.map((s) => s.name).join(', ')}`);
    const wrong = want.filter((p, k) => shown[k].value !== (p.type === 'bool' && p.default !== null ? p.default : p.default === null ? '' : String(p.default)));
    check(wrong.length === 0, `the ${step} form shows the defaults${wrong.length ? ': not ' + wrong.map((p) => p.name).join(', ') : ''}`);
  }
  const nNeighbors = kinds.get('project').params.find((p) => p.name === 'n_neighbors');
  const nInput = frame.locator('#nb-options-project input[name=n_neighbors]');
  check(await nInput.getAttribute('min') === String(nNeighbors.min) && await nInput.getAttribute('max') === String(nNeighbors.max),
    `number inputs carry their limits (n_neighbors ${nNeighbors.min}..${nNeighbors.max})`);
  await frame.locator('#nb-options-project > summary').click();
  await frame.locator('#nb-options-project select[name=method]').selectOption(METHOD);
  check(/1 changed/.test(await frame.locator('#nb-options-project > summary').textContent()), `choosing method ${METHOD} marks the project form changed`);
  await shot('01b-options.png');

  // 2. The pipeline runs on the server: start it, close the tab, and it still finishes.
  await card(frame, NETWORK).locator('button').first().click();
  await waitIn(frame, 'the pipeline job to be queued', (n) => window.nipgboard.pipelines.running.has(n), NETWORK);
  const jobId = await frame.evaluate((n) => window.nipgboard.pipelines.running.get(n).id, NETWORK);
  await card(frame, NETWORK).locator('.bar').waitFor({ timeout: 5000 });
  const progress = await cardText(frame, NETWORK);
  check(/^pipeline · /.test(progress), `the card shows the pipeline's progress: "${progress}"`);
  await shot('02-progress.png');
  const submitted = await get('job', { run, id: jobId });
  check(submitted.kind === 'pipeline' && submitted.params.network === NETWORK, `job ${jobId} is the pipeline of ${NETWORK}`);
  check(JSON.stringify(Object.keys(submitted.params.options)) === '["project"]' && submitted.params.options.project.method === METHOD,
    `only the changed option went with it (project.method = ${submitted.params.options.project.method})`);
  await page.close();
  log('tab closed while the pipeline is', submitted.state);
  const finished = await jobEnd(run, jobId, 600000);
  check(finished.state === 'done', `the pipeline finished with no tab open: ${finished.state} ${finished.error ?? ''}`);
  check(['embed', 'project', 'cluster', 'predict'].every((s) => s in finished.result.steps), `it ran ${Object.keys(finished.result.steps).join(', ')}`);
  frame = await openPage();
  await viewShows(frame, NETWORK, 60000);
  check(await card(frame, NETWORK).locator('.bar, .why.err').count() === 0, 'a new tab shows the network with neither progress nor error');
  const n = await frame.evaluate(() => window.nipgboard.centre.view.n);
  await thumbnailsShown(frame);
  const share = await frame.evaluate(() => window.nipgboard.centre.view.nonBackgroundShare());
  check(share > 0.005, `the canvas shows ${n} points (${(share * 100).toFixed(1)}% of pixels differ from the background)`);
  const initial = await frame.evaluate(() => {
    const { state } = window.nipgboard;
    return { overlay: state.overlay, select: document.querySelector('#nb-overlay').value, cats: [...new Set(state.categories)],
      classes: state.classes(), predicted: state.meta.predicted ? state.meta.predicted.filter((p) => p != null).length : 0 };
  });
  check(initial.predicted === n, `metadata has a prediction for every image (${initial.predicted}/${n})`);
  check(initial.overlay === 'predicted' && initial.select === 'predicted', `the points are coloured by predicted label (${initial.overlay})`);
  check(initial.cats.length >= 2 && initial.cats.every((c) => initial.classes.includes(c)), `every point has a class colour: ${initial.cats.join(', ')}`);
  const clusters = await get('clusters', { run, network: NETWORK });
  await frame.locator('button[data-tab=clusters]').click();
  await waitIn(frame, 'the clusters table', (k) => document.querySelectorAll('tr[data-cluster]').length === k, clusters.clusters.length);
  check(clusters.clusters.length >= 2, `the clusters tab lists the ${clusters.clusters.length} clusters`);
  await shot('03-points-predicted.png');

  // 3. The view and the tabs about the current image.
  await frame.locator('#nb-overlay').selectOption('cluster');
  const distinct = await frame.evaluate(() => new Set(window.nipgboard.state.meta.cluster.filter((c) => c != null && c >= 0)).size);
  check(distinct === clusters.clusters.length, `every one of the ${distinct} clusters has images in the view`);
  await waitIn(frame, 'the cluster legend', (k) => [...document.querySelectorAll('.legend .it')]
    .filter((e) => /^cluster \d+/.test(e.textContent)).length === Math.min(k, 60), distinct);
  log(`ok: the legend lists the ${distinct} clusters`);
  await shot('04-clusters.png');
  // a point in the middle of the data whose place on screen is not under the legend or a toolbar
  const mid = await frame.evaluate(() => {
    const v = window.nipgboard.centre.view, canvas = document.querySelector('canvas.nb-gl'), r = canvas.getBoundingClientRect();
    for (let k = 0; k < v.n; k++) {
      const i = (Math.floor(v.n / 2) + k) % v.n, pos = v.screenPos(i);
      if (pos && document.elementFromPoint(r.left + pos[0], r.top + pos[1]) === canvas) return { i, pos };
    }
    return { i: -1, pos: [r.width / 2, r.height / 2] };
  });
  check(mid.i >= 0, `a point to hover is in sight (#${mid.i})`);
  const box = await frame.locator('canvas.nb-gl').boundingBox();
  await page.mouse.move(box.x + mid.pos[0], box.y + mid.pos[1]);
  await frame.locator('.tip img').waitFor({ timeout: 20000 });  // the full image is read on first hover
  const tip = await frame.locator('.tip').textContent();
  check(/^#\d+ .*split: (train|test|pool)label: .*predicted: /.test(tip), `hovering a point shows its image and metadata: ${tip.slice(0, 70)}…`);
  await page.waitForTimeout(400);
  await shot('05-hover.png');
  await page.mouse.move(5, 5);

  await frame.locator('button[data-tool=box]').click();
  await page.mouse.move(box.x + box.width * 0.2, box.y + box.height * 0.2);
  await page.mouse.down();
  await page.mouse.move(box.x + box.width * 0.5, box.y + box.height * 0.5, { steps: 5 });
  await page.mouse.move(box.x + box.width * 0.8, box.y + box.height * 0.8, { steps: 5 });
  await page.mouse.up();
  const selected = await frame.evaluate(() => window.nipgboard.state.selection.size);
  check(selected > 1 && await frame.locator('#nb-labelbar').textContent().then((t) => t.startsWith(`${selected} selected images`)),
    `a box selection picks ${selected} images and the label bar names them`);
  await frame.locator('button[data-tool=orbit]').click();
  await frame.locator('button', { hasText: 'Clear selection' }).click();

  // Similar: click a point, see its nearest images, nearest first; a click on one makes it current.
  await page.mouse.click(box.x + mid.pos[0], box.y + mid.pos[1]);
  const picked = await frame.evaluate(() => { const { state } = window.nipgboard; return state.current >= 0 ? state.meta.ids[state.current] : -1; });
  check(picked >= 0, `clicking a point makes image #${picked} current`);
  await frame.locator('button[data-tab=similar]').click();
  const simImgs = frame.locator('#nb-pane .grid img');
  await simImgs.first().waitFor({ timeout: 30000 });
  await waitIn(frame, 'the similar thumbnails', () => [...document.querySelectorAll('#nb-pane .grid img')].every((i) => i.complete));
  const sim = await frame.evaluate(() => {
    const { state } = window.nipgboard;
    return { head: document.querySelector('#nb-pane .muted').textContent,
      items: [...document.querySelectorAll('#nb-pane .grid img')].map((i) => {
        const m = /^#(\d+) .* d=([\d.e-]+)$/.exec(i.title);
        return { id: m ? Number(m[1]) : null, d: m ? Number(m[2]) : NaN, w: i.naturalWidth, known: m ? state.idIndex.has(Number(m[1])) : false };
      }) };
  });
  check(sim.head.includes(`#${picked}`), `the similar tab is about #${picked}: ${sim.head}`);
  check(sim.items.length === Math.min(24, n - 1), `it shows ${sim.items.length} neighbours`);
  check(sim.items.every((x) => x.known && x.id !== picked && x.w > 0), 'neighbours are other known images with loaded thumbnails');
  check(sim.items.every((x, k) => x.d >= 0 && (k === 0 || x.d >= sim.items[k - 1].d)), `nearest first (d ${sim.items[0].d} … ${sim.items.at(-1).d})`);
  await simImgs.first().click();
  await waitIn(frame, 'the similar tab to follow the clicked neighbour', (id) => document.querySelector('#nb-pane .muted')?.textContent.includes(`#${id}`), sim.items[0].id, 10000);
  check(await frame.evaluate(() => { const { state } = window.nipgboard; return state.meta.ids[state.current]; }) === sim.items[0].id, `clicking neighbour #${sim.items[0].id} makes it current`);
  await shot('05b-similar.png');

  // Near duplicates: what the panel lists is what the server finds, at the default threshold and at 0.6.
  await frame.locator('button[data-tab=duplicates]').click();
  const thDefault = kinds.get('duplicates').params.find((p) => p.name === 'threshold').default;
  check(await frame.locator('#nb-pane input[type=number]').inputValue() === String(thDefault), `the threshold starts at the default ${thDefault}`);
  for (const threshold of [String(thDefault), '0.6']) {
    if (threshold !== String(thDefault)) {
      await frame.locator('#nb-pane input[type=number]').fill(threshold);
      await frame.locator('#nb-pane button', { hasText: 'Find' }).click();
    }
    const want = await get('duplicates', { run, network: NETWORK, threshold });
    const text = want.groups.length ? `${want.groups.length} group${want.groups.length > 1 ? 's' : ''} at distance ≤ ${want.threshold}` : `No near duplicates at distance ≤ ${want.threshold}.`;
    await waitIn(frame, `"${text}"`, (t) => [...document.querySelectorAll('#nb-pane .muted')].some((e) => e.textContent === t), text);
    const shown = await frame.locator('#nb-pane .group').count();
    check(shown === Math.min(want.groups.length, 100), `near duplicates at ${threshold}: "${text}", ${shown} groups listed`);
    if (want.groups.length) {
      const g = want.groups[0];
      const titles = await frame.locator('#nb-pane .group').first().locator('img').evaluateAll((els) => els.map((e) => e.title));
      check(titles.join() === g.slice(0, 12).map((e) => `#${e.id} ${e.path}`).join(), `the first group shows its images ${titles.map((t) => t.split(' ')[0]).join(' ')}`);
      await frame.locator('#nb-pane .group').first().locator('button').click();
      check(await frame.evaluate(() => window.nipgboard.state.selection.size) === g.length, `"Select ${g.length}" selects the group`);
    }
  }
  await shot('05c-duplicates.png');
  await frame.locator('button', { hasText: 'Clear selection' }).click();

  // 4. The review queue.
  await frame.locator('button[data-tab=review]').click();
  await frame.locator('.item').first().waitFor({ timeout: 60000 });
  const items = await frame.locator('.item').count();
  check(items >= 2, `the review queue lists ${items} images`);
  const auto = frame.locator('#nb-auto-update');
  check(await auto.isChecked(), 'automatic updates are on by default');
  await auto.uncheck();
  const first = frame.locator('.item').nth(0);
  const firstId = Number(await first.getAttribute('data-id'));
  await first.click();
  const expected = await frame.evaluate(() => window.nipgboard.state.suggestion());
  check(!!expected, `the suggested label for #${firstId} is ${expected}`);
  await page.keyboard.press('a');
  await labelsAre(frame, run, [[firstId, expected]], `A accepts ${expected} for #${firstId}`);
  await waitIn(frame, 'the queue to move on to the next image', (id) => { const { state } = window.nipgboard; return state.current >= 0 && state.meta.ids[state.current] !== id; }, firstId);
  const secondId = await frame.evaluate(() => { const { state } = window.nipgboard; return state.meta.ids[state.current]; });
  log(`ok: accepting moved the queue on to #${secondId}`);
  const cls1 = await frame.evaluate(() => window.nipgboard.state.classes()[0]);
  await page.keyboard.press('1');
  await labelsAre(frame, run, [[secondId, cls1]], `key 1 labels #${secondId} ${cls1}`);
  await page.keyboard.press('u');
  await labelsAre(frame, run, [[secondId, null]], `U removes the label just given to #${secondId}`);
  await shot('06-review-labelled.png');
  const bar = frame.locator('#nb-update');
  await bar.waitFor({ timeout: 10000 });
  check(/^1 label saved since this queue was made/.test(await bar.textContent()), `the queue offers an update: "${(await bar.textContent()).slice(0, 60)}…"`);
  await shot('06b-update-offered.png');
  await bar.locator('button').click();
  await waitIn(frame, 'the updated review queue', () => {
    const { state } = window.nipgboard;
    return !state.updating && state.review && state.editsSinceQueue === 0 && !document.querySelector('#nb-update') && state.review.stale.length === 0;
  }, null, 120000);
  const updated = await frame.evaluate(() => window.nipgboard.state.review.items.map((it) => it.id));
  check(updated.length > 0 && !updated.includes(firstId), `"Update predictions" retrained: the queue is current and #${firstId} left it`);
  await shot('06c-updated.png');
  // Automatic: 1% of 140 unlabelled images is one label, so accepting one suggestion starts a round.
  await frame.locator('#nb-auto-update').check();
  const roundItem = frame.locator(`.item:not([data-id="${secondId}"])`).first();
  const roundId = Number(await roundItem.getAttribute('data-id'));
  const unlabelled = await frame.evaluate(() => window.nipgboard.state.review.unlabelled);
  await roundItem.click();
  await page.keyboard.press('a');
  await waitIn(frame, 'the automatic update', (u) => {
    const { state } = window.nipgboard, r = state.review;
    return !state.updating && state.editsSinceQueue === 0 && r && r.unlabelled === u - 1 && r.stale.length === 0;
  }, unlabelled, 120000);
  const round = await frame.evaluate(() => window.nipgboard.state.review.items.map((it) => it.id));
  check(!round.includes(roundId), `after one label the predictions updated by themselves and #${roundId} left the queue`);
  await shot('06d-auto-updated.png');
  await frame.locator('#nb-auto-update').uncheck();

  // 5. Undo gives back the earlier labels: of a relabelled image, and of a whole cluster.
  const before = await labelsNow(run);
  const meta = await get('metadata', { run });
  const k = meta.ids.findIndex((id, i) => meta.split[i] === 'train' && meta.label[i] != null);
  const relabelId = meta.ids[k], oldLabel = meta.label[k];
  const classes = await frame.evaluate(() => window.nipgboard.state.classes());
  const other = classes.find((c) => c !== oldLabel);
  await frame.locator('#nb-search').fill(meta.paths[k]);
  await frame.locator('#nb-search').press('Enter');
  await frame.locator('#nb-search').fill('');
  await frame.locator('#nb-search').blur();
  check(await frame.evaluate(() => { const { state } = window.nipgboard; return state.target.kind === 'image' ? state.meta.ids[state.current] : null; }) === relabelId,
    `searching ${meta.paths[k]} makes #${relabelId} (labelled ${oldLabel}) current`);
  await page.keyboard.press(String(classes.indexOf(other) + 1));
  await labelsAre(frame, run, [[relabelId, other]], `key ${classes.indexOf(other) + 1} relabels #${relabelId} ${other}`);
  await shot('07-relabelled.png');
  await page.keyboard.press('u');
  await labelsAre(frame, run, [[relabelId, oldLabel]], `U gives #${relabelId} its label ${oldLabel} back`);
  await frame.locator('button[data-tab=clusters]').click();
  const big = clusters.clusters.filter((c) => c.n_labelled > 0 && c.n_labelled < c.size).sort((a, b) => b.size - a.size)[0];
  check(!!big, `cluster ${big?.cluster} holds labelled and unlabelled images`);
  await frame.locator(`tr[data-cluster="${big.cluster}"]`).click();
  await waitIn(frame, `cluster ${big.cluster} as the target`, (c) => window.nipgboard.state.target.cluster === c, big.cluster);
  const members = await frame.evaluate(() => window.nipgboard.state.targetIds());
  check(members.length === big.size && /^Cluster \d+ \(\d+ images\)/.test(await frame.locator('#nb-labelbar').textContent()), `the label bar targets cluster ${big.cluster} (${members.length} images)`);
  await page.keyboard.press('1');
  // A label for many images shows them first; Enter applies it.
  await frame.locator('#nb-bulk-apply').waitFor({ timeout: 10000 });
  check(await frame.locator('#nb-bulk .grid img').count() === Math.min(members.length, 240), `the cluster's ${members.length} images are shown before the label is applied`);
  await page.keyboard.press('Enter');
  const changed = members.filter((id) => before.get(id) !== classes[0]).length;
  await labelsAre(frame, run, members.map((id) => [id, classes[0]]), `key 1 labels the whole cluster ${classes[0]} (${changed} labels change)`);
  check(changed > 0, 'the cluster held other labels before');
  await page.keyboard.press('u');
  await labelsAre(frame, run, members.map((id) => [id, before.get(id)]), `U gives every image of cluster ${big.cluster} its earlier label back`);
  const after = await labelsNow(run);
  check([...before].every(([id, lab]) => after.get(id) === lab), 'after both undos every label of the dataset is as before');
  await shot('07b-after-undo.png');

  // 6. A job that fails for a real reason, started by a script (projecting a network never embedded):
  // after a reload its card says why. The labels and the colouring chosen in this tab are kept.
  const failing = await post('start_job', { run, kind: 'project', params: { network: NETWORK2, method: 'pca' } });
  check(failing.status === 202, `a script's project job on ${NETWORK2} is accepted (${failing.status})`);
  const failed = await jobEnd(run, failing.body.id, 60000);
  check(failed.state === 'failed' && /features/.test(failed.error), `it fails for want of features: ${failed.error}`);
  await page.reload({ waitUntil: 'domcontentloaded' });
  frame = await pluginFrame();
  await viewShows(frame, NETWORK, 60000);
  const kept = await frame.evaluate(([a1, a2]) => { const { state } = window.nipgboard; return [state.meta.label[state.idIndex.get(a1)], state.meta.label[state.idIndex.get(a2)]]; }, [firstId, secondId]);
  check(kept[0] === expected && kept[1] == null, `after the reload #${firstId} is still ${expected} and #${secondId} unlabelled`);
  check(await frame.evaluate(() => window.nipgboard.state.overlay) === 'cluster', 'the colouring picked in this tab (cluster) is kept');
  const why = card(frame, NETWORK2).locator('.why.err');
  await why.waitFor({ timeout: 10000 });
  check(await why.textContent() === `project failed: ${failed.error}`, `the ${NETWORK2} card says why: ${await why.textContent()}`);
  await thumbnailsShown(frame);
  await shot('08-after-reload.png');

  // 7. A pipeline the server refuses (a neighbour count out of range): the card says why.
  await frame.locator('#nb-options-project > summary').click();
  await frame.locator('#nb-options-project input[name=n_neighbors]').fill('1');
  await frame.locator('#nb-options-project input[name=n_neighbors]').dispatchEvent('change');
  const nErrors = errors.length;
  await card(frame, NETWORK).locator('button').first().click();
  const refused = await card(frame, NETWORK).locator('.why.err').textContent({ timeout: 30000 });
  errors.push(...errors.splice(nErrors).filter((e) => !/Failed to load resource.* 400 /.test(e)));  // the refused POST
  check(/n_neighbors/.test(refused) && new RegExp(`between ${nNeighbors.min} and ${nNeighbors.max}`).test(refused), `the ${NETWORK} card shows why: ${refused}`);
  await frame.locator('#nb-options-project input[name=n_neighbors]').fill('');
  await frame.locator('#nb-options-project input[name=n_neighbors]').dispatchEvent('change');
  check(await frame.locator('#nb-options-project input[name=n_neighbors]').inputValue() === (nNeighbors.default === null ? '' : String(nNeighbors.default)), 'emptying an option brings its default back');

  // 8. Reload while jobs run: a slow grid search of NETWORK holds the worker (started by a script),
  // NETWORK2's pipeline (in 2-D) waits behind it. After a reload both cards show their job again.
  const before3d = await canvasPixels(frame);
  await frame.locator('#nb-options-project input[name=n_components]').fill('2');
  await frame.locator('#nb-options-project input[name=n_components]').dispatchEvent('change');
  const blocker = await post('start_job', { run, kind: 'search', params: { network: NETWORK,
    n_neighbors: [5, 8, 10, 12, 15, 20, 25, 30, 40, 50], min_dist: [0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.8], apply: false } });
  check(blocker.status === 202, 'a long grid search is started by a script');
  await until('the grid search to run', async () => (await get('job', { run, id: blocker.body.id })).state === 'running', 60000);
  await card(frame, NETWORK2).locator('button').first().click();
  await waitIn(frame, `${NETWORK2}'s pipeline to be queued`, (n) => window.nipgboard.pipelines.running.has(n), NETWORK2);
  const queuedId = await frame.evaluate((n) => window.nipgboard.pipelines.running.get(n).id, NETWORK2);
  await page.reload({ waitUntil: 'domcontentloaded' });
  frame = await pluginFrame();
  await card(frame, NETWORK2).locator('.bar').waitFor({ timeout: 30000 });
  await card(frame, NETWORK).locator('.bar').waitFor({ timeout: 30000 });
  const queuedText = await cardText(frame, NETWORK2), runningText = await cardText(frame, NETWORK);
  const states = [(await get('job', { run, id: blocker.body.id })).state, (await get('job', { run, id: queuedId })).state];
  check(states[0] === 'running' && states[1] === 'queued', `the server has the search running and the pipeline queued (${states.join(', ')})`);
  check(await frame.evaluate((n) => window.nipgboard.pipelines.running.get(n)?.id, NETWORK2) === queuedId && /^pipeline · queued/.test(queuedText),
    `after the reload the ${NETWORK2} card follows its queued pipeline: "${queuedText}"`);
  check(/^search · .* · running/.test(runningText), `and the ${NETWORK} card the running search: "${runningText}"`);
  await shot('09-reload-queued.png');
  await card(frame, NETWORK).locator('button', { hasText: 'Cancel' }).click();
  const cancelled = await jobEnd(run, blocker.body.id, 60000);
  check(cancelled.state === 'cancelled', `Cancel on the ${NETWORK} card stops the search (${cancelled.state})`);
  await waitIn(frame, `the ${NETWORK} card to say cancelled`, (n) => document.querySelector(`.net[data-network="${n}"] .why.err`)?.textContent === 'cancelled', NETWORK);
  await waitIn(frame, `${NETWORK2}'s pipeline to run`, (n) => /· running/.test([...document.querySelectorAll(`.net[data-network="${n}"] .row .prog`)].at(-1).textContent)
    || window.nipgboard.state.network === n, NETWORK2, 120000);
  await shot('09b-pipeline-running.png');
  // A reload while the pipeline runs: its card follows it again (unless it ended meanwhile, on a fast machine).
  await page.reload({ waitUntil: 'domcontentloaded' });
  frame = await pluginFrame();
  const again = await until(`${NETWORK2}'s pipeline on its card again, or done`, async () => {
    if ((await get('job', { run, id: queuedId })).state === 'done') return { done: true };
    const following = await frame.evaluate((net) => window.nipgboard.pipelines.running.get(net)?.id ?? null, NETWORK2);
    return following === queuedId && await card(frame, NETWORK2).locator('.bar').count() ? { done: false, text: await cardText(frame, NETWORK2) } : null;
  }, 60000);
  if (again.done) log(`${NETWORK2}'s pipeline ended before the reloaded tab could show it running`);
  else {
    check(/^pipeline · (.+ · )?running/.test(again.text), `after a reload during the pipeline its card shows its progress again: "${again.text}"`);
    await shot('09c-reload-running.png');
  }
  await viewShows(frame, NETWORK2, 600000);
  await noBar(frame, NETWORK2, 10000);
  check(await card(frame, NETWORK2).locator('.why.err').count() === 0, `${NETWORK2}'s pipeline finished without an error`);
  check((await get('job', { run, id: queuedId })).params.options.project.n_components === 2, 'it ran with the 2-D option');
  await thumbnailsShown(frame);
  const flat = await frame.evaluate(() => {
    const { centre, state } = window.nipgboard, v = centre.view;
    let z = 0;
    for (let i = 0; i < v.n; i++) z = Math.max(z, Math.abs(v.positions[i * 3 + 2]));
    return { z, rotate: v.controls.enableRotate, status: document.querySelector('.status').textContent, overlay: state.overlay };
  });
  check(flat.z === 0 && !flat.rotate && /· 2-D ·/.test(flat.status), `the view is 2-D (max |z| ${flat.z}, rotation ${flat.rotate ? 'on' : 'off'}, "${flat.status}")`);
  check(flat.overlay === 'cluster', 'the colouring picked before is kept when the view reloads');
  const after2d = await canvasPixels(frame);
  let moved = 0;
  for (let i = 0; i < after2d.length; i += 4) {
    if (Math.abs(after2d[i] - before3d[i]) + Math.abs(after2d[i + 1] - before3d[i + 1]) + Math.abs(after2d[i + 2] - before3d[i + 2]) > 30) moved++;
  }
  check(moved / (after2d.length / 4) > 0.05, `the canvas was redrawn (${(100 * moved / (after2d.length / 4)).toFixed(0)}% of it changed)`);
  await frame.locator('button[data-tab=review]').click();
  await waitIn(frame, 'the review queue over both networks', () => window.nipgboard.state.review?.networks.length === 2, null, 60000);
  const rv = await frame.evaluate(() => { const r = window.nipgboard.state.review; return { ...r, items: r.items.length }; });
  const server = await get('review', { run, limit: 500 });
  check(rv.networks.join() === server.networks.join() && rv.disagreements === server.disagreements && rv.unlabelled === server.unlabelled,
    `the review queue over ${rv.networks.join(' + ')}: ${rv.disagreements} disagreements among ${rv.unlabelled} unlabelled, as the server says`);
  await frame.locator('#nb-pane .hint', { hasText: 'third network' }).waitFor({ timeout: 10000 });
  await frame.locator('#nb-overlay').selectOption('disagreement');
  await waitIn(frame, 'the disagreement legend', () => /expert label/.test(document.querySelector('.legend').textContent));
  await shot('10-two-networks-disagreement.png');

  const relevant = errors.filter((e) => !/favicon|Failed to load resource.*(409|404)/i.test(e));
  check(relevant.length === 0, 'no page errors' + (relevant.length ? ': ' + relevant.join(' | ') : ''));
  log('PASS in', ((Date.now() - t0) / 1000).toFixed(1), 's');
} catch (e) {
  if (page && !page.isClosed()) await shot('99-failure.png').catch(() => undefined);
  console.error(errors.join('\n'));
  console.error(e);
  process.exitCode = 1;
} finally {
  await browser.close();
}
