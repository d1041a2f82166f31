"""Accuracy benchmark: profiles, methods, data, teachers and settings.

What every run of `benchmarks/accuracy.py` is made of: the profiles (sizes
and budgets; `full` reproduces the published table), the methods and their
tuning grids, the networks, the five settings (splits, teacher, student
builder) and the teacher's training and metrics.
"""

import json
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import scipy.special  # noqa: E402
from accuracy_data import digits_splits  # noqa: E402
from accuracy_data import gaussian_splits  # noqa: E402
from keras import ops  # noqa: E402

from keras_ptloss.datasets import load_mnist1d  # noqa: E402
from keras_ptloss.datasets import noisy_labels  # noqa: E402
from keras_ptloss.proxy import closeness  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
NAME = "accuracy"
# Bump when a change to this script invalidates stored results (2: every
# method trains through keras_ptloss.Distiller; NLL and ECE recorded).
CODE_VERSION = 2
MAX_ORDER = 5
TUNE_SEED = 10_000
BACKENDS = ("jax", "tensorflow", "torch")

# --------------------------------------------------------------------------
# Profiles: sizes and budgets. `full` reproduces the published table.
# --------------------------------------------------------------------------

# The five settings of the main tables.
MAIN_SETTINGS = (
    "mnist1d_self",
    "mnist1d_unlabelled",
    "digits",
    "gaussian",
    "mnist1d_noisy",
)
# The teacher-scale sweep: MNIST-1D, unlabelled transfer split, the same
# student and splits, teachers in order of test accuracy (the fourth is
# `mnist1d_unlabelled`'s CNN; the wide MLP is an over-confident one).
TEACHER_SWEEP = (
    "mnist1d_teacher_small",
    "mnist1d_teacher_mlp_wide",
    "mnist1d_teacher_cnn_small",
    "mnist1d_unlabelled",
    "mnist1d_teacher_large",
)
SWEEP_ADDED = tuple(n for n in TEACHER_SWEEP if n != "mnist1d_unlabelled")
# The methods of the sweep's added settings: the student alone, every tuned
# baseline, PTLoss M = 5 training-free (shared) and searched.
SWEEP_METHODS = [
    "ce",
    "kd",
    "kd_ce",
    "dkd",
    "lskd",
    "poly1",
    "pt_m5_shared",
    "pt_m5_searched",
    "pt_m5_searched_std",
]
# MNIST-1D with K = 2 and K = 3 classes (the paper's GLUE tasks have 2-3
# classes; every other setting has 10): super-classes of the ten digits,
# `(K * digit) // 10`, i.e. {0-4, 5-9} and {0-3, 4-6, 7-9}. Grouping keeps
# every example, so the splits, their sizes, the student, the budgets and
# the unlabelled-transfer regime are those of `mnist1d_unlabelled` and only
# K changes; each super-class is a union of digit templates, so the task
# keeps the 10-class task's difficulty in kind. A subset of the digits
# ({0, 1}, {0, 1, 2}) would keep only 20-30% of every split. The `_noisy`
# variants train the teacher on super-class labels with 40% symmetric noise
# (a flipped label becomes another super-class: at K = 2 the teacher's
# labels are 60% right, 40% swapped), as `mnist1d_noisy` does.
SUPERCLASS_SETTINGS = {
    "mnist1d_k2": (2, False),
    "mnist1d_k2_noisy": (2, True),
    "mnist1d_k3": (3, False),
    "mnist1d_k3_noisy": (3, True),
}
NOISE_RATE = 0.4
# The default pipeline profile: the K = 10 settings with a clean and a
# noisy teacher, and the K = 2 / K = 3 ones.
PIPELINE_SETTINGS = (
    "mnist1d_unlabelled",
    "mnist1d_noisy",
    *SUPERCLASS_SETTINGS,
)
# Per-setting profile entries that may be overridden: they only choose
# which records a setting produces (methods, the coefficient grid, the
# search study), never how a record is computed.
SELECTION_KEYS = ("methods", "grid", "search_study")

# The method names the profiles refer to (their rows: METHODS below).
SEARCHED = "pt_m5_searched"
SEARCHED_STD = "pt_m5_searched_std"
PIPELINE = "pt_pipeline"

FULL = {
    "settings": [*MAIN_SETTINGS, *SWEEP_ADDED],
    # Per setting: overrides of SELECTION_KEYS (the sweep's added settings
    # skip the grid and the search study).
    "setting_overrides": {
        name: {"methods": SWEEP_METHODS, "grid": [], "search_study": []}
        for name in SWEEP_ADDED
    },
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
    # Student-aware search (`keras_ptloss.search_coefficients`): its budget
    # is `tune_budget` full student trainings, like each baseline's tuning.
    "search": {"temperatures": [1.0, 2.0, 4.0]},
    # Train every first-rung candidate of the search fully (tuning seed) to
    # compare short-run and full-run accuracy.
    "search_study": ["pt_m5_searched"],
    "ece_bins": 15,
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
    search={"temperatures": [1.0, 4.0], "strengths": [-0.5, 2.0]},
)
CROSS = dict(
    FULL,
    settings=["digits", "gaussian"],
    tune_budget=0,
    grid=[],
    grid_seeds=0,
    search_study=[],
    methods=["ce", "kd", "dkd", "pt_m5_shared"],
)
# The default pipeline (`search_coefficients` as shipped) against the tuned
# baselines and the plain search, at K = 10, 2 and 3.
PIPELINE_PROFILE = dict(
    FULL,
    settings=list(PIPELINE_SETTINGS),
    setting_overrides={},
    grid=[],
    search_study=[],
    methods=["ce", "kd", "kd_ce", "dkd", "lskd", SEARCHED, PIPELINE],
)
PROFILES = {
    "full": FULL,
    "quick": QUICK,
    "cross": CROSS,
    "pipeline": PIPELINE_PROFILE,
}
# Every setting a profile may run (the choices of `--settings`).
ALL_SETTINGS = tuple(
    dict.fromkeys(n for p in PROFILES.values() for n in p["settings"])
)
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


# Method -> (table label, loss family). A family is one Distiller (one
# compiled step) per setting whose hyper-parameters are variables.
METHODS = {
    "ce": ("Student alone (CE)", "ce"),
    "kd": ("KD", "pt"),
    "kd_ce": ("KD + CE", "kd_ce"),
    "dkd": ("DKD", "dkd"),
    "lskd": ("LS-KD", "pt_std"),
    "poly1": ("Poly-1", "poly"),
}
for _order, _mode in PT_VARIANTS:
    METHODS[_pt_name(_order, _mode)] = (f"PTLoss M={_order} {_mode}", "pt")
METHODS[_pt_name(5, "shared", True)] = ("PTLoss M=5 shared, T by proxy", "pt")
# Coefficients and temperature from `search_coefficients` (student-aware):
# on the teacher's logits, and on z-scored logits (vs LS-KD).
METHODS[SEARCHED] = ("PTLoss M=5 searched", "pt")
METHODS[SEARCHED_STD] = ("PTLoss M=5 searched, standardized", "pt_std")
SEARCH_STANDARDIZE = {SEARCHED: False, SEARCHED_STD: True}
# The default pipeline: `search_coefficients` with its defaults (logits and
# z-scored logits, T in 1..8, KD and LS-KD kept to the last rung, the winner
# calibrated on the validation split), one call per seed with the
# baselines' tuning budget in student-epochs; its student is the call's.
METHODS[PIPELINE] = ("PTLoss pipeline (default search, calibrated)", "pipeline")
HEADLINE = _pt_name(5, "shared")
# The baselines tuned on the validation split with `tune_budget` trainings.
TUNED_BASELINES = ("kd", "kd_ce", "dkd", "lskd", "poly1")
# The training data of each family: the student alone trains on the
# labelled split; the label-using losses get the transfer labels.
FAMILY_DATA = {
    "ce": "alone",
    "pt": "transfer",
    "pt_std": "transfer",
    "kd_ce": "transfer_labels",
    "dkd": "transfer_labels",
    "poly": "transfer_labels",
    "pipeline": "transfer",
}


def setting_profile(profile, name):
    """The profile as setting `name` runs it (its overrides applied)."""
    overrides = profile.get("setting_overrides", {}).get(name, {})
    unknown = sorted(set(overrides) - set(SELECTION_KEYS))
    if unknown:
        raise ValueError(
            f"setting_overrides[{name!r}] may only set {SELECTION_KEYS}; "
            f"received {unknown}"
        )
    return dict(profile, **overrides)


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


def family_hyperparameters(method, hp):
    """Hyper-parameters as the harness sees them (they key the records).

    KD is PTLoss with zero coefficients and LS-KD PTLoss with zero
    coefficients on standardized logits, so identical trainings (KD, the
    grid's epsilon = 0, a search won by plain KD) are run once.
    """
    if method == "ce":
        return {}
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


def mnist1d_cnn(length, num_classes, channels=32):
    return keras.Sequential(
        [
            keras.Input((length,)),
            keras.layers.Reshape((length, 1)),
            keras.layers.Conv1D(channels, 5, padding="same", activation="relu"),
            keras.layers.Conv1D(channels, 5, strides=2, activation="relu"),
            keras.layers.Conv1D(channels, 5, strides=2, activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(num_classes),
        ]
    )


def mnist1d_cnn_large(length, num_classes):
    """A wider, deeper CNN than `mnist1d_cnn` (4 Conv1D x 64, dense 128)."""
    return keras.Sequential(
        [
            keras.Input((length,)),
            keras.layers.Reshape((length, 1)),
            keras.layers.Conv1D(64, 5, padding="same", activation="relu"),
            keras.layers.Conv1D(64, 5, padding="same", activation="relu"),
            keras.layers.Conv1D(64, 5, strides=2, activation="relu"),
            keras.layers.Conv1D(64, 5, strides=2, activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dense(num_classes),
        ]
    )


# MNIST-1D teachers: setting -> (builder, description). The default is the
# CNN of the main settings.
MNIST1D_TEACHERS = {
    "mnist1d_teacher_small": (lambda: mlp(40, [32], 10), "MLP 40-32-10"),
    "mnist1d_teacher_mlp_wide": (
        lambda: mlp(40, [256, 256], 10),
        "MLP 40-256-256-10",
    ),
    "mnist1d_teacher_cnn_small": (
        lambda: mnist1d_cnn(40, 10, channels=8),
        "CNN (3 Conv1D x 8 channels)",
    ),
    "mnist1d_teacher_large": (
        lambda: mnist1d_cnn_large(40, 10),
        "CNN (2 Conv1D + 2 strided Conv1D x 64 channels, dense 128)",
    ),
}
MNIST1D_DEFAULT_TEACHER = (
    lambda: mnist1d_cnn(40, 10),
    "CNN (3 Conv1D x 32 channels)",
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
        _MNIST1D_CACHE[key] = load_mnist1d(
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
    num_classes = setting.num_classes
    setting.make_student = lambda: mlp(num_features, hidden, num_classes)
    setting.student_desc = "MLP " + "-".join(
        str(n) for n in [num_features, *hidden, num_classes]
    )
    setting.student_epochs = profile["student_epochs"][data_family(name)]
    setting.teacher_epochs = profile["teacher_epochs"][data_family(name)]
    return setting


def superclasses(labels, num_classes):
    """Digit labels 0-9 grouped into `num_classes` contiguous super-classes,
    `(num_classes * digit) // 10` (K = 2: {0-4, 5-9}; K = 3: {0-3, 4-6,
    7-9})."""
    return (num_classes * np.asarray(labels, "int64") // 10).astype("int32")


def _superclass_setting(name, profile):
    """`mnist1d_unlabelled` (or `mnist1d_noisy`) with K super-classes."""
    num_classes, noisy = SUPERCLASS_SETTINGS[name]
    data = {
        split: (x, superclasses(y, num_classes))
        for split, (x, y) in _mnist1d_data(profile).items()
    }
    of_digit = superclasses(np.arange(10), num_classes)
    groups = [
        "{" + ",".join(str(d) for d in np.flatnonzero(of_digit == k)) + "}"
        for k in range(num_classes)
    ]
    title = f"MNIST-1D, K = {num_classes} super-classes " + " ".join(groups)
    if noisy:
        title += f", teacher trained on {NOISE_RATE:.0%} noisy labels"
    setting = Setting(name, title + ", unlabelled transfer", "", num_classes)
    x_train, y_train = data["train"]
    teacher_labels = y_train
    if noisy:
        teacher_labels, _ = noisy_labels(
            y_train, NOISE_RATE, num_classes=num_classes, seed=0
        )
    setting.teacher_data = (x_train, teacher_labels)
    setting.make_teacher = lambda: mnist1d_cnn(40, num_classes)
    setting.teacher_desc = MNIST1D_DEFAULT_TEACHER[1]
    setting.transfer = (data["transfer"][0], None, "teacher argmax")
    setting.alone = (x_train, teacher_labels)
    setting.validation = data["validation"]
    setting.test = data["test"]
    return setting


def _build_setting(name, profile):
    if name in SUPERCLASS_SETTINGS:
        return _superclass_setting(name, profile)
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
                "mnist1d_teacher_small": "MNIST-1D, unlabelled transfer "
                "split, small MLP teacher",
                "mnist1d_teacher_mlp_wide": "MNIST-1D, unlabelled "
                "transfer split, wide MLP teacher",
                "mnist1d_teacher_cnn_small": "MNIST-1D, unlabelled "
                "transfer split, small CNN teacher",
                "mnist1d_teacher_large": "MNIST-1D, unlabelled transfer "
                "split, large CNN teacher",
            }[name],
            "",
            10,
        )
        teacher_labels = y_train
        if name == "mnist1d_noisy":
            teacher_labels, _ = noisy_labels(
                y_train, 0.4, num_classes=10, seed=0
            )
        setting.teacher_data = (x_train, teacher_labels)
        setting.make_teacher, setting.teacher_desc = MNIST1D_TEACHERS.get(
            name, MNIST1D_DEFAULT_TEACHER
        )
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
        data = digits_splits()
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
        splits, task = gaussian_splits(profile["gaussian_samples"])
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
    setting.teacher = teacher
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
        "train_accuracy": accuracy_of(setting.teacher_logits["train"], y),
        "validation_accuracy": accuracy_of(
            setting.teacher_logits["validation"], setting.validation[1]
        ),
        "test_accuracy": accuracy_of(
            setting.teacher_logits["test"], setting.test[1]
        ),
        "test_nll": nll_of(setting.teacher_logits["test"], setting.test[1]),
        "test_ece": ece_of(
            setting.teacher_logits["test"], setting.test[1], profile["ece_bins"]
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
        "test_mean_confidence": float(
            scipy.special.softmax(setting.teacher_logits["test"], 1)
            .max(1)
            .mean()
        ),
        "seconds": seconds,
    }
    if setting.bayes is not None:
        stats.update(
            bayes_metrics(
                setting.bayes, setting.test[0], setting.teacher_logits["test"]
            )
        )
    return stats


def accuracy_of(logits, labels):
    return float(np.mean(np.argmax(logits, 1) == np.asarray(labels)))


def nll_of(logits, labels):
    """Mean negative log-likelihood of integer labels under softmax(logits)."""
    log_q = scipy.special.log_softmax(np.asarray(logits, "float64"), axis=1)
    labels = np.asarray(labels, dtype="int64")
    return float(-np.mean(log_q[np.arange(len(labels)), labels]))


def ece_of(logits, labels, bins=15):
    """Expected calibration error of the top-class confidence.

    `sum_b (n_b / n) |accuracy_b - confidence_b|` over `bins` equal-width
    confidence bins on [0, 1] (right-closed, the first one closed too).
    """
    probs = scipy.special.softmax(np.asarray(logits, "float64"), axis=1)
    confidence = probs.max(1)
    correct = probs.argmax(1) == np.asarray(labels)
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(
        np.searchsorted(edges, confidence, side="left") - 1, 0, None
    )
    total = 0.0
    for b in range(bins):
        members = index == b
        if np.any(members):
            gap = abs(correct[members].mean() - confidence[members].mean())
            total += members.mean() * gap
    return float(total)


def bayes_metrics(task, x, logits):
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


def hp_key(hp):
    """Canonical JSON text of a hyper-parameter dict (keys the records)."""
    return json.dumps(hp, sort_keys=True, separators=(",", ":"))
