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
from accuracy_settings import GRIDS
from accuracy_settings import MAX_ORDER
from accuracy_settings import METHODS
from accuracy_settings import NAME
from accuracy_settings import PROFILES
from accuracy_settings import TUNE_SEED
from accuracy_settings import accuracy_of
from accuracy_settings import bayes_metrics
from accuracy_settings import build_setting
from accuracy_settings import family_hyperparameters
from accuracy_settings import hp_key
from accuracy_settings import logits_of
from accuracy_settings import method_names
from accuracy_settings import subsample_grid
from accuracy_settings import train_teacher
from keras import ops

import keras_ptloss as kp
from keras_ptloss import closeness
from keras_ptloss import proxy_teacher
from keras_ptloss import select_coefficients

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
    configuration on every backend (docs/design.md, "Keras traps").
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
            "validation_accuracy": accuracy_of(
                val_logits, self.setting.validation[1]
            ),
            "test_accuracy": accuracy_of(test_logits, self.setting.test[1]),
            "final_loss": float(history.history["loss"][-1]),
            "seconds": seconds,
        }
        if not math.isfinite(record["final_loss"]):
            record["diverged"] = True
        if self.setting.bayes is not None:
            record.update(
                bayes_metrics(
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


def command_text(args):
    """The shell command that reproduces this run (`benchmarks/accuracy.py`)."""
    script = Path(__file__).with_name(f"{NAME}.py")
    command = timing.command_line(script=script, argv=args.argv)
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
            "command": command_text(args),
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
