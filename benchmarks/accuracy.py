"""Accuracy: the default pipeline against tuned distillation baselines.

MNIST-1D at K = 10, 2 and 3 classes (the digits grouped into super-classes
`(K * digit) // 10`), each with a clean teacher and one trained on 40%
symmetric label noise. Per setting: a CNN teacher (seed 0) and a small MLP
student distilled on an unlabelled transfer split (hard-label terms use
the teacher's argmax); the student alone trains on the teacher's labelled
split. Every method trains through the public API:

- the baselines (KD, KD + CE, DKD, LS-KD, Poly-1: the `keras_ptloss`
  losses in a `keras_ptloss.Distiller`) are tuned on the validation split
  with `budget` full trainings of their grid (tuning seed), then trained
  with seeds 0..seeds-1; a baseline the library refuses (LS-KD at K = 2)
  is recorded as not applicable, with the library's reason;
- PTLoss M = 5 training-free: `select_coefficients` at KD's tuned
  temperature (no student trained to choose), trained like the baselines;
- the pipeline: one `search_coefficients` call per seed with its defaults,
  the baselines' recipe and their budget in student-epochs; its student is
  the call's, calibrated by the call.

Every student is calibrated on the validation split
(`keras_ptloss.calibrate`); test accuracy, NLL and ECE
(`keras_ptloss.calibration.expected_calibration_error`) are recorded before
and after. Records: one per (setting, seed, method) (`kind="run"`), one
per (setting, method) with the tuning choice and its cost in student-epochs
(`kind="choice"`), one per setting for the teacher (`kind="teacher"`).
"""

import statistics
import sys

import numpy as np
from scipy import special

from benchmarks.harness import Case
from benchmarks.render import Table
from benchmarks.render import groups
from benchmarks.render import mean_se
from benchmarks.render import mean_std

# Setting -> (K, teacher trained on noisy labels).
SETTINGS = {
    "mnist1d_unlabelled": (10, False),
    "mnist1d_noisy": (10, True),
    "mnist1d_k2": (2, False),
    "mnist1d_k2_noisy": (2, True),
    "mnist1d_k3": (3, False),
    "mnist1d_k3_noisy": (3, True),
}
NOISE_RATE = 0.4
FRACTIONS = {"train": 0.15, "transfer": 0.55, "validation": 0.1, "test": 0.2}
TUNE_SEED = 10_000
ORDER = 5
# Tuning grids of the baselines (6 points each: the full budget).
GRIDS = {
    "kd": [{"temperature": t} for t in (1.0, 2.0, 3.0, 4.0, 6.0, 8.0)],
    "kd_ce": [
        {"label_weight": w, "temperature": t}
        for w in (0.1, 0.5)
        for t in (1.0, 2.0, 4.0)
    ],
    "dkd": [
        {"alpha": 1.0, "beta": b, "temperature": t}
        for t in (1.0, 4.0)
        for b in (1.0, 4.0, 8.0)
    ],
    "lskd": [{"temperature": t} for t in (0.25, 0.5, 1.0, 2.0, 3.0, 4.0)],
    "poly1": [{"epsilon": e} for e in (-1.0, -0.5, 0.5, 1.0, 2.0, 4.0)],
}
BASELINES = tuple(GRIDS)
# Method -> (table label, loss class, training data): "alone" = the
# teacher's labelled split, "transfer" = the transfer split with teacher
# outputs, "labels" = the same with the teacher's argmax as labels.
METHODS = {
    "ce": ("Student alone (CE)", "KDLoss", "alone"),
    "kd": ("KD", "KDLoss", "transfer"),
    "kd_ce": ("KD + CE", "KDCELoss", "labels"),
    "dkd": ("DKD", "DKDLoss", "labels"),
    "lskd": ("LS-KD", "LSKDLoss", "transfer"),
    "poly1": ("Poly-1", "Poly1Loss", "labels"),
    "selected": ("PTLoss M=5 training-free (KD's T)", "PTLoss", "transfer"),
    "pipeline": ("PTLoss pipeline (default search, calibrated)", None, None),
}
LABELS = {m: v[0] for m, v in METHODS.items()}


def log(message):
    print(f"[accuracy] {message}", file=sys.stderr, flush=True)


def subsample(grid, budget):
    """`budget` evenly spaced points of `grid` (all of it if it fits)."""
    if budget >= len(grid):
        return list(grid)
    index = np.unique(np.round(np.linspace(0, len(grid) - 1, budget)))
    return [grid[int(i)] for i in index]


def mlp(keras, hidden, num_classes):
    layers = [keras.Input((40,))]
    layers += [keras.layers.Dense(h, activation="relu") for h in hidden]
    return keras.Sequential([*layers, keras.layers.Dense(num_classes)])


def cnn(keras, num_classes, channels=32):
    conv = keras.layers.Conv1D
    return keras.Sequential(
        [
            keras.Input((40,)),
            keras.layers.Reshape((40, 1)),
            conv(channels, 5, padding="same", activation="relu"),
            conv(channels, 5, strides=2, activation="relu"),
            conv(channels, 5, strides=2, activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(num_classes),
        ]
    )


def softmax(logits):
    return special.softmax(np.asarray(logits, "float64"), axis=-1)


def scores(keras, logits, labels):
    """Accuracy, NLL (Keras) and ECE (keras_ptloss) of `logits`."""
    from keras_ptloss.calibration import expected_calibration_error

    numpy = keras.ops.convert_to_numpy
    accuracy = keras.metrics.sparse_categorical_accuracy(labels, logits)
    nll = keras.losses.sparse_categorical_crossentropy(
        labels, logits, from_logits=True
    )
    return {
        "accuracy": float(np.mean(numpy(accuracy))),
        "nll": float(np.mean(numpy(nll))),
        "ece": expected_calibration_error(softmax(logits), labels),
    }


class Setting:
    """One setting: its splits, its teacher and one Distiller per method.

    A method's `keras_ptloss.Distiller` is built and compiled once; each
    training resets the student to the seed's initial weights, zeroes the
    optimizer's state and assigns the configuration with the loss's
    setters (`set_temperature`, ...), so one compiled step serves every
    configuration and seed.
    """

    def __init__(self, name, size):
        import keras

        from keras_ptloss.datasets import load_mnist1d
        from keras_ptloss.datasets import noisy_labels

        self.keras, self.name, self.size = keras, name, size
        self.k, noisy = SETTINGS[name]
        splits = load_mnist1d(size["samples"], FRACTIONS, seed=0)
        self.data = {
            split: (x, (self.k * y.astype("int64") // 10).astype("int32"))
            for split, (x, y) in splits.items()
        }
        x, y = self.data["train"]
        if noisy:
            y, _ = noisy_labels(y, NOISE_RATE, num_classes=self.k, seed=0)
        self.data["alone"] = (x, y)
        keras.utils.set_random_seed(0)
        self.teacher = cnn(keras, self.k)
        self.teacher.compile(
            optimizer=keras.optimizers.Adam(size["learning_rate"]),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        self.teacher.fit(
            x,
            y,
            epochs=size["teacher_epochs"],
            batch_size=size["batch_size"],
            verbose=0,
        )
        self.logits = {
            split: self.teacher.predict(
                self.data[split][0], batch_size=4096, verbose=0
            )
            for split in ("transfer", "validation", "test")
        }
        self.transfer_labels = self.logits["transfer"].argmax(-1)
        self.distillers, self.initial = {}, {}

    def record(self, kind, method=None, **fields):
        return {"kind": kind, "setting": self.name, "method": method, **fields}

    def teacher_record(self):
        test = scores(self.keras, self.logits["test"], self.data["test"][1])
        sizes = {f"{s}_size": len(self.data[s][0]) for s in FRACTIONS}
        hidden = "-".join(map(str, [40, *self.size["hidden"], self.k]))
        return self.record(
            "teacher",
            classes=self.k,
            student=f"MLP {hidden}",
            **{f"test_{k}": v for k, v in test.items()},
            **sizes,
        )

    def make_student(self):
        return mlp(self.keras, self.size["hidden"], self.k)

    def make_optimizer(self):
        return self.keras.optimizers.Adam(self.size["learning_rate"])

    def make_loss(self, method, hp):
        import keras_ptloss

        return getattr(keras_ptloss, METHODS[method][1])(**hp)

    def refusal(self, method):
        """The library's reason for refusing `method` at this K, or None."""
        loss = self.make_loss(method, GRIDS[method][0])
        logits = np.zeros((1, self.k), "float32")
        targets = logits
        if getattr(loss, "needs_labels", False):
            targets = {"teacher": logits, "label": np.zeros((1,), "int32")}
        try:
            loss(targets, logits)
        except ValueError as error:
            return str(error)
        return None

    def distiller(self, method, hp):
        """The method's compiled Distiller and training data (built once)."""
        if method not in self.distillers:
            import keras_ptloss

            keras = self.keras
            keras.utils.set_random_seed(0)
            alone = METHODS[method][2] == "alone"
            distiller = keras_ptloss.Distiller(
                self.teacher,
                self.make_student(),
                self.make_loss(method, hp),
                student_loss_weight=1.0 if alone else 0.0,
            )
            ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
            distiller.compile(
                optimizer=self.make_optimizer(), loss=ce if alone else None
            )
            data = METHODS[method][2]
            x, y = self.data["alone" if alone else "transfer"]
            y = {"alone": y, "labels": self.transfer_labels}.get(data)
            x, y, _ = distiller.precompute_teacher(x, y, batch_size=4096)
            self.distillers[method] = (distiller, x, y)
        return self.distillers[method]

    def initial_weights(self, seed):
        if seed not in self.initial:
            self.keras.utils.set_random_seed(seed)
            self.initial[seed] = self.make_student().get_weights()
        return self.initial[seed]

    def train(self, method, hp, seed):
        """One student trained with `method` at `hp` from seed `seed`."""
        keras = self.keras
        distiller, x, y = self.distiller(method, hp)
        for key, value in hp.items():
            getattr(distiller.distillation_loss, f"set_{key}")(value)
        distiller.student.set_weights(self.initial_weights(seed))
        for variable in distiller.optimizer.variables:
            if not variable.path.endswith("learning_rate"):
                variable.assign(keras.ops.zeros(variable.shape, variable.dtype))
        keras.utils.set_random_seed(seed)
        distiller.fit(
            x,
            y,
            epochs=self.size["epochs"],
            batch_size=self.size["batch_size"],
            shuffle=True,
            verbose=0,
        )
        return distiller.student

    def validation_accuracy(self, student):
        x, y = self.data["validation"]
        logits = student.predict(x, batch_size=4096, verbose=0)
        return scores(self.keras, logits, y)["accuracy"]

    def run_record(self, method, seed, student, calibrated=None, **extra):
        """Test accuracy, NLL and ECE before and after calibration."""
        import keras_ptloss

        if calibrated is None:
            calibrated = keras_ptloss.calibrate(
                student, self.data["validation"], batch_size=4096
            )
        x, y = self.data["test"]
        logits = student.predict(x, batch_size=4096, verbose=0)
        # A CalibratedModel outputs `model(x) / T` (documented).
        scaled = logits / calibrated.temperature
        before = scores(self.keras, logits, y)
        after = scores(self.keras, scaled, y)
        log(
            f"{self.name} {method} seed={seed}: "
            f"test accuracy {before['accuracy']:.4f}"
        )
        return self.record(
            "run",
            method,
            seed=seed,
            test_accuracy=before["accuracy"],
            test_nll=before["nll"],
            test_ece=before["ece"],
            test_nll_calibrated=after["nll"],
            test_ece_calibrated=after["ece"],
            calibration_temperature=float(calibrated.temperature),
            **extra,
        )

    def tune(self, method):
        """The grid's best configuration on the validation split."""
        grid = subsample(GRIDS[method], self.size["budget"])
        found = [
            self.validation_accuracy(self.train(method, hp, TUNE_SEED))
            for hp in grid
        ]
        chosen = grid[int(np.argmax(found))]
        log(f"{self.name} {method}: tuned {chosen}")
        return chosen, self.record(
            "choice",
            method,
            chosen=chosen,
            grid=grid,
            validation_accuracy=found,
            student_epochs=len(grid) * self.size["epochs"],
        )

    def select(self, temperature):
        """PTLoss M = 5 coefficients by `select_coefficients` (no
        training) at KD's tuned temperature."""
        import keras_ptloss

        selection = keras_ptloss.select_coefficients(
            softmax(self.logits["validation"]),
            self.data["validation"][1],
            order=ORDER,
            temperature=temperature,
            seed=0,
            verbose=0,
        )
        chosen = {
            "coefficients": np.asarray(selection.coefficients).tolist(),
            "temperature": float(selection.temperature),
        }
        return chosen, self.record(
            "choice",
            "selected",
            chosen=chosen,
            proxy_score=float(selection.proxy_score),
            teacher_score=float(selection.teacher_score),
            student_epochs=0,
        )

    def pipeline(self, seed):
        """`search_coefficients` with its defaults, given what every
        method gets: the recipe, the validation split, the budget."""
        import keras_ptloss

        epochs = self.size["epochs"]
        result = keras_ptloss.search_coefficients(
            self.make_student,
            self.data["transfer"][0],
            self.logits["transfer"],
            self.data["validation"],
            epochs=epochs,
            budget=self.size["budget"] * epochs,
            validation_teacher=self.logits["validation"],
            optimizer=self.make_optimizer,
            batch_size=self.size["batch_size"],
            seed=seed,
            verbose=0,
        )
        return self.run_record(
            "pipeline",
            seed,
            result.uncalibrated_student,
            result.student,
            winner=result.candidates[result.winner].label,
            standardize=bool(result.standardize),
            student_epochs=int(result.cost["student_epochs"]),
            budget=int(result.cost["budget"]),
        )


def accuracy(settings, seeds, methods=tuple(METHODS), **size):
    """`methods` (default: all; "selected" needs "kd") of every setting in
    `settings`, seeds 0..seeds-1."""
    records = []
    for name in settings:
        setting = Setting(name, size)
        records.append(setting.teacher_record())
        chosen = {"ce": {}} if "ce" in methods else {}
        for method in (m for m in BASELINES if m in methods):
            reason = setting.refusal(method)
            if reason is None:
                chosen[method], record = setting.tune(method)
            else:
                record = setting.record("choice", method, not_applicable=reason)
            records.append(record)
        if "selected" in methods:
            temperature = chosen["kd"]["temperature"]
            chosen["selected"], record = setting.select(temperature)
            records.append(record)
        for method, hp in chosen.items():
            for seed in range(seeds):
                student = setting.train(method, hp, seed)
                records.append(setting.run_record(method, seed, student))
        if "pipeline" not in methods:
            continue
        runs = [setting.pipeline(seed) for seed in range(seeds)]
        records += runs
        records.append(
            setting.record(
                "choice",
                "pipeline",
                chosen=[r["winner"] for r in runs],
                student_epochs=max(r["student_epochs"] for r in runs),
            )
        )
    return records


# --------------------------------------------------------------------------
# Aggregation and tables.
# --------------------------------------------------------------------------


def runs(records, setting, method):
    """Seed -> run record of `method` in `setting`."""
    return {
        r["seed"]: r
        for r in records
        if r["kind"] == "run"
        and r["setting"] == setting
        and r["method"] == method
    }


def paired(records, setting, method, baseline, key="test_accuracy"):
    """`method - baseline` on `key`, seed by seed (seeds both have)."""
    a, b = runs(records, setting, method), runs(records, setting, baseline)
    return [a[s][key] - b[s][key] for s in sorted(a) if s in b]


def points(pair, digits=2):
    """A `(mean, se)` of fractions as signed points: `+1.23 ± 0.45`."""
    if pair is None:
        return "–"
    return f"{100 * pair[0]:+.{digits}f} ± {100 * pair[1]:.{digits}f}"


def best_baseline(records, setting):
    """The tuned baseline with the highest mean test accuracy."""
    means = {
        m: statistics.mean(r["test_accuracy"] for r in found.values())
        for m in BASELINES
        if (found := runs(records, setting, m))
    }
    return max(means, key=means.get) if means else None


def settings_of(records):
    return [s for s in SETTINGS if any(r["setting"] == s for r in records)]


def refused(records, setting, method):
    return any(
        r.get("not_applicable")
        for r in records
        if r["setting"] == setting and r["method"] == method
    )


def per_method(records, cell, teacher=None):
    """Rows `{"method", setting: text}` of `cell(runs)` over the seeds."""
    rows = [] if teacher is None else [{"method": "Teacher", **teacher}]
    for method, label in LABELS.items():
        row = {"method": label}
        for setting in settings_of(records):
            found = list(runs(records, setting, method).values())
            if found:
                row[setting] = cell(found)
            elif refused(records, setting, method):
                row[setting] = "n/a"
        rows.append(row)
    return rows


def accuracy_rows(records):
    teacher = {
        r["setting"]: f"{100 * r['test_accuracy']:.1f}"
        for r in records
        if r["kind"] == "teacher"
    }
    return per_method(
        records,
        lambda found: mean_std([r["test_accuracy"] for r in found], 1, 100),
        teacher,
    )


def calibration_cell(found):
    def mean(key, scale=1.0):
        return scale * statistics.mean(r[key] for r in found)

    return (
        f"{mean('test_nll'):.3f} → {mean('test_nll_calibrated'):.3f} / "
        f"{mean('test_ece', 100):.1f} → {mean('test_ece_calibrated', 100):.1f}"
    )


def calibration_rows(records):
    return per_method(records, calibration_cell)


def pipeline_rows(records):
    """Per setting: the pipeline and the training-free row against tuned
    KD and the best tuned baseline; the last row averages over settings."""
    rows, means = [], {"pipeline": [], "selected": []}
    for setting in settings_of(records):
        best = best_baseline(records, setting)
        row = {"setting": f"`{setting}`", "best": LABELS.get(best)}
        for method in means:
            diffs = paired(records, setting, method, "kd")
            if diffs:
                means[method].append(statistics.mean(diffs))
            row[f"{method}_kd"] = points(mean_se(diffs))
        row["pipeline_best"] = points(
            mean_se(paired(records, setting, "pipeline", best))
        )
        rows.append(row)
    average = {
        f"{m}_kd": f"{100 * statistics.mean(v):+.2f}"
        for m, v in means.items()
        if v
    }
    rows.append({"setting": f"mean of {len(rows)} settings", **average})
    return rows


def chosen_text(record):
    chosen = record.get("chosen")
    if record.get("not_applicable"):
        return "not applicable: " + record["not_applicable"].split(":")[0]
    if isinstance(chosen, list):  # the pipeline: one winner per seed
        seeds = groups([{"w": w} for w in chosen], ["w"])
        return "; ".join(
            f"{w} ({len(v)}/{len(chosen)})" for (w,), v in seeds.items()
        )
    if "coefficients" in chosen:
        eps = ", ".join(f"{c:+.2g}" for c in chosen["coefficients"])
        return f"eps = ({eps}), T = {chosen['temperature']:g}"
    return ", ".join(f"{k} = {v:g}" for k, v in chosen.items())


def epochs_text(record, found):
    """Student-epochs spent choosing; the pipeline's include its student."""
    epochs = record.get("student_epochs")
    if record["method"] == "pipeline" and found:
        budget = max(r["budget"] for r in found)
        return f"{epochs} / {budget} (with its student)"
    if record["method"] == "selected":
        return "0 (+ KD's tuning, for T)"
    return None if epochs is None else str(epochs)


def in_setting_order(records, kind):
    """The records of `kind`, settings in `SETTINGS` order."""
    order = {s: i for i, s in enumerate(SETTINGS)}
    found = [r for r in records if r["kind"] == kind]
    return sorted(found, key=lambda r: order[r["setting"]])


def choice_rows(records):
    rows = []
    for (setting, method), found in groups(
        in_setting_order(records, "choice"), ["setting", "method"]
    ).items():
        seeds = list(runs(records, setting, method).values())
        calibration = [r["calibration_temperature"] for r in seeds]
        rows.append(
            {
                "setting": f"`{setting}`",
                "method": LABELS[method],
                "chosen": chosen_text(found[-1]),
                "epochs": epochs_text(found[-1], seeds),
                "calibration": f"{min(calibration):.2f}–{max(calibration):.2f}"
                if calibration
                else None,
            }
        )
    return rows


def setting_columns():
    return [(f"`{s}`", s, "{}") for s in SETTINGS]


SIZES = {
    "full": dict(
        settings=list(SETTINGS),
        seeds=5,
        samples=30000,
        hidden=[64, 64],
        epochs=40,
        teacher_epochs=40,
        batch_size=128,
        learning_rate=3e-3,
        budget=6,
    ),
    "quick": dict(
        settings=["mnist1d_k2"],
        methods=["kd", "lskd", "poly1", "selected", "pipeline"],
        seeds=2,
        samples=300,
        hidden=[8],
        epochs=1,
        teacher_epochs=1,
        batch_size=64,
        learning_rate=1e-2,
        budget=2,
    ),
}

CASES = {
    "accuracy": Case(
        run=accuracy,
        sizes=SIZES,
        backends=("jax",),
        merge=("setting",),
        description="the default pipeline vs tuned baselines, K = 10, 2, 3",
    ),
}

TABLES = {
    "accuracy-settings": Table(
        case="accuracy",
        rows=lambda records: in_setting_order(records, "teacher"),
        columns=[
            ("setting", lambda r: f"`{r['setting']}`", "{}"),
            ("K", "classes", "{}"),
            (
                "teacher test acc (%)",
                "test_accuracy",
                lambda v: f"{100 * v:.1f}",
            ),
            ("teacher test ECE (%)", "test_ece", lambda v: f"{100 * v:.1f}"),
            (
                "train / transfer / val / test",
                lambda r: " / ".join(str(r[f"{s}_size"]) for s in FRACTIONS),
                "{}",
            ),
            ("student", "student", "{}"),
        ],
    ),
    "accuracy": Table(
        case="accuracy",
        rows=accuracy_rows,
        columns=[("method", "method", "{}"), *setting_columns()],
    ),
    "accuracy-pipeline": Table(
        case="accuracy",
        rows=pipeline_rows,
        columns=[
            ("setting", "setting", "{}"),
            ("pipeline − KD", "pipeline_kd", "{}"),
            ("best tuned baseline", "best", "{}"),
            ("pipeline − best", "pipeline_best", "{}"),
            ("training-free − KD", "selected_kd", "{}"),
        ],
    ),
    "accuracy-calibration": Table(
        case="accuracy",
        rows=calibration_rows,
        columns=[("method", "method", "{}"), *setting_columns()],
    ),
    "accuracy-choices": Table(
        case="accuracy",
        rows=choice_rows,
        columns=[
            ("setting", "setting", "{}"),
            ("method", "method", "{}"),
            ("choice (pipeline: winner per seed)", "chosen", "{}"),
            ("student-epochs spent choosing", "epochs", "{}"),
            ("calibration T", "calibration", "{}"),
        ],
    ),
}
