"""The demo's run: data, teacher, selection, three students, the report."""

import json
import os
import time
from pathlib import Path

import keras
import numpy as np

from keras_ptloss._checks import softmax
from keras_ptloss.callbacks import ReestimateCoefficients
from keras_ptloss.datasets.loaders import load_mnist1d
from keras_ptloss.demo.options import DEFAULTS
from keras_ptloss.demo.options import QUICK
from keras_ptloss.demo.options import check_options
from keras_ptloss.demo.report import format_table
from keras_ptloss.demo.report import write_plot
from keras_ptloss.distiller import Distiller
from keras_ptloss.losses import KDLoss
from keras_ptloss.losses import PTLoss
from keras_ptloss.proxy import closeness
from keras_ptloss.selection import select_coefficients


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


def load_data(num_samples, validation_fraction, test_fraction, seed):
    """MNIST-1D cut into train / validation / test (`datasets.load_mnist1d`).

    Returns a dict `{"train": (x, y), "validation": (x, y), "test": (x, y)}`
    of float32 inputs of shape `(n, 40)` and int32 labels.
    """
    fractions = {
        "train": 1.0 - validation_fraction - test_fraction,
        "validation": validation_fraction,
        "test": test_fraction,
    }
    return load_mnist1d(num_samples, fractions=fractions, seed=seed)


def make_teacher(num_features, num_classes, seed):
    """A small 1-D CNN returning logits (about 92 % on MNIST-1D)."""
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


def _scores(probs, labels):
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
    check_options(o)
    start = time.perf_counter()

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
    val_probs = softmax(teacher.predict(data["x_val"], verbose=0))
    test_teacher = softmax(teacher.predict(data["x_test"], verbose=0))
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
    probs_alone = softmax(student.predict(data["x_test"], verbose=0))
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
        probs = softmax(model.predict(data["x_test"], verbose=0))
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
