#!/usr/bin/env bash
# Build the panel: install the frontend's npm packages (exact versions from package-lock.json) and
# bundle frontend/src with esbuild into nipgboard_plugin/static/index.js (three.js included, so the
# page loads nothing from outside TensorBoard). Skipped when the sources have not changed.
# Also makes sure Debian's chromium is there for the browser tests (when run as root with apt-get);
# set NIPGBOARD_SKIP_CHROMIUM=1 to leave it out.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=nipgboard_plugin/static/index.js

if ! command -v npm >/dev/null 2>&1; then
  echo "npm not found: install Node.js 18+ (e.g. apt-get install -y nodejs npm) to build the panel" >&2
  exit 1
fi

cd frontend
lockhash=$(cat package.json package-lock.json | sha256sum | cut -c1-16)
if [ ! -f "node_modules/.nipgboard-deps-$lockhash" ]; then
  echo "Installing the frontend's npm packages"
  rm -f node_modules/.nipgboard-deps-*
  npm ci --no-audit --no-fund --loglevel=error
  touch "node_modules/.nipgboard-deps-$lockhash"
fi
srchash=$( (cat package-lock.json tsconfig.json; find src -type f | sort | xargs cat) | sha256sum | cut -c1-16)
stamp="node_modules/.nipgboard-build-$srchash"
if [ ! -f "$stamp" ] || [ ! -f "../$OUT" ]; then
  echo "Bundling the panel into $OUT"
  npm run --silent build
  rm -f node_modules/.nipgboard-build-*
  touch "$stamp"
fi
cd ..

if [ "${NIPGBOARD_SKIP_CHROMIUM:-0}" != 1 ] && [ ! -x /usr/bin/chromium ] && [ "$(id -u)" = 0 ] \
   && command -v apt-get >/dev/null 2>&1; then
  echo "Installing Debian's chromium (for the browser tests)"
  DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null
fi
