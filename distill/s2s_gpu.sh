#!/bin/bash
# How the planned s2s GPU sitting runs on a lent H100 (not run yet: no GPU was lent to the
# session that wrote it). The SmolLM2 GGUF (98 MB) does not fit the 64 MiB working tree next to
# weights/codec, so it travels in four ~24.6 MB parts (split -n 4 into .carry/gg{0..3}/part),
# parts 0-2 copied to /tmp/s2s/part{0,1,2} by three quick consecutive calls on the warm machine,
# part 3 + token folders (.carry/s2s/data/*/) + the gguf wheel (.carry/s2s/whl) with this script:
#   PHASE=train MAIN_MIN=6 DELAY_MIN=2.5 bash distill/s2s_gpu.sh   (carry .carry/gg3 .carry/s2s)
#   PHASE=eval bash distill/s2s_gpu.sh                                 (next call, same machine)
# The s2s GPU sitting, from the repo root on the device machine, after parts 0-2 of the GGUF were
# copied to /tmp/s2s/part{0,1,2} by earlier calls. PHASE=train: set-up, CUDA tests, bench model,
# training (MAIN_MIN, plus a DELAY_MIN run of the delay-pattern variant beside it), export to $OUT.
# PHASE=eval: generation for the eval (GPU), logs to $OUT.
set -u -o pipefail
export PYTHONUNBUFFERED=1 PARLEY_CACHE=/tmp/s2s/cache
W=/tmp/s2s; MAIN_MIN=${MAIN_MIN:-6}; DELAY_MIN=${DELAY_MIN:-2.5}; BS=${BS:-32}; PHASE=${PHASE:-train}
T0=$(date +%s)
mkdir -p $W $OUT
if [ "$PHASE" = train ]; then
for i in 0 1 2; do [ -f $W/part$i ] || { echo "part$i missing: machine was not warm"; exit 3; }; done
cat $W/part0 $W/part1 $W/part2 .carry/gg3/part > $W/smollm2.gguf
echo "$(echo b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53)  $W/smollm2.gguf" | sha256sum -c || exit 3
python3 -m pip install -q --no-index --no-deps --target /tmp/site .carry/s2s/whl/*.whl 2>&1 | grep -v WARN
rm -rf $W/repo; mkdir -p $W/repo
tar --exclude=.carry/gg3 --exclude=.git --exclude=./data -cf - . | tar -xf - -C $W/repo
fi
cd $W/repo; export PYTHONPATH=/tmp/site:$W/repo
D=$(echo .carry/s2s/data/*)
if [ "$PHASE" = train ]; then
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv,noheader
python3 -m distill.train_cli --tiny --data $D --steps 4 --batch-size 4 --run-dir $W/smoke --log-every 2 2>&1 | tail -1 || exit 4
python3 -m pytest -q -x tests/test_s2s_model.py -p no:cacheprovider 2>&1 | tail -2
echo "t=$(( $(date +%s) - T0 ))s bench"
python3 -m parley bench model --device cuda --audio-head depth,delay --gguf $W/smollm2.gguf --json $W/bench_gpu.json 2>&1 | tail -8
cp $W/bench_gpu.json $OUT/
echo "t=$(( $(date +%s) - T0 ))s train"
COMMON="--data $D --gguf $W/smollm2.gguf --steps 100000 --batch-size $BS --log-every 50 --eval-every 250 --ckpt-every 1000"
setsid nohup python3 -m distill.train_cli $COMMON --max-minutes $MAIN_MIN --run-dir $W/run --export $W/w > $W/train.log 2>&1 &
P1=$!
[ "$DELAY_MIN" != "0" ] && setsid nohup python3 -m distill.train_cli $COMMON --max-minutes $DELAY_MIN --audio-head delay --run-dir $W/run_delay > $W/delay.log 2>&1 &
while kill -0 $P1 2>/dev/null; do sleep 30; echo "t=$(( $(date +%s) - T0 ))s $(grep ' step ' $W/train.log | tail -1 | cut -c25-200)"; done
grep "eval step" $W/train.log | tail -3 | cut -c1-300; tail -1 $W/train.log | cut -c1-400
grep "eval step" $W/delay.log | tail -2 | cut -c1-300
cp $W/w/* $OUT/
tar -czf $OUT/logs.tgz -C $W train.log delay.log bench_gpu.json run/history.jsonl run_delay/history.jsonl
else
python3 -m distill.eval_cli --data $D --weights $W/w --gguf $W/smollm2.gguf --limit 64 --generate-only $OUT/gen_eval.npz 2>&1 | tail -1
python3 -m distill.eval_cli --data $D --weights $W/w --gguf $W/smollm2.gguf --split train --limit 16 --generate-only $OUT/gen_train.npz 2>&1 | tail -1
fi
ls -la $OUT; echo "total t=$(( $(date +%s) - T0 ))s"
