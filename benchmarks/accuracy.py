"""Accuracy of students trained with PTLoss against tuned KD baselines.

Settings (all offline, see `keras_ptloss.datasets`):

- `mnist1d_self`: MNIST-1D, CNN teacher -> small MLP student; the transfer
  set is the teacher's own labelled training set (an over-confident
  teacher there);
- `mnist1d_unlabelled`: the same teacher, transfer set = a separate
  unlabelled split (hard-label terms use the teacher's argmax);
- `digits`: scikit-learn digits, MLP teacher -> small MLP student, transfer
  set = the teacher's training set;
- `gaussian`: a Gaussian mixture with exact Bayes probabilities p*; MLP
  teacher -> small MLP student on an unlabelled transfer split; reports
  the student's excess 0-1 risk over the Bayes classifier and its
  distance to p*;
- `mnist1d_noisy`: an unreliable CNN teacher trained on MNIST-1D labels
  with 40% symmetric noise; unlabelled transfer split; the student alone is
  trained on the noisy labels.

Methods: student alone (cross-entropy), KD, KD + CE, DKD, logit-standardised
KD, Poly-1, and PTLoss of order M in {1, 2, 5}, shared and class-wise, with
coefficients from `keras_ptloss.select_coefficients`. Every tuned method
gets the same budget of student trainings on the validation split (see
`--tune-budget`); PTLoss uses KD's tuned temperature and chooses its
coefficients by the proxy teacher, without training. All methods share one
training loop (`HarnessModel.compute_loss`), with hyper-parameters held in
model variables so that one compiled step serves every configuration.

Selection quality: the student trained with the selected M = 1 shared
coefficient against every point of a coefficient grid (the oracle is the
grid point with the best mean test accuracy), and the Spearman correlation
between the proxy teacher's closeness (validation Brier) and the student's
test accuracy across the grid; plotted to a PNG.

Every training result is appended to the JSON as it finishes, so an
interrupted run resumes where it stopped. The markdown section is then
generated from the JSON.

Usage:
    KERAS_BACKEND=jax python benchmarks/accuracy.py          # the table
    KERAS_BACKEND=torch python benchmarks/accuracy.py --cross-check
    python benchmarks/accuracy.py --quick                    # tiny, ~1 min
    python benchmarks/accuracy.py --report-only              # markdown only
"""

import argparse
import contextlib
import fcntl
import hashlib
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import scipy.special  # noqa: E402
import scipy.stats  # noqa: E402
import timing  # noqa: E402
from keras import ops  # noqa: E402

import keras_ptloss as kp  # noqa: E402
from keras_ptloss import closeness  # noqa: E402
from keras_ptloss import proxy_teacher  # noqa: E402
from keras_ptloss import select_coefficients  # noqa: E402

NAME = "accuracy"
# Bump when a change to this script invalidates stored results.
CODE_VERSION = 1
MAX_ORDER = 5
TUNE_SEED = 10_000
BACKENDS = ("jax", "tensorflow", "torch")

# --------------------------------------------------------------------------
# Profiles: sizes and budgets. `full` reproduces the published table.
# --------------------------------------------------------------------------

FULL = {
    "settings": [
        "mnist1d_self",
        "mnist1d_unlabelled",
        "digits",
        "gaussian",
        "mnist1d_noisy",
    ],
    "mnist1d_samples": 30000,
    "mnist1d_fractions": {
        "train": 0.15,
        "transfer": 0.55,
        "validation": 0.1,
        "test": 0.2,
    },
    "gaussian_samples": 12000,
    # Per data set (mnist1d / digits / gaussian): student hidden layers and
    # epochs, teacher epochs.
    "student_hidden": {"mnist1d": [64, 64], "digits": [16], "gaussian": [16]},
    "student_epochs": {"mnist1d": 40, "digits": 100, "gaussian": 40},
    "teacher_epochs": {"mnist1d": 40, "digits": 40, "gaussian": 40},
    "batch_size": 128,
    "learning_rate": 3e-3,
    "seeds": 5,
    "tune_budget": 6,
    "grid": [-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0, 4.0, 8.0],
    "grid_seeds": 5,
    "selection": {},
    "methods": "all",
}
QUICK = dict(
    FULL,
    settings=["gaussian"],
    gaussian_samples=1000,
    student_hidden={"mnist1d": [16], "digits": [16], "gaussian": [16]},
    student_epochs={"mnist1d": 3, "digits": 3, "gaussian": 3},
    teacher_epochs={"mnist1d": 5, "digits": 5, "gaussian": 5},
    batch_size=32,
    learning_rate=1e-2,
    seeds=2,
    tune_budget=2,
    grid=[-1.0, 0.0, 1.0],
    grid_seeds=2,
    selection={"num_candidates": 16, "max_iter": 3, "patience": 2},
)
CROSS = dict(
    FULL,
    settings=["digits", "gaussian"],
    tune_budget=0,
    grid=[],
    grid_seeds=0,
    methods=["ce", "kd", "dkd", "pt_m5_shared"],
)
PROFILES = {"full": FULL, "quick": QUICK, "cross": CROSS}
# Fixed hyper-parameters of the cross-check (no tuning: every backend
# trains exactly the same configurations).
CROSS_FIXED = {
    "kd": {"temperature": 4.0},
    "dkd": {"alpha": 1.0, "beta": 4.0, "temperature": 4.0},
}

# --------------------------------------------------------------------------
# Methods.
# --------------------------------------------------------------------------

# Tuning grids (each has 6 points: the full budget).
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
PT_VARIANTS = [
    (order, mode) for mode in ("shared", "classwise") for order in (1, 2, 5)
]


def _pt_name(order, mode, tune_temperature=False):
    suffix = "_tuneT" if tune_temperature else ""
    return f"pt_m{order}_{mode}{suffix}"


METHODS = {
    "ce": ("Student alone (CE)", "poly"),
    "kd": ("KD", "pt"),
    "kd_ce": ("KD + CE", "kd_ce"),
    "dkd": ("DKD", "dkd"),
    "lskd": ("LS-KD", "lskd"),
    "poly1": ("Poly-1", "poly"),
}
for _order, _mode in PT_VARIANTS:
    METHODS[_pt_name(_order, _mode)] = (f"PTLoss M={_order} {_mode}", "pt")
METHODS[_pt_name(5, "shared", True)] = ("PTLoss M=5 shared, T by proxy", "pt")
HEADLINE = _pt_name(5, "shared")


def method_names(profile):
    if profile["methods"] == "all":
        return list(METHODS)
    return list(profile["methods"])


def subsample_grid(grid, budget):
    """`budget` evenly spaced points of `grid` (all of it if it fits)."""
    if budget >= len(grid):
        return list(grid)
    index = np.unique(np.round(np.linspace(0, len(grid) - 1, budget)))
    return [grid[int(i)] for i in index]


# --------------------------------------------------------------------------
# The shared training loop.
# --------------------------------------------------------------------------


def _family_loss(family, teacher, labels, logits, model):
    t = model.temperature
    if family == "poly":
        return kp.poly1_loss(labels, logits, epsilon=model.hp_a)
    if family == "pt":
        return kp.pt_loss(
            teacher,
            logits,
            coefficients=model.coefficients,
            temperature=t,
            teacher_from_logits=True,
        )
    targets = {"teacher": teacher, "label": labels}
    if family == "kd_ce":
        return kp.kd_ce_loss(
            targets,
            logits,
            label_weight=model.hp_a,
            temperature=t,
            teacher_from_logits=True,
        )
    if family == "dkd":
        return kp.dkd_loss(
            targets,
            logits,
            alpha=model.hp_a,
            beta=model.hp_b,
            temperature=t,
            teacher_from_logits=True,
        )
    if family == "lskd":
        return kp.lskd_loss(
            teacher, logits, temperature=t, teacher_from_logits=True
        )
    raise ValueError(f"unknown loss family {family!r}")


class HarnessModel(keras.Model):
    """Student network plus one loss family; hyper-parameters are variables.

    `y` is `pack_targets(teacher_logits, labels)`. Every method trains
    through this `compute_loss`, so the only difference between methods is
    the per-example loss. Hyper-parameters live in non-trainable variables
    tracked by the model, so one compiled train step serves every
    configuration on every backend (DESIGN.md §3, fact 1).
    """

    def __init__(self, network, family, num_classes, **kwargs):
        super().__init__(**kwargs)
        self.network = network
        self.family = family
        self.num_classes = num_classes
        self.temperature = self.add_weight(
            shape=(), initializer="ones", trainable=False, name="temperature"
        )
        self.hp_a = self.add_weight(
            shape=(), initializer="zeros", trainable=False, name="hp_a"
        )
        self.hp_b = self.add_weight(
            shape=(), initializer="zeros", trainable=False, name="hp_b"
        )
        self.coefficients = self.add_weight(
            shape=(num_classes, MAX_ORDER),
            initializer="zeros",
            trainable=False,
            name="coefficients",
        )

    def call(self, x, training=None):
        return self.network(x, training=training)

    def compute_loss(
        self, x=None, y=None, y_pred=None, sample_weight=None, training=True
    ):
        teacher = y[:, : self.num_classes]
        labels = y[:, self.num_classes]
        per_example = _family_loss(self.family, teacher, labels, y_pred, self)
        return ops.mean(per_example)

    def set_hyperparameters(self, hp, num_classes):
        self.temperature.assign(float(hp.get("temperature", 1.0)))
        a = hp.get("label_weight", hp.get("alpha", hp.get("epsilon", 0.0)))
        self.hp_a.assign(float(a))
        self.hp_b.assign(float(hp.get("beta", 0.0)))
        eps = np.zeros((num_classes, MAX_ORDER), "float32")
        if "coefficients" in hp:
            values = np.asarray(hp["coefficients"], "float32")
            values = np.broadcast_to(
                np.atleast_2d(values), (num_classes, values.shape[-1])
            )
            eps[:, : values.shape[-1]] = values
        self.coefficients.assign(eps)


def family_hyperparameters(method, hp):
    """Hyper-parameters as the harness sees them (they key the records).

    CE is Poly-1 with epsilon = 0, and KD is PTLoss with zero coefficients,
    so identical trainings (KD and the grid's epsilon = 0) are run once.
    """
    if method == "ce":
        return {"epsilon": 0.0}
    hp = dict(hp)
    if "coefficients" in hp and not np.any(hp["coefficients"]):
        del hp["coefficients"]
    return hp


# --------------------------------------------------------------------------
# Networks.
# --------------------------------------------------------------------------


def mlp(num_features, hidden, num_classes):
    layers = [keras.Input((num_features,))]
    layers += [keras.layers.Dense(h, activation="relu") for h in hidden]
    layers.append(keras.layers.Dense(num_classes))
    return keras.Sequential(layers)


def mnist1d_cnn(length, num_classes):
    return keras.Sequential(
        [
            keras.Input((length,)),
            keras.layers.Reshape((length, 1)),
            keras.layers.Conv1D(32, 5, padding="same", activation="relu"),
            keras.layers.Conv1D(32, 5, strides=2, activation="relu"),
            keras.layers.Conv1D(32, 5, strides=2, activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(num_classes),
        ]
    )


# --------------------------------------------------------------------------
# Settings: data, teacher, student.
# --------------------------------------------------------------------------


class Setting:
    """One benchmark setting: splits, teacher outputs, student builder."""

    def __init__(self, name, title, description, num_classes):
        self.name = name
        self.title = title
        self.description = description
        self.num_classes = num_classes
        self.bayes = None  # GaussianMixture for the synthetic task


_MNIST1D_CACHE = {}


def _mnist1d_data(profile):
    key = hp_key([profile["mnist1d_samples"], profile["mnist1d_fractions"]])
    if key not in _MNIST1D_CACHE:
        _MNIST1D_CACHE[key] = kp.load_mnist1d(
            num_samples=profile["mnist1d_samples"],
            fractions=profile["mnist1d_fractions"],
            seed=0,
        )
    return _MNIST1D_CACHE[key]


def data_family(name):
    """`mnist1d`, `digits` or `gaussian`: keys the per-data-set config."""
    return name.split("_")[0]


def build_setting(name, profile):
    setting = _build_setting(name, profile)
    hidden = profile["student_hidden"][data_family(name)]
    num_features = setting.test[0].shape[1]
    setting.make_student = lambda: mlp(num_features, hidden, 10)
    setting.student_desc = "MLP " + "-".join(
        str(n) for n in [num_features, *hidden, 10]
    )
    setting.student_epochs = profile["student_epochs"][data_family(name)]
    setting.teacher_epochs = profile["teacher_epochs"][data_family(name)]
    return setting


def _build_setting(name, profile):
    if name.startswith("mnist1d"):
        data = _mnist1d_data(profile)
        x_train, y_train = data["train"]
        setting = Setting(
            name,
            {
                "mnist1d_self": "MNIST-1D, transfer = teacher's train set",
                "mnist1d_unlabelled": "MNIST-1D, unlabelled transfer split",
                "mnist1d_noisy": "MNIST-1D, teacher trained on 40% noisy "
                "labels",
            }[name],
            "",
            10,
        )
        teacher_labels = y_train
        if name == "mnist1d_noisy":
            teacher_labels, _ = kp.noisy_labels(
                y_train, 0.4, num_classes=10, seed=0
            )
        setting.teacher_data = (x_train, teacher_labels)
        setting.make_teacher = lambda: mnist1d_cnn(40, 10)
        setting.teacher_desc = "CNN (3 Conv1D x 32 channels)"
        if name == "mnist1d_self":
            setting.transfer = (x_train, y_train, "true labels")
            setting.alone = (x_train, y_train)
        else:
            setting.transfer = (data["transfer"][0], None, "teacher argmax")
            setting.alone = (x_train, teacher_labels)
        setting.validation = data["validation"]
        setting.test = data["test"]
        return setting
    if name == "digits":
        data = kp.load_digits(
            {"train": 0.5, "validation": 0.2, "test": 0.3}, seed=0
        )
        setting = Setting(name, "sklearn digits, transfer = train set", "", 10)
        x_train, y_train = data["train"]
        setting.teacher_data = (x_train, y_train)
        setting.make_teacher = lambda: mlp(64, [256, 256], 10)
        setting.teacher_desc = "MLP 64-256-256-10"
        setting.transfer = (x_train, y_train, "true labels")
        setting.alone = (x_train, y_train)
        setting.validation = data["validation"]
        setting.test = data["test"]
        return setting
    if name == "gaussian":
        splits, task = kp.make_gaussian_mixture(
            profile["gaussian_samples"],
            fractions={
                "train": 0.2,
                "transfer": 0.4,
                "validation": 0.1,
                "test": 0.3,
            },
            seed=0,
            num_classes=10,
            num_features=16,
            components_per_class=2,
            separation=1.0,
            scale=1.3,
        )
        setting = Setting(
            name, "Gaussian mixture (exact p*), unlabelled transfer", "", 10
        )
        setting.bayes = task
        x_train, y_train = splits["train"]
        setting.teacher_data = (x_train, y_train)
        setting.make_teacher = lambda: mlp(16, [128, 128], 10)
        setting.teacher_desc = "MLP 16-128-128-10"
        setting.transfer = (splits["transfer"][0], None, "teacher argmax")
        setting.alone = (x_train, y_train)
        setting.validation = splits["validation"]
        setting.test = splits["test"]
        return setting
    raise ValueError(f"unknown setting {name!r}")


def logits_of(network, x, batch_size=4096):
    out = []
    for start in range(0, len(x), batch_size):
        out.append(
            np.asarray(
                ops.convert_to_numpy(
                    network(x[start : start + batch_size], training=False)
                ),
                dtype="float64",
            )
        )
    return np.concatenate(out)


def train_teacher(setting, profile):
    keras.utils.set_random_seed(0)
    teacher = setting.make_teacher()
    teacher.compile(
        optimizer=keras.optimizers.Adam(profile["learning_rate"]),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    x, y = setting.teacher_data
    start = time.perf_counter()
    teacher.fit(
        x,
        y,
        epochs=setting.teacher_epochs,
        batch_size=profile["batch_size"],
        verbose=0,
    )
    seconds = time.perf_counter() - start
    setting.teacher_logits = {
        "transfer": logits_of(teacher, setting.transfer[0]),
        "validation": logits_of(teacher, setting.validation[0]),
        "test": logits_of(teacher, setting.test[0]),
        "train": logits_of(teacher, x),
    }
    x_tr, labels, _ = setting.transfer
    if labels is None:  # unlabelled transfer: hard labels = teacher argmax
        labels = setting.teacher_logits["transfer"].argmax(1)
    setting.transfer_labels = labels.astype("int32")
    setting.val_probs = scipy.special.softmax(
        setting.teacher_logits["validation"], axis=1
    )
    stats = {
        "train_accuracy": _accuracy(setting.teacher_logits["train"], y),
        "validation_accuracy": _accuracy(
            setting.teacher_logits["validation"], setting.validation[1]
        ),
        "test_accuracy": _accuracy(
            setting.teacher_logits["test"], setting.test[1]
        ),
        "validation_brier": closeness(
            setting.val_probs, setting.validation[1], "brier"
        ),
        "transfer_mean_confidence": float(
            scipy.special.softmax(setting.teacher_logits["transfer"], 1)
            .max(1)
            .mean()
        ),
        "validation_mean_confidence": float(setting.val_probs.max(1).mean()),
        "seconds": seconds,
    }
    if setting.bayes is not None:
        stats.update(
            _bayes_metrics(
                setting.bayes, setting.test[0], setting.teacher_logits["test"]
            )
        )
    return stats


def _accuracy(logits, labels):
    return float(np.mean(np.argmax(logits, 1) == np.asarray(labels)))


def _bayes_metrics(task, x, logits):
    """Exact distances to p* and excess risk over the Bayes classifier."""
    p_star = task.bayes_probs(x)
    log_q = scipy.special.log_softmax(logits, axis=1)
    q = np.exp(log_q)
    predicted = q.argmax(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        kl = np.sum(
            np.where(p_star > 0, p_star * (np.log(p_star) - log_q), 0.0), 1
        )
    return {
        "excess_risk": float(
            np.mean(p_star.max(1) - p_star[np.arange(len(x)), predicted])
        ),
        "bayes_accuracy": float(p_star.max(1).mean()),
        "kl_to_bayes": float(kl.mean()),
        "sq_dist_to_bayes": float(np.mean(np.sum((q - p_star) ** 2, 1))),
    }


class Trainer:
    """Trains students of one setting through one compiled step per family."""

    def __init__(self, setting, profile):
        self.setting = setting
        self.profile = profile
        self.models = {}
        self.initial = {}
        k = setting.num_classes
        teacher = setting.teacher_logits["transfer"].astype("float32")
        self.targets = {
            "transfer": (
                setting.transfer[0],
                kp.pack_targets(teacher, setting.transfer_labels),
            ),
            # Student alone: CE on labelled data; the teacher part is unused.
            "alone": (
                setting.alone[0],
                kp.pack_targets(
                    np.zeros((len(setting.alone[1]), k), "float32"),
                    setting.alone[1],
                ),
            ),
        }

    def _model(self, family):
        if family not in self.models:
            network = self.setting.make_student()
            model = HarnessModel(network, family, self.setting.num_classes)
            model.compile(
                optimizer=keras.optimizers.Adam(self.profile["learning_rate"])
            )
            self.models[family] = model
        return self.models[family]

    def _initial_weights(self, seed):
        if seed not in self.initial:
            keras.utils.set_random_seed(seed)
            self.initial[seed] = self.setting.make_student().get_weights()
        return self.initial[seed]

    def train(self, method, hp, seed):
        """Trains one student; returns the metrics dict of the record."""
        family = METHODS[method][1]
        model = self._model(family)
        model.network.set_weights(self._initial_weights(seed))
        for variable in model.optimizer.variables:
            if not variable.path.endswith("learning_rate"):
                variable.assign(ops.zeros(variable.shape, variable.dtype))
        model.set_hyperparameters(
            family_hyperparameters(method, hp), self.setting.num_classes
        )
        x, y = self.targets["alone" if method == "ce" else "transfer"]
        keras.utils.set_random_seed(seed)
        start = time.perf_counter()
        history = model.fit(
            x,
            y,
            epochs=self.setting.student_epochs,
            batch_size=self.profile["batch_size"],
            shuffle=True,
            verbose=0,
        )
        seconds = time.perf_counter() - start
        val_logits = logits_of(model.network, self.setting.validation[0])
        test_logits = logits_of(model.network, self.setting.test[0])
        record = {
            "validation_accuracy": _accuracy(
                val_logits, self.setting.validation[1]
            ),
            "test_accuracy": _accuracy(test_logits, self.setting.test[1]),
            "final_loss": float(history.history["loss"][-1]),
            "seconds": seconds,
        }
        if not math.isfinite(record["final_loss"]):
            record["diverged"] = True
        if self.setting.bayes is not None:
            record.update(
                _bayes_metrics(
                    self.setting.bayes, self.setting.test[0], test_logits
                )
            )
        return record


# --------------------------------------------------------------------------
# Results store: one JSON, appended under a lock, resumable.
# --------------------------------------------------------------------------


class Store:
    """Records keyed by strings in one JSON file; safe for parallel runs."""

    def __init__(self, path):
        self.path = Path(path)
        digest = hashlib.sha1(str(self.path.resolve()).encode()).hexdigest()
        self.lock_path = Path(tempfile.gettempdir()) / f"accuracy-{digest}.lock"
        self.records = self._read().get("records", {})

    def _read(self):
        if not self.path.exists():
            return {"records": {}}
        return json.loads(self.path.read_text())

    @contextlib.contextmanager
    def _locked(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.lock_path, "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def get(self, key):
        return self.records.get(key)

    def put(self, key, record, meta=None):
        with self._locked():
            data = self._read()
            data.setdefault("records", {})[key] = record
            if meta is not None:
                data.setdefault("meta", {}).update(meta)
            tmp = self.path.with_suffix(".json.tmp")
            tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
            os.replace(tmp, self.path)
            self.records = data["records"]

    def data(self):
        return self._read()

    def drop_prefix(self, prefix):
        with self._locked():
            data = self._read()
            records = data.get("records", {})
            stale = [k for k in records if k.startswith(prefix)]
            for k in stale:
                del records[k]
            tmp = self.path.with_suffix(".json.tmp")
            tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
            os.replace(tmp, self.path)
            self.records = records
        return len(stale)


def _short(text, width=60):
    return text if len(text) <= width else text[: width - 3] + "..."


def profile_fingerprint(profile):
    """Hash of everything a stored result depends on (not the settings
    list or the number of seeds, which only select records)."""
    relevant = {
        k: v for k, v in profile.items() if k not in ("settings", "seeds")
    }
    relevant["code"] = CODE_VERSION
    text = json.dumps(relevant, sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def record_key(profile_name, backend, *parts):
    return "|".join([profile_name, backend, *map(str, parts)])


def hp_key(hp):
    return json.dumps(hp, sort_keys=True, separators=(",", ":"))


# --------------------------------------------------------------------------
# The run.
# --------------------------------------------------------------------------


class Progress:
    def __init__(self, verbose=True):
        self.start = time.perf_counter()
        self.verbose = verbose

    def __call__(self, message):
        if self.verbose:
            elapsed = time.perf_counter() - self.start
            print(f"[{elapsed:7.1f}s] {message}", flush=True)


def run_setting(name, profile_name, profile, store, backend, log):
    setting = build_setting(name, profile)
    key = lambda *parts: record_key(profile_name, backend, name, *parts)  # noqa: E731
    log(f"{name}: training the teacher")
    teacher_stats = train_teacher(setting, profile)
    store.put(key("teacher"), teacher_stats)
    log(
        f"{name}: teacher test accuracy {teacher_stats['test_accuracy']:.4f}, "
        f"validation Brier {teacher_stats['validation_brier']:.4f} "
        f"({teacher_stats['seconds']:.1f} s)"
    )
    store.put(
        key("setting"),
        {
            "title": setting.title,
            "teacher": setting.teacher_desc,
            "student": setting.student_desc,
            "transfer_size": int(len(setting.transfer[0])),
            "transfer_labels": setting.transfer[2],
            "alone_size": int(len(setting.alone[0])),
            "student_epochs": setting.student_epochs,
            "teacher_epochs": setting.teacher_epochs,
            "teacher_train_size": int(len(setting.teacher_data[0])),
            "validation_size": int(len(setting.validation[0])),
            "test_size": int(len(setting.test[0])),
            "gaussian": None
            if setting.bayes is None
            else setting.bayes.get_config(),
        },
    )
    trainer = Trainer(setting, profile)
    methods = method_names(profile)
    seeds = list(range(profile["seeds"]))

    def train(method, hp, seed, purpose):
        family = METHODS[method][1]
        harness_hp = family_hyperparameters(method, hp)
        data = "alone" if method == "ce" else "transfer"
        k = key("run", family, data, hp_key(harness_hp), f"seed={seed}")
        record = store.get(k)
        if record is None:
            record = trainer.train(method, hp, seed)
            store.put(k, record)
            log(
                f"{name}: {purpose} {method} {_short(hp_key(hp))} "
                f"seed={seed}: "
                f"val {record['validation_accuracy']:.4f} test "
                f"{record['test_accuracy']:.4f} ({record['seconds']:.1f} s)"
            )
        return record

    # 1. Tune every baseline on the validation split, same budget each.
    chosen = {"ce": {}}
    for method in ("kd", "kd_ce", "dkd", "lskd", "poly1"):
        needed = method in methods or (
            method == "kd" and any(m.startswith("pt_") for m in methods)
        )
        if not needed:
            continue
        if profile["tune_budget"] == 0:
            chosen[method] = CROSS_FIXED[method]
            continue
        grid = subsample_grid(GRIDS[method], profile["tune_budget"])
        scores = []
        for hp in grid:
            record = train(method, hp, TUNE_SEED, "tune")
            scores.append(record["validation_accuracy"])
        chosen[method] = grid[int(np.argmax(scores))]
        store.put(
            key("tuning", method),
            {
                "grid": grid,
                "validation_accuracy": scores,
                "chosen": chosen[method],
            },
        )
    kd_temperature = chosen.get("kd", {"temperature": 1.0})["temperature"]

    # 2. PTLoss coefficients from the proxy teacher (no training).
    val_x, val_y = setting.validation
    selections = {}
    for method in methods:
        if not method.startswith("pt_"):
            continue
        order = int(method.split("_")[1][1:])
        mode = method.split("_")[2]
        tune_t = method.endswith("_tuneT")
        k = key("selection", method, f"T={kd_temperature}")
        result = store.get(k)
        if result is None:
            selection = select_coefficients(
                setting.val_probs,
                val_y,
                order=order,
                mode=mode,
                metric="brier",
                temperature=kd_temperature,
                tune_temperature=tune_t,
                seed=0,
                verbose=0,
                **profile["selection"],
            )
            result = selection.to_dict()
            for bulky in (
                "candidates",
                "candidate_temperatures",
                "candidate_scores",
                "history",
            ):
                result.pop(bulky, None)
            store.put(k, result)
            log(
                f"{name}: selected {method} at T={result['temperature']:.3g} "
                f"in {result['wall_time']:.2f} s: proxy Brier "
                f"{result['proxy_score']:.4f} vs teacher "
                f"{result['teacher_score']:.4f}"
            )
        selections[method] = result
        chosen[method] = {
            "coefficients": result["coefficients"],
            "temperature": result["temperature"],
        }

    # 3. Final runs: every method, chosen hyper-parameters, all seeds.
    for method in methods:
        for seed in seeds:
            train(method, chosen[method], seed, "final")
    store.put(key("chosen"), {m: chosen[m] for m in methods})

    # 4. Selection quality: an M = 1 coefficient grid trained exhaustively.
    grid_seeds = list(range(min(profile["grid_seeds"], profile["seeds"])))
    if profile["grid"] and grid_seeds:
        grid_rows = []
        for eps in profile["grid"]:
            hp = {"coefficients": [eps], "temperature": kd_temperature}
            accs = [
                train("pt_m1_shared", hp, s, "grid")["test_accuracy"]
                for s in grid_seeds
            ]
            proxy = proxy_teacher(
                setting.val_probs,
                [eps],
                temperature=kd_temperature,
                detemper=True,
            )
            row = {
                "epsilon": eps,
                "test_accuracy": accs,
                "validation_brier": closeness(proxy, val_y, "brier"),
            }
            if setting.bayes is not None:
                p_star = setting.bayes.bayes_probs(val_x)
                row["sq_dist_to_bayes"] = float(
                    np.mean(np.sum((proxy - p_star) ** 2, 1))
                )
            grid_rows.append(row)
        store.put(
            key("grid"),
            {
                "temperature": kd_temperature,
                "seeds": grid_seeds,
                "rows": grid_rows,
            },
        )
    log(f"{name}: done")


def _command(args):
    command = timing.command_line(script=__file__, argv=args.argv)
    return f"KERAS_BACKEND={keras.backend.backend()} {command}"


def run(args):
    backend = keras.backend.backend()
    profile_name = args.profile
    profile = dict(PROFILES[profile_name])
    if args.settings:
        profile["settings"] = args.settings
    if args.seeds:
        profile["seeds"] = args.seeds
    store = Store(args.json)
    fingerprint = profile_fingerprint(profile)
    prefix = record_key(profile_name, backend, "")
    old_meta = store.get(record_key(profile_name, backend, "meta")) or {}
    old = old_meta.get(f"{profile_name}|{backend}", {}).get("fingerprint")
    if old is not None and old != fingerprint:
        dropped = store.drop_prefix(prefix)
        print(
            f"profile changed since the stored run ({old} -> {fingerprint}): "
            f"dropped {dropped} stale records of {prefix!r}"
        )
    meta = {
        f"{profile_name}|{backend}": {
            "command": _command(args),
            "machine": timing.describe_machine(),
            "date": timing.utc_now(),
            "profile": profile,
            "fingerprint": fingerprint,
        }
    }
    store.put(record_key(profile_name, backend, "meta"), meta)
    log = Progress(verbose=not args.silent)
    log(
        f"profile={profile_name} backend={backend} settings="
        f"{profile['settings']} -> {args.json}"
    )
    for name in profile["settings"]:
        run_setting(name, profile_name, profile, store, backend, log)
    store.put(
        record_key(profile_name, backend, "finished"),
        {"date": timing.utc_now(), "seconds": time.perf_counter() - log.start},
    )
    log("all settings done")


# --------------------------------------------------------------------------
# Report: summaries and markdown from the JSON.
# --------------------------------------------------------------------------


def _mean_std(values):
    values = np.asarray(values, dtype="float64")
    if values.size == 0:
        return float("nan"), float("nan")
    std = float(values.std(ddof=1)) if values.size > 1 else 0.0
    return float(values.mean()), std


def summarize(records, profile_name, backend, profile):
    """Per setting: teacher, chosen hyper-parameters, seeds' metrics."""

    def get(*parts):
        return records.get(record_key(profile_name, backend, *parts))

    out = {}
    for name in profile["settings"]:
        teacher = get(name, "teacher")
        chosen = get(name, "chosen")
        if teacher is None or chosen is None:
            continue
        rows = {}
        for method in sorted(chosen, key=list(METHODS).index):
            hp = chosen[method]
            family = METHODS[method][1]
            harness_hp = family_hyperparameters(method, hp)
            data = "alone" if method == "ce" else "transfer"
            runs = [
                get(name, "run", family, data, hp_key(harness_hp), f"seed={s}")
                for s in range(profile["seeds"])
            ]
            runs = [r for r in runs if r is not None]
            rows[method] = {
                "hp": hp,
                "runs": runs,
                "test": _mean_std([r["test_accuracy"] for r in runs]),
                "selection": get(
                    name,
                    "selection",
                    method,
                    f"T={chosen.get('kd', {}).get('temperature', 1.0)}",
                )
                if method.startswith("pt_")
                else None,
            }
        out[name] = {
            "setting": get(name, "setting"),
            "teacher": teacher,
            "rows": rows,
            "grid": get(name, "grid"),
            "tuning": {
                m: get(name, "tuning", m)
                for m in GRIDS
                if get(name, "tuning", m)
            },
        }
    return out


def _pct(mean_std, digits=1):
    mean, std = mean_std
    if not math.isfinite(mean):
        return "-"
    return f"{100 * mean:.{digits}f} ± {100 * std:.{digits}f}"


def _hp_text(method, hp):
    if method == "ce":
        return "-"
    if "coefficients" in hp:
        eps = np.asarray(hp["coefficients"], dtype="float64")
        if eps.ndim == 2:
            text = "class-wise, mean " + ", ".join(
                f"{v:.2g}" for v in eps.mean(0)
            )
        else:
            text = "ε = " + ", ".join(f"{v:.2g}" for v in eps)
        return f"{text}; T = {hp['temperature']:.3g}"
    names = {
        "temperature": "T",
        "label_weight": "w",
        "alpha": "α",
        "beta": "β",
        "epsilon": "ε",
    }
    return ", ".join(f"{names.get(k, k)} = {v:g}" for k, v in hp.items())


def selection_quality(entry):
    """Selected M = 1 coefficient vs the grid oracle, and Spearman rho."""
    grid = entry["grid"]
    rows = entry["rows"]
    if not grid or "pt_m1_shared" not in rows:
        return None
    seeds = grid["seeds"]
    grid_means = [float(np.mean(r["test_accuracy"])) for r in grid["rows"]]
    brier = [r["validation_brier"] for r in grid["rows"]]
    best = int(np.argmax(grid_means))
    runs = rows["pt_m1_shared"]["runs"][: len(seeds)]
    selected = float(np.mean([r["test_accuracy"] for r in runs]))
    rho, p_value = scipy.stats.spearmanr(brier, grid_means)
    selection = rows["pt_m1_shared"]["hp"]
    result = {
        "selected_epsilon": float(np.ravel(selection["coefficients"])[0]),
        "selected_accuracy": selected,
        "oracle_epsilon": grid["rows"][best]["epsilon"],
        "oracle_accuracy": grid_means[best],
        "gap": grid_means[best] - selected,
        "spearman": float(rho),
        "p_value": float(p_value),
        "num_seeds": len(seeds),
        "num_points": len(grid_means),
    }
    if "sq_dist_to_bayes" in grid["rows"][0]:
        exact = [r["sq_dist_to_bayes"] for r in grid["rows"]]
        result["spearman_exact"] = float(
            scipy.stats.spearmanr(exact, grid_means)[0]
        )
    return result


def plot_selection(summary, path):
    """Per setting: student accuracy and proxy Brier across the grid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n, e in summary.items() if e["grid"]]
    if not names:
        return None
    columns = min(3, len(names))
    rows = math.ceil(len(names) / columns)
    fig, axes = plt.subplots(
        rows, columns, figsize=(4.6 * columns, 3.4 * rows), squeeze=False
    )
    for ax in axes.ravel()[len(names) :]:
        ax.set_visible(False)
    for ax, name in zip(axes.ravel(), names, strict=False):
        grid = summary[name]["grid"]
        eps = [r["epsilon"] for r in grid["rows"]]
        # Evenly spaced positions labelled with the grid values.
        position = np.arange(len(eps))
        acc = [100 * np.mean(r["test_accuracy"]) for r in grid["rows"]]
        err = [100 * np.std(r["test_accuracy"]) for r in grid["rows"]]
        brier = [r["validation_brier"] for r in grid["rows"]]
        ax.errorbar(
            position,
            acc,
            yerr=err,
            color="C0",
            marker="o",
            capsize=2,
            label="student test accuracy",
        )
        ax.set_xticks(position, [f"{e:g}" for e in eps])
        ax.set_xlabel(f"ε (M = 1, shared), T = {grid['temperature']:g}")
        ax.set_ylabel("student test accuracy (%)", color="C0")
        twin = ax.twinx()
        twin.plot(
            position,
            brier,
            color="C1",
            marker="s",
            linestyle="--",
            label="proxy validation Brier",
        )
        twin.set_ylabel("proxy val. Brier (lower = closer)", color="C1")
        quality = selection_quality(summary[name])
        title = name
        if quality:
            selected = float(
                np.interp(quality["selected_epsilon"], eps, position)
            )
            ax.axvline(selected, color="C2", linestyle=":")
            title += (
                f": Spearman ρ = {quality['spearman']:.2f}; "
                f"selected ε = {quality['selected_epsilon']:.2g} (green)"
            )
        ax.set_title(title, fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def _cross_check_section(records, meta):
    backends = [
        b for b in BACKENDS if record_key("cross", b, "meta") in records
    ]
    if not backends:
        return []
    profile = CROSS
    summaries = {b: summarize(records, "cross", b, profile) for b in backends}
    reference = "jax" if "jax" in backends else backends[0]
    lines = [
        "### Cross-check on the other backends",
        "",
        "Same settings, fixed hyper-parameters (KD T = 4; DKD α = 1, β = 4, "
        "T = 4; PTLoss M = 5 shared at T = 4, coefficients selected on each "
        "backend's own teacher), "
        f"{profile['seeds']} seeds, the full run's epochs and sizes. "
        "Each backend trains its own teacher. A cell agrees when the "
        f"difference from {reference} is within 2 standard errors "
        "(sqrt(s1²/n1 + s2²/n2)).",
        "",
    ]
    for b in backends:
        key = record_key("cross", b, "meta")
        entry = records[key].get(f"cross|{b}", {})
        lines.append(
            f"- `{b}`: `{entry.get('command', '?')}` ({entry.get('date', '?')})"
        )
    lines.append("")
    headers = ["setting", "method"] + [f"{b} test acc (%)" for b in backends]
    headers += [
        f"{b} − {reference} (agree?)" for b in backends if b != reference
    ]
    rows = []
    agree_all = True
    for name in profile["settings"]:
        for method in profile["methods"]:
            cells, stats = [], {}
            for b in backends:
                entry = summaries[b].get(name)
                row = entry["rows"].get(method) if entry else None
                if row is None or not row["runs"]:
                    cells.append("-")
                    continue
                accs = [r["test_accuracy"] for r in row["runs"]]
                stats[b] = accs
                cells.append(_pct(_mean_std(accs)))
            diffs = []
            for b in backends:
                if b == reference:
                    continue
                if b not in stats or reference not in stats:
                    diffs.append("-")
                    continue
                a, r = np.asarray(stats[b]), np.asarray(stats[reference])
                diff = a.mean() - r.mean()
                se = math.sqrt(a.var(ddof=1) / a.size + r.var(ddof=1) / r.size)
                ok = abs(diff) <= 2 * se + 1e-12
                agree_all &= ok
                diffs.append(f"{100 * diff:+.1f} ({'yes' if ok else 'NO'})")
            rows.append([name, METHODS[method][0]] + cells + diffs)
        rows.append(
            [name, "teacher"]
            + [
                f"{100 * summaries[b][name]['teacher']['test_accuracy']:.1f}"
                if name in summaries[b]
                else "-"
                for b in backends
            ]
            + ["" for b in backends if b != reference]
        )
    lines.append(
        timing.markdown_table(headers, rows, "ll" + "r" * (len(headers) - 2))
    )
    lines.append("")
    lines.append(
        "All cells agree within seed noise."
        if agree_all
        else "Some cells differ by more than 2 standard errors (marked NO)."
    )
    return lines


def write_report(json_path, md_path, png_path, profile_name, backend):
    data = Store(json_path).data()
    records = data.get("records", {})
    profile = PROFILES[profile_name]
    meta_record = records.get(record_key(profile_name, backend, "meta"), {})
    meta = meta_record.get(f"{profile_name}|{backend}", {})
    # The settings and seeds of the code's profile, in its order, so that a
    # run of `--settings` subsets still reports every finished setting.
    profile = dict(meta.get("profile", profile))
    profile["settings"] = PROFILES[profile_name]["settings"]
    summary = summarize(records, profile_name, backend, profile)
    finished = records.get(record_key(profile_name, backend, "finished"))
    png = plot_selection(summary, png_path)
    machine = meta.get("machine", {})
    try:
        png_link = png_path.resolve().relative_to(ROOT)
    except ValueError:
        png_link = png_path
    lines = [
        "## Accuracy: PTLoss against tuned distillation baselines",
        "",
        f"Generated by `python benchmarks/accuracy.py` from `{_rel(json_path)}`"
        " (never edited by hand).",
        "",
        f"- Command: `{meta.get('command', '?')}`, then "
        "`python benchmarks/report.py`; other backends: "
        "`KERAS_BACKEND=torch python benchmarks/accuracy.py --cross-check` "
        "(and tensorflow, jax).",
        f"- Backend: `{backend}`; machine: {machine.get('cpu', '?')}, "
        f"{machine.get('platform', '?')}, Python "
        f"{machine.get('python', '?')}, "
        + ", ".join(
            f"{k} {v}" for k, v in machine.get("packages", {}).items() if v
        ),
        f"- Date: {meta.get('date', '?')}"
        + (
            f"; run finished {finished['date']} after "
            f"{finished['seconds'] / 60:.1f} min."
            if finished
            else "; **run not finished** (partial results below)."
        ),
        "",
        "### Protocol",
        "",
        f"- Students: Adam (lr {profile['learning_rate']}), batch "
        f"{profile['batch_size']}, a fixed number of epochs per setting "
        "(table below), no early stopping; every method trains through the "
        "same `compute_loss` (hyper-parameters in model variables). "
        "Teachers: same optimiser, seed 0, cross-entropy. One intra-op "
        "thread for torch.",
        "- Test accuracy: mean ± std (sample) over seeds "
        f"0..{profile['seeds'] - 1} (student initialisation and batch "
        "order; same teacher).",
        f"- Tuning: each baseline trains {profile['tune_budget']} "
        "configurations (one tuning seed, evenly spaced over its grid) and "
        "keeps the best validation accuracy. Grids: "
        + "; ".join(
            f"{METHODS[m][0]} {_grid_text(m, profile['tune_budget'])}"
            for m in GRIDS
        )
        + ". The student alone (CE) has nothing to tune.",
        "- PTLoss: temperature = KD's tuned T (so it costs no extra "
        "training), coefficients from `select_coefficients` (Brier "
        "closeness of the proxy teacher on the same validation split, "
        "20% of it held out by the selector) — no student is trained to "
        "choose them. 'T by proxy' also picks T that way.",
        "- Unlabelled transfer settings: hard-label terms (KD + CE, DKD, "
        "Poly-1) use the teacher's argmax; the student alone trains on the "
        "teacher's labelled training split.",
        "",
    ]
    if not summary:
        lines.append("No finished setting yet.")
    else:
        lines += _accuracy_table(summary)
        lines += _settings_table(summary)
        lines += _hp_table(summary)
        lines += _bayes_table(summary)
        lines += _quality_table(summary, png_link if png else None)
        lines += _targets(summary)
    if profile_name == "full":
        lines += [""] + _cross_check_section(records, meta)
    timing.write_markdown(md_path, "\n".join(lines))
    return summary


def _grid_text(method, budget):
    """A tuning grid as `(w, T) in {(0.1, 1), ...}`."""
    grid = subsample_grid(GRIDS[method], budget)
    names = {
        "temperature": "T",
        "label_weight": "w",
        "alpha": "α",
        "beta": "β",
        "epsilon": "ε",
    }
    keys = [k for k in grid[0] if len({hp[k] for hp in grid}) > 1]
    fixed = [k for k in grid[0] if k not in keys]
    label = ", ".join(names[k] for k in keys)
    values = ", ".join(
        "(" + ", ".join(f"{hp[k]:g}" for k in keys) + ")"
        if len(keys) > 1
        else f"{hp[keys[0]]:g}"
        for hp in grid
    )
    text = f"{'(' + label + ')' if len(keys) > 1 else label} ∈ {{{values}}}"
    if fixed:
        text += ", " + ", ".join(f"{names[k]} = {grid[0][k]:g}" for k in fixed)
    return text


def _rel(path):
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def _accuracy_table(summary):
    names = list(summary)
    headers = ["method"] + names
    rows = [
        ["Teacher"]
        + [f"{100 * summary[n]['teacher']['test_accuracy']:.1f}" for n in names]
    ]
    methods = []
    for n in names:
        methods += [m for m in summary[n]["rows"] if m not in methods]
    for method in methods:
        cells = []
        for n in names:
            row = summary[n]["rows"].get(method)
            if row is None:
                cells.append("-")
                continue
            text = _pct(row["test"])
            kd = summary[n]["rows"].get("kd")
            if method.startswith("pt_") and kd is not None:
                text += f" ({100 * (row['test'][0] - kd['test'][0]):+.1f})"
            cells.append(text)
        rows.append([METHODS[method][0]] + cells)
    return [
        "### Test accuracy (%), mean ± std over seeds",
        "",
        "PTLoss rows show the difference from tuned KD in brackets.",
        "",
        timing.markdown_table(headers, rows, "l" + "r" * len(names)),
        "",
    ]


def _settings_table(summary):
    headers = [
        "setting",
        "teacher → student (epochs)",
        "teacher train / transfer / val / test",
        "transfer labels",
        "teacher train acc",
        "teacher mean confidence (transfer / val)",
    ]
    rows = []
    for n, e in summary.items():
        s, t = e["setting"], e["teacher"]
        rows.append(
            [
                f"`{n}`: {s['title']}",
                f"{s['teacher']} ({s['teacher_epochs']}) → {s['student']} "
                f"({s['student_epochs']})",
                f"{s['teacher_train_size']} / {s['transfer_size']} / "
                f"{s['validation_size']} / {s['test_size']}",
                s["transfer_labels"],
                f"{100 * t['train_accuracy']:.1f}",
                f"{t['transfer_mean_confidence']:.3f} / "
                f"{t['validation_mean_confidence']:.3f}",
            ]
        )
    return [
        "### Settings",
        "",
        timing.markdown_table(headers, rows, "llllrr"),
        "",
    ]


def _hp_table(summary):
    headers = [
        "setting",
        "method",
        "chosen hyper-parameters",
        "selection time (s)",
        "proxy / teacher val Brier",
    ]
    rows = []
    for n, e in summary.items():
        for method, row in e["rows"].items():
            sel = row["selection"]
            rows.append(
                [
                    n,
                    METHODS[method][0],
                    _hp_text(method, row["hp"]),
                    f"{sel['wall_time']:.2f}" if sel else "",
                    f"{sel['proxy_score']:.4f} / {sel['teacher_score']:.4f}"
                    if sel
                    else "",
                ]
            )
    return [
        "### Chosen hyper-parameters and selection cost",
        "",
        "Selection time is the wall time of `select_coefficients` "
        "(no student training); the baselines' tuning cost is "
        "their tuning budget of full student trainings.",
        "",
        timing.markdown_table(headers, rows, "lllrr"),
        "",
    ]


def _bayes_table(summary):
    lines = []
    for n, e in summary.items():
        if e["setting"].get("gaussian") is None:
            continue
        t = e["teacher"]
        headers = [
            "model",
            "test acc (%)",
            "excess 0-1 risk (%)",
            "KL(p* ‖ q)",
            "E‖q − p*‖²",
        ]
        rows = [
            [
                "Bayes classifier",
                f"{100 * t['bayes_accuracy']:.1f}",
                "0",
                "0",
                "0",
            ]
        ]
        rows.append(
            [
                "Teacher",
                f"{100 * t['test_accuracy']:.1f}",
                f"{100 * t['excess_risk']:.2f}",
                f"{t['kl_to_bayes']:.4f}",
                f"{t['sq_dist_to_bayes']:.4f}",
            ]
        )
        for method, row in e["rows"].items():
            runs = row["runs"]
            if not runs:
                continue
            rows.append(
                [
                    METHODS[method][0],
                    _pct(row["test"]),
                    _pct(_mean_std([r["excess_risk"] for r in runs]), 2),
                    "{:.4f} ± {:.4f}".format(
                        *_mean_std([r["kl_to_bayes"] for r in runs])
                    ),
                    "{:.4f} ± {:.4f}".format(
                        *_mean_std([r["sq_dist_to_bayes"] for r in runs])
                    ),
                ]
            )
        lines += [
            f"### `{n}`: exact closeness to p* and excess risk",
            "",
            "Measured on the test inputs with the exact Bayes posterior p*; "
            "excess risk = E[max p* − p*(student's class)].",
            "",
            timing.markdown_table(headers, rows, "lrrrr"),
            "",
        ]
    return lines


def _quality_table(summary, png):
    headers = [
        "setting",
        "T",
        "selected ε (test acc)",
        "oracle ε (test acc)",
        "gap (points)",
        "Spearman ρ (Brier, acc)",
        "p-value",
    ]
    rows = []
    extra = []
    for n, e in summary.items():
        q = selection_quality(e)
        if q is None:
            continue
        rows.append(
            [
                n,
                f"{e['grid']['temperature']:g}",
                f"{q['selected_epsilon']:.3g} "
                f"({100 * q['selected_accuracy']:.1f})",
                f"{q['oracle_epsilon']:g} ({100 * q['oracle_accuracy']:.1f})",
                f"{100 * q['gap']:.1f}",
                f"{q['spearman']:.2f}",
                f"{q['p_value']:.2g}",
            ]
        )
        if "spearman_exact" in q:
            extra.append(
                f"On `{n}` the Spearman correlation between the proxy's "
                f"exact squared distance to p* (validation inputs) and "
                f"accuracy is {q['spearman_exact']:.2f}."
            )
    if not rows:
        return []
    first = next(e for e in summary.values() if e["grid"])
    grid_text = ", ".join(f"{r['epsilon']:g}" for r in first["grid"]["rows"])
    lines = [
        "### Selection quality (M = 1, shared)",
        "",
        f"Grid ε ∈ {{{grid_text}}} "
        f"at KD's tuned T, each trained with seeds "
        f"0..{len(first['grid']['seeds']) - 1}; the oracle is the grid "
        "point with the best mean test accuracy; the selected ε is compared "
        "on the same seeds. Spearman ρ is between the proxy teacher's "
        "validation Brier score and the student's mean test accuracy across "
        "the grid (target ≤ −0.7: a closer proxy gives a better student).",
        "",
        timing.markdown_table(headers, rows, "lrrrrrr"),
        "",
    ]
    lines += extra + ([""] if extra else [])
    if png:
        lines += [f"![selection quality]({png})", ""]
    return lines


def _targets(summary):
    diffs, misses = [], []
    for n, e in summary.items():
        kd, pt = e["rows"].get("kd"), e["rows"].get(HEADLINE)
        if not kd or not pt or not kd["runs"] or not pt["runs"]:
            continue
        diff = pt["test"][0] - kd["test"][0]
        diffs.append(diff)
        if diff < -kd["test"][1]:
            misses.append(
                f"`{n}` ({100 * diff:+.1f} vs std {100 * kd['test'][1]:.1f})"
            )
    qualities = [q for q in map(selection_quality, summary.values()) if q]
    lines = ["### Targets of issue 5", ""]
    if diffs:
        mean = float(np.mean(diffs))
        lines.append(
            f"- PTLoss (M = 5, shared, selected) − tuned KD, averaged over "
            f"{len(diffs)} settings: {100 * mean:+.2f} points (target ≥ "
            f"+1.0): **{'met' if mean >= 0.01 else 'missed'}**."
        )
        lines.append(
            "- Never below tuned KD by more than one KD standard deviation: "
            + (
                "**met**."
                if not misses
                else "**missed** in " + ", ".join(misses) + "."
            )
        )
    if qualities:
        gaps = [q["gap"] for q in qualities]
        rhos = [q["spearman"] for q in qualities]
        lines.append(
            "- Selected within 0.5 points of the grid oracle: "
            f"{sum(g <= 0.005 for g in gaps)}/{len(gaps)} settings (gaps "
            + ", ".join(f"{100 * g:.1f}" for g in gaps)
            + f"): **{'met' if max(gaps) <= 0.005 else 'missed'}**."
        )
        lines.append(
            "- Spearman(closeness, accuracy) ≤ −0.7: "
            f"{sum(r <= -0.7 for r in rhos)}/{len(rhos)} settings (ρ = "
            + ", ".join(f"{r:.2f}" for r in rhos)
            + f"): **{'met' if max(rhos) <= -0.7 else 'missed'}**."
        )
    lines.append("")
    return lines


# --------------------------------------------------------------------------
# Command line.
# --------------------------------------------------------------------------


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--quick",
        action="store_true",
        help="tiny end-to-end run (two small settings, 2 seeds, 2 epochs); "
        "writes under benchmarks/results/tmp/ unless --output-dir is given",
    )
    mode.add_argument(
        "--cross-check",
        action="store_true",
        help="the smaller fixed-hyper-parameter run used to compare "
        "backends; appended to the same JSON as the full table",
    )
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="regenerate the markdown and PNG from the JSON, train nothing",
    )
    parser.add_argument(
        "--settings",
        nargs="+",
        choices=FULL["settings"],
        help="run only these settings (default: the profile's)",
    )
    parser.add_argument(
        "--seeds", type=int, help="number of seeds (default: the profile's)"
    )
    parser.add_argument(
        "--output-dir",
        type=Path,
        help="folder for accuracy.json/.md/.png (default: "
        "benchmarks/results, or benchmarks/results/tmp for --quick)",
    )
    parser.add_argument("--silent", action="store_true", help="no progress")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    args.argv = argv
    args.profile = (
        "quick" if args.quick else "cross" if args.cross_check else "full"
    )
    if args.output_dir is None:
        args.output_dir = timing.QUICK_RESULTS if args.quick else timing.RESULTS
    args.json = args.output_dir / f"{NAME}.json"
    args.md = args.output_dir / f"{NAME}.md"
    args.png = args.output_dir / f"{NAME}_selection.png"
    return args


def limit_threads(num_threads=1):
    """One intra-op thread for torch: on a shared 2-core machine its default
    thread pool spins and makes small matmuls ~1000x slower (measured)."""
    if keras.backend.backend() == "torch":
        import torch

        previous = torch.get_num_threads()
        torch.set_num_threads(num_threads)
        return previous
    return None


def main(argv=None):
    args = parse_args(argv)
    backend = keras.backend.backend()
    limit_threads(1)
    if not args.report_only:
        run(args)
    # The markdown section belongs to the full table (cross-check runs only
    # add their section to it).
    report_profile = "quick" if args.quick else "full"
    report_backend = backend
    if args.profile == "cross" or args.report_only:
        report_backend = _main_backend(args.json, report_profile, backend)
    write_report(args.json, args.md, args.png, report_profile, report_backend)
    print(f"wrote {args.json}, {args.md}")


def _main_backend(json_path, profile_name, default):
    if not Path(json_path).exists():
        return default
    records = Store(json_path).data().get("records", {})
    for b in BACKENDS:
        if record_key(profile_name, b, "meta") in records:
            return b
    return default


if __name__ == "__main__":
    main()
