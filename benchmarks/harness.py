"""The speed benchmarks' shared command line, worker prologue and driver.

Every speed benchmark (`loss_speed.py`, `distiller_speed.py`,
`search_speed.py`, `cross_backend.py`, `vocab_scale.py`) runs each backend
in its own subprocess, because KERAS_BACKEND must be set before keras is
imported. This module holds what they share:

- `speed_parser` / `parse`: the common options (`--backends`, `--threads`,
  `--quick`, `--results-dir`, `--backend-timeout`, `--seed`,
  `--markdown-only` and the hidden worker options); each script adds its
  own, and `parse` applies its `--quick` limits and the results folder;
- `start_backend`: the worker-process prologue (environment, thread
  pinning, keras imported on the requested backend);
- `worker_env`: the same environment for a child started by hand;
- `epoch_timer` and `timed_rounds`: per-epoch wall/CPU timing, methods
  interleaved in a fresh random order every round;
- `run_parent`: the parent side (worker dispatch, `--markdown-only`, one
  subprocess per backend, the JSON and its markdown section).

Timing statistics and the output files are in `timing.py`.
"""

import argparse
import os
import random
import sys
import time
from pathlib import Path

import timing

BACKENDS = ("jax", "tensorflow", "torch")
# Options the parent consumes; the per-backend workers never see them.
PARENT_ONLY = frozenset({"--backends", "--backend-timeout"})


def speed_parser(
    doc, quick_help, backend_timeout=None, options=(), backend_help=None
):
    """An argument parser with the options every speed benchmark shares.

    Args:
        doc: the script's docstring (its first line is the description).
        quick_help: what `--quick` shrinks (the results folder is added).
        backend_timeout: default of `--backend-timeout` (seconds, or None).
        options: the script's own options, as `add_options` takes them.
        backend_help: help of a public `--backend` (time one backend only);
            `None` keeps `--backend` hidden (set by the parent for workers).

    Returns:
        An `argparse.ArgumentParser`.
    """
    parser = argparse.ArgumentParser(
        description=doc.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        help=backend_help if backend_help else argparse.SUPPRESS,
    )
    parser.add_argument(
        "--backends",
        nargs="+",
        choices=BACKENDS,
        default=list(BACKENDS),
        help="backends to run, each in its own subprocess",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="CPU threads per backend (0: the backend's default); one "
        "thread keeps ratios stable on a shared machine",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke run: {quick_help}; results go to "
        "benchmarks/results/tmp unless --results-dir is given",
    )
    parser.add_argument(
        "--results-dir",
        default=None,
        help="folder for the results (default benchmarks/results, or the "
        "git-ignored benchmarks/results/tmp with --quick)",
    )
    parser.add_argument(
        "--backend-timeout",
        type=float,
        default=backend_timeout,
        help="seconds after which a backend's subprocess is stopped and "
        "reported as not measured",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--markdown-only",
        action="store_true",
        help="only regenerate the .md from the existing .json",
    )
    parser.add_argument("--worker-output", help=argparse.SUPPRESS)
    add_options(parser, options)
    return parser


def add_options(parser, options):
    """Adds options given as `(flag, default, help)` rows: the type follows
    the default (a list: `nargs="+"` of its items' type), and a fourth item
    sets it where the default cannot say (`None`)."""
    for flag, default, help_text, *kind in options:
        sample = default[0] if isinstance(default, list) else default
        kwargs = {"default": default, "help": help_text}
        if isinstance(default, list):
            kwargs["nargs"] = "+"
        if kind:
            kwargs["type"] = kind[0]
        elif sample is not None and not isinstance(sample, str):
            kwargs["type"] = type(sample)
        parser.add_argument(flag, **kwargs)


def settings(args, names, **constants):
    """The named arguments' values (then `constants`), for the results."""
    return {**{name: getattr(args, name) for name in names}, **constants}


def parse(parser, argv=None, quick=None):
    """Parses `argv`; applies `quick(args)` under `--quick` and the
    default results folder (`benchmarks/results`, or its git-ignored
    `tmp/` for a smoke run)."""
    args = parser.parse_args(argv)
    if args.quick and quick is not None:
        quick(args)
    if args.results_dir is None:
        args.results_dir = str(
            timing.QUICK_RESULTS if args.quick else timing.RESULTS
        )
    return args


def start_backend(backend, threads):
    """The worker prologue: selects `backend`, pins the CPU threads and
    imports keras on it (nothing may import keras before). Returns keras.
    """
    os.environ["KERAS_BACKEND"] = backend
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.path.insert(0, str(timing.ROOT))
    timing.configure_threads(backend, threads)
    import keras

    assert keras.backend.backend() == backend, keras.backend.backend()
    return keras


def worker_env(backend, threads):
    """The environment of a child process running `backend` on `threads`
    intra-op threads, for scripts that start their workers themselves."""
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2")
    env["PYTHONPATH"] = (
        str(timing.ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    )
    env["OMP_NUM_THREADS"] = str(threads)
    if backend == "jax" and threads == 1:
        env["XLA_FLAGS"] = (
            env.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false"
            " intra_op_parallelism_threads=1"
        ).strip()
    return env


def epoch_timer(keras):
    """A callback timing each epoch (wall and CPU) from `on_epoch_begin`
    to `on_epoch_end`: fit's per-call set-up is left out."""

    class EpochTimer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = (time.perf_counter(), time.process_time())

        def on_epoch_end(self, epoch, logs=None):
            self.wall = time.perf_counter() - self.start[0]
            self.cpu = time.process_time() - self.start[1]

    return EpochTimer()


def timed_rounds(methods, rounds, seed):
    """Runs every method once per round, in a fresh random order.

    Args:
        methods: dict name -> callable returning `(wall_s, cpu_s)`.
        rounds: number of rounds.
        seed: seed of the shuffling.

    Returns:
        `(wall, cpu)`: dicts name -> list of seconds in round order.
    """
    wall = {name: [] for name in methods}
    cpu = {name: [] for name in methods}
    names = list(methods)
    order = random.Random(seed)
    for _ in range(rounds):
        order.shuffle(names)
        for name in names:
            seconds, cpu_seconds = methods[name]()
            wall[name].append(seconds)
            cpu[name].append(cpu_seconds)
    return wall, cpu


def run_worker(script, backend, worker_argv, timeout):
    """One backend in a subprocess: its JSON, or `{"backend", "skipped"}`."""
    result, reason = timing.run_backend_worker(
        script, backend, worker_argv, timeout
    )
    if reason is None:
        return result
    print(f"   {backend} skipped: {reason}", flush=True)
    return {"backend": backend, "skipped": reason}


def run_parent(
    script, name, argv, args, steps, parent_only=None, schedule=None
):
    """The whole run of a speed benchmark after parsing.

    A worker measures its backend (`run_backend(args)`); `--markdown-only`
    rewrites the section from the JSON; otherwise every backend (`--backend`
    if given, else `--backends`) runs in its own subprocess and
    `make_data(results)` (the results header is added here) is written
    with its markdown.

    Args:
        script, name: the script's path and the results file stem.
        argv: the command line (recorded; passed on to the workers less
            the options in `parent_only`).
        args: the parsed `argv`.
        steps: `(run_backend, to_markdown, make_data)`: `args -> dict`,
            the worker's measurement; `data -> str`, the markdown section;
            `results -> dict`, the fields after the header (then
            `"results": results` unless it holds them).
        parent_only: options the workers never see (default
            `PARENT_ONLY`).
        schedule: optional `(index, count, elapsed_s) -> (extra_argv,
            timeout)` for the worker of the `index`-th of `count` backends
            (default: no extra options, `--backend-timeout`).

    Returns:
        The data written, or None in a worker and with `--markdown-only`.
    """
    run_backend, to_markdown, make_data = steps
    if timing.serve_worker(args, run_backend):
        return None
    folder = Path(args.results_dir)
    if args.markdown_only:
        timing.rewrite_markdown(folder, name, to_markdown)
        return None
    backends = [args.backend] if args.backend else args.backends
    worker_argv = timing.drop_options(argv, parent_only or PARENT_ONLY)
    results, start = [], time.perf_counter()
    for index, backend in enumerate(backends):
        extra, timeout = [], args.backend_timeout
        if schedule is not None:
            elapsed = time.perf_counter() - start
            extra, timeout = schedule(index, len(backends), elapsed)
        results.append(
            run_worker(script, backend, worker_argv + extra, timeout)
        )
    data = {**timing.results_header(name, script, argv), **make_data(results)}
    data.setdefault("results", results)
    timing.write_results(folder, name, data, to_markdown)
    return data
