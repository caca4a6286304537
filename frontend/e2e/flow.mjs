// End-to-end flow in headless Chromium against a running TensorBoard with the NIPGBoard plugin:
// open the tab, click a network, watch the progress finish, see points drawn coloured by prediction,
// colour by cluster, similar images and near duplicates, open the review queue, label an image by
// keyboard, undo another label, update the predictions, see a failed job's error, reload, see the label kept, switch to 2-D.
//   TB_URL=http://127.0.0.1:6006 RUN=faces NETWORK=efficientnet_lite0 ARTIFACTS=test-artifacts node e2e/flow.mjs
import { chromium } from 'playwright-core';
import fs from 'node:fs';
import path from 'node:path';
import { launchOptions } from './browser.mjs';

const TB = process.env.TB_URL || 'http://127.0.0.1:6006';
const NETWORK = process.env.NETWORK || 'efficientnet_lite0';
const METHOD = process.env.METHOD || 'pca';
const OUT = path.resolve(process.env.ARTIFACTS || 'test-artifacts');
fs.mkdirSync(OUT, { recursive: true });

const log = (...a) => console.log(`[e2e ${new Date().toISOString().slice(11, 19)}]`, ...a);
function check(cond, msg) { if (!cond) throw new Error('check failed: ' + msg); log('ok:', msg); }

const browser = await chromium.launch(launchOptions());
const page = await browser.newPage({ viewport: { width: 1500, height: 900 } });
const errors = [];
page.on('pageerror', (e) => errors.push(String(e)));
page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });

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
// The canvas shrunk to 64 x 64 RGBA, to compare two renderings.
const canvasPixels = (frame) => frame.evaluate(() => {
  const v = window.nipgboard.view, c = document.createElement('canvas');
  c.width = c.height = 64;
  v.renderNow();
  const g = c.getContext('2d');
  g.drawImage(v.canvas, 0, 0, 64, 64);
  return Array.from(g.getImageData(0, 0, 64, 64).data);
});
const thumbnailsShown = (frame, timeout = 60000) =>
  frame.waitForFunction(() => /thumbnails$/.test(document.querySelector('.status').textContent), null, { timeout });
// A GET of the plugin's routes from inside the panel's page (same relative URLs as the panel).
const api = (frame, route) => frame.evaluate(async (r) => (await fetch(r)).json(), route);

try {
  const t0 = Date.now();
  await page.goto(`${TB}/#nipgboard`, { waitUntil: 'domcontentloaded' });
  let frame = await pluginFrame();
  log('tab open after', Date.now() - t0, 'ms');
  let card = frame.locator(`.net[data-network="${NETWORK}"]`);
  await card.waitFor({ timeout: 60000 });
  await shot('01-opened.png');

  // Projection options, then one click on the network.
  await frame.locator('select[name=method]').selectOption(METHOD);
  await card.locator('button').first().click();
  await card.locator('.bar').waitFor({ timeout: 30000 });
  log('progress bar shown:', await card.locator('.row .prog').last().textContent());
  await page.waitForTimeout(300);
  await shot('02-progress.png');
  // Progress finishes: the bar disappears and the view holds the points.
  await frame.waitForFunction((net) => {
    const a = window.nipgboard;
    const card = document.querySelector(`.net[data-network="${net}"]`);
    return a.network === net && a.view.n > 0 && card && !card.querySelector('.bar');
  }, NETWORK, { timeout: 600000, polling: 500 });
  const err = await card.locator('.why.err').count();
  check(err === 0, 'the pipeline finished without an error');
  const n = await frame.evaluate(() => window.nipgboard.view.n);
  check(n > 0, `points loaded (${n})`);
  // Thumbnails replace the dots once the atlases are loaded.
  await thumbnailsShown(frame, 120000);
  const share = await frame.evaluate(() => window.nipgboard.view.nonBackgroundShare());
  check(share > 0.005, `canvas shows points (${(share * 100).toFixed(1)}% of pixels differ from the background)`);
  // With predictions the first colouring is the predicted label, so every point has a class colour.
  const initial = await frame.evaluate(() => {
    const a = window.nipgboard;
    return { overlay: a.overlay, select: document.querySelector('#nb-overlay').value, cats: [...new Set(a.categories)],
      classes: a.classes(), predicted: a.meta.predicted ? a.meta.predicted.filter((p) => p != null).length : 0 };
  });
  check(initial.predicted === n, `metadata has a prediction for every image (${initial.predicted}/${n})`);
  check(initial.overlay === 'predicted' && initial.select === 'predicted', `initial colouring is the predicted label (${initial.overlay}, select ${initial.select})`);
  check(initial.cats.length >= 2 && initial.cats.every((c) => initial.classes.includes(c)),
    `points are coloured by class only: ${initial.cats.join(', ')}`);
  await shot('03-points-predicted.png');

  // Colour by cluster: the legend lists clusters.
  await frame.locator('#nb-overlay').selectOption('cluster');
  await frame.waitForFunction(() => /cluster \d+/.test(document.querySelector('.legend').textContent));
  const groups = await frame.locator('.legend .it').count();
  check(groups >= 1, `legend lists ${groups} clusters`);
  await shot('04-clusters.png');

  // Hover a point: the full image and its metadata.
  const pos = await frame.evaluate(() => { const a = window.nipgboard; return a.view.screenPos(Math.floor(a.view.n / 2)); });
  const box = await frame.locator('canvas.nb-gl').boundingBox();
  await page.mouse.move(box.x + pos[0], box.y + pos[1]);
  await frame.locator('.tip img').waitFor({ timeout: 5000 }).catch(() => {});
  const tip = await frame.locator('.tip').isVisible();
  check(tip, 'hovering a point shows its image and metadata');
  await page.waitForTimeout(400);
  await shot('05-hover.png');
  await page.mouse.move(5, 5);

  // Box selection: drag over the middle of the view.
  await frame.locator('button[data-tool=box]').click();
  await page.mouse.move(box.x + box.width * 0.2, box.y + box.height * 0.2);
  await page.mouse.down();
  await page.mouse.move(box.x + box.width * 0.5, box.y + box.height * 0.5, { steps: 5 });
  await page.mouse.move(box.x + box.width * 0.8, box.y + box.height * 0.8, { steps: 5 });
  await page.mouse.up();
  const selected = await frame.evaluate(() => window.nipgboard.selection.size);
  check(selected > 0, `box selection picked ${selected} images`);
  await frame.locator('button[data-tool=orbit]').click();
  await frame.locator('button', { hasText: 'Clear selection' }).click();

  // Clusters tab renders the cluster table.
  await frame.locator('button[data-tab=clusters]').click();
  await frame.locator('tr[data-cluster]').first().waitFor({ timeout: 30000 });
  check(await frame.locator('tr[data-cluster]').count() >= 1, 'clusters table shown');

  // Similar tab: click a point, see its nearest images as thumbnails served for real ids.
  await page.mouse.click(box.x + pos[0], box.y + pos[1]);
  const picked = await frame.evaluate(() => { const a = window.nipgboard; return a.current >= 0 ? a.meta.ids[a.current] : -1; });
  check(picked >= 0, `clicking a point selects image #${picked}`);
  await frame.locator('button[data-tab=similar]').click();
  const simImgs = frame.locator('#nb-pane .grid img');
  await simImgs.first().waitFor({ timeout: 30000 });
  await frame.waitForFunction(() => [...document.querySelectorAll('#nb-pane .grid img')].every((i) => i.complete));
  const sim = await frame.evaluate(() => {
    const a = window.nipgboard;
    return { head: document.querySelector('#nb-pane .muted').textContent,
      items: [...document.querySelectorAll('#nb-pane .grid img')].map((i) => {
        const m = /^#(\d+) .* d=([\d.e-]+)$/.exec(i.title);
        return { id: m ? Number(m[1]) : null, d: m ? Number(m[2]) : NaN, w: i.naturalWidth, known: m ? a.idIndex.has(Number(m[1])) : false };
      }) };
  });
  check(sim.head.includes(`#${picked}`), `similar tab is about #${picked}: ${sim.head}`);
  check(sim.items.length === Math.min(24, n - 1), `similar tab shows ${sim.items.length} neighbours`);
  check(sim.items.every((x) => x.known && x.id !== picked && x.w > 0), 'neighbours are other known images with loaded thumbnails');
  check(sim.items.every((x, k) => x.d >= 0 && (k === 0 || x.d >= sim.items[k - 1].d)), `neighbours come nearest first (d ${sim.items[0].d} … ${sim.items.at(-1).d})`);
  // Clicking a neighbour makes it the current image and the tab follows it.
  await simImgs.first().click();
  await frame.waitForFunction((id) => document.querySelector('#nb-pane .muted')?.textContent.includes(`#${id}`), sim.items[0].id, { timeout: 10000 });
  check(await frame.evaluate(() => { const a = window.nipgboard; return a.meta.ids[a.current]; }) === sim.items[0].id, `clicking neighbour #${sim.items[0].id} selects it`);
  await shot('05b-similar.png');

  // Near-duplicates tab: what the panel lists is what the server finds, at the paper's 0.3 and 0.6.
  await frame.locator('button[data-tab=duplicates]').click();
  for (const threshold of ['0.3', '0.6']) {
    if (threshold !== '0.3') {
      await frame.locator('#nb-pane input[type=number]').fill(threshold);
      await frame.locator('#nb-pane button', { hasText: 'Find' }).click();
    }
    const want = await api(frame, `duplicates?run=${await frame.evaluate(() => window.nipgboard.run)}&network=${NETWORK}&threshold=${threshold}`);
    const text = want.groups.length ? `${want.groups.length} group${want.groups.length > 1 ? 's' : ''} at distance ≤ ${want.threshold}` : `No near duplicates at distance ≤ ${want.threshold}.`;
    await frame.waitForFunction((t) => document.querySelector('#nb-pane .muted')?.textContent === t, text, { timeout: 30000 });
    const shown = await frame.locator('#nb-pane .group').count();
    check(shown === Math.min(want.groups.length, 100), `near duplicates at ${threshold}: the panel says "${text}" and lists ${shown} groups`);
    if (want.groups.length) {
      const g = want.groups[0];
      const titles = await frame.locator('#nb-pane .group').first().locator('img').evaluateAll((els) => els.map((e) => e.title));
      check(titles.join() === g.slice(0, 12).map((id) => `#${id}`).join(), `the first group shows its images ${titles.join(' ')}`);
      await frame.locator('#nb-pane .group').first().locator('button').click();
      check(await frame.evaluate(() => window.nipgboard.selection.size) === g.length, `"Select ${g.length}" selects the group`);
    }
  }
  await shot('05c-duplicates.png');
  await frame.locator('button', { hasText: 'Clear selection' }).click();

  // Review queue: label the first image by keyboard (accept the suggestion).
  await frame.locator('button[data-tab=review]').click();
  await frame.locator('.item').first().waitFor({ timeout: 60000 });
  const items = await frame.locator('.item').count();
  check(items >= 2, `review queue lists ${items} images`);
  // Rounds of review update the predictions by themselves; first the way by hand, with that turned off.
  const auto = frame.locator('#nb-auto-update');
  check(await auto.isChecked(), 'automatic updates are on by default');
  await auto.uncheck();
  const first = frame.locator('.item').nth(0);
  const firstId = Number(await first.getAttribute('data-id'));
  await first.click();
  const expected = await frame.evaluate(() => window.nipgboard.suggestion());
  check(!!expected, `suggested label for #${firstId}: ${expected}`);
  await page.keyboard.press('a');
  await frame.waitForFunction(([id, lab]) => { const a = window.nipgboard; return a.meta.label[a.idIndex.get(id)] === lab; }, [firstId, expected]);
  log('labelled', firstId, '->', expected);
  // The queue moved on to the next image; label it with key 1, then undo that.
  const secondId = await frame.evaluate(() => { const a = window.nipgboard; return a.meta.ids[a.current]; });
  check(secondId !== firstId, 'the queue moved on to the next image');
  const cls1 = await frame.evaluate(() => window.nipgboard.classes()[0]);
  await page.keyboard.press('1');
  await frame.waitForFunction(([id, lab]) => { const a = window.nipgboard; return a.meta.label[a.idIndex.get(id)] === lab; }, [secondId, cls1]);
  await page.keyboard.press('u');
  await frame.waitForFunction((id) => { const a = window.nipgboard; return a.meta.label[a.idIndex.get(id)] == null; }, secondId);
  log('undo restored #' + secondId);
  await shot('06-review-labelled.png');
  // Saved labels make the predictions stale: the queue offers to predict again, and doing so
  // retrains with them and reloads a queue that no longer holds the labelled image.
  const bar = frame.locator('#nb-update');
  await bar.waitFor({ timeout: 10000 });
  check(/^1 label saved since this queue was made/.test(await bar.textContent()), `the queue offers an update: "${(await bar.textContent()).slice(0, 60)}…"`);
  await shot('06b-update-offered.png');
  await bar.locator('button').click();
  await frame.waitForFunction((id) => {
    const a = window.nipgboard, r = a.review;
    return !a.updating && a.editsSinceQueue === 0 && r && r.stale && r.stale.length === 0 && !document.querySelector('#nb-update')
      && r.items.length > 0 && !r.items.some((it) => it.id === id);
  }, firstId, { timeout: 120000, polling: 300 });
  check(true, `"Update predictions" retrained: the queue is current and #${firstId} left it`);
  await shot('06c-updated.png');
  // Automatic: 1% of 140 unlabelled images is one label, so accepting one suggestion starts a round.
  await frame.locator('#nb-auto-update').check();
  const roundItem = frame.locator(`.item:not([data-id="${secondId}"])`).first();  // #secondId stays unlabelled
  const roundId = Number(await roundItem.getAttribute('data-id'));
  const unlabelled = await frame.evaluate(() => window.nipgboard.review.unlabelled);
  await roundItem.click();
  await page.keyboard.press('a');
  await frame.waitForFunction(([id, n]) => {
    const a = window.nipgboard, r = a.review;
    return !a.updating && a.editsSinceQueue === 0 && r && r.unlabelled === n - 1 && r.stale.length === 0
      && !r.items.some((it) => it.id === id);
  }, [roundId, unlabelled], { timeout: 120000, polling: 300 });
  check(true, `after one label the predictions updated by themselves and #${roundId} left the queue`);
  await shot('06d-auto-updated.png');

  // A job that fails for a real reason (projecting a network whose features were never extracted),
  // started through the panel's own POST route as a script would: after a reload its card says why.
  let failure = null;
  if (process.env.NETWORK2) {
    failure = await frame.evaluate(async (net) => {
      const a = window.nipgboard;
      const post = await fetch('start_job', { method: 'POST', headers: { 'Content-Type': 'application/json', 'X-NIPGBoard': '1' },
        body: JSON.stringify({ run: a.run, kind: 'project', params: { network: net, method: 'pca' } }) });
      let j = await post.json();
      for (let t = 0; t < 300 && (j.state === 'queued' || j.state === 'running'); t++) {
        await new Promise((r) => setTimeout(r, 100));
        j = await (await fetch(`job?run=${encodeURIComponent(a.run)}&id=${j.id}`)).json();
      }
      return { status: post.status, state: j.state, error: j.error };
    }, process.env.NETWORK2);
    check(failure.status === 202 && failure.state === 'failed' && /features/.test(failure.error),
      `project job on ${process.env.NETWORK2} without features failed: ${failure.error}`);
  }

  // Reload: the label is kept (and the undone one stays removed), and so is the colouring picked this session.
  await page.reload({ waitUntil: 'domcontentloaded' });
  frame = await pluginFrame();
  await frame.waitForFunction(() => { const a = window.nipgboard; return a.meta && a.view.n > 0; }, null, { timeout: 60000 });
  card = frame.locator(`.net[data-network="${NETWORK}"]`);
  const after = await frame.evaluate(([a1, a2]) => { const a = window.nipgboard; return [a.meta.label[a.idIndex.get(a1)], a.meta.label[a.idIndex.get(a2)]]; }, [firstId, secondId]);
  check(after[0] === expected, `after reload #${firstId} is still labelled ${expected}`);
  check(after[1] == null, `after reload the undone label of #${secondId} stays removed`);
  check(await frame.evaluate(() => window.nipgboard.overlay) === 'cluster', 'after reload the colouring picked before (cluster) is kept');
  if (failure) {
    const why = frame.locator(`.net[data-network="${process.env.NETWORK2}"] .why.err`);
    await why.waitFor({ timeout: 10000 });
    const said = await why.textContent();
    check(said === `project failed: ${failure.error}`, `the ${process.env.NETWORK2} card shows the failure: ${said}`);
  }
  await thumbnailsShown(frame).catch(() => {});
  await shot('07-after-reload.png');

  // A run the server refuses (a neighbour count UMAP cannot use): the card says why, until the next run.
  await frame.locator('select[name=method]').selectOption('umap');
  await frame.locator('input[name=n_neighbors]').fill('1');
  await frame.locator('input[name=n_neighbors]').dispatchEvent('change');
  const before = errors.length;
  await card.locator('button').first().click();
  const refused = await card.locator('.why.err').textContent({ timeout: 60000 });
  // The browser logs the refused request (400); that one is expected.
  errors.push(...errors.splice(before).filter((e) => !/Failed to load resource.* 400 /.test(e)));
  check(/n_neighbors/.test(refused) && /between 2 and 200/.test(refused), `the ${NETWORK} card shows why its run failed: ${refused}`);
  await frame.locator('select[name=method]').selectOption(METHOD);
  await frame.locator('input[name=n_neighbors]').fill('15');
  await frame.locator('input[name=n_neighbors]').dispatchEvent('change');

  // 2-D view: pick it in the options, click the network again; the points are redrawn flat.
  const before3d = await canvasPixels(frame);
  await frame.locator('select[name=dims]').selectOption('2');
  await card.locator('button').first().click();
  await frame.waitForFunction((net) => {
    const a = window.nipgboard, c = document.querySelector(`.net[data-network="${net}"]`);
    return a.network === net && a.view.dims === 2 && c && !c.querySelector('.bar');
  }, NETWORK, { timeout: 300000, polling: 300 });
  check(await card.locator('.why.err').count() === 0, 'the 2-D run finished without an error');
  await thumbnailsShown(frame);
  const flat = await frame.evaluate(() => {
    const v = window.nipgboard.view;
    let z = 0;
    for (let i = 0; i < v.n; i++) z = Math.max(z, Math.abs(v.positions[i * 3 + 2]));
    return { z, rotate: v.controls.enableRotate, status: document.querySelector('.status').textContent, overlay: window.nipgboard.overlay };
  });
  check(flat.z === 0 && !flat.rotate && /· 2-D ·/.test(flat.status), `the view is 2-D (max |z| ${flat.z}, rotation ${flat.rotate ? 'on' : 'off'}, "${flat.status}")`);
  check(flat.overlay === 'cluster', 'the colouring picked before is kept when the view reloads');
  const after2d = await canvasPixels(frame);
  let changed = 0;
  for (let i = 0; i < after2d.length; i += 4) {
    if (Math.abs(after2d[i] - before3d[i]) + Math.abs(after2d[i + 1] - before3d[i + 1]) + Math.abs(after2d[i + 2] - before3d[i + 2]) > 30) changed++;
  }
  check(changed / (after2d.length / 4) > 0.05, `the canvas was redrawn (${(100 * changed / (after2d.length / 4)).toFixed(0)}% of it changed)`);
  const share2d = await frame.evaluate(() => window.nipgboard.view.nonBackgroundShare());
  check(share2d > 0.005, `the 2-D canvas shows points (${(share2d * 100).toFixed(1)}%)`);
  await shot('07b-2d.png');
  // A second network: where the two disagree the review queue flags the images.
  if (process.env.NETWORK2) {
    const card2 = frame.locator(`.net[data-network="${process.env.NETWORK2}"]`);
    await card2.locator('button').first().click();
    await card2.locator('.bar').waitFor({ timeout: 30000 });
    await frame.waitForFunction((net) => {
      const a = window.nipgboard, c = document.querySelector(`.net[data-network="${net}"]`);
      return a.network === net && a.view.n > 0 && c && !c.querySelector('.bar');
    }, process.env.NETWORK2, { timeout: 600000, polling: 500 });
    check(await card2.locator('.why.err').count() === 0, 'the second network finished without an error');
    await frame.locator('button[data-tab=clusters]').click();
    await frame.locator('button[data-tab=review]').click();
    await frame.waitForFunction(() => { const r = window.nipgboard.review; return r && r.networks && r.networks.length >= 2; }, null, { timeout: 60000 });
    const rv = await frame.evaluate(() => { const r = window.nipgboard.review; return [r.queue_length, r.disagreements, r.networks.join('+')]; });
    check(true, `review queue over ${rv[2]}: ${rv[0]} to review, ${rv[1]} disagreements`);
    const hint = await frame.locator('#nb-pane .hint', { hasText: 'third network' }).waitFor({ timeout: 10000 }).then(() => true, () => false);
    check(hint, 'with two networks the review tab suggests a third');
    await frame.locator('#nb-overlay').selectOption('disagreement');
    await frame.waitForFunction(() => /expert label/.test(document.querySelector('.legend').textContent));
    await frame.waitForFunction(() => /thumbnails$/.test(document.querySelector('.status').textContent), null, { timeout: 60000 }).catch(() => {});
    await shot('08-two-networks-disagreement.png');
  }
  const relevant = errors.filter((e) => !/favicon|Failed to load resource.*(409|404)/i.test(e));
  check(relevant.length === 0, 'no page errors' + (relevant.length ? ': ' + relevant.join(' | ') : ''));
  log('PASS in', ((Date.now() - t0) / 1000).toFixed(1), 's');
} catch (e) {
  await shot('99-failure.png').catch(() => {});
  console.error(errors.join('\n'));
  console.error(e);
  process.exitCode = 1;
} finally {
  await browser.close();
}
