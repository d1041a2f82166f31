"""Command line: `python -m keras_ptloss` (or the `keras-ptloss` script).

Subcommands: `demo` (`keras_ptloss.demo`) and `benchmark ARGS...`, which
runs `python -m benchmarks ARGS...` in a source checkout (exit status 2
from a wheel, which does not ship the benchmarks). In the command's own
process this module imports Keras with TensorFlow's start-up notices
dropped, then the package's serializable modules. The demo runs in a child
process whose start-up notices are dropped from stderr; every other line
passes through.
"""

import argparse
import importlib
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import keras_ptloss
from keras_ptloss._command import started_as_command
from keras_ptloss.version import __version__

# TensorFlow's start-up notices (informational; printed on import, before
# `TF_CPP_MIN_LOG_LEVEL` applies to the oneDNN one). Matched whole-line.
_STARTUP_NOISE = (
    re.compile(
        r"WARNING: All log messages before absl::InitializeLog\(\) is "
        r"called are written to STDERR"
    ),
    re.compile(r"I\d{4} [\d:. ]+\d+ (port|cpu_feature_guard)\.cc:\d+\] .*"),
    re.compile(
        r"[\d\-: .]*I tensorflow/core/(util/port|platform/"
        r"cpu_feature_guard)\.cc:\d+\] .*"
    ),
    re.compile(r"To enable the following instructions: .*"),
)


def is_startup_noise(line):
    """Whether a line of standard error is one of TensorFlow's start-up
    notices (see `_STARTUP_NOISE`)."""
    text = line.rstrip("\r\n")
    return any(pattern.fullmatch(text) for pattern in _STARTUP_NOISE)


def import_quietly(name, stderr=None):
    """Imports module `name` with TensorFlow's start-up notices dropped.

    Standard error (file descriptor 2) goes to a temporary file during the
    import; the lines that are not `is_startup_noise` are then written to
    `stderr`. Without a usable file descriptor 2 the import is plain.
    """
    if name in sys.modules:
        return sys.modules[name]
    try:
        saved = os.dup(2)
    except OSError:
        return importlib.import_module(name)
    sys.stderr.flush()
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            return importlib.import_module(name)
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            text = captured.read().decode("utf-8", errors="replace")
            stderr = sys.stderr if stderr is None else stderr
            for line in text.splitlines(keepends=True):
                if not is_startup_noise(line):
                    stderr.write(line)
            stderr.flush()


def run_quietly(cmd, env=None, stderr=None):
    """Runs `cmd`, dropping TensorFlow's start-up notices from its stderr.

    Returns:
        The child's exit status.
    """
    stderr = sys.stderr if stderr is None else stderr
    sys.stdout.flush()
    child = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE)
    try:
        for raw in iter(child.stderr.readline, b""):
            line = raw.decode("utf-8", errors="replace")
            if not is_startup_noise(line):
                stderr.write(line)
                stderr.flush()
    except KeyboardInterrupt:
        child.wait()
        return 130
    finally:
        child.stderr.close()
    return child.wait()


def _run_demo(argv):
    """Runs `python -m keras_ptloss.demo argv...` with this package first
    on `PYTHONPATH`; returns the child's exit status.
    """
    cmd = [sys.executable, "-m", "keras_ptloss.demo", *argv]
    here = str(Path(__file__).resolve().parent.parent)
    paths = [
        here,
        *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep)),
    ]
    level = "3" if os.environ.get("TF_CPP_MIN_LOG_LEVEL") == "3" else "2"
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(paths),
        TF_CPP_MIN_LOG_LEVEL=level,
    )
    return run_quietly(cmd, env=env)


DEMO_DESCRIPTION = (
    "MNIST-1D distillation demo: a CNN teacher trained on a small "
    "labelled split with 40% of its labels flipped (--teachers clean,noisy "
    "adds one trained on the labels as they are), MLP students distilled on "
    "a larger unlabelled split; per teacher, the "
    "student alone, tuned KD, tuned LS-KD and PTLoss's default pipeline "
    "(search_coefficients with KD's budget), all calibrated on the "
    "validation split; tables over seeds and a verdict computed from them."
)


def benchmarks_dir():
    """The source checkout's `benchmarks/` folder (absent from a wheel)."""
    return Path(__file__).resolve().parent.parent / "benchmarks"


def backend_line():
    """Describes the backend the `KERAS_BACKEND` variable selects."""
    name = os.environ.get("KERAS_BACKEND")
    if name:
        return f"KERAS_BACKEND={name}"
    return "KERAS_BACKEND is not set: Keras's default backend, tensorflow"


def build_parser():
    """The `argparse` parser of `python -m keras_ptloss`."""
    parser = argparse.ArgumentParser(
        prog="python -m keras_ptloss",
        description=(
            "keras-ptloss: PTLoss knowledge distillation for Keras 3. "
            "The backend is chosen with the KERAS_BACKEND environment "
            "variable (tensorflow, jax or torch; Keras's default is "
            "tensorflow)."
        ),
    )
    parser.add_argument(
        "--version", action="version", version=f"keras-ptloss {__version__}"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    from keras_ptloss.demo import options

    demo_parser = sub.add_parser(
        "demo",
        help="MNIST-1D, a noisy-label teacher (and optionally a clean "
        "one), students distilled on an unlabelled split: student alone, "
        "tuned KD and LS-KD, PTLoss's default search, all calibrated; tables "
        "over seeds, verdict and plots (no download)",
        description=DEMO_DESCRIPTION,
    )
    options.add_arguments(demo_parser)

    bench = sub.add_parser(
        "benchmark",
        help="run `python -m benchmarks` of a source checkout",
        description=(
            "Runs `python -m benchmarks ARGS...` in a source checkout "
            "(e.g. `benchmark list`, `benchmark run loss --quick`, "
            "`benchmark report`). Benchmarks are not installed with the "
            "wheel."
        ),
    )
    bench.add_argument(
        "args",
        nargs=argparse.REMAINDER,
        help="arguments of `python -m benchmarks`",
    )
    return parser


def _run_benchmark(args):
    """Runs `python -m benchmarks args...`; returns its exit status."""
    where = benchmarks_dir()
    if not (where / "__main__.py").is_file():
        print(
            f"error: the benchmarks live in a source checkout's benchmarks/ "
            f"folder, and {where} has none. They are not part of the "
            "installed package: clone the repository and "
            '`pip install -e ".[all]"` there to run them.',
            file=sys.stderr,
        )
        return 2
    cmd = [sys.executable, "-m", "benchmarks", *args]
    return subprocess.call(cmd, cwd=str(where.parent))


def main(argv=None):
    """Entry point of `python -m keras_ptloss` and `keras-ptloss`.

    Args:
        argv: the arguments without the program name; `sys.argv[1:]` when
            `None`.

    Returns:
        The process exit status (0 on success).
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "benchmark":
        forwarded = list(args.args)
        if forwarded[:1] == ["--"]:
            forwarded = forwarded[1:]
        return _run_benchmark(forwarded)
    # The options were checked by the parser above; the child parses the
    # same ones (everything after the subcommand).
    return _run_demo(argv[argv.index("demo") + 1 :])


# The command's own process imports Keras quietly, then registers the
# package's classes with it (see the module docstring).
if started_as_command():
    import_quietly("keras")
    keras_ptloss._register_serializable()
