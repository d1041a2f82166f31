#!/usr/bin/env bash
# GPU rows of the loss-speed benchmark, for one run on a lent GPU machine.
#
# Runs benchmarks/loss_speed.py for every backend that imports there and
# sees a GPU, and writes benchmarks/results/loss_speed_gpu.json and .md
# (copied to "$OUT" when it is set). Backends that are missing, fail, see
# no GPU or run over their time budget are skipped with a note in the md.
# Designed to finish in under 6 minutes: the backends share a 270 s budget
# (a backend starts no new case past its share; see --total-budget), and
# GPU timings are stable enough for 25 rounds of 10 ms samples.
#
# Usage (from anywhere):
#   bash benchmarks/gpu_rows.sh           # on the GPU machine
#   bash benchmarks/gpu_rows.sh --quick   # CPU dry run: tiny settings, no
#                                         # GPU required, results written to
#                                         # the git-ignored benchmarks/results/tmp
# Then, on the development machine: python benchmarks/report.py

set -u
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
QUICK=0
if [ "${1:-}" = "--quick" ]; then
    QUICK=1
fi

echo "== $($PYTHON --version 2>&1) at $(command -v "$PYTHON")"
if $PYTHON -c "import keras, jax, torch, tensorflow" 2>/dev/null; then
    echo "import keras, jax, torch, tensorflow: ok"
else
    echo "import keras, jax, torch, tensorflow: FAILED (details below)"
fi
for module in keras jax torch tensorflow; do
    $PYTHON - "$module" <<'PY' 2>/dev/null || echo "  $module: not importable"
import importlib
import sys

name = sys.argv[1]
module = importlib.import_module(name)
print(f"  {name} {getattr(module, '__version__', '?')}")
PY
done
if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
    LABEL=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -n 1)
else
    echo "nvidia-smi: not found"
    LABEL=""
fi

if [ "$QUICK" = 1 ]; then
    # Dry run on any machine: measures whatever device the backends see.
    ARGS=(--quick --device-label "${LABEL:-CPU} (gpu_rows.sh dry run)")
else
    ARGS=(--require-gpu --threads 0 --repeats 25 --min-time 0.01
          --device-label "${LABEL:-no GPU found}")
fi

# loss_speed.py runs each backend in its own subprocess and records a
# backend that cannot be imported, fails, or sees no GPU as skipped.
$PYTHON benchmarks/loss_speed.py "${ARGS[@]}" \
    --output-name loss_speed_gpu --total-budget 270
STATUS=$?

if [ "$QUICK" = 1 ]; then
    RESULTS=benchmarks/results/tmp
else
    RESULTS=benchmarks/results
fi
if [ -n "${OUT:-}" ]; then
    mkdir -p "$OUT"
    cp -v "$RESULTS"/loss_speed_gpu.json "$RESULTS"/loss_speed_gpu.md "$OUT"/
fi
exit $STATUS
