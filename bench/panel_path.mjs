// The panel's click in headless Chromium, for bench/panel_path.py: open the NIPGBoard tab of a running
// TensorBoard, click the network's card (its pipeline job starts on the server), wait until the view shows
// the points and then the thumbnails. Prints one JSON line of milliseconds since the click.
//   TB_URL=http://127.0.0.1:6006 NETWORK=efficientnet_lite0 TIMEOUT_S=3600 node bench/panel_path.mjs
import path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const frontend = path.join(here, '..', 'frontend');
const require = createRequire(path.join(frontend, 'package.json'));
const { chromium } = require('playwright-core');
const { launchOptions } = await import(path.join(frontend, 'e2e', 'browser.mjs'));

const TB = process.env.TB_URL || 'http://127.0.0.1:6006';
const NETWORK = process.env.NETWORK || 'efficientnet_lite0';
const TIMEOUT = 1000 * Number(process.env.TIMEOUT_S || 3600);

const browser = await chromium.launch(launchOptions());
try {
  const page = await browser.newPage({ viewport: { width: 1500, height: 900 } });
  const t0 = Date.now();
  await page.goto(`${TB}/#nipgboard`, { waitUntil: 'domcontentloaded' });
  let frame;
  for (let t = 0; t < 600 && !frame; t++) {
    const f = page.frames().find((fr) => fr.url().includes('plugin_entry.html') && fr.url().includes('nipgboard'));
    if (f) { try { await f.waitForFunction(() => !!window.nipgboard, null, { timeout: 1000 }); frame = f; } catch { /* loading */ } }
    if (!frame) await page.waitForTimeout(200);
  }
  if (!frame) throw new Error('the NIPGBoard iframe did not load');
  const card = frame.locator(`.net[data-network="${NETWORK}"]`);
  await card.waitFor({ timeout: 60000 });
  const opened = Date.now() - t0;
  const click = Date.now();
  await card.locator('button').first().click();
  await frame.waitForFunction((n) => window.nipgboard.pipelines.running.has(n), NETWORK, { timeout: 30000, polling: 200 });
  const since = () => Date.now() - click;
  // The first picture: the network's points drawn, while the job may still be embedding the others.
  let first = null, firstShown = 0;
  const firstPicture = frame.waitForFunction((n) => { const a = window.nipgboard; return a.state.network === n && a.state.meta && a.centre.view.n > 0; },
    NETWORK, { timeout: TIMEOUT, polling: 200 }).then(async () => {
    first = since();
    // How many images had coordinates then (the others were still being embedded).
    firstShown = await frame.evaluate(() => { const v = window.nipgboard.centre.view; return v.placedCount ?? v.n; });
  });
  await frame.waitForFunction((n) => { const c = document.querySelector(`.net[data-network="${n}"]`); return c && !c.querySelector('.bar'); },
    NETWORK, { timeout: TIMEOUT, polling: 500 });
  const finished = since();
  await firstPicture;
  await frame.waitForFunction((n) => { const a = window.nipgboard; return a.state.network === n && a.state.meta && a.centre.view.n > 0; },
    NETWORK, { timeout: TIMEOUT, polling: 200 });
  const points = since();
  await frame.waitForFunction(() => /thumbnails$/.test(document.querySelector('.status').textContent), null,
    { timeout: TIMEOUT, polling: 200 });
  const thumbnails = since();
  const n = await frame.evaluate(() => window.nipgboard.centre.view.n);
  console.log(JSON.stringify({ opened_ms: opened, first_picture_ms: first, first_picture_points: firstShown, card_done_ms: finished, points_ms: points, thumbnails_ms: thumbnails, points: n }));
} finally {
  await browser.close();
}
