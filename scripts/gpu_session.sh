#!/usr/bin/env bash
# One short visit to a lent GPU machine, everything in one command (about ten minutes): the GPU
# tests, a time-boxed CC-AV fine-tune on scenes made there, and the GPU benchmarks.
#
#   OUT=/some/folder bash scripts/gpu_session.sh      # run from the repository root
#
# Made for a machine that is bare and short-lived: nothing of data/ travels (the scenes are made
# there), and it keeps at most 8 files under $OUT, none over 16 MiB (checkpoints are split:
# `cat best.safetensors.part* > best.safetensors`). If that machine's Python lacks the project's
# pure-Python needs (pydantic, structlog, ...), put their wheels in .whl/ beside this repo's root;
# they are installed into /tmp/site first. PyAV is not needed: the decode rows of bench gpu-plan
# then read "not measured".
# In this workplace what travels to the machine (the repository and .whl/) must stay under 64 MiB;
# the repository alone was about 60 MiB in sessions 23 and 24, so carry only the wheels these steps import
# (pydantic, pydantic-core, annotated-types, typing-inspection, structlog, pytest-timeout).
# Training gets what is left of a 390 s mark, at most TRAIN_MIN minutes, so the benchmarks after it
# still fit a 600 s limit. Choose the checkpoint afterwards on data/synth-1024's validation split
# (docs/results.md), never on the test split.
set -u
OUT=${OUT:-results/gpu-session}; mkdir -p "$OUT"
T0=$(date +%s)
stage() { echo "=== [+$(( $(date +%s) - T0 ))s] $*"; }
PY=${PY:-python3}
COUNT=${COUNT:-5000}; TRAIN_MIN=${TRAIN_MIN:-5}; WORKERS=${WORKERS:-14}
TRAIN_SET=${TRAIN_SET:-}; PLAN_ARGS=${PLAN_ARGS:-}
BENCH_ARGS=${BENCH_ARGS:---precision fp32,bf16 --memory-format channels_last --batch-sizes 1,16,64 --repeats 5 --budget-s 6}
CONFIG=configs/train/shipped-cc-av-1024-cpu-h200.yaml
exec > >(tee -a "$OUT/run.log") 2>&1

if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1 | head -3
lscpu | grep -E "Model name|^CPU\(s\)"
$PY -c "import sys, torch; print(sys.version.split()[0], torch.__version__, torch.version.cuda, torch.cuda.is_available())"

stage "scenes ($COUNT, $WORKERS workers) in the background; GPU tests meanwhile"
rm -rf data/synth-1024-gpu
( $PY -m avcc_stream synth --out data/synth-1024-gpu --count "$COUNT" --seed 20261207 --size 1024x576 \
    --splits 0.97,0.03,0 --workers "$WORKERS" --max-people 400 > /tmp/synth.log 2>&1; echo "synth rc=$?" >> /tmp/synth.log ) &
SYNTH=$!
timeout 200 $PY -m pytest -p no:cacheprovider -q -rA -m gpu tests/model/test_forward.py tests/stream/test_infer.py \
  tests/bench/test_smoke.py 2>&1 | tail -25
wait $SYNTH; tail -3 /tmp/synth.log

TRAIN_MIN=$(python3 -c "print(round(max(0.5, min($TRAIN_MIN, (390 - ($(date +%s) - $T0) - 40) / 60)), 2))")
stage "train $CONFIG for $TRAIN_MIN min"
rm -rf /tmp/run
timeout "$(python3 -c "print(int($TRAIN_MIN * 60 + 120))")" $PY -m avcc_stream train "$CONFIG" --out /tmp/run \
  --max-minutes "$TRAIN_MIN" --no-progress --set model.init_from=builtin:cc-av-1024-cpu $TRAIN_SET 2>&1 | tail -60
for name in best last; do
  if [ -f /tmp/run/$name.safetensors ]; then
    sha256sum /tmp/run/$name.safetensors
    split -b 15M -d /tmp/run/$name.safetensors "$OUT/$name.safetensors.part"
  fi
done
tar czf "$OUT/train.tgz" -C /tmp/run --exclude='*.safetensors' --exclude='state.pt' .

stage "bench gpu-plan (cc-av at 1024x576)"
mkdir -p /tmp/bench
timeout 110 $PY -m avcc_stream bench gpu-plan --out /tmp/bench/gpu-plan $PLAN_ARGS 2>&1 | tail -45
tar czf "$OUT/bench.tgz" -C /tmp/bench .
stage "bench model (cc-av and cc-av-1024-cpu beside AudioCSRNet)"
timeout 75 $PY -m avcc_stream bench model --presets cc-av,cc-av-1024-cpu --out /tmp/bench/model $BENCH_ARGS 2>&1 | tail -40
tar czf "$OUT/bench.tgz" -C /tmp/bench .
stage "end"
