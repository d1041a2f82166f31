"""Epoch time of distillation with `fit`: our Distiller against its peers.

For each backend, the same student, teacher and data are trained one epoch
at a time with `Model.fit` (default `jit_compile="auto"`: XLA on JAX, a
`tf.function` without XLA on a CPU-only TF, eager torch), by

- (a) `keras_io`: the keras.io "Knowledge Distillation" example's pattern (a
  `keras.Model` whose `compute_loss` adds `alpha * CE` and
  `(1 - alpha) * T**2 * KLDivergence(softmax(t / T), softmax(z / T))`),
  written here, with the teacher frozen (the example forgets to, and then
  also back-propagates into it, which would make (a) slower);
- (b) `keras_distiller`: `keras.distillation.Distiller` with
  `LogitsDistillation`;
- (c) `ours_online`: `keras_ptloss.Distiller` with `PTLoss` (M = 5);
- (d) `ours_offline`: the same on `Distiller.precompute_teacher` data (no
  teacher forward per step; the one-time teacher pass is timed separately);
- (e) `student_alone`: the student compiled with cross-entropy (the floor).

All use Adam, `alpha = student_loss_weight = 0.1`, `T = 10` and the
`SparseCategoricalAccuracy` metric, on numpy arrays with `fit`'s default
shuffling. Each method's model is built and compiled once and warmed up by
one epoch; then, in every round, each method runs one epoch in a fresh
random order, and the epoch is timed from `on_epoch_begin` to
`on_epoch_end` (fit's per-call set-up is left out) on the wall clock and on
the process's CPU-time clock. Ratios are medians over rounds of the
within-round ratio.

Configurations (`--configs`): a student MLP (its hidden widths) and a
teacher MLP with two equal hidden layers whose multiply-accumulates (MACs)
per example are a given multiple of the student's (counted exactly from the
Dense kernels). On a CPU, a very small student makes per-step overheads and
the loss itself (PTLoss M = 5 has several times KL's element-wise work)
weigh more than the matrix products; the defaults show one such student and
one of a more usual size.

Each backend runs in its own subprocess (`KERAS_BACKEND` must be set before
keras is imported); the results go to `benchmarks/results/distiller_speed`
(`.json`, then `.md` generated from it).
"""

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402
import timing  # noqa: E402

NAME = "distiller_speed"
METHODS = (
    "keras_io",
    "keras_distiller",
    "ours_online",
    "ours_offline",
    "student_alone",
)
LABELS = {
    "keras_io": "(a) keras.io pattern",
    "keras_distiller": "(b) keras.distillation.Distiller",
    "ours_online": "(c) ours, online (PTLoss)",
    "ours_offline": "(d) ours, offline (PTLoss)",
    "student_alone": "(e) student alone (CE)",
}
# (name, numerator, denominator, target, "max" or "min")
RATIOS = (
    ("(c)/(a)", "ours_online", "keras_io", 1.05, "max"),
    ("(c)/(b)", "ours_online", "keras_distiller", None, None),
    ("(d)/(e)", "ours_offline", "student_alone", 1.15, "max"),
    ("(c)/(d)", "ours_online", "ours_offline", 2.0, "min"),
)
ALPHA = 0.1
TEMPERATURE = 10.0
COEFFICIENTS = [0.5, -0.05, 0.02, 0.01, 0.005]
NUM_FEATURES = 40
NUM_CLASSES = 10
DEFAULT_CONFIGS = ("64/4.5", "256-256/4.5", "256-256/30")


# The script's own options: (flag, default, help), see harness.add_options.
OPTIONS = [
    ("--samples", 8192, "examples per epoch"),
    ("--batch-size", 256, None),
    (
        "--configs",
        list(DEFAULT_CONFIGS),
        "STUDENT/MULTIPLE: the student's hidden widths joined by "
        "'-', and the teacher's MACs per example as a multiple of "
        "the student's (its hidden width is solved for)",
    ),
    ("--rounds", 7, "timed epochs per method"),
]


def parse_args(argv=None):
    parser = harness.speed_parser(
        __doc__, "1024 samples, 2 rounds", 1800.0, OPTIONS
    )
    args = harness.parse(parser, argv, quick=_quick)
    try:
        args.parsed_configs = [parse_config(c) for c in args.configs]
    except ValueError:
        parser.error(
            "--configs must look like 256-256/4.5 (hidden widths / positive "
            f"multiple). Received: {args.configs}"
        )
    return args


def parse_config(text):
    """`"256-256/4.5"` -> ((256, 256), 4.5)."""
    hidden, multiple = text.split("/")
    widths = tuple(int(w) for w in hidden.split("-"))
    multiple = float(multiple)
    if multiple <= 0 or any(w <= 0 for w in widths):
        raise ValueError(text)
    return widths, multiple


def _quick(args):
    args.samples = min(args.samples, 1024)
    args.rounds = min(args.rounds, 2)


# --------------------------------------------------------------------------
# Worker: one backend, in this process.


def mlp_macs(widths):
    """Multiply-accumulates per example of Dense layers of these widths."""
    return sum(a * b for a, b in zip(widths[:-1], widths[1:], strict=True))


def student_widths(hidden):
    return (NUM_FEATURES, *hidden, NUM_CLASSES)


def teacher_widths(student, multiple):
    """Two equal hidden layers of width h with MACs ~ multiple x student's.

    MACs = F h + h^2 + h K: h is the positive root, rounded.
    """
    target = multiple * mlp_macs(student)
    b = NUM_FEATURES + NUM_CLASSES
    hidden = max(1, round((-b + (b * b + 4 * target) ** 0.5) / 2))
    return (NUM_FEATURES, hidden, hidden, NUM_CLASSES)


def build_mlp(keras, widths, seed, name):
    layers = [keras.Input((widths[0],))]
    for i, width in enumerate(widths[1:]):
        last = i == len(widths) - 2
        layers.append(
            keras.layers.Dense(
                width,
                activation=None if last else "relu",
                kernel_initializer=keras.initializers.GlorotUniform(seed + i),
            )
        )
    return keras.Sequential(layers, name=name)


def keras_io_distiller_class(keras):
    """The keras.io example's Distiller pattern (compute_loss, KL * T^2)."""
    from keras import ops

    class KerasIODistiller(keras.Model):
        def __init__(self, student, teacher):
            super().__init__()
            self.teacher = teacher
            self.student = student
            self.teacher.trainable = False  # the example forgets this

        def compile(
            self,
            optimizer,
            metrics,
            student_loss_fn,
            distillation_loss_fn,
            alpha=0.1,
            temperature=3,
        ):
            super().compile(optimizer=optimizer, metrics=metrics)
            self.student_loss_fn = student_loss_fn
            self.distillation_loss_fn = distillation_loss_fn
            self.alpha = alpha
            self.temperature = temperature

        def compute_loss(
            self, x=None, y=None, y_pred=None, sample_weight=None, **kwargs
        ):
            teacher_pred = self.teacher(x, training=False)
            student_loss = self.student_loss_fn(y, y_pred)
            distillation_loss = self.distillation_loss_fn(
                ops.softmax(teacher_pred / self.temperature, axis=1),
                ops.softmax(y_pred / self.temperature, axis=1),
            ) * (self.temperature**2)
            return (
                self.alpha * student_loss + (1 - self.alpha) * distillation_loss
            )

        def call(self, x):
            return self.student(x)

    return KerasIODistiller


def build_methods(keras, student_spec, teacher_spec, x, y, seed):
    """name -> (model, fit arguments); plus the offline precompute time."""
    from keras_ptloss import Distiller
    from keras_ptloss import PTLoss

    def student():
        return build_mlp(keras, student_spec, seed, "student")

    def teacher():
        return build_mlp(keras, teacher_spec, seed + 100, "teacher")

    def ce():
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def metrics():
        return [keras.metrics.SparseCategoricalAccuracy()]

    methods = {}
    model = keras_io_distiller_class(keras)(student(), teacher())
    model.compile(
        optimizer=keras.optimizers.Adam(),
        metrics=metrics(),
        student_loss_fn=ce(),
        distillation_loss_fn=keras.losses.KLDivergence(),
        alpha=ALPHA,
        temperature=TEMPERATURE,
    )
    methods["keras_io"] = (model, (x, y))

    model = keras.distillation.Distiller(
        teacher(),
        student(),
        keras.distillation.LogitsDistillation(temperature=TEMPERATURE),
        student_loss_weight=ALPHA,
    )
    model.compile(
        optimizer=keras.optimizers.Adam(), loss=ce(), metrics=metrics()
    )
    methods["keras_distiller"] = (model, (x, y))

    for name in ("ours_online", "ours_offline"):
        model = Distiller(
            teacher(),
            student(),
            PTLoss(
                COEFFICIENTS,
                temperature=TEMPERATURE,
                teacher_from_logits=True,
            ),
            student_loss_weight=ALPHA,
        )
        model.compile(
            optimizer=keras.optimizers.Adam(), loss=ce(), metrics=metrics()
        )
        if name == "ours_online":
            methods[name] = (model, (x, y))
        else:
            start = time.perf_counter()
            x_offline, y_offline, _ = model.precompute_teacher(
                x, y, batch_size=1024
            )
            precompute = time.perf_counter() - start
            methods[name] = (model, (x_offline, y_offline))

    model = student()
    model.compile(
        optimizer=keras.optimizers.Adam(), loss=ce(), metrics=metrics()
    )
    methods["student_alone"] = (model, (x, y))
    return methods, precompute


def run_backend(args):
    backend = args.backend
    keras = harness.start_backend(backend, args.threads)
    import numpy as np

    rng = np.random.default_rng(args.seed)
    x = rng.normal(size=(args.samples, NUM_FEATURES)).astype("float32")
    y = rng.integers(0, NUM_CLASSES, size=args.samples).astype("int32")
    result = {"backend": backend, "threads": args.threads, "configs": []}
    for hidden, multiple in args.parsed_configs:
        entry = measure_config(keras, args, x, y, hidden, multiple)
        result["configs"].append(entry)
        print(
            f"[{backend}] student {'-'.join(map(str, entry['student_widths']))}"
            f", teacher {entry['macs_ratio']:.1f}x: "
            + ", ".join(
                f"{label} {entry['ratios'][label]['median']:.2f}"
                for label, *_ in RATIOS
            ),
            flush=True,
        )
    return result


def measure_config(keras, args, x, y, hidden, multiple):
    """Epoch times of every method for one (student, teacher) pair."""
    keras.utils.set_random_seed(args.seed)
    student_spec = student_widths(hidden)
    student_macs = mlp_macs(student_spec)
    spec = teacher_widths(student_spec, multiple)
    methods, precompute = build_methods(
        keras, student_spec, spec, x, y, args.seed
    )
    fit_kwargs = dict(batch_size=args.batch_size, epochs=1, verbose=0)
    for model, data in methods.values():  # warm-up: compiles the step
        model.fit(*data, **fit_kwargs)

    def epoch(model, data):
        timer = harness.epoch_timer(keras)
        model.fit(*data, callbacks=[timer], **fit_kwargs)
        return timer.wall, timer.cpu

    wall, cpu = harness.timed_rounds(
        {n: lambda m=m: epoch(*m) for n, m in methods.items()},
        args.rounds,
        args.seed,
    )
    entry = {
        "multiple": multiple,
        "student_widths": list(student_spec),
        "teacher_widths": list(spec),
        "teacher_macs": mlp_macs(spec),
        "student_macs": student_macs,
        "macs_ratio": mlp_macs(spec) / student_macs,
        "precompute_seconds": precompute,
        "epoch_seconds": {n: timing.summarize(wall[n]) for n in METHODS},
        "epoch_cpu_seconds": {n: timing.summarize(cpu[n]) for n in METHODS},
        "ratios": {},
        "cpu_ratios": {},
    }
    for label, num, den, _, _ in RATIOS:
        entry["ratios"][label] = timing.paired_ratio(wall, num, den)
        entry["cpu_ratios"][label] = timing.paired_ratio(cpu, num, den)
    return entry


# --------------------------------------------------------------------------
# Parent: one subprocess per backend, then the JSON and the markdown.


def _ms(summary):
    return f"{summary['median'] * 1e3:,.1f}"


def _ratio_cell(summary, target, kind):
    text = f"{summary['median']:.2f}"
    missed = target is not None and (
        (kind == "max" and summary["median"] > target)
        or (kind == "min" and summary["median"] < target)
    )
    text = f"**{text}**" if missed else text
    return f"{text} ({summary['q1']:.2f}–{summary['q3']:.2f})"


def _config_label(entry):
    student = "-".join(map(str, entry["student_widths"]))
    return f"{student}", f"{entry['macs_ratio']:.1f}×"


def to_markdown(data):
    lines = _intro(data)
    lines += _ratio_table(data["results"], lines)
    lines += _epoch_table(data["results"])
    lines += _models_line(data["results"])
    return "\n".join(lines)


def _intro(data):
    """Title, protocol, command, machine and targets."""
    s = data["settings"]
    lines = [
        f"## Distiller epoch time ({data['machine']['cpu']})",
        "",
        "One `fit` epoch on "
        f"{s['samples']} examples of {NUM_FEATURES} features, "
        f"{NUM_CLASSES} classes (batch {s['batch_size']}, Adam, shuffled), "
        "for a student MLP distilled from an MLP teacher with the given "
        "multiple of the student's multiply-accumulates (MACs) per example: "
        "(a) the keras.io example's Distiller pattern (KL·T², α = 0.1; "
        "teacher frozen), (b) `keras.distillation.Distiller` + "
        "`LogitsDistillation`, (c) `keras_ptloss.Distiller` + `PTLoss` "
        "(M = 5) online, (d) the same on `precompute_teacher` data (no "
        "teacher forward per step), (e) the student alone with "
        "cross-entropy. `fit`'s default compilation: XLA on JAX, "
        "`tf.function` without XLA on a CPU-only TF, eager torch.",
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
        f"epoch, then {s['rounds']} rounds, each timing one epoch of every "
        "method in a fresh random order (from `on_epoch_begin` to "
        "`on_epoch_end`).",
        "- Ratios are medians over rounds of the within-round ratio of "
        "epoch times (quartiles in brackets), on the wall clock and on the "
        "process's CPU-time clock (which leaves out waiting for a core on "
        "a busy machine); bold: the median misses the issue's target.",
    ]
    if s["quick"]:
        lines.append("- **Quick smoke run: not for publication.**")
    lines += [
        "",
        "**Targets:** (c)/(a) ≤ 1.05; (d)/(e) ≤ 1.15; with a teacher of "
        "≥ 4× the student's FLOPs, (c)/(d) ≥ 2 (offline at least twice as "
        "fast as online).",
        "",
    ]
    return lines


def _ratio_table(results, lines):
    """The ratios' table; a note in `lines` for each backend not measured."""
    headers = ["backend", "student", "teacher"]
    for label, *_ in RATIOS:
        headers += [label, f"{label} CPU"]
    rows = []
    for result in timing.measured(results, lines):
        for entry in result["configs"]:
            row = [result["backend"], *_config_label(entry)]
            for label, _, _, target, kind in RATIOS:
                if label == "(c)/(d)" and entry["macs_ratio"] < 4:
                    target = None
                row.append(_ratio_cell(entry["ratios"][label], target, kind))
                row.append(
                    _ratio_cell(entry["cpu_ratios"][label], target, kind)
                )
            rows.append(row)
    return [timing.markdown_table(headers, rows, "lll" + "r" * 8), ""]


def _epoch_table(results):
    lines = [
        "Epoch times in ms (median, wall / CPU), and the one-time teacher "
        "pass of (d) (wall ms):",
        "",
    ]
    headers = ["backend", "student", "teacher"]
    headers += [LABELS[m] for m in METHODS] + ["(d) teacher pass"]
    rows = []
    for result in results:
        for entry in result.get("configs", []):
            row = [result["backend"], *_config_label(entry)]
            for method in METHODS:
                row.append(
                    f"{_ms(entry['epoch_seconds'][method])} / "
                    f"{_ms(entry['epoch_cpu_seconds'][method])}"
                )
            row.append(f"{entry['precompute_seconds'] * 1e3:,.0f}")
            rows.append(row)
    lines += [timing.markdown_table(headers, rows, "lll" + "r" * 6), ""]
    return lines


def _models_line(results):
    measured = [r for r in results if r.get("configs")]
    if not measured:
        return []
    return [
        "Models (widths, input to output): "
        + "; ".join(
            f"student {'-'.join(map(str, e['student_widths']))} "
            f"({e['student_macs']:,} MACs) with teacher "
            f"{'-'.join(map(str, e['teacher_widths']))} "
            f"({e['teacher_macs']:,} MACs)"
            for e in measured[0]["configs"]
        )
        + "."
    ]


def settings(args):
    """The run's settings, as the results record them."""
    names = ["samples", "batch_size", "configs", "rounds", "threads"]
    return harness.settings(
        args,
        [*names, "quick", "seed"],
        alpha=ALPHA,
        temperature=TEMPERATURE,
        coefficients=COEFFICIENTS,
    )


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    harness.run_parent(
        __file__,
        NAME,
        argv,
        args,
        (
            run_backend,
            to_markdown,
            lambda results: {"settings": settings(args)},
        ),
    )


if __name__ == "__main__":
    main()
