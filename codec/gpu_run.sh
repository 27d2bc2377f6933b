#!/bin/bash
# One codec training sitting on the GPU machine (no registry there), in phases, one `run` call each.
# Run from the repository root there: `PHASE=start ... bash codec/gpu_run.sh`. Here, beforehand:
#   demos/setup.sh --codec-data && parley codec prepare-data --synth-scale 3 (+ --only the real sources)
#   parley codec export-teacher .carry/teacher.safetensors
#   parley codec pack-opus data/codec/train .carry/opus        # -> .carry/opus/gNN, <= 55 MiB each
#   cp -r data/codec/eval data/codec/eval.jsonl .carry/evalset/  # the held-out set (14 MB)
#   pip download --only-binary=:all: --python-version 3.12 --platform manylinux_2_28_x86_64 \
#     --platform manylinux2014_x86_64 --no-deps -d .carry/whl soundfile==0.13.1 cffi pycparser pystoi
# Calls (carry = the ignored paths named; a call sends <= 64 MiB in all, the tree included):
#   setup [.carry/whl, .carry/teacher.safetensors] (the tree carries weights/codec, 34 MB: the warm
#   start); then `mv weights/codec` out of the tree (5 MB left) and
#   start [.carry/evalset, .carry/opus/g03], feed [.carry/opus/g00], feed [g01], feed [g02], then
#   poll  (SLEEP <= 540: sleeps, prints status, brings export_best/ + logs.tgz back in $OUT)
#   collect (waits <= WAIT s for the job to end, then brings the same; WHAT=last: export/ instead)
# A call returns <= 8 files and <= 64 MiB: one export (34-38 MB) per call. With VARIANTS=a,b the
# arms run side by side (`parley codec sweep`; an arm is VARIANT[@LABEL][:ARGS], ARGS its own `train`
# flags); PICK=LABEL brings that arm's export (default: the first).
# The machine is released ~30 s after a call ends: issue the next call at once. Every poll brings
# the best export so far, so a lost machine loses at most one poll interval.
#   PHASE=start MINUTES=18 BS=64 SEG=3.2 ADV=1.0 [INIT=weights/codec] [VARIANT=25hz-sem-bypass]
#   run 3 (issue 10), both arms from v2: VARIANTS=25hz-sem-bypass,25hz-16q-sem-bypass BS=32
#   run 4: VARIANTS='25hz-sem-bypass,25hz-sem-bypass@seg6:--segment-s 6.4 --batch-size 16' BS=32
set -u -o pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site:/tmp/c/repo OMP_NUM_THREADS=4
C=/tmp/c
mkdir -p $C/train $C/eval "$OUT"
voice() { (cd $C/repo && python3 -m voice "$@"); }
feed() {
  mapfile -t oggs < <(find "$PWD/.carry" -name '*.ogg' 2>/dev/null)
  ((${#oggs[@]})) && voice codec unpack-opus $C/train "${oggs[@]}" | tail -1
  if [ -f .carry/evalset/eval.jsonl ] && [ ! -f $C/eval/eval.jsonl ]; then
    cp -r .carry/evalset/eval $C/eval/ && cp .carry/evalset/eval.jsonl $C/eval/ && echo "eval set staged"
  fi
  echo "train: $(ls $C/train/*.flac 2>/dev/null | wc -l) shards, $(du -sh $C/train | cut -f1)"
}
running() { pgrep -f "voice codec (train|sweep)" >/dev/null; }
dirs() { if [ -n "${VARIANTS:-}" ]; then ls -d $C/out/*/ 2>/dev/null; else echo $C/out; fi; }
first_arm() { local a=${VARIANTS%%,*}; a=${a%%:*}; echo "${a#*@}"; }  # VARIANT[@LABEL][:ARGS] -> folder
status() {
  for d in $(dirs); do
    echo "== $d"; tail -1 $d/log.jsonl 2>/dev/null | cut -c1-300; tail -1 $d/eval.jsonl 2>/dev/null
  done
  grep -v "^{" $C/train.log 2>/dev/null | tail -3 | cut -c1-300
  nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader
  running && echo "JOB RUNNING" || echo "JOB STOPPED"
}
bring() {  # at most 8 files come back: one export (WHAT=best|last, of PICK in a sweep) + logs.tgz
  d=$C/out; [ -n "${VARIANTS:-}" ] && d=$C/out/${PICK:-$(first_arm)}
  e=export_best; [ "${WHAT:-best}" = last ] && e=export
  [ -d $d/$e ] && mkdir -p "$OUT/$e" && cp $d/$e/* "$OUT/$e/"
  (cd $C && tar -czf "$OUT/logs.tgz" train.log $(find out -maxdepth 2 \( -name '*.jsonl' -o -name train.log \)))
  ls -la "$OUT" "$OUT/$e" 2>/dev/null | grep -v total
}
case "${PHASE:-}" in
setup)
  nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv,noheader
  python3 -m pip install -q --no-index --no-deps --target /tmp/site .carry/whl/*.whl 2>&1 | grep -v -i warn
  rm -rf $C/repo && mkdir -p $C/repo
  tar --exclude=./.carry --exclude=./.git --exclude=./.venv --exclude=./data --exclude=./runs -cf - . | tar -xf - -C $C/repo
  cp .carry/teacher.safetensors $C/
  python3 -c "import soundfile, torch; print('imports ok', torch.__version__, soundfile.__version__)" || exit 3
  python3 -c "import pystoi, scipy" 2>/dev/null && echo "stoi ok" || echo "no pystoi/scipy: quick eval without STOI"
  ls $C/repo/${INIT:-weights/codec} $C/teacher.safetensors
  ;;
start)
  [ -f $C/teacher.safetensors ] || { echo "run PHASE=setup first"; exit 2; }
  feed
  init=(); [ -n "${INIT-weights/codec}" ] && init=(--init-from "$C/repo/${INIT:-weights/codec}")
  args=(--data $C/train "${init[@]}" --teacher $C/teacher.safetensors --eval-dir $C/eval
    --max-minutes "$MINUTES" --batch-size "$BS" --segment-s "$SEG" --adv-start-frac "${ADV:-1.0}"
    --ckpt-every-s 180 --device "${DEVICE:-cuda}" ${EXTRA:-})  # EXTRA: e.g. "--tiny --max-steps 3" (CPU dry run)
  if [ -n "${VARIANTS:-}" ]; then  # several arms side by side, one process each
    cmd=(python3 -m voice codec sweep --variants "$VARIANTS" --out $C/out -- "${args[@]}")
  else
    cmd=(python3 -m voice codec train --variant "${VARIANT:-25hz-sem-bypass}" --out $C/out "${args[@]}")
  fi
  (cd $C/repo && setsid nohup "${cmd[@]}" > $C/train.log 2>&1 < /dev/null &)
  sleep "${SLEEP:-45}"; status
  ;;
feed) feed; status ;;
poll) feed; sleep "${SLEEP:-480}"; status; bring ;;
collect)
  for _ in $(seq "${WAIT:-300}"); do running || break; sleep 1; done
  status; bring
  ;;
*) echo "PHASE=setup|start|feed|poll|collect (see the header of $0)"; exit 2 ;;
esac
