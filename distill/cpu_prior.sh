#!/bin/bash
# Speak-stage training data made on this machine's CPU, packed to be carried into a GPU session as a
# prior token folder (distill/ACCUMULATE.md, "Priors made here"). Run from the repository root,
# beside other work (it runs niced): `bash distill/cpu_prior.sh`. The packs go to PACKS, outside the
# work tree (a new session lays the tree anew; this machine, and so PACKS, may be handed on with it);
# before the GPU calls: `mkdir -p .carry && cp -r PACKS/tokens-* .carry/`.
#
#   generate  --batched --speak-only --device cpu --seed SEED for MINUTES (the GPU chain's traces,
#             made the same way: a trace is a function of (seed, index), on any device)
#   tokenize  --follow with the codec CODEC, each shard as the generator seals it
#   pack      the sealed token shards -> PACKS/tokens-cpuSEED (tokens.index.json + parts of <= PART_MIB)
#
# Knobs (environment): MINUTES (100), SEED (unset: one after the largest seed of the packs in PACKS,
# at least 1; the GPU chain then takes one after this one), TTS_WORKERS (cores - 1, at least 1),
# BLOCK (64), NICE (10; tokenize NICE + 5), CODEC (weights/codec), DATA (data/cpuSEED), PART_MIB (9),
# PACKS (~/.cache/parley/packs), PY (.venv/bin/python), STAGES (real), POLL_S (60: seconds between tokenize passes).
# Calling it again resumes the store (traces present are skipped) and re-packs.
# Logs: DATA.generate.log, DATA.tokenize.log.
set -u -o pipefail
REPO=$(pwd) PY=${PY:-$REPO/.venv/bin/python} PACKS=${PACKS:-$HOME/.cache/parley/packs} CODEC=${CODEC:-weights/codec}
MINUTES=${MINUTES:-100} BLOCK=${BLOCK:-64} NICE=${NICE:-10} PART_MIB=${PART_MIB:-9} STAGES=${STAGES:-real}
TTS_WORKERS=${TTS_WORKERS:-$(n=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc); echo $((n > 1 ? n - 1 : 1)))}
say() { echo "[cpu prior] $(date -u +%T) $*"; }

SEED=${SEED:-$("$PY" distill/token_pack.py next-seed "$PACKS")} || exit 2  # one after the largest pack's
DATA=${DATA:-data/cpu$SEED} DEST=$PACKS/tokens-cpu$SEED
mkdir -p "$DATA" "$PACKS"
V=("$PY" -m voice distill)
say "seed $SEED, $MINUTES min, $TTS_WORKERS TTS worker(s), codec $CODEC -> $DATA, then $DEST"

rm -f "$DATA.done"  # one thread for tokenize: beside busy cores, OpenMP's spinning threads burn CPU for nothing
OMP_NUM_THREADS=1 nice -n $((NICE + 5)) "${V[@]}" tokenize "$DATA" --codec "$CODEC" --device cpu --follow --until "$DATA.done" \
  --poll-s "${POLL_S:-60}" > "$DATA.tokenize.log" 2>&1 &
tok=$!
trap 'touch "$DATA.done"; kill $tok 2>/dev/null' INT TERM  # an interrupted generate seals what it wrote
nice -n $NICE "${V[@]}" generate --out "$DATA" --n 30000 --batched --speak-only --device cpu \
  --tts-workers "$TTS_WORKERS" --block "$BLOCK" --shard-traces 100 --stages "$STAGES" --seed "$SEED" \
  --max-minutes "$MINUTES" --no-progress > "$DATA.generate.log" 2>&1
rc=$?
[ $rc -le 1 ] || say "generate ended with exit $rc (see $DATA.generate.log); packing what was sealed"
touch "$DATA.done"
say "generate done ($(tail -1 "$DATA.generate.log" | cut -c1-200)); waiting for the last tokenize pass"
wait $tok || { say "tokenize failed: $(tail -2 "$DATA.tokenize.log")"; exit 3; }
"$PY" distill/token_pack.py pack "$DATA/tokens" "$DEST" --max-mib "$PART_MIB" || exit 4
say "$DEST is ready: before the GPU calls, cp -r $DEST .carry/ (distill/README.md, call 1b)"
