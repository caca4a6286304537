// How the tests and the benchmark start Chromium: Debian's /usr/bin/chromium (never a downloaded
// browser), headless, WebGL through SwiftShader's software renderer, no network side traffic.
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
