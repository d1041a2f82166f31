#!/usr/bin/env bash
# Runs the test suite once per Keras backend and fails if any backend fails.
# Usage: bash scripts/test.sh [pytest args]   (BACKENDS="jax" to pick some)
#
# Each backend's pytest runs its test files in WORKERS processes at once
# (pytest-xdist, from the `test` extra; default 2, one per core of the
# project's machines; WORKERS=1 runs one process). Each file stays in one
# worker (`--dist loadfile`), so a module's fixtures run once.
#
# Each backend's pytest exit status is kept: a pytest that died (a crash in
# a backend, a signal, an internal error) is named with its status in the
# summary and fails the run, also when it left no report behind. A test
# that crashes a worker is reported by pytest-xdist as a failed test.
set -u
cd "$(dirname "$0")/.."
backends="${BACKENDS:-tensorflow jax torch}"
workers="${WORKERS:-2}"
report_dir="$(mktemp -d)"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
parallel=()
if [ "$workers" != 1 ]; then
  if python -c "import xdist" 2>/dev/null; then
    parallel=(-n "$workers" --dist loadfile)
  else
    echo "pytest-xdist is not installed (the test extra has it): one process"
  fi
fi
status=0
for backend in $backends; do
  echo "=== KERAS_BACKEND=$backend"
  KERAS_BACKEND="$backend" python -m pytest -p no:cacheprovider \
    ${parallel[@]+"${parallel[@]}"} --junitxml="$report_dir/$backend.xml" "$@"
  code=$?
  echo "$code" >"$report_dir/$backend.status"
  [ "$code" -eq 0 ] || status=1
done
# A pytest killed mid-line leaves no newline: start the summary on its own.
echo
python - "$report_dir" $backends <<'PY' || status=1
import signal
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

# pytest's own exit statuses; anything else means it did not finish.
PYTEST_STATUS = {0: "ok", 1: "tests failed", 2: "interrupted",
                 3: "internal error", 4: "usage error", 5: "no tests ran"}


def describe(code):
    if code in PYTEST_STATUS:
        return f"exit status {code}, {PYTEST_STATUS[code]}"
    if code > 128:  # the shell's 128 + N for a process killed by signal N
        try:
            name = signal.Signals(code - 128).name
        except ValueError:
            name = "unknown signal"
        return f"exit status {code}, killed by signal {code - 128} ({name})"
    return f"exit status {code}"


report_dir = Path(sys.argv[1])
totals = dict(tests=0, failures=0, errors=0, skipped=0)
died = []
for backend in sys.argv[2:]:
    code = int((report_dir / f"{backend}.status").read_text())
    path = report_dir / f"{backend}.xml"
    if code not in (0, 1) or not path.exists():
        died.append(backend)
        report = "with a partial report" if path.exists() else "no report"
        print(f"{backend}: pytest did not finish ({describe(code)}; {report})")
        continue
    root = ET.parse(path).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    counts = {k: int(suite.get(k, 0)) for k in totals}
    for k in totals:
        totals[k] += counts[k]
    print(f"{backend}: {counts} ({describe(code)})")
failed = totals["failures"] + totals["errors"]
passed = totals["tests"] - failed - totals["skipped"]
failed += len(died)  # a backend that died counts as one failure
print(f"total: {passed} passed, {failed} failed, {totals['skipped']} skipped")
if died:
    print(f"FAILED: pytest did not finish on {', '.join(died)}")
    sys.exit(1)
PY
exit $status
