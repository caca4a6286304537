#!/usr/bin/env bash
# Set up (with the test tools) and run every test. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
VENV="${NIPGBOARD_VENV:-.venv}"
exec "$VENV/bin/python" -m pytest tests "$@"
