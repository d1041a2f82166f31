"""The demo's run: data, the teachers, four students each, the report.

Every distilled student is trained by `search_coefficients`' population
trainer with common random numbers per seed, so KD (`eps = 0` over the
temperature grid), LS-KD (the same on z-scored logits) and PTLoss (the
search's defaults with KD's budget) differ only in their losses and
candidates.
"""

import json
import os
import time
from pathlib import Path

import keras
import numpy as np

from keras_ptloss._checks import softmax
from keras_ptloss.calibration import calibrate
from keras_ptloss.calibration import expected_calibration_error
from keras_ptloss.datasets.loaders import load_mnist1d
from keras_ptloss.datasets.synthetic import noisy_labels
from keras_ptloss.demo.options import DEFAULTS
from keras_ptloss.demo.options import QUICK
from keras_ptloss.demo.options import TUNE_BUDGET
from keras_ptloss.demo.options import check_options
from keras_ptloss.demo.report import METHODS
from keras_ptloss.demo.report import SCORES
from keras_ptloss.demo.report import TEACHERS
from keras_ptloss.demo.report import format_table
from keras_ptloss.demo.report import verdict
from keras_ptloss.demo.report import write_plot
from keras_ptloss.search import Candidate
from keras_ptloss.search import search_coefficients


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
    """MNIST-1D as `{"labelled", "transfer", "validation", "test": (x, y)}`."""
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
    """An MLP `num_features`-64-64-`num_classes` returning logits."""

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


def scores(probs, calibrated, labels):
    """Accuracy, and NLL and ECE (15 bins) raw and calibrated.

    Returns:
        A dict with the keys of `report.SCORES`.
    """
    labels = np.asarray(labels)

    def nll(p):
        picked = p[np.arange(len(labels)), labels]
        return float(-np.mean(np.log(np.maximum(picked, 1e-12))))

    return dict(
        accuracy=float(np.mean(np.argmax(probs, axis=-1) == labels)),
        nll_raw=nll(probs),
        nll_calibrated=nll(calibrated),
        ece_raw=expected_calibration_error(probs, labels),
        ece_calibrated=expected_calibration_error(calibrated, labels),
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


def _logits(model, x):
    # Eager calls: `predict` would trace a new function for every model.
    logits = [
        keras.ops.convert_to_numpy(model(x[i : i + 2048], training=False))
        for i in range(0, len(x), 2048)
    ]
    return np.concatenate(logits).astype("float64")


def _predict(model, x):
    return softmax(_logits(model, x))


def _say(text=""):
    print(text, flush=True)


def run(**options):
    """Runs the demo; returns its results as a dict (also `results.json`).

    Args:
        **options: any of `DEFAULTS`' keys; unspecified ones take their
            default.

    Returns:
        A dict with `backend`, `options`, `sizes`, `budget`, `teachers` (per
        teacher its `description`, `scores`, `calibration`, `runs` per seed,
        `summary` and `table`), `verdict`, `plot`, `search_plots`, `json` and
        `seconds`.
    """
    o = _checked_options(options)
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
    sizes = {name: int(len(split[0])) for name, split in data.items()}
    noisy, flipped = noisy_labels(
        data["labelled"][1], o["noise_rate"], num_classes=10, seed=o["seed"]
    )
    labels = {"clean": data["labelled"][1], "noisy": noisy}
    budget = TUNE_BUDGET * o["student_epochs"]
    _say(_plan_text(o, sizes, int(flipped.sum()), budget))
    teachers, test_probs, search_plots = {}, {}, []
    for name in o["teachers"]:
        description = TEACHERS[name].format(noise=o["noise_rate"])
        result, probs, found = _run_teacher(
            name, description, labels[name], data, budget, o
        )
        teachers[name] = result
        test_probs[name] = probs
        search_plots.append(out_dir / f"search-{name}.png")
        found.plot(search_plots[-1])
    lines = _print_tables(teachers, sizes)
    plot_path = out_dir / "demo.png"
    write_plot(
        plot_path,
        teachers,
        test_probs,
        data["test"][1],
        title=f"PTLoss demo on MNIST-1D ({keras.backend.backend()}, "
        f"{o['seeds']} seed(s))",
    )
    result = dict(
        backend=keras.backend.backend(),
        options=o,
        sizes=sizes,
        budget=budget,
        teachers=teachers,
        verdict=lines,
        plot=str(plot_path.resolve()),
        search_plots=[str(path.resolve()) for path in search_plots],
        json=str((out_dir / "results.json").resolve()),
        seconds=time.perf_counter() - start,
    )
    _write_results(result)
    return result


def _checked_options(options):
    """`DEFAULTS` updated with `options`, checked; temperatures as tuples
    of floats."""
    unknown = set(options) - set(DEFAULTS)
    if unknown:
        raise ValueError(
            f"Unknown demo option(s) {sorted(unknown)}; expected any of "
            f"{sorted(DEFAULTS)}"
        )
    o = dict(DEFAULTS)
    o.update(options)
    check_options(o)
    for name in ("temperatures", "standardized_temperatures"):
        o[name] = tuple(float(t) for t in o[name])
    # Teachers run (and are reported) in a fixed order.
    o["teachers"] = tuple(t for t in TEACHERS if t in o["teachers"])
    return o


def _plan_text(o, sizes, num_flipped, budget):
    """What the demo is about to do: the splits and the four methods."""
    grid = ", ".join(f"{t:g}" for t in o["temperatures"])
    ls_grid = ", ".join(f"{t:g}" for t in o["standardized_temperatures"])
    if "noisy" in o["teachers"]:
        flipped = f"; {num_flipped} of them flipped for the noisy teacher"
    else:
        flipped = ""
    return (
        f"data: {sizes['labelled']} labelled (teacher(s), student alone"
        f"{flipped}), "
        f"{sizes['transfer']} unlabelled transfer (distillation), "
        f"{sizes['validation']} labelled validation (tuning, search, "
        f"calibration), {sizes['test']} test\n"
        f"students: MLP 40-64-64-10, {o['student_epochs']} epochs, "
        f"{o['seeds']} seed(s) (initial weights and batch order, shared by "
        "the methods); all calibrated on the validation split\n"
        "  student alone: cross-entropy on the teacher's labelled split\n"
        f"  KD: T tuned over {{{grid}}} on validation accuracy by successive "
        f"halving ({budget} student-epochs, six trainings' worth)\n"
        f"  LS-KD: KD on z-scored logits, T tuned over {{{ls_grid}}} (the "
        "same budget)\n"
        "  PTLoss: search_coefficients with its defaults (logits at T in "
        f"{{{grid}}} and z-scored logits at T in {{{ls_grid}}}, KD and "
        "LS-KD kept to the last rung, the winner calibrated), the same "
        "budget"
    )


def _print_tables(teachers, sizes):
    """Prints each teacher's table and the verdict; returns its lines."""
    for name, result in teachers.items():
        teacher = result["scores"]
        _say(
            f"\n=== {name} teacher (test accuracy "
            f"{100 * teacher['accuracy']:.1f} %): its students on the test "
            f"split ({sizes['test']} examples)"
        )
        _say(result["table"])
    lines = verdict({name: r["summary"] for name, r in teachers.items()})
    _say("\n" + "\n".join(lines))
    return lines


def _write_results(result):
    """Writes `results.json` and says where the files are."""
    Path(result["json"]).write_text(
        json.dumps(result, indent=2, default=_plain) + "\n"
    )
    _say(f"\nplots: {', '.join([result['plot'], *result['search_plots']])}")
    _say(f"numbers: {result['json']}")
    _say(f"total time: {result['seconds']:.1f} s")


def _run_teacher(name, description, labels, data, budget, o):
    """One teacher and its students; returns `(result, probs, search)`."""
    _say(f"\n=== {name} teacher: {description}, {o['teacher_epochs']} epochs")
    teacher = _train_teacher(name, labels, data, o)
    runs, first_probs, first_search = [], {}, None
    for index in range(o["seeds"]):
        seed = o["seed"] + index
        run_, models, found = _train_students(
            seed, labels, data, teacher, budget, o
        )
        probs = _score_students(run_, models, data["test"])
        runs.append(run_)
        _say(f"seed {seed}: {_seed_line(run_)}")
        if index == 0:
            first_probs = dict(probs, teacher=teacher["test_calibrated"])
            first_search = found
            _say(f"PTLoss: {found.summary()}")
    summary = summarize(runs)
    result = dict(
        description=description,
        scores=teacher["scores"],
        calibration=teacher["calibration"],
        runs=runs,
        summary=summary,
        table=format_table(teacher["scores"], summary, len(runs)),
    )
    return result, first_probs, first_search


def _train_teacher(name, labels, data, o):
    """Trains a teacher on `labels`: its logits, scores and calibration."""
    x_lab = data["labelled"][0]
    x_test, y_test = data["test"]
    keras.utils.set_random_seed(o["seed"])
    teacher = make_teacher(x_lab.shape[1], 10, o["seed"])
    _compile(teacher, o["learning_rate"])
    teacher.fit(
        x_lab,
        labels,
        epochs=o["teacher_epochs"],
        batch_size=o["batch_size"],
        verbose=o["verbose"],
    )
    logits = {
        split: _logits(teacher, data[split][0])
        for split in ("transfer", "validation", "test")
    }
    calibrated = calibrate(teacher, data["validation"], batch_size=2048)
    test_probs = softmax(logits["test"])
    test_calibrated = softmax(logits["test"] / calibrated.temperature)
    teacher_scores = scores(test_probs, test_calibrated, y_test)
    _say(
        f"{name} teacher: test accuracy "
        f"{100 * teacher_scores['accuracy']:.1f} %, calibration T = "
        f"{calibrated.temperature:.3g}"
    )
    return dict(
        logits=logits,
        scores=teacher_scores,
        calibration=calibrated.calibration,
        test_calibrated=test_calibrated,
    )


def _train_students(seed, labels, data, teacher, budget, o):
    """The four students of one seed: `(run, models, search)`."""
    x_lab = data["labelled"][0]
    validation = data["validation"]
    epochs = o["student_epochs"]
    run_ = {"seed": seed}
    models = {}
    t0 = time.perf_counter()
    keras.utils.set_random_seed(seed)
    alone = make_student(x_lab.shape[1], 10)
    _compile(alone, o["learning_rate"])
    alone.fit(
        x_lab, labels, epochs=epochs, batch_size=o["batch_size"], verbose=0
    )
    models["student alone"] = calibrate(alone, validation, batch_size=2048)
    run_["student alone"] = dict(
        choice="-", seconds=time.perf_counter() - t0, student_epochs=epochs
    )
    zero = np.zeros(o["order"])
    anchors = {
        "KD": [Candidate(zero, t, False, "kd") for t in o["temperatures"]],
        "LS-KD": [
            Candidate(zero, t, True, "kd")
            for t in o["standardized_temperatures"]
        ],
    }
    for method, candidates in anchors.items():
        t0 = time.perf_counter()
        found = _search(
            seed,
            data,
            teacher,
            budget,
            o,
            candidates=candidates,
            calibrate=False,
        )
        models[method] = calibrate(found.student, validation, batch_size=2048)
        run_[method] = dict(
            choice=f"T={found.temperature:g}",
            seconds=time.perf_counter() - t0,
            student_epochs=found.cost["student_epochs"],
        )
    found = _search(
        seed,
        data,
        teacher,
        budget,
        o,
        mode=o["mode"],
        temperatures=o["temperatures"],
        standardized_temperatures=o["standardized_temperatures"],
    )
    models["PTLoss"] = found.student
    run_["PTLoss"] = dict(
        choice=found.candidates[found.winner].label,
        seconds=found.cost["seconds"],
        student_epochs=found.cost["student_epochs"],
        search=found.to_dict(),
    )
    return run_, models, found


def _search(seed, data, teacher, budget, o, **kwargs):
    """`search_coefficients` on the teacher's logits, with the demo's
    student, budget and optimizer."""
    num_features = data["labelled"][0].shape[1]
    return search_coefficients(
        lambda: make_student(num_features, 10),
        data["transfer"][0],
        teacher["logits"]["transfer"],
        data["validation"],
        order=o["order"],
        epochs=o["student_epochs"],
        budget=budget,
        validation_teacher=teacher["logits"]["validation"],
        optimizer=lambda: keras.optimizers.Adam(o["learning_rate"]),
        batch_size=o["batch_size"],
        seed=seed,
        verbose=0,
        **kwargs,
    )


def _score_students(run_, models, test):
    """Scores each calibrated model on the test split into `run_`;
    returns their calibrated test probabilities."""
    x_test, y_test = test
    probs = {}
    for method, model in models.items():
        raw = _predict(model.model, x_test)
        probs[method] = _predict(model, x_test)
        run_[method]["scores"] = scores(raw, probs[method], y_test)
        run_[method]["calibration"] = model.calibration
    return probs


def _seed_line(run_):
    """One seed's test accuracies (and choices) per method."""
    return ", ".join(
        f"{method} {100 * run_[method]['scores']['accuracy']:.1f} %"
        + ("" if method == "student alone" else f" ({run_[method]['choice']})")
        for method in METHODS
    )


def summarize(runs):
    """Per method, the mean and sample std (`ddof=1`) of each score."""
    summary = {}
    for name in METHODS:
        entry = {}
        for key in SCORES:
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
