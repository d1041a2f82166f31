"""The demo's run: data, teacher, five ways to train a student, the report.

Every distilled student is trained by `search_coefficients`' population
trainer, with the same initial weights and batch order per seed, so the
methods differ only in their losses (and KD and the search in how many
candidates they try):

- KD: `eps = 0` at each temperature of the grid, the best on validation
  accuracy kept (`search_coefficients` restricted to KD candidates);
- PTLoss, training-free: `select_coefficients` on the validation split at
  KD's chosen temperature, then one student trained with those
  coefficients;
- PTLoss, searched: `search_coefficients` with its default candidates (KD
  included) and the same budget of student-epochs as KD's tuning (the
  README's choice for likelihood and calibration);
- PTLoss, searched, standardised: the same search on z-scored logits
  (`standardize=True`, the README's choice for top-1 accuracy).
"""

import json
import os
import time
from pathlib import Path

import keras
import numpy as np

from keras_ptloss._checks import softmax
from keras_ptloss.datasets.loaders import load_mnist1d
from keras_ptloss.demo.options import DEFAULTS
from keras_ptloss.demo.options import QUICK
from keras_ptloss.demo.options import check_options
from keras_ptloss.demo.report import METHODS
from keras_ptloss.demo.report import SEARCHES
from keras_ptloss.demo.report import expected_calibration_error
from keras_ptloss.demo.report import format_table
from keras_ptloss.demo.report import verdict
from keras_ptloss.demo.report import write_plot
from keras_ptloss.search import Candidate
from keras_ptloss.search import search_coefficients
from keras_ptloss.selection import select_coefficients

# The plot of each search (first seed) in the output directory.
SEARCH_PLOTS = {
    "PTLoss, searched": "search.png",
    "PTLoss, searched, standardised": "search-standardised.png",
}


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


def load_data(
    num_samples, labelled_fraction, validation_fraction, test_fraction, seed
):
    """MNIST-1D cut into labelled / transfer / validation / test splits.

    Returns a dict `{"labelled": (x, y), "transfer": (x, y), "validation":
    (x, y), "test": (x, y)}` of float32 inputs `(n, 40)` and int32 labels
    (the demo never uses the transfer split's labels).
    """
    fractions = {
        "labelled": labelled_fraction,
        "transfer": 1.0
        - labelled_fraction
        - validation_fraction
        - test_fraction,
        "validation": validation_fraction,
        "test": test_fraction,
    }
    return load_mnist1d(num_samples, fractions=fractions, seed=seed)


def make_teacher(num_features, num_classes, seed):
    """A small 1-D CNN returning logits (3 Conv1D layers of 32 channels)."""
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


def make_student(num_features, num_classes, seed=None):
    """An MLP `num_features`-64-64-`num_classes` returning logits.

    With `seed=None` its initial weights come from Keras's global seed
    (`search_coefficients` seeds it and copies the first student's weights
    to the others).
    """

    def init(offset):
        return keras.initializers.GlorotUniform(
            None if seed is None else seed + offset
        )

    return keras.Sequential(
        [
            keras.Input((num_features,)),
            keras.layers.Dense(
                64, activation="relu", kernel_initializer=init(0)
            ),
            keras.layers.Dense(
                64, activation="relu", kernel_initializer=init(1)
            ),
            keras.layers.Dense(num_classes, kernel_initializer=init(2)),
        ],
        name="student",
    )


def scores(probs, labels):
    """Test accuracy, NLL, ECE (10 equal-width bins) and Brier score."""
    labels = np.asarray(labels)
    picked = probs[np.arange(len(labels)), labels]
    one_hot = np.eye(probs.shape[-1])[labels]
    return dict(
        accuracy=float(np.mean(np.argmax(probs, axis=-1) == labels)),
        nll=float(-np.mean(np.log(np.maximum(picked, 1e-12)))),
        ece=expected_calibration_error(probs, labels),
        brier=float(np.mean(np.sum((probs - one_hot) ** 2, axis=-1))),
    )


def backend_description():
    """The backend in use, where the choice came from, and on torch its
    number of CPU threads."""
    name = keras.backend.backend()
    if os.environ.get("KERAS_BACKEND"):
        text = f"{name} (KERAS_BACKEND={os.environ['KERAS_BACKEND']})"
    else:
        text = (
            f"{name} (KERAS_BACKEND unset: Keras's configured default; "
            "Keras ships with tensorflow)"
        )
    if name == "torch":
        import torch

        text += f", {torch.get_num_threads()} CPU thread(s)"
    return text


def _predict(model, x):
    # Eager calls: `predict` would trace a new function for every student.
    logits = [
        keras.ops.convert_to_numpy(model(x[i : i + 2048], training=False))
        for i in range(0, len(x), 2048)
    ]
    return softmax(np.concatenate(logits).astype("float64"))


def _say(text=""):
    print(text, flush=True)


def run(**options):
    """Runs the demo; returns its results as a dict (also `results.json`).

    Args:
        **options: any of `DEFAULTS`' keys (`num_samples`, `seeds`,
            `student_epochs`, `order`, `mode`, `temperatures`,
            `output_dir`, `seed`, `verbose`, ...); unspecified ones take
            their default.

    Returns:
        A dict with `backend`, `options`, `sizes` (examples per split),
        `teacher` (its test scores), `runs` (one dict per student seed:
        per method its test `scores`, `seconds`, `student_epochs` and
        `choice`; each search's `to_dict()` under its method's
        `search`), `summary` (per method the mean and standard deviation
        over seeds of each score), `table`, `verdict` (`report.verdict`'s
        lines), `plot`, `search_plots` (one per search, first seed) and
        `json` (paths of the written files) and `seconds` (wall time).
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
    o["temperatures"] = tuple(float(t) for t in o["temperatures"])
    start = time.perf_counter()
    out_dir = Path(o["output_dir"])
    out_dir.mkdir(parents=True, exist_ok=True)
    _say(f"keras-ptloss demo on MNIST-1D, backend: {backend_description()}")

    data = load_data(
        o["num_samples"],
        o["labelled_fraction"],
        o["validation_fraction"],
        o["test_fraction"],
        o["seed"],
    )
    x_lab, y_lab = data["labelled"]
    x_transfer = data["transfer"][0]
    x_val, y_val = data["validation"]
    x_test, y_test = data["test"]
    num_features, num_classes = x_lab.shape[1], 10
    sizes = {name: int(len(split[0])) for name, split in data.items()}
    _say(
        f"data: {sizes['labelled']} labelled (teacher, student alone), "
        f"{sizes['transfer']} unlabelled transfer (distillation), "
        f"{sizes['validation']} labelled validation (KD's temperature, "
        f"PTLoss's coefficients), {sizes['test']} test"
    )

    _say(
        f"\n=== teacher: 1-D CNN on the labelled split, {o['teacher_epochs']} "
        "epochs"
    )
    keras.utils.set_random_seed(o["seed"])
    teacher = make_teacher(num_features, num_classes, o["seed"])
    _compile(teacher, o["learning_rate"])
    teacher.fit(
        x_lab,
        y_lab,
        epochs=o["teacher_epochs"],
        batch_size=o["batch_size"],
        verbose=o["verbose"],
    )
    teacher_logits = {
        name: np.asarray(
            teacher.predict(x, batch_size=2048, verbose=0), dtype="float64"
        )
        for name, x in (
            ("transfer", x_transfer),
            ("validation", x_val),
            ("test", x_test),
        )
    }
    teacher_probs = softmax(teacher_logits["test"])
    teacher_scores = scores(teacher_probs, y_test)
    _say(f"teacher test accuracy {100 * teacher_scores['accuracy']:.1f} %")

    epochs = o["student_epochs"]
    temps = o["temperatures"]
    budget = len(temps) * epochs

    def build_student():
        return make_student(num_features, num_classes)

    def optimizer():
        return keras.optimizers.Adam(o["learning_rate"])

    def search(seed, **kwargs):
        return search_coefficients(
            build_student,
            x_transfer,
            teacher_logits["transfer"],
            (x_val, y_val),
            order=o["order"],
            epochs=epochs,
            validation_teacher=teacher_logits["validation"],
            optimizer=optimizer,
            batch_size=o["batch_size"],
            seed=seed,
            verbose=0,
            **kwargs,
        )

    kd_candidates = [
        Candidate(np.zeros(o["order"]), t, source="kd") for t in temps
    ]
    grid = ", ".join(f"{t:g}" for t in temps)
    _say(
        f"\n=== students: MLP 40-64-64-10, {epochs} epochs, {o['seeds']} "
        "seed(s) (initial weights and batch order; same data and teacher)\n"
        "  student alone: cross-entropy on the labelled split\n"
        f"  KD: T tuned over {{{grid}}} on validation accuracy ({budget} "
        "student-epochs)\n"
        "  PTLoss, training-free: select_coefficients at KD's T "
        f"({epochs} student-epochs)\n"
        "  PTLoss, searched: search_coefficients, budget "
        f"{budget} student-epochs (= KD's tuning)\n"
        "  PTLoss, searched, standardised: the same on z-scored logits "
        "(standardize=True)"
    )
    runs, probs_seed0, search_plots = [], {}, []
    for index in range(o["seeds"]):
        seed = o["seed"] + index
        run_ = {"seed": seed}

        t0 = time.perf_counter()
        keras.utils.set_random_seed(seed)
        alone = make_student(num_features, num_classes)
        _compile(alone, o["learning_rate"])
        alone.fit(
            x_lab,
            y_lab,
            epochs=epochs,
            batch_size=o["batch_size"],
            verbose=0,
        )
        probs = {"student alone": _predict(alone, x_test)}
        run_["student alone"] = dict(
            choice="-",
            seconds=time.perf_counter() - t0,
            student_epochs=epochs,
        )

        kd = search(seed, candidates=kd_candidates, budget=budget)
        probs["KD"] = _predict(kd.student, x_test)
        run_["KD"] = dict(
            choice=f"T={kd.temperature:g}",
            seconds=kd.cost["seconds"],
            student_epochs=kd.cost["student_epochs"],
        )

        t0 = time.perf_counter()
        selection = select_coefficients(
            softmax(teacher_logits["validation"]),
            y_val,
            order=o["order"],
            mode=o["mode"],
            temperature=kd.temperature,
            seed=seed,
            verbose=0,
        )
        picked = search(
            seed,
            candidates=[
                Candidate(
                    np.asarray(selection.coefficients),
                    kd.temperature,
                    source="selection",
                )
            ],
            budget=epochs,
        )
        probs["PTLoss, training-free"] = _predict(picked.student, x_test)
        run_["PTLoss, training-free"] = dict(
            choice=_eps(selection.coefficients, kd.temperature),
            coefficients=np.asarray(selection.coefficients).tolist(),
            seconds=time.perf_counter() - t0,
            student_epochs=picked.cost["student_epochs"],
        )

        searches = {}
        for name, standardize in SEARCHES.items():
            found = search(
                seed,
                temperatures=temps,
                mode=o["mode"],
                budget=budget,
                standardize=standardize,
            )
            probs[name] = _predict(found.student, x_test)
            run_[name] = dict(
                choice=found.candidates[found.winner].label,
                seconds=found.cost["seconds"],
                student_epochs=found.cost["student_epochs"],
                search=found.to_dict(),
            )
            searches[name] = found
        for name in METHODS[1:]:
            run_[name]["scores"] = scores(probs[name], y_test)
        runs.append(run_)

        line = ", ".join(
            f"{name} {100 * run_[name]['scores']['accuracy']:.1f} %"
            for name in METHODS[1:]
        )
        _say(f"\nseed {seed}: {line}")
        if index == 0:
            probs_seed0 = dict(probs, teacher=teacher_probs)
        for name, found in searches.items():
            if index == 0:
                _say(f"{name}: {found.summary()}")
                search_plots.append(out_dir / SEARCH_PLOTS[name])
                found.plot(search_plots[-1])
            else:
                _say(
                    f"  {name}: winner {run_[name]['choice']}, cost "
                    f"{found.cost['student_epochs']:g} student-epochs, "
                    f"{found.cost['seconds']:.1f} s"
                )

    summary = summarize(runs)
    table = format_table(teacher_scores, summary, len(runs))
    _say(f"\n=== results on the test split ({sizes['test']} examples)")
    _say(table)
    lines = verdict(summary)
    _say("\n" + "\n".join(lines))
    plot_path = out_dir / "demo.png"
    write_plot(
        plot_path,
        runs,
        probs_seed0,
        y_test,
        title=f"PTLoss demo on MNIST-1D ({keras.backend.backend()})",
    )
    seconds = time.perf_counter() - start
    result = dict(
        backend=keras.backend.backend(),
        options=o,
        sizes=sizes,
        teacher=teacher_scores,
        runs=runs,
        summary=summary,
        table=table,
        verdict=lines,
        plot=str(plot_path.resolve()),
        search_plots=[str(path.resolve()) for path in search_plots],
        json=str((out_dir / "results.json").resolve()),
        seconds=seconds,
    )
    Path(result["json"]).write_text(
        json.dumps(result, indent=2, default=_plain) + "\n"
    )
    _say(f"\nplots: {', '.join([result['plot'], *result['search_plots']])}")
    _say(f"numbers: {result['json']}")
    _say(f"total time: {seconds:.1f} s")
    return result


def summarize(runs):
    """Per method, the mean and standard deviation over seeds of each score.

    Returns:
        `{method: {score: {"mean": m, "std": s, "values": [...]}, ...,
        "seconds": mean seconds, "student_epochs": mean, "choices":
        [choice per seed]}}`; `std` is the sample standard deviation
        (`ddof=1`; 0 for a single seed).
    """
    summary = {}
    for name in METHODS[1:]:
        entry = {}
        for key in ("accuracy", "nll", "ece", "brier"):
            values = np.array([r[name]["scores"][key] for r in runs])
            entry[key] = dict(
                mean=float(values.mean()),
                std=float(values.std(ddof=1)) if len(values) > 1 else 0.0,
                values=values.tolist(),
            )
        entry["seconds"] = float(np.mean([r[name]["seconds"] for r in runs]))
        entry["student_epochs"] = float(
            np.mean([r[name]["student_epochs"] for r in runs])
        )
        entry["choices"] = [r[name]["choice"] for r in runs]
        summary[name] = entry
    return summary


def _eps(coefficients, temperature):
    """A short label: the first coefficient (the mean over classes when
    class-wise) and the temperature; `results.json` has them all."""
    first = float(np.mean(np.asarray(coefficients)[..., 0]))
    return f"eps1={first:+.2f} T={temperature:g}"


def _compile(model, learning_rate):
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )


def _plain(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")
