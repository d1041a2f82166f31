#!/usr/bin/env bash
# Release check: builds the sdist and the wheel, checks their metadata and
# contents, installs the wheel into a fresh virtual environment and trains
# small models with it from outside the source tree.
# Usage: bash scripts/check_dist.sh   (exit status 0 when every check passes;
# the last line is "check_dist: OK ..." or "check_dist: FAILED ...")
#
# 1. Build: from a copy of the checkout (git's tracked and not-ignored files)
#    in a temporary directory, with `python -m build --no-isolation`: the
#    installed setuptools builds, nothing is downloaded, and the checkout gets
#    no build/, dist/ or *.egg-info. `build` makes the wheel from the sdist,
#    so a file the sdist lacks breaks the wheel.
# 2. Metadata: `twine check --strict` on both files.
# 3. Contents: the sdist holds LICENSE, README.md, CHANGELOG.md,
#    pyproject.toml and every module of the package, and no tests; the wheel
#    holds exactly the package's modules and its dist-info (with LICENSE),
#    both at the version of keras_ptloss/version.py.
# 4. Install: a virtual environment made with --system-site-packages (Keras
#    and the backends come from the current environment; nothing is
#    downloaded) gets the wheel with `pip --python <its python> install
#    --no-deps --no-index` (pip >= 22.3).
# 5. Smoke run: with that environment's python, from an empty directory and
#    with PYTHONPATH unset, `keras_ptloss` must be the installed copy (also
#    when the checkout is installed editable in the base environment), its
#    `__version__` and installed metadata must match, the `keras-ptloss`
#    command must be installed and its entry point answer `--version`, and a Distiller and a model compiled
#    with PTLoss train for two epochs on KERAS_BACKEND (JAX when unset) with
#    a finite, decreasing loss; the PTLoss model survives a .keras round trip.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
python="${PYTHON:-python}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
started=$SECONDS

fail() {
  echo "check_dist: FAILED: $*"
  exit 1
}

step() {
  echo "=== check_dist: $* ($((SECONDS - started)) s)"
}

step "copying the checkout"
"$python" - "$root" "$work/src" <<'PY' || fail "could not copy the checkout"
import shutil
import subprocess
import sys
from pathlib import Path

root, dest = Path(sys.argv[1]), Path(sys.argv[2])
listed = subprocess.run(
    ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
    cwd=root,
    capture_output=True,
)
if listed.returncode == 0:
    for name in listed.stdout.decode().split("\0"):
        if name and (root / name).is_file():  # deleted files stay listed
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / name, dest / name)
else:  # not a git checkout: everything but build outputs and caches
    shutil.copytree(
        root,
        dest,
        ignore=shutil.ignore_patterns(
            ".git", "__pycache__", "*.egg-info", "build", "dist", ".*_cache"
        ),
    )
PY
version="$("$python" -c 'import runpy, sys
print(runpy.run_path(sys.argv[1])["__version__"])' \
  "$work/src/keras_ptloss/version.py")" || fail "no version in version.py"

step "building the sdist and the wheel of keras-ptloss $version"
(cd "$work/src" && "$python" -m build --no-isolation --outdir "$work/dist" .) \
  >"$work/build.log" 2>&1 || {
  cat "$work/build.log"
  fail "python -m build"
}
tail -n 1 "$work/build.log"

step "twine check --strict"
"$python" -m twine check --strict "$work"/dist/* || fail "twine check"

step "checking the contents of the sdist and the wheel"
"$python" - "$work/dist" "$work/src" "$version" <<'PY' || fail "contents"
import sys
import tarfile
import zipfile
from pathlib import Path

dist, src, version = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
problems = []


def check(ok, message):
    if not ok:
        problems.append(message)


def only(pattern):
    found = sorted(dist.glob(pattern))
    if len(found) != 1:
        sys.exit(f"expected one {pattern} in dist/, found {found}")
    return found[0]


package = {
    p.relative_to(src).as_posix()
    for p in (src / "keras_ptloss").rglob("*")
    if p.is_file()
}
check(package, "no package files in the checkout copy")

sdist = only(f"keras_ptloss-{version}.tar.gz")
top = f"keras_ptloss-{version}/"
with tarfile.open(sdist) as tar:
    members = {m.name for m in tar.getmembers() if m.isfile()}
    pkg_info = tar.extractfile(top + "PKG-INFO").read().decode()
check(all(m.startswith(top) for m in members), "sdist: files outside " + top)
members = {m.removeprefix(top) for m in members}
files = {"LICENSE", "README.md", "CHANGELOG.md", "pyproject.toml", "PKG-INFO"}
missing = sorted((files | package) - members)
check(not missing, f"sdist: missing {missing}")
allowed = files | package | {"setup.cfg", "MANIFEST.in"}
extra = sorted(
    m
    for m in members - allowed
    if not m.startswith("keras_ptloss.egg-info/")
)
check(not extra, f"sdist: unexpected files {extra}")
check(f"\nVersion: {version}\n" in pkg_info, "sdist: PKG-INFO version")

wheel = only(f"keras_ptloss-{version}-py3-none-any.whl")
dist_info = f"keras_ptloss-{version}.dist-info/"
with zipfile.ZipFile(wheel) as zf:
    names = set(zf.namelist())
    metadata = zf.read(dist_info + "METADATA").decode()
    entry_points = zf.read(dist_info + "entry_points.txt").decode()
modules = {n for n in names if not n.startswith(dist_info)}
check(modules == package, f"wheel: package files differ: {modules ^ package}")
check(dist_info + "licenses/LICENSE" in names, "wheel: no licenses/LICENSE")
for banned in ("tests/", "benchmarks/", "examples/", "docs/"):
    check(
        not any(banned in n for n in names), f"wheel: contains {banned} files"
    )
for line in (
    f"Version: {version}",
    "License-Expression: Apache-2.0",
    "License-File: LICENSE",
    "Requires-Python: >=3.10",
):
    check(line in metadata.splitlines(), f"wheel: METADATA lacks {line!r}")
check(
    "keras-ptloss = keras_ptloss.cli:main" in entry_points,
    "wheel: no keras-ptloss console script",
)
for name in (sdist, wheel):
    print(f"{name.name}: {name.stat().st_size} bytes")
print(f"sdist: {len(members)} files; wheel: {len(names)} files")
if problems:
    print("\n".join(problems))
    sys.exit(1)
PY

step "installing the wheel into a fresh virtual environment"
# No pip of its own (ensurepip is slow): the current pip installs into it.
"$python" -m venv --system-site-packages --without-pip "$work/venv" ||
  fail "python -m venv"
venv_python="$work/venv/bin/python"
"$python" -m pip --python "$venv_python" install --no-deps --no-index \
  --no-cache-dir -q "$work"/dist/keras_ptloss-"$version"-py3-none-any.whl ||
  fail "pip install of the wheel"

step "smoke run of the installed wheel (KERAS_BACKEND=${KERAS_BACKEND:-jax})"
mkdir "$work/run"
cat >"$work/smoke.py" <<'PY'
import contextlib
import importlib.metadata
import io
import math
import os
import sys
from pathlib import Path

version, source = sys.argv[1], Path(sys.argv[2]).resolve()
os.environ.setdefault("KERAS_BACKEND", "jax")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_ptloss  # noqa: E402
from keras_ptloss import Distiller  # noqa: E402
from keras_ptloss import PTLoss  # noqa: E402

prefix = Path(sys.prefix).resolve()
location = Path(keras_ptloss.__file__).resolve()
assert location.is_relative_to(prefix), (location, prefix)
assert not location.is_relative_to(source), (location, source)
installed = importlib.metadata.distribution("keras-ptloss")
assert Path(installed.locate_file("")).resolve().is_relative_to(prefix)
assert installed.version == version, (installed.version, version)
assert keras_ptloss.__version__ == version, keras_ptloss.__version__
# The console script: pip wrote it into the environment, and its entry point
# answers --version (run in-process: a second interpreter costs a Keras import).
assert (Path(sys.executable).parent / "keras-ptloss").is_file()
(entry_point,) = importlib.metadata.entry_points(
    group="console_scripts", name="keras-ptloss"
)
out = io.StringIO()
with contextlib.redirect_stdout(out):
    try:
        entry_point.load()(["--version"])
    except SystemExit as stop:
        assert stop.code == 0, stop.code
assert out.getvalue().strip() == f"keras-ptloss {version}", out.getvalue()

keras.utils.set_random_seed(0)
rng = np.random.default_rng(0)
x = rng.normal(size=(512, 8)).astype("float32")
y = np.argmax(x @ rng.normal(size=(8, 3)), axis=-1)


def mlp(hidden):
    return keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Dense(hidden, activation="relu"),
            keras.layers.Dense(3),
        ]
    )


def check_history(history, what):
    losses = history.history["loss"]
    assert all(math.isfinite(v) for v in losses), (what, losses)
    assert losses[-1] < losses[0], (what, losses)
    print(f"{what}: loss {losses[0]:.4f} -> {losses[-1]:.4f}")


cross_entropy = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
teacher = mlp(32)
teacher.compile(keras.optimizers.Adam(0.01), cross_entropy)
teacher.fit(x, y, epochs=3, batch_size=32, verbose=0)

distiller = Distiller(
    teacher,
    mlp(16),
    distillation_loss=PTLoss(
        [0.5, 0.0, 0.0, 0.0, 0.1], temperature=2.0, teacher_from_logits=True
    ),
    student_loss_weight=0.5,
)
distiller.compile(optimizer=keras.optimizers.Adam(0.01), loss=cross_entropy)
history = distiller.fit(x, y, epochs=2, batch_size=32, verbose=0)
check_history(history, "Distiller")

probs = keras.ops.convert_to_numpy(
    keras.ops.softmax(teacher.predict(x, verbose=0))
)
student = mlp(16)
student.compile(
    keras.optimizers.Adam(0.01),
    PTLoss(
        [0.5, 0.0, 0.0, 0.0, 0.1], temperature=2.0, teacher_from_logits=False
    ),
)
check_history(
    student.fit(x, probs, epochs=2, batch_size=32, verbose=0), "PTLoss"
)
student.save("student.keras")
restored = keras.saving.load_model("student.keras")
assert isinstance(restored.loss, PTLoss), type(restored.loss)
np.testing.assert_allclose(
    restored.predict(x, verbose=0), student.predict(x, verbose=0), rtol=1e-5
)
print(f"keras_ptloss {version} from {location} on {keras.backend.backend()}")
PY
(cd "$work/run" && env -u PYTHONPATH "$venv_python" "$work/smoke.py" \
  "$version" "$root") || fail "smoke run of the installed wheel"

echo "check_dist: OK: keras-ptloss $version ($((SECONDS - started)) s)"
