// From a folder with no labels to labelled and exported, in headless Chromium against a running
// TensorBoard, by keyboard and mouse alone. The images' file names carry their class (circle_003.png),
// which only this script reads: it plays the expert. Screenshots of each step land in ARTIFACTS.
//   TB_URL=http://127.0.0.1:6006 NETWORK=efficientnet_lite0 METHOD=pca ARTIFACTS=test-artifacts/e2e node e2e/coldstart.mjs
//
//  1. No labels: one click on the network runs the pipeline to the end (projected without labels,
//     predict skipped with a note).
//  2. The Next tab asks for the images to label first (a suggest job) and lists them with their reasons.
//  3. The expert labels them by keyboard: a new class by typing its name, later ones by a digit or the
//     first letters; skip and back; undo goes back to the image. Working the list through predicts
//     and starts the next round, said in a line.
//  4. A box selection and a cluster are labelled after a look at their images (Cancel changes nothing,
//     Apply labels them all, one undo reverts them all).
//  5. The accuracy plot shows a point per prediction, and its estimate in words.
//  6. The export link gives a CSV with a label for every image.
import { chromium } from 'playwright-core';
import fs from 'node:fs';
import path from 'node:path';
import { launchOptions, reporter, sleep } from './browser.mjs';

const TB = process.env.TB_URL || 'http://127.0.0.1:6006';
const NETWORK = process.env.NETWORK || 'efficientnet_lite0';
// PCA keeps the test short (UMAP's first fit compiles for tens of seconds); METHOD=umap tests the default.
const METHOD = process.env.METHOD || 'pca';
const OUT = path.resolve(process.env.ARTIFACTS || 'test-artifacts');
fs.mkdirSync(OUT, { recursive: true });

const { log, check } = reporter('coldstart');
const API = `${TB}/data/plugin/nipgboard/`;
async function get(route, params = {}) {
  const res = await fetch(API + route + '?' + new URLSearchParams(params));
  const text = await res.text();
  try { return { status: res.status, body: JSON.parse(text) }; } catch { return { status: res.status, body: { error: text } }; }
}
/** The class a file name carries: circle_003.png -> circle. */
const truthOf = (p) => path.basename(p).replace(/_\d+\.\w+$/, '');

const browser = await chromium.launch(launchOptions());
const context = await browser.newContext({ viewport: { width: 1500, height: 900 }, acceptDownloads: true });
const errors = [];
const page = await context.newPage();
page.on('pageerror', (e) => errors.push(String(e)));
page.on('console', (m) => { if (m.type() === 'error' && !/404|409/.test(m.text())) errors.push(m.text()); });
const shot = async (name) => { await page.screenshot({ path: path.join(OUT, name) }); log('screenshot', name); };
async function waitIn(frame, what, fn, arg, timeout = 30000) {
  try { await frame.waitForFunction(fn, arg, { timeout, polling: 200 }); } catch {
    throw new Error(`timed out after ${timeout / 1000} s waiting for ${what}`);
  }
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

try {
  const t0 = Date.now();
  await page.goto(`${TB}/#nipgboard`, { waitUntil: 'domcontentloaded', timeout: 120000 });
  const frame = await pluginFrame();
  const card = frame.locator(`.net[data-network="${NETWORK}"]`);
  await card.waitFor({ timeout: 60000 });
  const run = await frame.evaluate(() => window.nipgboard.state.run);
  const S = (fn, arg) => frame.evaluate(fn, arg);
  check(await S(() => window.nipgboard.state.summary.labelled) === 0, 'the dataset has no labels');
  await frame.locator('.centre-msg', { hasText: 'No labels yet' }).waitFor({ timeout: 5000 });
  await shot('cs-01-no-labels.png');

  // 1. The pipeline from zero labels.
  await frame.locator('#nb-options-project > summary').click();
  await frame.locator('#nb-options-project select[name=method]').selectOption(METHOD);
  await frame.locator('#nb-options-project > summary').click();
  await card.locator('button').first().click();
  await waitIn(frame, 'the pipeline to start', (n) => window.nipgboard.pipelines.running.has(n), NETWORK, 10000);
  const jobId = await S((n) => window.nipgboard.pipelines.running.get(n).id, NETWORK);
  await waitIn(frame, 'the view after the pipeline', (n) => {
    const a = window.nipgboard;
    return !a.pipelines.running.has(n) && a.state.network === n && a.state.meta && a.centre.view.n > 0;
  }, NETWORK, 150000);
  const job = (await get('job', { run, id: jobId })).body;
  check(job.state === 'done', `the pipeline finished with no labels (${job.state} ${job.error ?? ''}) in ${Math.round((job.finished_at - job.started_at))} s`);
  check(job.result.steps.predict?.skipped && job.result.notes.some((n) => /no labels yet/.test(n)),
    `predict was skipped, saying why: "${job.result.notes.join(' | ')}"`);
  if (METHOD === 'umap') check(job.result.steps.project.mode === 'unsupervised', 'the projection was made without labels');
  check(await card.locator('.why.err').count() === 0, 'the network card shows no error');

  // 2. The Next queue.
  await waitIn(frame, 'the first round of the Next queue', () => {
    const { state } = window.nipgboard;
    return state.tab === 'next' && state.next && !state.nextBusy && state.current >= 0;
  }, null, 60000);
  const round1 = await S(() => window.nipgboard.state.next);
  check(round1.mode === 'cold start' && round1.items.length >= 6, `round 1 (${round1.mode}: ${round1.why}) lists ${round1.items.length} images`);
  const listed = await frame.locator('#nb-pane .item').evaluateAll((els) => els.map((e) => ({
    id: Number(e.dataset.id), img: e.querySelector('img').getAttribute('src'), reason: e.querySelector('.reason').textContent })));
  check(listed.length === round1.items.length && listed.every((x, k) => x.id === round1.items[k].id && /thumbnail/.test(x.img) && x.reason.length > 5),
    `each is listed with its thumbnail and reason, e.g. "${listed[0].reason}"`);
  check(await frame.locator('#nb-next-current img').count() === 1, 'the current image is shown large');
  await frame.locator('#nb-pane .item img').first().evaluate((img) => img.decode?.().catch(() => undefined));
  await shot('cs-02-next-queue.png');

  // 3. Keyboard labelling. The expert's keys: a new class by its name (n, name, Enter); a known one by
  // its digit, or by its first letters typed straight away (Enter), or by n and its first letters.
  const current = () => S(() => { const { state } = window.nipgboard; return state.current >= 0 ? { id: state.meta.ids[state.current], path: state.meta.paths[state.current] } : null; });
  const labelled = new Map();
  const known = new Set();
  let style = 0;
  async function labelCurrent() {
    const cur = await current();
    const cls = truthOf(cur.path);
    const classes = await S(() => window.nipgboard.state.classes());
    if (!classes.includes(cls)) {
      await page.keyboard.press('n');
      await page.keyboard.type(cls);
      check(await frame.locator('#nb-label-match').textContent() === `new class “${cls}”`, `typing "${cls}" offers a new class`);
      await page.keyboard.press('Enter');
    } else if (style++ % 3 === 0) {
      await page.keyboard.press(String(classes.indexOf(cls) + 1));
    } else if (!'asjkufn'.includes(cls[0])) {
      await page.keyboard.type(cls.slice(0, 2));   // the first letters, straight from the keyboard
      await page.keyboard.press('Enter');
    } else {
      await page.keyboard.press('n');
      await page.keyboard.type(cls.slice(0, 2));
      await page.keyboard.press('Enter');
    }
    await waitIn(frame, `#${cur.id} labelled ${cls}`, ([id, c]) => {
      const { state } = window.nipgboard;
      return state.meta.label[state.idIndex.get(id)] === c;
    }, [cur.id, cls], 10000);
    labelled.set(cur.id, cls);
    known.add(cls);
    return cur;
  }
  await labelCurrent();
  // Undo (Ctrl+Z in the field, U outside it) goes back to the image and takes its label away; skip (j)
  // and back (k) move without labelling.
  const undone = await current();
  const [firstId] = [...labelled.keys()];
  const undoneBack = (id) => { const { state } = window.nipgboard; return state.meta.label[state.idIndex.get(id)] == null && state.meta.ids[state.current] === id; };
  check(await frame.evaluate(() => document.activeElement?.id) === 'nb-label-input', 'the field keeps the focus for the next name');
  await page.keyboard.press('Control+z');
  await waitIn(frame, 'the undo', undoneBack, firstId, 10000);
  check(true, `Ctrl+Z in the field took the label of #${firstId} away and went back to it (was on #${undone.id})`);
  labelled.delete(firstId);
  await frame.locator('#nb-label-input').blur();
  await labelCurrent();
  await frame.locator('#nb-label-input').blur();
  await page.keyboard.press('u');
  await waitIn(frame, 'U to undo', undoneBack, firstId, 10000);
  check(true, 'so does U outside it');
  labelled.delete(firstId);
  await page.keyboard.press('j');
  await waitIn(frame, 'j to skip', (id) => window.nipgboard.state.meta.ids[window.nipgboard.state.current] !== id, firstId, 5000);
  await page.keyboard.press('k');
  await waitIn(frame, 'k to go back', (id) => window.nipgboard.state.meta.ids[window.nipgboard.state.current] === id, firstId, 5000);
  check(true, 'j skips to the next image and k comes back');
  const total1 = round1.items.length;
  for (let k = 0; k < total1; k++) {
    if (await S(() => window.nipgboard.state.round) !== 1) break;  // the last label started round 2
    await labelCurrent();
    if (k === 3) await shot('cs-03-labelling.png');
    await frame.locator('#nb-label-input').blur();
  }
  check(labelled.size === total1, `${labelled.size} images labelled by keyboard in round 1; classes made by typing: ${[...known].join(', ')}`);
  const server = (await get('metadata', { run })).body;
  const wrong = [...labelled].filter(([id, c]) => server.label[server.ids.indexOf(id)] !== c);
  check(wrong.length === 0, 'the server has every label typed');
  const counts = await frame.locator('#nb-summary').textContent();
  check(counts.includes(`${labelled.size} (${Math.round((100 * labelled.size) / server.count)}%)labelled`), `the dataset's counts follow: ${counts}`);

  // Working the list through predicts with the new labels and starts round 2, said in a line.
  await waitIn(frame, 'round 2 to start', () => { const { state } = window.nipgboard; return state.round === 1 && !!state.nextBusy; }, null, 5000)
    .then(async () => log('ok: the line says:', await frame.locator('#nb-next-status span').textContent()))
    .catch(() => log('round 2 started before the line was read'));
  await waitIn(frame, 'round 2', () => { const { state } = window.nipgboard; return state.round === 2 && !state.nextBusy && state.next; }, null, 120000);
  const note = await frame.locator('#nb-next-note').textContent();
  check(/^Predicted every image from \d+ labels of 3 classes/.test(note), `after the round: "${note}"`);
  const round2 = await S(() => window.nipgboard.state.next);
  check(round2.items.length > 0 && round2.items.every((it) => it.reason), `round 2 (${round2.mode}) lists ${round2.items.length} images with reasons, e.g. "${round2.items[0].reason}"`);
  // Round 2's images say what to do and carry the prediction: Enter accepts a right one, typing corrects a wrong one.
  if (round2.items.some((it) => it.kind)) {
    check(await frame.locator('#nb-pane .item .kind').count() === round2.items.length && await frame.locator('#nb-next-current .kind-line').count() === 1,
      `each image says what to do: ${[...new Set(round2.items.map((it) => it.kind))].join(', ')}`);
  }
  for (let k = 0; k < 3; k++) {
    const cur = await current();
    const it = round2.items.find((x) => x.id === cur.id);
    const cls = truthOf(cur.path);
    let how = it?.prediction === cls ? 'Enter' : 'typing';
    if (k === 1) {
      how = 'a click on its class button';   // the mouse works too, and leaves the keyboard to the page
      await frame.locator(`#nb-labelbar button[data-label="${cls}"]`).click();
    } else if (it?.prediction === cls) {
      await page.keyboard.press('Enter');
    } else {
      await page.keyboard.press('n');
      await page.keyboard.type(cls);
      await page.keyboard.press('Enter');
    }
    await waitIn(frame, `#${cur.id} labelled ${cls}`, ([id, c]) => {
      const { state } = window.nipgboard;
      return state.meta.label[state.idIndex.get(id)] === c && state.meta.ids[state.current] !== id;
    }, [cur.id, cls], 10000);
    log(`ok: #${cur.id} (${it?.kind ?? 'label'}, predicted ${it?.prediction ?? '-'}) → ${cls} by ${how}`);
    labelled.set(cur.id, cls);
    await frame.locator('#nb-label-input').blur();
  }
  const after2 = (await get('metadata', { run })).body;
  check([...labelled].every(([id, c]) => after2.label[after2.ids.indexOf(id)] === c), 'each of them kept its own label');
  const predicted = await S(() => window.nipgboard.state.meta.predicted?.filter((p) => p != null).length ?? 0);
  check(predicted === server.count, `every image has a prediction (${predicted}/${server.count})`);

  // 5. The accuracy plot (one point per prediction) and its words.
  const acc = await get('accuracy', { run, network: NETWORK });
  if (acc.status === 200 && acc.body.points.length) {
    await waitIn(frame, 'the accuracy plot', () => document.querySelectorAll('#nb-accuracy svg circle').length >= 2, null, 10000);
    const words = await frame.locator('#nb-accuracy-words').textContent();
    check(/^About \d+% of all images have a right label/.test(words), `the plot shows ${acc.body.points.length} point(s): "${words}"`);
  } else {
    const words = await frame.locator('#nb-accuracy-words').textContent();
    check(/Predict to see how accurate/.test(words), `no accuracy estimates from the server (${acc.status}): the panel says "${words}"`);
  }
  await shot('cs-04-round2.png');

  // 4. Bulk labelling, a look first. A box selection: Cancel (Esc) changes nothing.
  const before = (await get('metadata', { run })).body.label.slice();
  const box = await frame.locator('canvas.nb-gl').boundingBox();
  await frame.locator('button[data-tool=box]').click();
  await page.mouse.move(box.x + box.width * 0.1, box.y + box.height * 0.1);
  await page.mouse.down();
  await page.mouse.move(box.x + box.width * 0.9, box.y + box.height * 0.9, { steps: 8 });
  await page.mouse.up();
  await frame.locator('button[data-tool=orbit]').click();
  const selected = await S(() => window.nipgboard.state.selection.size);
  check(selected > 1, `a box selection holds ${selected} images`);
  await page.keyboard.press('1');
  await frame.locator('#nb-bulk-apply').waitFor({ timeout: 5000 });
  check(await frame.locator('#nb-bulk .grid img').count() === Math.min(selected, 240) && /^Label \d+ images \(the selection\)/.test(await frame.locator('#nb-bulk h3').textContent()),
    `labelling it shows its ${selected} images first`);
  await shot('cs-05-selection-preview.png');
  await page.keyboard.press('Escape');
  await frame.locator('#nb-bulk-apply').waitFor({ state: 'detached', timeout: 5000 });
  const afterCancel = (await get('metadata', { run })).body.label;
  check(afterCancel.every((l, i) => l === before[i]), 'Cancel changed no label');
  await frame.locator('button', { hasText: 'Clear selection' }).click();

  // A cluster: the purest with unlabelled images (by the file names), labelled by typing its class.
  const meta = (await get('metadata', { run, network: NETWORK })).body;
  const byCluster = new Map();
  meta.cluster.forEach((c, i) => { if (c != null && c >= 0) { if (!byCluster.has(c)) byCluster.set(c, []); byCluster.get(c).push(i); } });
  const pick = [...byCluster].map(([c, idx]) => {
    const counts = new Map();
    for (const i of idx) counts.set(truthOf(meta.paths[i]), (counts.get(truthOf(meta.paths[i])) ?? 0) + 1);
    const [cls, n] = [...counts].sort((a, b) => b[1] - a[1])[0];
    return { c, idx, cls, purity: n / idx.length, open: idx.filter((i) => meta.label[i] == null).length };
  }).filter((x) => x.open > 0 && x.idx.length > 1).sort((a, b) => b.purity - a.purity || b.open - a.open)[0];
  check(!!pick, `cluster ${pick.c} (${pick.idx.length} images, ${Math.round(pick.purity * 100)}% ${pick.cls}, ${pick.open} unlabelled) to label at once`);
  await frame.locator('button[data-tab=clusters]').click();
  await frame.locator(`tr[data-cluster="${pick.c}"]`).click();
  await waitIn(frame, `cluster ${pick.c} as the target`, (c) => window.nipgboard.state.target.cluster === c, pick.c, 5000);
  await page.keyboard.press('n');
  await page.keyboard.type(pick.cls);
  await page.keyboard.press('Enter');
  await frame.locator('#nb-bulk-apply').waitFor({ timeout: 5000 });
  await waitIn(frame, 'the preview thumbnails', () => [...document.querySelectorAll('#nb-bulk .grid img')].every((i) => i.complete), null, 10000);
  check(await frame.locator('#nb-bulk .grid img').count() === pick.idx.length, `the look-first grid shows the cluster's ${pick.idx.length} images`);
  log('ok: it says', await frame.locator('#nb-bulk-count').textContent());
  await shot('cs-06-cluster-preview.png');
  await frame.locator('#nb-bulk-apply').click();
  const ids = pick.idx.map((i) => meta.ids[i]);
  await waitIn(frame, 'the cluster labelled', ([ids, c]) => { const { state } = window.nipgboard; return ids.every((id) => state.meta.label[state.idIndex.get(id)] === c); }, [ids, pick.cls], 10000);
  let now = (await get('metadata', { run })).body;
  check(ids.every((id) => now.label[now.ids.indexOf(id)] === pick.cls), `Apply labelled all ${ids.length} images ${pick.cls} on the server`);
  await page.keyboard.press('u');
  const old = new Map(ids.map((id) => [id, meta.label[meta.ids.indexOf(id)]]));
  await waitIn(frame, 'one undo of the cluster', (pairs) => { const { state } = window.nipgboard; return pairs.every(([id, l]) => state.meta.label[state.idIndex.get(id)] === l); }, [...old], 10000);
  now = (await get('metadata', { run })).body;
  check(ids.every((id) => now.label[now.ids.indexOf(id)] === old.get(id)), 'one undo gave every image of the cluster its earlier label back');
  await frame.locator(`tr[data-cluster="${pick.c}"]`).click();
  await page.keyboard.press(String((await S(() => window.nipgboard.state.classes())).indexOf(pick.cls) + 1));
  await frame.locator('#nb-bulk-apply').waitFor({ timeout: 5000 });
  await page.keyboard.press('Enter');
  await waitIn(frame, 'the cluster labelled again', ([ids, c]) => { const { state } = window.nipgboard; return ids.every((id) => state.meta.label[state.idIndex.get(id)] === c); }, [ids, pick.cls], 10000);
  check(true, `a digit and Enter label the cluster ${pick.cls} again`);

  // Predict and suggest again on the button; the plot gains a point.
  await frame.locator('button[data-tab=next]').click();
  await frame.locator('#nb-next-round').click();
  await waitIn(frame, 'round 3', () => { const { state } = window.nipgboard; return state.round === 3 && !state.nextBusy; }, null, 120000);
  check(/^Predicted every image/.test(await frame.locator('#nb-next-note').textContent()), 'the button predicted again and started round 3');
  const acc2 = await get('accuracy', { run, network: NETWORK });
  if (acc2.status === 200 && acc2.body.points.length >= 2) {
    await waitIn(frame, 'the second point', (n) => document.querySelectorAll('#nb-accuracy svg circle.dot.all').length === n, acc2.body.points.length, 10000);
    log('ok: the plot words:', await frame.locator('#nb-accuracy-words').textContent());
  }
  await shot('cs-07-round3.png');

  // 6. Export: a label for every image.
  const [download] = await Promise.all([page.waitForEvent('download', { timeout: 30000 }), frame.locator('a', { hasText: 'Export labels (CSV)' }).click()]);
  const file = path.join(OUT, 'cs-labels.csv');
  await download.saveAs(file);
  const rows = fs.readFileSync(file, 'utf8').trim().split('\n').map((l) => [...l.matchAll(/"((?:[^"]|"")*)"|([^,]+)/g)].map((m) => m[1] ?? m[2]));
  const head = rows.shift();
  const fi = head.indexOf('final_label'), pi = head.indexOf('path');
  check(rows.length === server.count && rows.every((r) => r[fi]), `the exported CSV has a final label for each of its ${rows.length} images`);
  const right = rows.filter((r) => r[fi] === truthOf(r[pi])).length;
  check(right / rows.length >= 0.8, `${right} of ${rows.length} final labels are right (${Math.round((100 * right) / rows.length)}%), from ${labelled.size} images labelled one by one and one cluster`);
  check(errors.length === 0, 'no errors in the page' + (errors.length ? ': ' + errors.join(' | ') : ''));
  log(`PASS in ${Math.round((Date.now() - t0) / 1000)} s`);
} catch (e) {
  log('FAIL', e.stack || e);
  await shot('cs-failure.png').catch(() => undefined);
  process.exitCode = 1;
} finally {
  await browser.close();
}
