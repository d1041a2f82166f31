"""MNIST-1D distillation demo: teacher, coefficient selection, PTLoss vs KD.

Runs offline, end to end, on the backend named by `KERAS_BACKEND` (Keras's
default, tensorflow, when it is unset):

1. generates MNIST-1D locally (`keras_ptloss.datasets.load_mnist1d`;
   nothing is downloaded) and cuts it into a training set, a labelled
   validation split the teacher never trains on, and a test split;
2. trains a 1-D CNN teacher;
3. selects PTLoss coefficients on the validation split from the teacher's
   probabilities alone (no student is trained) and prints the summary;
4. trains the same small MLP student three ways: alone on the labels, with
   KD, and with PTLoss (`Distiller.fit` with the `ReestimateCoefficients`
   callback, which checks at each epoch's start and re-selects when the
   teacher or the validation split changed);
5. prints a table of test accuracy and Brier score (teacher, student alone,
   KD, PTLoss) and writes a plot (learning curves and reliability diagram)
   and the numbers (`results.json`) to the output directory.

Usage: `python -m keras_ptloss demo [--quick] [--output-dir DIR] ...`
"""

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

# Defaults of the full demo, and the overrides of `--quick` (for tests).
DEFAULTS = dict(
    num_samples=5000,
    validation_fraction=0.15,
    test_fraction=0.2,
    teacher_epochs=30,
    student_epochs=30,
    batch_size=64,
    learning_rate=3e-3,
    order=5,
    mode="shared",
    temperature=2.0,
    student_loss_weight=0.5,
    num_candidates=256,
    output_dir="ptloss-demo",
    seed=0,
    verbose=1,
)
# 640 examples cut 0.65 / 0.15 / 0.2 give 416 / 96 / 128: multiples of the
# batch size, so no smaller last batch (and, on JAX, no extra compilation).
QUICK = dict(
    num_samples=640,
    teacher_epochs=2,
    student_epochs=2,
    batch_size=32,
    num_candidates=16,
)
METHODS = ("teacher", "student alone", "KD", "PTLoss")


def add_arguments(parser):
    """Adds the demo's options to an `argparse` parser."""
    d = DEFAULTS
    parser.add_argument(
        "--quick",
        action="store_true",
        help="tiny sizes and 2 epochs (seconds; for tests): "
        + ", ".join(f"{k}={v}" for k, v in QUICK.items()),
    )
    parser.add_argument(
        "--num-samples",
        type=int,
        default=None,
        help="MNIST-1D examples generated, a multiple of 10 "
        f"(default {d['num_samples']})",
    )
    parser.add_argument(
        "--validation-fraction",
        type=float,
        default=d["validation_fraction"],
        help="fraction held out as the labelled validation split that "
        "chooses the coefficients; the teacher never trains on it "
        f"(default {d['validation_fraction']})",
    )
    parser.add_argument(
        "--test-fraction",
        type=float,
        default=d["test_fraction"],
        help=f"fraction held out for the test table "
        f"(default {d['test_fraction']})",
    )
    parser.add_argument(
        "--teacher-epochs",
        type=int,
        default=None,
        help=f"teacher training epochs (default {d['teacher_epochs']})",
    )
    parser.add_argument(
        "--student-epochs",
        type=int,
        default=None,
        help="epochs of each student run (alone, KD, PTLoss) "
        f"(default {d['student_epochs']})",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help=f"batch size (default {d['batch_size']})",
    )
    parser.add_argument(
        "--learning-rate",
        type=float,
        default=d["learning_rate"],
        help=f"Adam learning rate (default {d['learning_rate']})",
    )
    parser.add_argument(
        "--order",
        type=int,
        default=d["order"],
        help=f"PTLoss order M (default {d['order']})",
    )
    parser.add_argument(
        "--mode",
        choices=("shared", "classwise"),
        default=d["mode"],
        help="coefficient selection mode: one (M,) vector shared by all "
        f"classes, or (K, M) class-wise (default {d['mode']})",
    )
    parser.add_argument(
        "--temperature",
        type=float,
        default=d["temperature"],
        help="distillation temperature T of KD and PTLoss "
        f"(default {d['temperature']})",
    )
    parser.add_argument(
        "--student-loss-weight",
        type=float,
        default=d["student_loss_weight"],
        help="weight of the hard-label loss in KD and PTLoss, in [0, 1] "
        f"(default {d['student_loss_weight']})",
    )
    parser.add_argument(
        "--num-candidates",
        type=int,
        default=None,
        help="coefficient sets sampled by the selection "
        f"(default {d['num_candidates']})",
    )
    parser.add_argument(
        "--output-dir",
        default=d["output_dir"],
        help="where the plot and results.json are written "
        f"(default ./{d['output_dir']})",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=d["seed"],
        help=f"seed of the data, the models and the selection "
        f"(default {d['seed']})",
    )
    parser.add_argument(
        "--verbose",
        type=int,
        choices=(0, 1, 2),
        default=d["verbose"],
        help="Keras fit verbosity: 1 progress bars (default), 2 one line "
        "per epoch, 0 silent (the summary and table are always printed)",
    )
    return parser


def options_from_args(args):
    """The keyword arguments of `run` for parsed command-line `args`."""
    options = {k: getattr(args, k) for k in DEFAULTS}
    for key in QUICK:
        if options[key] is None:
            options[key] = QUICK[key] if args.quick else DEFAULTS[key]
    return options


def run_from_args(args):
    """Runs the demo for parsed command-line arguments; returns `run`'s."""
    return run(**options_from_args(args))


def _check_options(o):
    positive_ints = (
        "num_samples",
        "teacher_epochs",
        "student_epochs",
        "batch_size",
        "order",
        "num_candidates",
    )
    for key in positive_ints:
        value = o[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(
                f"`{key}` must be a positive integer. Received: {key}={value!r}"
            )
    if o["num_samples"] < 100 or o["num_samples"] % 10:
        raise ValueError(
            "`num_samples` must be a multiple of 10 and >= 100 (MNIST-1D "
            "draws as many examples per class, then is split into train, "
            f"validation and test). Received: num_samples={o['num_samples']}"
        )
    for key in ("validation_fraction", "test_fraction"):
        if not 0.0 < o[key] < 1.0:
            raise ValueError(
                f"`{key}` must be in (0, 1). Received: {key}={o[key]}"
            )
    if o["validation_fraction"] + o["test_fraction"] >= 0.9:
        raise ValueError(
            "`validation_fraction + test_fraction` must be < 0.9 to leave a "
            "training set. Received: validation_fraction="
            f"{o['validation_fraction']}, test_fraction={o['test_fraction']}"
        )
    if not o["temperature"] > 0:
        raise ValueError(
            "`temperature` must be > 0. Received: "
            f"temperature={o['temperature']}"
        )
    if not 0.0 <= o["student_loss_weight"] <= 1.0:
        raise ValueError(
            "`student_loss_weight` must be in [0, 1]. Received: "
            f"student_loss_weight={o['student_loss_weight']}"
        )
    if o["mode"] not in ("shared", "classwise"):
        raise ValueError(
            "`mode` must be 'shared' or 'classwise'. Received: "
            f"mode={o['mode']!r}"
        )


def load_data(num_samples, validation_fraction, test_fraction, seed):
    """MNIST-1D cut into train / validation / test (`datasets.load_mnist1d`).

    Returns a dict `{"train": (x, y), "validation": (x, y), "test": (x, y)}`
    of float32 inputs of shape `(n, 40)` and int32 labels.
    """
    from keras_ptloss.datasets import load_mnist1d

    fractions = {
        "train": 1.0 - validation_fraction - test_fraction,
        "validation": validation_fraction,
        "test": test_fraction,
    }
    return load_mnist1d(num_samples, fractions=fractions, seed=seed)


def make_teacher(num_features, num_classes, seed):
    """A small 1-D CNN returning logits (about 92 % on MNIST-1D)."""
    import keras

    init = keras.initializers.GlorotUniform
    return keras.Sequential(
        [
            keras.Input((num_features,)),
            keras.layers.Reshape((num_features, 1)),
            keras.layers.Conv1D(
                32,
                5,
                padding="same",
                activation="relu",
                kernel_initializer=init(seed),
            ),
            keras.layers.Conv1D(
                32,
                3,
                strides=2,
                padding="same",
                activation="relu",
                kernel_initializer=init(seed + 1),
            ),
            keras.layers.Conv1D(
                32,
                3,
                strides=2,
                padding="same",
                activation="relu",
                kernel_initializer=init(seed + 2),
            ),
            keras.layers.Flatten(),
            keras.layers.Dense(num_classes, kernel_initializer=init(seed + 3)),
        ],
        name="teacher",
    )


def make_student(num_features, num_classes, seed):
    """A one-hidden-layer MLP returning logits (far weaker than the CNN)."""
    import keras

    init = keras.initializers.GlorotUniform
    return keras.Sequential(
        [
            keras.Input((num_features,)),
            keras.layers.Dense(
                32, activation="relu", kernel_initializer=init(seed)
            ),
            keras.layers.Dense(num_classes, kernel_initializer=init(seed + 1)),
        ],
        name="student",
    )


def _softmax(logits):
    z = np.asarray(logits, dtype="float64")
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def _scores(probs, labels):
    from keras_ptloss.proxy import closeness

    return dict(
        accuracy=float(np.mean(np.argmax(probs, axis=-1) == labels)),
        brier=closeness(probs, labels, metric="brier"),
        nll=float(
            -np.mean(
                np.log(np.maximum(probs[np.arange(len(labels)), labels], 1e-12))
            )
        ),
    )


def backend_description():
    """The backend in use and where the choice came from."""
    import keras

    name = keras.backend.backend()
    if os.environ.get("KERAS_BACKEND"):
        return f"{name} (KERAS_BACKEND={os.environ['KERAS_BACKEND']})"
    return (
        f"{name} (KERAS_BACKEND unset: Keras's configured default; "
        "Keras ships with tensorflow)"
    )


def _fit_kwargs(o, data, epochs):
    return dict(
        epochs=epochs,
        batch_size=o["batch_size"],
        validation_data=(data["x_val"], data["y_val"]),
        verbose=o["verbose"],
    )


def _compile(model, o, metrics=True):
    import keras

    model.compile(
        optimizer=keras.optimizers.Adam(o["learning_rate"]),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"] if metrics else None,
    )


def _header(title):
    print(f"\n=== {title}", flush=True)


def run(**options):
    """Runs the demo; returns its results as a dict (also `results.json`).

    Args:
        **options: any of `DEFAULTS`' keys (`num_samples`, `teacher_epochs`,
            `student_epochs`, `order`, `mode`, `temperature`, `output_dir`,
            `seed`, `verbose`, ...); unspecified ones take their default.

    Returns:
        A dict with `backend`, `options`, `selection` (the
        `SelectionResult.to_dict()`), `reestimation_logs` (the
        `pt_*` values `ReestimateCoefficients` logged each epoch), `results`
        (test `accuracy`, `brier` and `nll` per method), `history`
        (validation accuracy per epoch per student), `plot` and `json`
        (paths of the written files) and `seconds` (wall time).
    """
    unknown = set(options) - set(DEFAULTS)
    if unknown:
        raise ValueError(
            f"Unknown demo option(s) {sorted(unknown)}; expected any of "
            f"{sorted(DEFAULTS)}"
        )
    o = dict(DEFAULTS)
    o.update(options)
    _check_options(o)
    start = time.perf_counter()

    import keras

    from keras_ptloss.callbacks import ReestimateCoefficients
    from keras_ptloss.distiller import Distiller
    from keras_ptloss.losses import KDLoss
    from keras_ptloss.losses import PTLoss
    from keras_ptloss.selection import select_coefficients

    out_dir = Path(o["output_dir"])
    out_dir.mkdir(parents=True, exist_ok=True)
    backend = backend_description()
    print(f"keras-ptloss demo on MNIST-1D, backend: {backend}", flush=True)

    splits = load_data(
        o["num_samples"],
        o["validation_fraction"],
        o["test_fraction"],
        o["seed"],
    )
    data = {}
    for key, name in (
        ("train", "train"),
        ("val", "validation"),
        ("test", "test"),
    ):
        data[f"x_{key}"], data[f"y_{key}"] = splits[name]
    num_features = data["x_train"].shape[1]
    num_classes = 10
    print(
        f"data: {len(data['x_train'])} train, {len(data['x_val'])} "
        f"validation (labelled, used to choose coefficients), "
        f"{len(data['x_test'])} test; {num_features} features, "
        f"{num_classes} classes",
        flush=True,
    )
    keras.utils.set_random_seed(o["seed"])
    histories = {}
    results = {}

    _header("1/5 teacher: 1-D CNN")
    teacher = make_teacher(num_features, num_classes, o["seed"])
    _compile(teacher, o)
    teacher.fit(
        data["x_train"],
        data["y_train"],
        **_fit_kwargs(o, data, o["teacher_epochs"]),
    )
    val_probs = _softmax(teacher.predict(data["x_val"], verbose=0))
    test_teacher = _softmax(teacher.predict(data["x_test"], verbose=0))
    results["teacher"] = _scores(test_teacher, data["y_test"])

    _header(
        f"2/5 coefficient selection: order M={o['order']}, mode "
        f"{o['mode']!r}, T={o['temperature']}, on the validation split"
    )
    selection = select_coefficients(
        val_probs,
        data["y_val"],
        order=o["order"],
        mode=o["mode"],
        metric="brier",
        temperature=o["temperature"],
        seed=o["seed"],
        verbose=1,
        num_candidates=o["num_candidates"],
    )
    coefficients = np.asarray(selection.coefficients)

    _header("3/5 student alone (hard labels)")
    student = make_student(num_features, num_classes, o["seed"] + 10)
    _compile(student, o)
    h = student.fit(
        data["x_train"],
        data["y_train"],
        **_fit_kwargs(o, data, o["student_epochs"]),
    )
    histories["student alone"] = h.history["val_accuracy"]
    probs_alone = _softmax(student.predict(data["x_test"], verbose=0))
    results["student alone"] = _scores(probs_alone, data["y_test"])

    def distill(loss, callbacks):
        # Same initial student weights in every run.
        model = make_student(num_features, num_classes, o["seed"] + 10)
        distiller = Distiller(
            teacher,
            model,
            distillation_loss=loss,
            student_loss_weight=o["student_loss_weight"],
        )
        _compile(distiller, o)
        hist = distiller.fit(
            data["x_train"],
            data["y_train"],
            callbacks=callbacks,
            **_fit_kwargs(o, data, o["student_epochs"]),
        )
        probs = _softmax(model.predict(data["x_test"], verbose=0))
        return hist.history["val_accuracy"], probs, hist.history

    _header(
        f"4/5 KD: Distiller(KDLoss(T={o['temperature']}), "
        f"student_loss_weight={o['student_loss_weight']})"
    )
    kd = KDLoss(temperature=o["temperature"], teacher_from_logits=True)
    histories["KD"], probs_kd, _ = distill(kd, [])
    results["KD"] = _scores(probs_kd, data["y_test"])

    _header(
        "5/5 PTLoss: Distiller(PTLoss(selected coefficients)) with "
        "ReestimateCoefficients (re-selects at each epoch's start when the "
        "teacher or the validation split changed)"
    )
    pt = PTLoss(
        coefficients=coefficients.tolist(),
        temperature=selection.temperature,
        teacher_from_logits=True,
    )
    reestimate = ReestimateCoefficients(
        (data["x_val"], data["y_val"]),
        seed=o["seed"],
        selector_kwargs={"num_candidates": o["num_candidates"]},
        verbose=1,
    )
    histories["PTLoss"], probs_pt, pt_history = distill(pt, [reestimate])
    results["PTLoss"] = _scores(probs_pt, data["y_test"])
    per_epoch = {
        key: [float(v) for v in values]
        for key, values in pt_history.items()
        if key.startswith("pt_")
    }

    _header("results on the test split")
    table = format_table(results)
    print(table)
    plot_path = out_dir / "demo.png"
    write_plot(
        plot_path,
        histories,
        results,
        {
            "teacher": test_teacher,
            "student alone": probs_alone,
            "KD": probs_kd,
            "PTLoss": probs_pt,
        },
        data["y_test"],
        title=f"PTLoss demo on MNIST-1D ({keras.backend.backend()})",
    )
    seconds = time.perf_counter() - start
    summary = dict(
        backend=keras.backend.backend(),
        options=o,
        selection=selection.to_dict(),
        reestimation_logs=per_epoch,
        results=results,
        history={k: [float(v) for v in vals] for k, vals in histories.items()},
        table=table,
        plot=str(plot_path.resolve()),
        json=str((out_dir / "results.json").resolve()),
        seconds=seconds,
    )
    Path(summary["json"]).write_text(json.dumps(summary, indent=2) + "\n")
    print(f"\nplot: {summary['plot']}")
    print(f"numbers: {summary['json']}")
    print(f"total time: {seconds:.1f} s")
    return summary


def format_table(results):
    """A markdown table of test accuracy, Brier score and NLL per method."""
    lines = [
        "| model | test accuracy | test Brier | test NLL |",
        "|---|---:|---:|---:|",
    ]
    for name in METHODS:
        r = results[name]
        lines.append(
            f"| {name} | {100 * r['accuracy']:.1f} % | {r['brier']:.4f} "
            f"| {r['nll']:.4f} |"
        )
    return "\n".join(lines)


def reliability(probs, labels, bins=10):
    """Confidence, accuracy and count per confidence bin (equal width)."""
    confidence = probs.max(axis=-1)
    correct = probs.argmax(axis=-1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    conf, acc, count = [], [], []
    for b in range(bins):
        mask = index == b
        count.append(int(mask.sum()))
        conf.append(float(confidence[mask].mean()) if mask.any() else np.nan)
        acc.append(float(correct[mask].mean()) if mask.any() else np.nan)
    return np.array(conf), np.array(acc), np.array(count)


COLORS = {
    "teacher": "black",
    "student alone": "tab:blue",
    "KD": "tab:orange",
    "PTLoss": "tab:green",
}


def write_plot(path, histories, results, test_probs, labels, title):
    """Writes learning curves and a reliability diagram to a PNG file.

    Args:
        path: the PNG file to write.
        histories: `{method: [validation accuracy per epoch]}`.
        results: `{method: {"accuracy": ...}}`; the teacher's is drawn as
            a horizontal line.
        test_probs: `{method: probabilities (N, K) on the test split}`.
        labels: test labels, shape `(N,)`.
        title: the figure's title.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.2), layout="constrained")
    ax_curve, ax_rel = fig.subplots(1, 2)
    for name, values in histories.items():
        epochs = np.arange(1, len(values) + 1)
        ax_curve.plot(
            epochs,
            100 * np.asarray(values),
            marker="o",
            ms=3,
            color=COLORS.get(name),
            label=name,
        )
    ax_curve.axhline(
        100 * results["teacher"]["accuracy"],
        color=COLORS["teacher"],
        ls="--",
        lw=1,
        label="teacher (test)",
    )
    ax_curve.set_xlabel("epoch")
    ax_curve.set_ylabel("validation accuracy (%)")
    ax_curve.set_title("students during training")
    ax_curve.legend(loc="best")

    ax_rel.plot([0, 1], [0, 1], color="0.7", lw=1, label="calibrated")
    for name, probs in test_probs.items():
        conf, acc, _ = reliability(probs, labels)
        keep = ~np.isnan(conf)
        ax_rel.plot(
            conf[keep],
            acc[keep],
            marker="o",
            ms=3,
            color=COLORS.get(name),
            label=name,
        )
    ax_rel.set_xlim(0, 1)
    ax_rel.set_ylim(0, 1)
    ax_rel.set_xlabel("confidence (10 equal-width bins)")
    ax_rel.set_ylabel("accuracy")
    ax_rel.set_title("reliability on the test split")
    ax_rel.legend(loc="upper left")
    fig.suptitle(title)
    fig.savefig(path, dpi=100)


def main(argv=None):
    """`python -m keras_ptloss.demo`: same as `python -m keras_ptloss demo`."""
    parser = argparse.ArgumentParser(
        prog="python -m keras_ptloss demo",
        description=__doc__.split("\n\n")[0],
    )
    add_arguments(parser)
    run_from_args(parser.parse_args(argv))
    return 0


if __name__ == "__main__":
    main()
