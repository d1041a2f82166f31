"""`pip install .` builds a wheel holding the package only.

`scripts/check_dist.sh` (the release check: sdist and wheel built, checked
and installed into a fresh virtual environment that trains with them) runs
on one backend only, PyTorch (the fastest to start here), the one its smoke
run is given: under the other backends those tests are not defined at
all, so nothing is skipped.
"""

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import keras
import pytest

import keras_ptloss

ROOT = Path(__file__).resolve().parent.parent
COPY_IGNORE = shutil.ignore_patterns(
    ".git",
    "__pycache__",
    "*.egg-info",
    "build",
    "dist",
    ".pytest_cache",
    ".ruff_cache",
    ".ipynb_checkpoints",
)
CHECK_BACKEND = "torch"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """Builds the wheel from a copy of the checkout (the tree stays clean)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    shutil.copytree(ROOT, src, ignore=COPY_IGNORE)
    out = tmp / "dist"
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "wheel",
        str(src),
        "--no-deps",
        "--no-build-isolation",
        "--no-cache-dir",
        "-q",
        "-w",
        str(out),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    wheels = list(out.glob("keras_ptloss-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def _names(wheel):
    with zipfile.ZipFile(wheel) as zf:
        return zf.namelist()


def test_wheel_contains_only_the_package(wheel):
    names = _names(wheel)
    outside = [
        n
        for n in names
        if not n.startswith("keras_ptloss/")
        and not n.startswith("keras_ptloss-")
    ]
    assert outside == []
    meta_dirs = {n.split("/")[0] for n in names if n.startswith("keras_ptl")}
    assert meta_dirs == {
        "keras_ptloss",
        f"keras_ptloss-{keras_ptloss.__version__}.dist-info",
    }
    for banned in ("tests", "benchmarks", "examples", "docs", "data"):
        assert not any(f"/{banned}/" in f"/{n}" for n in names), banned
    assert not any(
        n.endswith((".ipynb", ".npz", ".json", ".png")) for n in names
    )


def test_wheel_ships_every_module_of_the_package(wheel):
    names = set(_names(wheel))
    source = {
        p.relative_to(ROOT).as_posix()
        for p in (ROOT / "keras_ptloss").rglob("*.py")
    }
    assert source <= names
    for module in (
        "keras_ptloss/__main__.py",
        "keras_ptloss/datasets/__init__.py",
        "keras_ptloss/demo/__init__.py",
        "keras_ptloss/demo/__main__.py",
    ):
        assert module in names


def test_wheel_metadata_version_and_console_script(wheel):
    assert wheel.name.startswith(f"keras_ptloss-{keras_ptloss.__version__}-")
    dist_info = f"keras_ptloss-{keras_ptloss.__version__}.dist-info"
    with zipfile.ZipFile(wheel) as zf:
        entry_points = zf.read(f"{dist_info}/entry_points.txt").decode()
        metadata = zf.read(f"{dist_info}/METADATA").decode()
    assert "[console_scripts]" in entry_points
    assert "keras-ptloss = keras_ptloss.cli:main" in entry_points
    assert f"Version: {keras_ptloss.__version__}" in metadata
    assert "Requires-Python: >=3.10" in metadata


def test_installed_wheel_benchmark_command_explains_missing_benchmarks(
    wheel, tmp_path
):
    """From a wheel (no benchmarks/ folder) the subcommand fails clearly."""
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(site)
    env = dict(os.environ, PYTHONPATH=str(site))
    proc = subprocess.run(
        [sys.executable, "-m", "keras_ptloss", "benchmark", "list"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "not part of the installed package" in proc.stderr
    assert str(site / "benchmarks") in proc.stderr


def _check_dist(project):
    env = dict(os.environ, PYTHON=sys.executable, KERAS_BACKEND=CHECK_BACKEND)
    return subprocess.run(
        ["bash", "scripts/check_dist.sh"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


if keras.backend.backend() == CHECK_BACKEND:

    def test_release_check_passes():
        before = sorted(ROOT.iterdir())
        done = _check_dist(ROOT)
        assert done.returncode == 0, done.stdout + done.stderr
        assert sorted(ROOT.iterdir()) == before  # built in a temporary copy
        lines = done.stdout.splitlines()
        version = keras_ptloss.__version__
        assert lines[-1].startswith(f"check_dist: OK: keras-ptloss {version}")
        assert any(line.startswith("Distiller: loss ") for line in lines)
        assert any(line.startswith("PTLoss: loss ") for line in lines)

    def test_release_check_fails_on_a_file_the_sdist_leaves_out(tmp_path):
        """A data file in the package that setuptools does not ship."""
        project = tmp_path / "project"
        shutil.copytree(ROOT, project, ignore=COPY_IGNORE)
        (project / "keras_ptloss" / "table.csv").write_text("a,b\n1,2\n")
        done = _check_dist(project)
        assert done.returncode == 1, done.stdout + done.stderr
        lines = done.stdout.splitlines()
        assert "sdist: missing ['keras_ptloss/table.csv']" in lines
        assert lines[-1] == "check_dist: FAILED: contents"
        assert not (project / "dist").exists()
        assert not list(project.glob("*.egg-info"))
