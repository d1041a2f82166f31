"""Accuracy benchmark: training of every method, the results store, the run.

Every student trains through one compiled step per loss family whose
hyper-parameters are variables re-assigned between configurations; each
result is appended to the JSON store as it finishes, so an interrupted run
resumes where it stopped.
"""

import contextlib
import fcntl
import hashlib
import json
import math
import os
import tempfile
import time
from pathlib import Path

import keras
import numpy as np
import timing
from accuracy_settings import CODE_VERSION
from accuracy_settings import CROSS_FIXED
from accuracy_settings import FAMILY_DATA
from accuracy_settings import GRIDS
from accuracy_settings import MAX_ORDER
from accuracy_settings import METHODS
from accuracy_settings import NAME
from accuracy_settings import PIPELINE
from accuracy_settings import PROFILES
from accuracy_settings import SEARCH_STANDARDIZE
from accuracy_settings import TUNE_SEED
from accuracy_settings import accuracy_of
from accuracy_settings import bayes_metrics
from accuracy_settings import build_setting
from accuracy_settings import ece_of
from accuracy_settings import family_hyperparameters
from accuracy_settings import hp_key
from accuracy_settings import logits_of
from accuracy_settings import method_names
from accuracy_settings import nll_of
from accuracy_settings import setting_profile
from accuracy_settings import subsample_grid
from accuracy_settings import train_teacher
from keras import ops

import keras_ptloss as kp
from keras_ptloss import select_coefficients
from keras_ptloss.proxy import closeness
from keras_ptloss.proxy import proxy_teacher

# --------------------------------------------------------------------------
# Training: every method through keras_ptloss.Distiller.
# --------------------------------------------------------------------------


def make_loss(family, num_classes):
    """The distillation loss of a family, at neutral hyper-parameters.

    Its hyper-parameters are non-trainable variables of the loss, tracked by
    the Distiller, so `set_hyperparameters` changes them between runs
    without re-tracing the compiled step.
    """
    if family in ("pt", "pt_std"):
        # Class-wise shape so that shared (M,) and class-wise (K, M)
        # coefficients of any order M <= MAX_ORDER fit (zero-padded).
        return kp.PTLoss(
            np.zeros((num_classes, MAX_ORDER)),
            teacher_from_logits=True,
            allow_nonconvex=True,
            standardize=family == "pt_std",
        )
    if family == "ce":
        # Weighted by 0: the student alone is the compiled cross-entropy.
        return kp.KDLoss(teacher_from_logits=True)
    if family == "kd_ce":
        return kp.KDCELoss(teacher_from_logits=True)
    if family == "dkd":
        return kp.DKDLoss(teacher_from_logits=True)
    if family == "poly":
        return kp.Poly1Loss(epsilon=0.0)
    raise ValueError(f"unknown loss family {family!r}")


def not_applicable(method, num_classes):
    """Why `method` cannot train a `num_classes`-class student, or None.

    The method's loss is evaluated once on a dummy batch, so the reason is
    the library's own refusal (logit standardisation, hence LS-KD and the
    standardised search, needs K >= 3). The pipeline chooses its kinds of
    logits itself (`standardize="auto"`): always applicable.
    """
    family = METHODS[method][1]
    if family == "pipeline":
        return None
    loss = make_loss(family, num_classes)
    teacher = np.zeros((1, num_classes), "float32")
    targets = teacher
    if getattr(loss, "needs_labels", False):  # as the Distiller passes them
        targets = {"teacher": teacher, "label": np.zeros((1,), "int32")}
    try:
        loss(targets, teacher)
    except ValueError as error:
        return str(error)
    return None


def padded_coefficients(coefficients, num_classes):
    """`(M,)` or `(K, M)` coefficients as a `(K, MAX_ORDER)` array."""
    eps = np.zeros((num_classes, MAX_ORDER), "float32")
    values = np.asarray(coefficients, "float32")
    values = np.broadcast_to(
        np.atleast_2d(values), (num_classes, values.shape[-1])
    )
    eps[:, : values.shape[-1]] = values
    return eps


def set_hyperparameters(loss, family, hp, num_classes):
    """Assigns one configuration to the loss's variables."""
    if family == "ce":
        return
    if family == "poly":
        loss.set_epsilon(hp.get("epsilon", 0.0))
        return
    loss.set_temperature(hp.get("temperature", 1.0))
    if family in ("pt", "pt_std"):
        loss.set_coefficients(
            padded_coefficients(hp.get("coefficients", [0.0]), num_classes)
        )
    elif family == "kd_ce":
        loss.set_label_weight(hp["label_weight"])
    elif family == "dkd":
        loss.set_alpha(hp["alpha"])
        loss.set_beta(hp["beta"])


class Trainer:
    """Trains the students of one setting, one Distiller per loss family.

    Each family's `keras_ptloss.Distiller` is built and compiled once; a run
    re-initialises the student from a stored per-seed copy of its initial
    weights, zeroes the optimizer's state (moments and step count) and
    assigns the configuration to the loss's variables, so one compiled step
    serves every configuration and seed (a reused Distiller gives the
    result of a fresh one: tested). Teacher outputs are pre-computed once
    per training set with `Distiller.precompute_teacher`.
    """

    def __init__(self, setting, profile):
        self.setting = setting
        self.profile = profile
        self.distillers = {}
        self.initial = {}
        self.data = {}

    def distiller(self, family):
        """The family's compiled Distiller (built on first use)."""
        if family not in self.distillers:
            keras.utils.set_random_seed(0)
            distiller = kp.Distiller(
                self.setting.teacher,
                self.setting.make_student(),
                make_loss(family, self.setting.num_classes),
                student_loss_weight=1.0 if family == "ce" else 0.0,
            )
            distiller.compile(
                optimizer=keras.optimizers.Adam(self.profile["learning_rate"]),
                loss=keras.losses.SparseCategoricalCrossentropy(
                    from_logits=True
                )
                if family == "ce"
                else None,
            )
            self.distillers[family] = distiller
        return self.distillers[family]

    def training_data(self, family):
        """`(x_offline, y)`: inputs with their teacher outputs, labels."""
        name = FAMILY_DATA[family]
        if name not in self.data:
            if name == "alone":
                x, y = self.setting.alone
            else:
                x = self.setting.transfer[0]
                y = None
                if name == "transfer_labels":
                    y = self.setting.transfer_labels
            x_offline, y, _ = self.distiller(family).precompute_teacher(
                x, y, batch_size=4096
            )
            self.data[name] = (x_offline, y)
        return self.data[name]

    def initial_weights(self, seed):
        if seed not in self.initial:
            keras.utils.set_random_seed(seed)
            self.initial[seed] = self.setting.make_student().get_weights()
        return self.initial[seed]

    def reset(self, distiller, seed):
        """The student at its initial weights for `seed`, a fresh optimizer."""
        distiller.student.set_weights(self.initial_weights(seed))
        for variable in distiller.optimizer.variables:
            if not variable.path.endswith("learning_rate"):
                variable.assign(ops.zeros(variable.shape, variable.dtype))

    def fit(self, method, hp, seed):
        """Trains one student; returns its Distiller and the fit history."""
        family = METHODS[method][1]
        distiller = self.distiller(family)
        x, y = self.training_data(family)
        self.reset(distiller, seed)
        set_hyperparameters(
            distiller.distillation_loss,
            family,
            family_hyperparameters(method, hp),
            self.setting.num_classes,
        )
        keras.utils.set_random_seed(seed)
        history = distiller.fit(
            x,
            y,
            epochs=self.setting.student_epochs,
            batch_size=self.profile["batch_size"],
            shuffle=True,
            verbose=0,
        )
        return distiller, history

    def train(self, method, hp, seed):
        """Trains one student; returns the metrics dict of the record."""
        start = time.perf_counter()
        distiller, history = self.fit(method, hp, seed)
        seconds = time.perf_counter() - start
        record = student_record(
            self.setting, distiller.student, self.profile["ece_bins"]
        )
        record["final_loss"] = float(history.history["loss"][-1])
        record["seconds"] = seconds
        if not math.isfinite(record["final_loss"]):
            record["diverged"] = True
        return record


def student_record(setting, student, ece_bins, calibrated=None):
    """Validation and test accuracy, test NLL and ECE of a student, and
    its test NLL and ECE after temperature scaling.

    The calibration is `keras_ptloss.calibrate(student, validation split)`
    (one temperature fitted by NLL on the validation split; accuracy
    unchanged) for every method, or `calibrated`, a `CalibratedModel` of
    `student` made the same way (the pipeline's own).
    """
    val_logits = logits_of(student, setting.validation[0])
    test_logits = logits_of(student, setting.test[0])
    labels = setting.test[1]
    if calibrated is None:
        calibrated = kp.calibrate(student, setting.validation)
    calibrated_logits = logits_of(calibrated, setting.test[0])
    record = {
        "validation_accuracy": accuracy_of(val_logits, setting.validation[1]),
        "test_accuracy": accuracy_of(test_logits, labels),
        "test_nll": nll_of(test_logits, labels),
        "test_ece": ece_of(test_logits, labels, ece_bins),
        "test_nll_calibrated": nll_of(calibrated_logits, labels),
        "test_ece_calibrated": ece_of(calibrated_logits, labels, ece_bins),
        "calibration": calibrated.calibration,
    }
    if setting.bayes is not None:
        record.update(
            bayes_metrics(setting.bayes, setting.test[0], test_logits)
        )
    return record


def run_search(setting, profile, **options):
    """`search_coefficients` on the setting's transfer split, with what
    every method gets: the training recipe (optimizer, batch size, epochs),
    the validation split and the baselines' tuning budget (`tune_budget`
    full trainings, in student-epochs); `options` add to that."""
    epochs = setting.student_epochs
    return kp.search_coefficients(
        setting.make_student,
        setting.transfer[0],
        setting.teacher_logits["transfer"].astype("float32"),
        (setting.validation[0], setting.validation[1]),
        epochs=epochs,
        budget=profile["tune_budget"] * epochs,
        validation_teacher=setting.teacher_logits["validation"],
        optimizer=lambda: keras.optimizers.Adam(profile["learning_rate"]),
        batch_size=profile["batch_size"],
        verbose=0,
        **options,
    )


def search(setting, profile, standardize):
    """`search_coefficients` on the tuning seed; a JSON-ready record.

    The budget is `tune_budget` full student trainings (in student-epochs),
    the baselines' tuning budget; the wall time is measured around the
    call.
    """
    start = time.perf_counter()
    result = run_search(
        setting,
        profile,
        order=MAX_ORDER,
        standardize=standardize,
        teacher_from_logits=True,
        seed=TUNE_SEED,
        calibrate=False,
        **profile["search"],
    )
    seconds = time.perf_counter() - start
    record = result.to_dict()
    record["seconds"] = seconds
    record["winner_record"] = student_record(
        setting, result.student, profile["ece_bins"]
    )
    return record


def pipeline(setting, profile, seed):
    """The default pipeline on one seed: a JSON-ready record.

    `search_coefficients` with its defaults (candidates on the logits and,
    with K >= 3, on z-scored logits; T in 1..8 on the logits, 0.5..4 on
    z-scored logits; KD and LS-KD kept to the last rung; ties by
    validation NLL; the winner calibrated on the
    validation split), given only what every method gets: the training
    recipe (optimizer, batch size, epochs), the validation split and the
    baselines' tuning budget (`tune_budget` full trainings, in
    student-epochs), which here includes the winner's own training. The
    student measured is the call's: `uncalibrated_student` as trained and
    `student` calibrated.
    """
    start = time.perf_counter()
    result = run_search(setting, profile, seed=seed)
    seconds = time.perf_counter() - start
    record = student_record(
        setting,
        result.uncalibrated_student,
        profile["ece_bins"],
        calibrated=result.student,
    )
    record["seconds"] = seconds
    search_record = result.to_dict()
    search_record["seconds"] = seconds
    record["search"] = search_record
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
    list, the number of seeds or the per-setting overrides, which only
    select records)."""
    relevant = {
        k: v
        for k, v in profile.items()
        if k not in ("settings", "seeds", "setting_overrides")
    }
    relevant["code"] = CODE_VERSION
    text = json.dumps(relevant, sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def record_key(profile_name, backend, *parts):
    return "|".join([profile_name, backend, *map(str, parts)])


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
    """Every step of one setting; each result is stored as it finishes
    (a rerun resumes from the store)."""
    SettingRun(name, profile_name, profile, store, backend, log).run()


class SettingRun:
    """One setting of the benchmark, step by step (see `run`)."""

    def __init__(self, name, profile_name, profile, store, backend, log):
        self.name, self.store, self.log = name, store, log
        self.profile_name, self.backend = profile_name, backend
        self.profile = setting_profile(profile, name)
        self.setting = build_setting(name, self.profile)
        self.seeds = list(range(self.profile["seeds"]))
        self.chosen = {"ce": {}}

    def key(self, *parts):
        return record_key(self.profile_name, self.backend, self.name, *parts)

    def run(self):
        self.fit_teacher()
        self.trainer = Trainer(self.setting, self.profile)
        self.methods = self.applicable_methods()
        # 1. Tune every baseline on the validation split, same budget each.
        self.tune_baselines()
        kd = self.chosen.get("kd", {"temperature": 1.0})
        self.kd_temperature = kd["temperature"]
        # 2. PTLoss coefficients from the proxy teacher (no training).
        self.run_selections()
        # 2b. PTLoss coefficients and temperature by the student-aware
        # search, with the baselines' tuning budget (on the tuning seed).
        self.run_searches()
        # 2c. The default pipeline: one call per seed, its own student.
        self.run_pipeline()
        # 3. Final runs: every method, chosen hyper-parameters, all seeds.
        for method in self.methods:
            if method == PIPELINE:
                continue
            for seed in self.seeds:
                self.train(method, self.chosen[method], seed, "final")
        self.store.put(
            self.key("chosen"), {m: self.chosen[m] for m in self.methods}
        )
        # 4. Selection quality: an M = 1 coefficient grid trained fully.
        self.coefficient_grid()
        # 5. The search's short runs against full runs: every first-rung
        # candidate trained fully on the tuning seed.
        for method in self.profile["search_study"]:
            if method in self.methods:
                self.search_study(method)
        self.log(f"{self.name}: done")

    def fit_teacher(self):
        name, setting = self.name, self.setting
        self.log(f"{name}: training the teacher")
        stats = train_teacher(setting, self.profile)
        self.store.put(self.key("teacher"), stats)
        self.log(
            f"{name}: teacher test accuracy {stats['test_accuracy']:.4f}, "
            f"validation Brier {stats['validation_brier']:.4f} "
            f"({stats['seconds']:.1f} s)"
        )
        self.store.put(
            self.key("setting"),
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

    def applicable_methods(self):
        methods = []
        for method in method_names(self.profile):
            reason = not_applicable(method, self.setting.num_classes)
            if reason is None:
                methods.append(method)
                continue
            self.store.put(
                self.key("not_applicable", method), {"reason": reason}
            )
            self.log(f"{self.name}: {method} not applicable: {reason}")
        return methods

    def train(self, method, hp, seed, purpose):
        """One stored student training (trained only if not stored)."""
        family = METHODS[method][1]
        harness_hp = family_hyperparameters(method, hp)
        data = FAMILY_DATA[family]
        k = self.key("run", family, data, hp_key(harness_hp), f"seed={seed}")
        record = self.store.get(k)
        if record is None:
            record = self.trainer.train(method, hp, seed)
            self.store.put(k, record)
            self.log(
                f"{self.name}: {purpose} {method} {_short(hp_key(hp))} "
                f"seed={seed}: "
                f"val {record['validation_accuracy']:.4f} test "
                f"{record['test_accuracy']:.4f} ({record['seconds']:.1f} s)"
            )
        return record

    def tune_baselines(self):
        methods = self.methods
        for method in ("kd", "kd_ce", "dkd", "lskd", "poly1"):
            needed = method in methods or (
                method == "kd" and any(m.startswith("pt_") for m in methods)
            )
            if not needed:
                continue
            if self.profile["tune_budget"] == 0:
                self.chosen[method] = CROSS_FIXED[method]
                continue
            grid = subsample_grid(GRIDS[method], self.profile["tune_budget"])
            scores = [
                self.train(method, hp, TUNE_SEED, "tune")["validation_accuracy"]
                for hp in grid
            ]
            self.chosen[method] = grid[int(np.argmax(scores))]
            self.store.put(
                self.key("tuning", method),
                {
                    "grid": grid,
                    "validation_accuracy": scores,
                    "chosen": self.chosen[method],
                },
            )

    def run_selections(self):
        for method in self.methods:
            if (
                not method.startswith("pt_")
                or method in SEARCH_STANDARDIZE
                or method == PIPELINE
            ):
                continue
            k = self.key("selection", method, f"T={self.kd_temperature}")
            result = self.store.get(k)
            if result is None:
                result = self.select_one(method)
                self.store.put(k, result)
                self.log(
                    f"{self.name}: selected {method} at "
                    f"T={result['temperature']:.3g} in "
                    f"{result['wall_time']:.2f} s: proxy Brier "
                    f"{result['proxy_score']:.4f} vs teacher "
                    f"{result['teacher_score']:.4f}"
                )
            self.chosen[method] = {
                "coefficients": result["coefficients"],
                "temperature": result["temperature"],
            }

    def select_one(self, method):
        """`select_coefficients` for a `pt_m<M>_<mode>[_tuneT]` method."""
        selection = select_coefficients(
            self.setting.val_probs,
            self.setting.validation[1],
            order=int(method.split("_")[1][1:]),
            mode=method.split("_")[2],
            metric="brier",
            temperature=self.kd_temperature,
            tune_temperature=method.endswith("_tuneT"),
            seed=0,
            verbose=0,
            **self.profile["selection"],
        )
        result = selection.to_dict()
        for bulky in (
            "candidates",
            "candidate_temperatures",
            "candidate_scores",
            "history",
        ):
            result.pop(bulky, None)
        return result

    def run_searches(self):
        for method in self.methods:
            if method not in SEARCH_STANDARDIZE:
                continue
            k = self.key("search", method)
            result = self.store.get(k)
            if result is None:
                result = search(
                    self.setting, self.profile, SEARCH_STANDARDIZE[method]
                )
                self.store.put(k, result)
                self.log(
                    f"{self.name}: searched {method}: "
                    f"{result['candidates'][result['winner']]['label']} "
                    f"(validation accuracy {result['score']:.4f}, KD "
                    f"{result['kd_score']}) in {result['seconds']:.1f} s, "
                    f"{result['cost']['student_epochs']} student-epochs"
                )
            self.chosen[method] = {
                "coefficients": result["coefficients"],
                "temperature": result["temperature"],
            }

    def run_pipeline(self):
        if PIPELINE not in self.methods:
            return
        for seed in self.seeds:
            k = self.key("pipeline", PIPELINE, f"seed={seed}")
            if self.store.get(k) is not None:
                continue
            record = pipeline(self.setting, self.profile, seed)
            self.store.put(k, record)
            result = record["search"]
            self.log(
                f"{self.name}: pipeline seed={seed}: "
                f"{result['candidates'][result['winner']]['label']}, "
                f"test {record['test_accuracy']:.4f}, calibrated ECE "
                f"{record['test_ece']:.4f} -> "
                f"{record['test_ece_calibrated']:.4f} "
                f"({record['seconds']:.1f} s, "
                f"{result['cost']['student_epochs']} student-epochs)"
            )
        self.chosen[PIPELINE] = {}

    def coefficient_grid(self):
        profile = self.profile
        grid_seeds = list(range(min(profile["grid_seeds"], profile["seeds"])))
        if not profile["grid"] or not grid_seeds:
            return
        rows = [self.grid_row(eps, grid_seeds) for eps in profile["grid"]]
        self.store.put(
            self.key("grid"),
            {
                "temperature": self.kd_temperature,
                "seeds": grid_seeds,
                "rows": rows,
            },
        )

    def grid_row(self, eps, grid_seeds):
        """Test accuracies and proxy closeness at M = 1 coefficient `eps`."""
        setting, temperature = self.setting, self.kd_temperature
        val_x, val_y = setting.validation
        hp = {"coefficients": [eps], "temperature": temperature}
        accs = [
            self.train("pt_m1_shared", hp, s, "grid")["test_accuracy"]
            for s in grid_seeds
        ]
        proxy = proxy_teacher(
            setting.val_probs, [eps], temperature=temperature, detemper=True
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
        return row

    def search_study(self, method):
        result = self.store.get(self.key("search", method))
        rows = []
        for member in result["ranking"][0]["members"]:
            candidate = result["candidates"][member["candidate"]]
            hp = {
                "coefficients": candidate["coefficients"],
                "temperature": candidate["temperature"],
            }
            full = self.train(method, hp, TUNE_SEED, "study")
            rows.append(
                {
                    "candidate": member["candidate"],
                    "label": candidate["label"],
                    "short_score": member["score"],
                    "validation_accuracy": full["validation_accuracy"],
                    "test_accuracy": full["test_accuracy"],
                }
            )
        self.store.put(
            self.key("study", method),
            {
                "short_epochs": result["ranking"][0]["epochs"],
                "winner": result["winner"],
                "rows": rows,
            },
        )


def with_overrides(profile, **overrides):
    """A copy of `profile` with the overrides that are given (not None,
    not empty, not 0: the command line's "use the profile's")."""
    given = {k: v for k, v in overrides.items() if v}
    return {**profile, **given}


def drop_stale(store, prefix, old, fingerprint):
    """Drops the records under `prefix` when they were made with another
    profile (their stored fingerprint `old` differs from `fingerprint`)."""
    if old is not None and old != fingerprint:
        dropped = store.drop_prefix(prefix)
        print(
            f"profile changed since the stored run ({old} -> {fingerprint}): "
            f"dropped {dropped} stale records of {prefix!r}"
        )


def run_meta(command, profile, fingerprint):
    """The meta record of a run: its command, machine, date and profile."""
    return {
        "command": command,
        "machine": timing.describe_machine(),
        "date": timing.utc_now(),
        "profile": profile,
        "fingerprint": fingerprint,
    }


def command_text(args):
    """The shell command that reproduces this run (`benchmarks/accuracy.py`)."""
    script = Path(__file__).with_name(f"{NAME}.py")
    command = timing.command_line(script=script, argv=args.argv)
    return f"KERAS_BACKEND={keras.backend.backend()} {command}"


def run(args):
    backend = keras.backend.backend()
    profile_name = args.profile
    profile = with_overrides(
        PROFILES[profile_name], settings=args.settings, seeds=args.seeds
    )
    store = Store(args.json)
    fingerprint = profile_fingerprint(profile)
    meta_key = record_key(profile_name, backend, "meta")
    run_key = f"{profile_name}|{backend}"
    old = (store.get(meta_key) or {}).get(run_key, {}).get("fingerprint")
    drop_stale(store, record_key(profile_name, backend, ""), old, fingerprint)
    meta = run_meta(command_text(args), profile, fingerprint)
    store.put(meta_key, {run_key: meta})
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
