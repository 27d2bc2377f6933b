#!/usr/bin/env bash
# Runs the whole Parley test suite on a fresh machine: set-up (idempotent), then pytest.
# Extra arguments go to pytest (e.g. tests/run.sh -k vad).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/demos/setup.sh"
cd "$ROOT"
echo "[parley tests] running pytest"
exec "$ROOT/.venv/bin/python" -m pytest -q "$@"
