// How the tests and the benchmark start Chromium: Debian's /usr/bin/chromium (never a downloaded
// browser), headless, WebGL through SwiftShader's software renderer, no network side traffic; and the log and checks the browser scripts write.
import fs from 'node:fs';

export function launchOptions() {
  const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
  if (!fs.existsSync(executablePath)) {
    throw new Error(`${executablePath} not found: apt-get install -y chromium (or set CHROMIUM=/path/to/chromium)`);
  }
  return {
    executablePath,
    headless: true,
    args: ['--no-sandbox', '--use-angle=swiftshader', '--enable-unsafe-swiftshader', '--ignore-gpu-blocklist',
      '--disable-background-networking', '--disable-component-update', '--no-first-run', '--disable-sync',
      '--disable-dev-shm-usage'],
  };
}

/** A script's log (lines tagged with ``tag`` and the time) and its check, which fails the run. */
export function reporter(tag) {
  const log = (...a) => console.log(`[${tag} ${new Date().toISOString().slice(11, 19)}]`, ...a);
  const check = (cond, msg) => { if (!cond) throw new Error('check failed: ' + msg); log('ok:', msg); };
  return { log, check };
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
