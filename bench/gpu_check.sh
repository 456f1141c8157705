#!/usr/bin/env bash
# One-GPU check of the training engine and 2PC on CUDA; finishes in under 8 minutes.
#
#   bench/gpu_check.sh [OUT_DIR]          # on a CUDA machine (default OUT_DIR: $OUT or
#                                         # bench/results/gpu)
#   bench/gpu_check.sh --cpu-smoke [DIR]  # tiny shapes on CPU, to test the script itself
#
# Writes under OUT_DIR:
#   train_engine.json   ResNet-18 / CIFAR-100 shape training images/s: reference loop,
#                       fit fp32, fit bf16 + channels_last (bench/train_engine.py)
#   snl_step_rate.json  SNL search steps/s, live count read every step vs every 50
#                       (bench/snl_step_rate.py)
#   mpc_cuda.json       CrypTen 2PC on CUDA, ResNet-18: 100 / 10 / 1 % kept ReLUs, 10 %
#                       Circa, 100 % x^2 polynomial: latency, rounds, bytes, plaintext
#                       agreement (bench/mpc_relu_scaling.py -> mpc.CryptenBackend)
#   summary.json        exit status and seconds of each part (a part over its time
#                       limit is stopped and reported, the others still run)
set -u
cd "$(dirname "$0")/.."
MODE=gpu
if [ "${1:-}" = "--cpu-smoke" ]; then MODE=cpu-smoke; shift; fi
DIR="${1:-${OUT:-bench/results/gpu}}"
mkdir -p "$DIR"
PY="${PYTHON:-python}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

if [ "$MODE" = gpu ]; then
  DEV=cuda
  TRAIN=(--device cuda --width-mult 1 --batch-size 256 --steps 50 --pairs 3)
  SNL=(--device cuda --width-mult 1 --batch-size 256 --steps 40 --sync-every 1 50)
  MPC=(--device cuda --width-mult 1 --fractions 1 0.1 0.01 --circa 0.1 --poly 1
       --no-mixed --repeats 2 --samples 2)
  LIMITS=(100 100 270)
else
  DEV=cpu
  export OMP_NUM_THREADS=1
  TRAIN=(--device cpu --width-mult 0.0625 --batch-size 8 --steps 2 --pairs 1)
  SNL=(--device cpu --width-mult 0.0625 --batch-size 8 --steps 2 --sync-every 1 2)
  MPC=(--device cpu --width-mult 0.0625 --input 3 16 16 --fractions 1 0.1 0.01
       --circa 0.1 --poly 1 --no-mixed --repeats 1 --samples 1)
  LIMITS=(300 300 400)
fi

parts=()
run_part() {  # name limit_s command...
  local name="$1" limit="$2"; shift 2
  local t0 rc
  t0=$(date +%s)
  timeout --kill-after=10 "$limit" "$@" > "$DIR/$name.log" 2>&1
  rc=$?
  parts+=("{\"part\": \"$name\", \"exit\": $rc, \"seconds\": $(( $(date +%s) - t0 )), \"limit_s\": $limit}")
  echo "$name: exit $rc ($(( $(date +%s) - t0 )) s)"
}

T0=$(date +%s)
run_part train_engine "${LIMITS[0]}" "$PY" bench/train_engine.py "${TRAIN[@]}" --out "$DIR/train_engine.json"
run_part snl_step_rate "${LIMITS[1]}" "$PY" bench/snl_step_rate.py "${SNL[@]}" --out "$DIR/snl_step_rate.json"
run_part mpc_cuda "${LIMITS[2]}" "$PY" bench/mpc_relu_scaling.py "${MPC[@]}" --out "$DIR/mpc_cuda.json"

{
  echo "{\"bench\": \"gpu_check\", \"mode\": \"$MODE\", \"device\": \"$DEV\","
  echo " \"date\": \"$(date -u +%Y-%m-%dT%H:%M:%SZ)\", \"total_s\": $(( $(date +%s) - T0 )),"
  echo " \"parts\": ["
  sep=""
  for p in "${parts[@]}"; do echo "  $sep$p"; sep=","; done
  echo " ]}"
} > "$DIR/summary.json"
cat "$DIR/summary.json"
for p in "${parts[@]}"; do case "$p" in *'"exit": 0,'*) ;; *) exit 1 ;; esac; done
