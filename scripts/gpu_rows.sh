#!/usr/bin/env bash
# The GPU rows of the benchmarks, on a machine with one or more accelerators.
#
#   1. `python -m benchmarks run population search loss --backends jax torch`
#      (8 students as one population vs 8 separate; search_coefficients
#      defaults vs KD tuning; the loss itself), results in "$OUT".
#   2. The sharded search (JAX): tests/sharding_check.py times one search on
#      1 device, under keras.distribution.DataParallel and with the
#      population's members sharded (member_axis="model"), on all devices the
#      machine has; writes "$OUT"/sharded_search.json. With one device only
#      the 1-device row is written.
#
# Usage (from anywhere):
#   OUT=/path/to/results bash scripts/gpu_rows.sh           # GPU machine
#   bash scripts/gpu_rows.sh --quick   # CPU dry run: 8 emulated devices,
#                                      # tiny settings, OUT defaults to
#                                      # benchmarks/results/tmp/gpu_rows
# Each step's failure is reported and the next step still runs; the exit
# status is 1 when any step failed.

set -u
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
QUICK=0
if [ "${1:-}" = "--quick" ]; then
    QUICK=1
fi
if [ -z "${OUT:-}" ]; then
    if [ "$QUICK" = 1 ]; then
        OUT=benchmarks/results/tmp/gpu_rows
    else
        OUT=benchmarks/results/gpu_rows
    fi
fi
mkdir -p "$OUT"
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}
if [ "$QUICK" = 1 ]; then
    export XLA_FLAGS="${XLA_FLAGS:-} --xla_force_host_platform_device_count=8"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

echo "== $($PYTHON --version 2>&1) at $(command -v "$PYTHON"); results in $OUT"
if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
else
    echo "nvidia-smi: not found"
fi
KERAS_BACKEND=jax $PYTHON -c "import jax; print('jax devices:', jax.devices())"

STATUS=0

echo "== 1. python -m benchmarks run population search loss"
if [ -f benchmarks/__main__.py ]; then
    BENCH_ARGS=(run population search loss --backends jax torch
                --results-dir "$OUT")
    if [ "$QUICK" = 1 ]; then
        BENCH_ARGS+=(--quick)
    fi
    $PYTHON -m benchmarks "${BENCH_ARGS[@]}" || {
        echo "benchmarks: FAILED"
        STATUS=1
    }
else
    echo "benchmarks/__main__.py not found: this checkout has no" \
         "'python -m benchmarks run'; step skipped"
    STATUS=1
fi

echo "== 2. sharded search (JAX, every device)"
if [ "$QUICK" = 1 ]; then
    SEARCH_ARGS=(--scale 1 --hidden 8 --epochs 2 --batch-size 32)
else
    # 8192 examples, a 256-unit hidden layer, batches of 256.
    SEARCH_ARGS=(--scale 64 --hidden 256 --epochs 6 --batch-size 256)
fi
KERAS_BACKEND=jax $PYTHON tests/sharding_check.py time \
    "$OUT"/sharded_search.json "${SEARCH_ARGS[@]}" || {
    echo "sharded search: FAILED"
    STATUS=1
}
ls -l "$OUT"
exit $STATUS
