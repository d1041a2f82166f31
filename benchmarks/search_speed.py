"""Epoch time of N students trained as one population vs N separate fits.

For each backend, N MNIST-1D MLP students (40 inputs, hidden widths
`--hidden`, 10 classes), each with its own PTLoss (M = 5) coefficients and
temperature, are trained on the same teacher logits (pre-computed, as the
search does) by

- (a) `population`: one `keras_ptloss.population.StudentPopulation` holding
  all N (one Keras model, one compiled step; the step of
  `keras_ptloss.search_coefficients`);
- (b) `separate`: N students, each compiled on its own with
  `PTLoss(coefficients, temperature, teacher_from_logits=True)`; one
  "epoch of N students" is one epoch of each, timed and summed.

Both use Adam, batch `--batch-size`, `fit` on numpy arrays with its default
compilation (XLA on JAX, `tf.function` on TF, eager torch). Every model is
compiled and warmed up by one epoch; then, in every round, (a) and (b) run
in a fresh random order and each epoch is timed from `on_epoch_begin` to
`on_epoch_end` (fit's per-call set-up is left out: a real training pays it
once) on the wall clock and on the process's CPU-time clock. The speed-up
is the median over rounds of the within-round ratio (b) / (a); the issue's
target is >= 3 on this CPU.

The teacher logits come from a randomly initialised wider MLP: their values
do not change the cost of a step. MNIST-1D comes from `mnist1d` (generated
by code, offline). Each backend runs in its own subprocess; the results go
to `benchmarks/results/search_speed` (`.json`, then `.md` generated from
it).
"""

import argparse
import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import timing  # noqa: E402

BACKENDS = ("jax", "tensorflow", "torch")
NAME = "search_speed"
TARGET = 3.0
ORDER = 5
NUM_CLASSES = 10


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS)
    )
    parser.add_argument(
        "--members", type=int, default=8, help="students N in the population"
    )
    parser.add_argument(
        "--samples",
        type=int,
        default=4000,
        help="MNIST-1D transfer examples per epoch (a multiple of 10)",
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--hidden",
        default="100-100",
        help="the student's hidden widths joined by '-'",
    )
    parser.add_argument(
        "--rounds", type=int, default=5, help="timed epochs per method"
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
        help="smoke run: 1000 samples, 2 rounds; results go to "
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
        default=900.0,
        help="seconds after which a backend's subprocess is stopped and "
        "reported as not measured",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--markdown-only",
        action="store_true",
        help="only regenerate the .md from the existing .json",
    )
    parser.add_argument("--backend", choices=BACKENDS, help=argparse.SUPPRESS)
    parser.add_argument("--worker-output", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.samples = min(args.samples, 1000)
        args.rounds = min(args.rounds, 2)
    if args.results_dir is None:
        args.results_dir = str(
            timing.QUICK_RESULTS if args.quick else timing.RESULTS
        )
    try:
        args.widths = tuple(int(w) for w in args.hidden.split("-"))
    except ValueError:
        parser.error(
            f"--hidden must look like 100-100. Received: {args.hidden}"
        )
    if args.members < 1 or any(w < 1 for w in args.widths):
        parser.error("--members and the --hidden widths must be >= 1")
    return args


# --------------------------------------------------------------------------
# Worker: one backend, in this process.


def member_settings(count):
    """Coefficients (count, M) and temperatures (count,): a mix of
    sharpening and smoothing first-order directions and KD, T in 1..4."""
    import numpy as np

    strengths = [0.0, 8.0, -2.0, 2.0, -0.5, 0.5, 4.0, -1.0]
    temps = [1.0, 2.0, 4.0]
    coefficients = np.zeros((count, ORDER))
    coefficients[:, 0] = [strengths[i % len(strengths)] for i in range(count)]
    temperatures = np.array([temps[i % len(temps)] for i in range(count)])
    return coefficients, temperatures


def build_mlp(keras, widths, seed, name):
    layers = [keras.Input((40,))]
    for i, width in enumerate(widths):
        layers.append(
            keras.layers.Dense(
                width,
                activation="relu",
                kernel_initializer=keras.initializers.GlorotUniform(seed + i),
            )
        )
    layers.append(
        keras.layers.Dense(
            NUM_CLASSES,
            kernel_initializer=keras.initializers.GlorotUniform(seed + 99),
        )
    )
    return keras.Sequential(layers, name=name)


def epoch_timer(keras):
    class EpochTimer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = (time.perf_counter(), time.process_time())

        def on_epoch_end(self, epoch, logs=None):
            self.wall = time.perf_counter() - self.start[0]
            self.cpu = time.process_time() - self.start[1]

    return EpochTimer()


def run_backend(args):
    backend = args.backend
    os.environ["KERAS_BACKEND"] = backend
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.path.insert(0, str(timing.ROOT))
    timing.configure_threads(backend, args.threads)
    import keras

    from keras_ptloss import PTLoss
    from keras_ptloss import load_mnist1d
    from keras_ptloss.population import StudentPopulation

    assert keras.backend.backend() == backend, keras.backend.backend()
    keras.utils.set_random_seed(args.seed)
    splits = load_mnist1d(
        num_samples=args.samples, fractions={"transfer": 1.0}, seed=args.seed
    )
    x = splits["transfer"][0]
    teacher = build_mlp(keras, (256, 256), args.seed + 1000, "teacher")
    logits = teacher.predict(x, batch_size=1024, verbose=0)
    coefficients, temperatures = member_settings(args.members)

    students = [
        build_mlp(keras, args.widths, args.seed, f"student_{i}")
        for i in range(args.members)
    ]
    population = StudentPopulation(students, coefficients, temperatures)
    population.compile(optimizer=keras.optimizers.Adam(1e-3))
    separate = []
    for i in range(args.members):
        model = build_mlp(keras, args.widths, args.seed, f"alone_{i}")
        model.compile(
            optimizer=keras.optimizers.Adam(1e-3),
            loss=PTLoss(
                coefficients[i], temperatures[i], teacher_from_logits=True
            ),
        )
        separate.append(model)
    fit_kwargs = dict(batch_size=args.batch_size, epochs=1, verbose=0)

    def epoch(model):
        timer = epoch_timer(keras)
        model.fit(x, logits, callbacks=[timer], **fit_kwargs)
        return timer.wall, timer.cpu

    for model in [population, *separate]:  # warm-up: compiles the step
        epoch(model)
    methods = {
        "population": lambda: epoch(population),
        "separate": lambda: tuple(
            map(sum, zip(*(epoch(m) for m in separate), strict=True))
        ),
    }
    wall = {name: [] for name in methods}
    cpu = {name: [] for name in methods}
    names = list(methods)
    order = random.Random(args.seed)
    for _ in range(args.rounds):
        order.shuffle(names)
        for name in names:
            seconds, cpu_seconds = methods[name]()
            wall[name].append(seconds)
            cpu[name].append(cpu_seconds)
    result = {
        "backend": backend,
        "threads": args.threads,
        "epoch_seconds": {n: timing.summarize(wall[n]) for n in methods},
        "epoch_cpu_seconds": {n: timing.summarize(cpu[n]) for n in methods},
        "speedup": timing.paired_ratio(wall, "separate", "population"),
        "cpu_speedup": timing.paired_ratio(cpu, "separate", "population"),
        "student_params": students[0].count_params(),
    }
    print(
        f"[{backend}] population {wall['population']} separate "
        f"{wall['separate']}: speed-up {result['speedup']['median']:.2f}",
        flush=True,
    )
    return result


# --------------------------------------------------------------------------
# Parent: one subprocess per backend, then the JSON and the markdown.


def run_subprocess(backend, argv, timeout):
    result, reason = timing.run_backend_worker(__file__, backend, argv, timeout)
    return result if reason is None else {"backend": backend, "skipped": reason}


def _cell(summary):
    text = f"{summary['median']:.2f}"
    if summary["median"] < TARGET:
        text = f"**{text}**"
    return f"{text} ({summary['q1']:.2f}–{summary['q3']:.2f})"


def _ms(summary):
    return f"{summary['median'] * 1e3:,.0f}"


def to_markdown(data):
    s = data["settings"]
    n = s["members"]
    lines = [
        f"## Student population epoch time ({data['machine']['cpu']})",
        "",
        f"One epoch of {n} MNIST-1D MLP students (40-{s['hidden']}-10), "
        f"each with its own PTLoss (M = {ORDER}) coefficients and "
        f"temperature, on {s['samples']} examples (batch "
        f"{s['batch_size']}, Adam, pre-computed teacher logits): (a) as one "
        "`StudentPopulation` (one model, one compiled step: the step of "
        f"`search_coefficients`), (b) as {n} separate students, each "
        "compiled with its own `PTLoss` (the sum of their epoch times). "
        "`fit`'s default compilation: XLA on JAX, `tf.function` on TF, "
        "eager torch.",
        "",
        f"- Command: `{data['command']}`",
        f"- Date: {data['date']}",
        f"- Machine: {data['machine']['cpu']}; {data['machine']['platform']}"
        f"; Python {data['machine']['python']}; shared with other jobs "
        "while measured",
        "- Packages: "
        + ", ".join(
            f"{k} {v}" for k, v in data["machine"]["packages"].items() if v
        ),
        "- Threads per backend: "
        f"{timing.describe_threads(s['threads'])}; one warm-up "
        f"epoch of every model, then {s['rounds']} rounds, each timing (a) "
        "and (b) in a fresh random order (from `on_epoch_begin` to "
        "`on_epoch_end`).",
        "- Speed-up (b)/(a): median over rounds of the within-round ratio "
        "(quartiles in brackets), on the wall clock and on the process's "
        "CPU-time clock; bold: below the issue's target.",
    ]
    if s["quick"]:
        lines.append("- **Quick smoke run: not for publication.**")
    lines += [
        "",
        f"**Target:** (b)/(a) ≥ {TARGET:g} (the population at least "
        f"{TARGET:g}× faster than {n} separate trainings).",
        "",
    ]
    headers = [
        "backend",
        "(a) population ms (wall / CPU)",
        f"(b) {n} separate ms (wall / CPU)",
        "speed-up (b)/(a)",
        "speed-up CPU",
    ]
    rows = []
    for result in data["results"]:
        if result.get("skipped"):
            lines.append(
                f"- **{result['backend']} not measured**: {result['skipped']}"
            )
            continue
        e, c = result["epoch_seconds"], result["epoch_cpu_seconds"]
        rows.append(
            [
                result["backend"],
                f"{_ms(e['population'])} / {_ms(c['population'])}",
                f"{_ms(e['separate'])} / {_ms(c['separate'])}",
                _cell(result["speedup"]),
                _cell(result["cpu_speedup"]),
            ]
        )
    lines += [timing.markdown_table(headers, rows, "lrrrr"), ""]
    return "\n".join(lines)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    if timing.serve_worker(args, run_backend):
        return
    folder = Path(args.results_dir)
    if args.markdown_only:
        timing.rewrite_markdown(folder, NAME, to_markdown)
        return
    worker_argv = timing.drop_options(argv, {"--backends", "--backend-timeout"})
    results = [
        run_subprocess(backend, worker_argv, args.backend_timeout)
        for backend in args.backends
    ]
    data = {
        **timing.results_header(NAME, __file__, argv),
        "settings": {
            "members": args.members,
            "samples": args.samples,
            "batch_size": args.batch_size,
            "hidden": args.hidden,
            "rounds": args.rounds,
            "threads": args.threads,
            "quick": args.quick,
            "seed": args.seed,
            "order": ORDER,
            "target": TARGET,
        },
        "results": results,
    }
    timing.write_results(folder, NAME, data, to_markdown)


if __name__ == "__main__":
    main()
