// End-to-end flow in headless Chromium against a running TensorBoard with the NIPGBoard plugin:
// open the tab, click a network, watch the progress finish, see points drawn, colour by cluster,
// open the review queue, label an image by keyboard, undo another label, reload, see the label kept.
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

try {
  const t0 = Date.now();
  await page.goto(`${TB}/#nipgboard`, { waitUntil: 'domcontentloaded' });
  let frame = await pluginFrame();
  log('tab open after', Date.now() - t0, 'ms');
  const card = frame.locator(`.net[data-network="${NETWORK}"]`);
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
  await frame.waitForFunction(() => /thumbnails$/.test(document.querySelector('.status').textContent), null, { timeout: 120000 });
  const share = await frame.evaluate(() => window.nipgboard.view.nonBackgroundShare());
  check(share > 0.005, `canvas shows points (${(share * 100).toFixed(1)}% of pixels differ from the background)`);
  await shot('03-points-label.png');

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

  // Review queue: label the first image by keyboard (accept the suggestion).
  await frame.locator('button[data-tab=review]').click();
  await frame.locator('.item').first().waitFor({ timeout: 60000 });
  const items = await frame.locator('.item').count();
  check(items >= 2, `review queue lists ${items} images`);
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

  // Reload: the label is kept (and the undone one stays removed).
  await page.reload({ waitUntil: 'domcontentloaded' });
  frame = await pluginFrame();
  await frame.waitForFunction(() => { const a = window.nipgboard; return a.meta && a.view.n > 0; }, null, { timeout: 60000 });
  const after = await frame.evaluate(([a1, a2]) => { const a = window.nipgboard; return [a.meta.label[a.idIndex.get(a1)], a.meta.label[a.idIndex.get(a2)]]; }, [firstId, secondId]);
  check(after[0] === expected, `after reload #${firstId} is still labelled ${expected}`);
  check(after[1] == null, `after reload the undone label of #${secondId} stays removed`);
  await frame.waitForFunction(() => /thumbnails$/.test(document.querySelector('.status').textContent), null, { timeout: 60000 }).catch(() => {});
  await frame.locator('#nb-overlay').selectOption('label');
  await page.waitForTimeout(300);
  await shot('07-after-reload.png');
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
