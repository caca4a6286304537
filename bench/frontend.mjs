// Browser benchmark of the panel's point view in headless Chromium (software WebGL):
// 75,000 points drawn as thumbnails from 32 px sprite atlases (time to first picture, median frame
// time while orbiting), then 250,000 points as dots. Prints the figures.
//   node bench/frontend.mjs [--n 75000] [--dots 250000] [--frames 60]   (after scripts/setup.sh)
import http from 'node:http';
import path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const frontend = path.join(here, '..', 'frontend');
const require = createRequire(path.join(frontend, 'package.json'));
const esbuild = require('esbuild');
const { chromium } = require('playwright-core');
const { launchOptions } = await import(path.join(frontend, 'e2e', 'browser.mjs'));

const arg = (name, dflt) => { const i = process.argv.indexOf(name); return i > 0 ? Number(process.argv[i + 1]) : dflt; };
const N = arg('--n', 75000), DOTS = arg('--dots', 250000), FRAMES = arg('--frames', 60);

const built = await esbuild.build({ entryPoints: [path.join(frontend, 'bench', 'bench.ts')], bundle: true, format: 'esm',
  write: false, minify: true, absWorkingDir: frontend });
const js = built.outputFiles[0].text;
const html = '<!DOCTYPE html><style>html,body{margin:0}#host{position:relative;width:1280px;height:800px}</style>' +
  '<div id="host"></div><script type="module" src="/bench.js"></script>';
const server = http.createServer((req, res) => {
  if (req.url === '/bench.js') { res.writeHead(200, { 'Content-Type': 'text/javascript' }); res.end(js); return; }
  res.writeHead(200, { 'Content-Type': 'text/html' }); res.end(html);
}).listen(0, '127.0.0.1');
await new Promise((r) => server.once('listening', r));
const browser = await chromium.launch(launchOptions());
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  await page.goto(`http://127.0.0.1:${server.address().port}/`);
  await page.waitForFunction(() => !!window.bench);
  const renderer = await page.evaluate(() => { const g = document.createElement('canvas').getContext('webgl2'); const d = g.getExtension('WEBGL_debug_renderer_info'); return d ? g.getParameter(d.UNMASKED_RENDERER_WEBGL) : '?'; });
  console.log(`headless Chromium, 1280x800 canvas, WebGL: ${renderer}`);
  for (const [n, thumbs] of [[N, true], [DOTS, false]]) {
    const r = await page.evaluate(([n, t, f]) => window.bench.run(n, t, f), [n, thumbs, FRAMES]);
    console.log(`${String(r.n).padStart(7)} points as ${thumbs ? `thumbnails (${r.atlases} atlas pages of 32 px tiles)` : 'dots'}: ` +
      `first picture ${r.firstPictureMs} ms, orbit frame median ${r.medianFrameMs} ms (p90 ${r.p90FrameMs} ms, ` +
      `${(1000 / r.medianFrameMs).toFixed(1)} fps), ${(r.drawnShare * 100).toFixed(1)}% of pixels drawn`);
  }
} finally {
  await browser.close();
  server.close();
}
