#!/usr/bin/env bash
# The main job: set up, build the demo logdir (Fashion-MNIST, 8% labelled, features from two
# networks) and open it in TensorBoard with the NIPGBoard plugin.
#   bash scripts/demo.sh [--n 6000] [--port 6006]
set -euo pipefail
cd "$(dirname "$0")/.."
N=6000
PORT=6006
while [ $# -gt 0 ]; do
  case "$1" in
    --n) N="$2"; shift 2 ;;
    --port) PORT="$2"; shift 2 ;;
    *) echo "usage: scripts/demo.sh [--n IMAGES] [--port PORT]" >&2; exit 2 ;;
  esac
done
bash scripts/setup.sh
VENV="${NIPGBOARD_VENV:-.venv}"
"$VENV/bin/python" demo/build.py --n "$N"
echo "Open http://localhost:$PORT/#nipgboard"
exec "$VENV/bin/tensorboard" --logdir demo_logdir --port "$PORT"
