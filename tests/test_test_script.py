"""scripts/test.sh: a backend whose pytest dies is named and fails the run.

Runs the script on a throw-away project of two tests (no Keras imported),
one of which kills its own process on one backend only: in one process
(`WORKERS=1`) that is pytest itself, in pytest-xdist's workers (the
default) that is a worker, which pytest-xdist reports as a failed test.
Nothing here depends on the suite's own backend: the tests are defined
under PyTorch only (elsewhere they do not exist, so nothing is skipped).
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import keras
import pytest

ROOT = Path(__file__).resolve().parent.parent

TESTS = """
import os
import signal


def test_passes():
    pass


def test_dies_on_torch():
    if os.environ["KERAS_BACKEND"] == "torch":
        os.kill(os.getpid(), signal.SIGSEGV)
"""


if keras.backend.backend() == "torch":

    @pytest.fixture
    def project(tmp_path):
        (tmp_path / "scripts").mkdir()
        shutil.copy(ROOT / "scripts" / "test.sh", tmp_path / "scripts")
        (tmp_path / "tests").mkdir()
        (tmp_path / "tests" / "test_probe.py").write_text(TESTS)
        return tmp_path

    def _run(project, backends, workers="2"):
        env = dict(os.environ, BACKENDS=backends, WORKERS=workers)
        env["PATH"] = os.pathsep.join(
            [str(Path(sys.executable).parent), env["PATH"]]
        )
        return subprocess.run(
            ["bash", "scripts/test.sh", "-q", "-p", "no:faulthandler"],
            cwd=project,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )

    def test_a_backend_whose_pytest_dies_is_named_and_fails_the_run(project):
        done = _run(project, "jax torch", workers="1")
        assert done.returncode == 1
        lines = done.stdout.splitlines()
        assert (
            "torch: pytest did not finish (exit status 139, killed by "
            "signal 11 (SIGSEGV); no report)"
        ) in lines
        assert (
            "jax: {'tests': 2, 'failures': 0, 'errors': 0, 'skipped': 0} "
            "(exit status 0, ok)" in lines
        )
        assert "total: 2 passed, 1 failed, 0 skipped" in lines
        assert lines[-1] == "FAILED: pytest did not finish on torch"

    def test_backends_that_finish_pass(project):
        done = _run(project, "jax tensorflow")
        assert done.returncode == 0, done.stdout + done.stderr
        assert (
            done.stdout.splitlines()[-1]
            == "total: 4 passed, 0 failed, 0 skipped"
        )

    def test_a_test_that_kills_its_worker_fails_its_backend(project):
        done = _run(project, "jax torch")
        assert done.returncode == 1
        assert "pytest-xdist is not installed" not in done.stdout
        assert re.search(
            r"worker 'gw\d+' crashed while running "
            r"'tests/test_probe.py::test_dies_on_torch'",
            done.stdout,
        )
        lines = done.stdout.splitlines()
        assert (
            "jax: {'tests': 2, 'failures': 0, 'errors': 0, 'skipped': 0} "
            "(exit status 0, ok)" in lines
        )
        (torch,) = [line for line in lines if line.startswith("torch: ")]
        assert torch.endswith("(exit status 1, tests failed)")
        assert "total: 3 passed, " in done.stdout
        assert "FAILED: pytest did not finish" not in done.stdout
