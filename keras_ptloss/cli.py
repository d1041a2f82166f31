"""Command line: `python -m keras_ptloss` (or the `keras-ptloss` script).

Subcommands:

- `demo`: the end-to-end MNIST-1D distillation demo (`keras_ptloss.demo`).
- `benchmark NAME [ARGS...]`: runs one of the benchmark scripts of a source
  checkout (`benchmarks/<name>.py`), forwarding `ARGS` unchanged. The
  benchmarks are not part of the installed wheel; from a wheel this
  subcommand says so and exits with status 2.

The Keras backend is chosen by the `KERAS_BACKEND` environment variable
before the process starts (Keras's default is `tensorflow`).
"""

import argparse
import os
import subprocess
import sys
from pathlib import Path

from keras_ptloss.version import __version__

# Benchmark subcommand name -> script file in `benchmarks/`.
BENCHMARKS = {
    "loss-speed": "loss_speed.py",
    "selection-speed": "selection_speed.py",
    "distiller-speed": "distiller_speed.py",
    "accuracy": "accuracy.py",
}


def benchmarks_dir():
    """The source checkout's `benchmarks/` folder (it may not exist).

    The package lives in `<checkout>/keras_ptloss/`; an editable install
    keeps that layout, a wheel install does not ship `benchmarks/`.
    """
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

    from keras_ptloss import demo

    demo_parser = sub.add_parser(
        "demo",
        help="MNIST-1D end to end: teacher, coefficient selection, "
        "Distiller.fit, comparison table and plot (no download)",
        description=demo.__doc__.split("\n\n")[0],
    )
    demo.add_arguments(demo_parser)

    bench = sub.add_parser(
        "benchmark",
        help="run a benchmark script of a source checkout "
        "(extra arguments are forwarded to it)",
        description=(
            "Runs benchmarks/<name>.py of a source checkout with the "
            "remaining arguments (e.g. `benchmark accuracy --quick`; "
            "`benchmark accuracy --help` shows the script's options). "
            "Benchmarks are not installed with the wheel."
        ),
    )
    bench.add_argument("name", choices=sorted(BENCHMARKS))
    bench.add_argument(
        "args",
        nargs=argparse.REMAINDER,
        help="arguments forwarded to the benchmark script",
    )
    return parser


def run_benchmark(name, args):
    """Runs `benchmarks/<script>.py args...`; returns its exit status."""
    script = benchmarks_dir() / BENCHMARKS[name]
    if not script.is_file():
        where = benchmarks_dir()
        print(
            f"error: benchmark {name!r} needs {script.name} in a source "
            f"checkout's benchmarks/ folder, and {where} has none. The "
            "benchmarks are not part of the installed package: clone the "
            'repository and `pip install -e ".[all]"` there to run them.',
            file=sys.stderr,
        )
        return 2
    cmd = [sys.executable, str(script), *args]
    return subprocess.call(cmd, cwd=str(script.parent.parent))


def main(argv=None):
    """Entry point of `python -m keras_ptloss` and `keras-ptloss`.

    Args:
        argv: the arguments (without the program name); `sys.argv[1:]`
            when `None`.

    Returns:
        The process exit status (0 on success).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "benchmark":
        forwarded = list(args.args)
        if forwarded[:1] == ["--"]:
            forwarded = forwarded[1:]
        return run_benchmark(args.name, forwarded)
    from keras_ptloss import demo

    demo.run_from_args(args)
    return 0
