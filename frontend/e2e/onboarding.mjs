// The empty-logdir state: the tab explains how to add an image folder and offers the form.
//   TB_URL=http://127.0.0.1:6006 ARTIFACTS=test-artifacts node e2e/onboarding.mjs
import { chromium } from 'playwright-core';
import fs from 'node:fs';
import path from 'node:path';
import { launchOptions } from './browser.mjs';

const TB = process.env.TB_URL || 'http://127.0.0.1:6006';
const OUT = path.resolve(process.env.ARTIFACTS || 'test-artifacts');
fs.mkdirSync(OUT, { recursive: true });
const browser = await chromium.launch(launchOptions());
try {
  const page = await browser.newPage({ viewport: { width: 1300, height: 800 } });
  await page.goto(`${TB}/#nipgboard`, { waitUntil: 'domcontentloaded' });
  let frame = null;
  for (let t = 0; t < 300 && !frame; t++) {
    frame = page.frames().find((f) => f.url().includes('plugin_entry.html')) || null;
    if (!frame) await page.waitForTimeout(200);
  }
  if (!frame) throw new Error('the NIPGBoard iframe did not load');
  await frame.locator('#nb-folder').waitFor({ timeout: 60000 });
  const text = await frame.locator('.centre-msg').textContent();
  if (!/Add an image folder/.test(text)) throw new Error('no onboarding text: ' + text);
  await page.screenshot({ path: path.join(OUT, '00-onboarding.png') });
  console.log('onboarding shown:', text.slice(0, 120));
  if (process.env.IMAGES) {
    // Add a folder from the form (class subfolders as labels); the page reloads into the new run.
    await frame.locator('#nb-folder').fill(process.env.IMAGES);
    await frame.locator('input[type=checkbox]').check();
    await frame.locator('.centre-msg input').last().fill('shapes');
    await frame.locator('button', { hasText: 'Add folder' }).click();
    frame = null;
    for (let t = 0; t < 600; t++) {
      frame = page.frames().find((f) => f.url().includes('plugin_entry.html')) || null;
      if (frame && await frame.locator('#nb-summary').count().catch(() => 0)) break;
      await page.waitForTimeout(200);
    }
    const summary = await frame.locator('#nb-summary').textContent({ timeout: 60000 });
    if (!/images/.test(summary)) throw new Error('no dataset summary after adding the folder: ' + summary);
    await page.screenshot({ path: path.join(OUT, '01-after-ingest.png') });
    console.log('ingested from the form:', summary);
  }
  console.log('PASS onboarding');
} catch (e) {
  console.error(e);
  process.exitCode = 1;
} finally {
  await browser.close();
}
