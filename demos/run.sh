#!/usr/bin/env bash
# Runs the Parley voice agent with its browser demo on the bundled models (set-up included).
# Extra arguments go to `parley serve` (e.g. demos/run.sh --port 9000 --engine direct).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/demos/setup.sh"
exec "$ROOT/.venv/bin/parley" serve "$@"
