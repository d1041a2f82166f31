#!/usr/bin/env bash
# Runs the test suite once per Keras backend and fails if any backend fails.
# Usage: bash scripts/test.sh [pytest args]   (BACKENDS="jax" to pick some)
set -u
cd "$(dirname "$0")/.."
backends="${BACKENDS:-tensorflow jax torch}"
report_dir="$(mktemp -d)"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
status=0
for backend in $backends; do
  echo "=== KERAS_BACKEND=$backend"
  KERAS_BACKEND="$backend" python -m pytest -p no:cacheprovider \
    --junitxml="$report_dir/$backend.xml" "$@" || status=1
done
python - "$report_dir" $backends <<'PY'
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

totals = dict(tests=0, failures=0, errors=0, skipped=0)
for backend in sys.argv[2:]:
    path = Path(sys.argv[1]) / f"{backend}.xml"
    if not path.exists():
        print(f"{backend}: no report (pytest did not run)")
        totals["errors"] += 1
        continue
    root = ET.parse(path).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    counts = {k: int(suite.get(k, 0)) for k in totals}
    for k in totals:
        totals[k] += counts[k]
    print(f"{backend}: {counts}")
failed = totals["failures"] + totals["errors"]
passed = totals["tests"] - failed - totals["skipped"]
print(f"total: {passed} passed, {failed} failed, {totals['skipped']} skipped")
PY
exit $status
