"""Distilling a language model where the true next-token distribution is known.

The language is a `keras_ptloss.datasets.HiddenMarkovLanguage` (hidden
states with overlapping, sparse emissions), so every position's
`p*(next | prefix)` is exact and a student's `KL(p* || q)` is measured
without sampling error.

- Teacher: a small causal Transformer (token + position embeddings,
  multi-head self-attention with a causal mask, MLP; Keras layers) trained
  on the `train` sequences for many epochs, until over-confident (its
  test ECE and NLL are recorded).
- Student: a smaller Transformer, distilled on FRESH `transfer` sequences
  from the same language, with the teacher's logits pre-computed; every
  method trains through `keras_ptloss.search_coefficients` (every
  configuration of a tuning grid is one call with that single candidate:
  one full training from the seed's initial weights on the seed's
  batches, scored by validation NLL; a grid of three costs three student
  trainings).
- Methods: the student alone (cross-entropy on the sampled next tokens);
  KD, temperature tuned on the validation split's NLL; logit-standardised
  KD and KD + CE (weight 0.5), temperature tuned the same way; PTLoss with
  training-free coefficients (`select_coefficients` on validation
  positions with their sampled next tokens as labels, at KD's tuned
  temperature); PTLoss searched (`search_coefficients`, plain, metric NLL,
  the same budget of student-epochs as KD's tuning; its training-free
  candidates picked on the same validation positions), and standardised
  when the profile's `search_standardized` is set.
- Metrics on held-out `test` sequences, every position: per-token accuracy
  (sampled next token), perplexity `exp(NLL)`, exact `KL(p* || q)`, ECE
  (15 bins, top-1); the teacher's and the Bayes predictor `p*`'s too.

The teacher and the data are fixed by the profile's data seed; the seeds
vary the students' initial weights and batch order (common to every method
of a seed, so the differences are paired). Results are appended to the JSON
as they finish (an interrupted run resumes); the markdown is generated from
the JSON.

Two conditions (profiles), reported side by side: `full` (condition A: a
mildly over-confident teacher, a student far from convergence, budgets of
three trainings) and `overconfident` (condition B: a teacher trained about
twice as long on half the sequences, a student trained longer, KD tuned
over four temperatures and the search given the same four trainings).

Usage:
    KERAS_BACKEND=jax python benchmarks/language.py           # A, ~25 min
    KERAS_BACKEND=jax python benchmarks/language.py --condition overconfident
    python benchmarks/language.py --quick                      # tiny
    python benchmarks/language.py --report-only
"""

import argparse
import hashlib
import json
import math
import os
import shlex
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
import timing  # noqa: E402
from accuracy_harness import Store  # noqa: E402
from accuracy_harness import drop_stale  # noqa: E402
from accuracy_harness import record_key  # noqa: E402
from accuracy_harness import run_meta  # noqa: E402
from accuracy_harness import with_overrides  # noqa: E402
from accuracy_settings import ece_of  # noqa: E402

import keras_ptloss as kp  # noqa: E402
from keras_ptloss.datasets import make_language  # noqa: E402
from keras_ptloss.search import Candidate  # noqa: E402
from keras_ptloss.search import propose_candidates  # noqa: E402

NAME = "language"
CODE_VERSION = 1
TEMPERATURES = (1.0, 2.0, 4.0)


def hidden_markov(
    vocab_size, num_states, tokens_per_state, successors, concentration
):
    """A profile's `HiddenMarkovLanguage` arguments."""
    return {
        "vocab_size": vocab_size,
        "num_states": num_states,
        "tokens_per_state": tokens_per_state,
        "successors": successors,
        "concentration": concentration,
    }


def splits_of(**sequences):
    """Sequences per split (train, transfer, validation)."""
    return sequences


def transformer_of(d_model, heads, layers, **training):
    """A profile's Transformer (and, for the teacher, its epochs)."""
    return {"d_model": d_model, "heads": heads, "layers": layers, **training}


FULL = {
    # vocabulary, hidden states, tokens per state, successors, Dirichlet.
    "language": hidden_markov(1024, 32, 64, 4, 0.2),
    "length": 32,
    "sequences": splits_of(train=1600, transfer=1024, validation=192),
    "test_sequences": 384,
    "teacher": transformer_of(64, 4, 2, epochs=14),
    "student": transformer_of(32, 2, 1),
    "student_epochs": 6,
    "batch_size": 64,
    "learning_rate": 2e-3,
    "order": 5,
    "strengths": (-0.5, 0.5, 2.0),
    "tune_budget": 3,
    "selection_positions": 2048,
    "search_standardized": False,
    "data_seed": 0,
    "seeds": 5,
}
QUICK = dict(
    FULL,
    language=hidden_markov(48, 4, 12, 2, 0.3),
    length=6,
    sequences=splits_of(train=64, transfer=64, validation=20),
    test_sequences=20,
    teacher=transformer_of(8, 2, 1, epochs=3),
    student=transformer_of(4, 1, 1),
    student_epochs=2,
    order=2,
    strengths=(2.0,),
    selection_positions=64,
    seeds=2,
)
# A second condition where PTLoss's premise is stronger: a clearly more
# over-confident teacher (about twice the steps on half the training
# sequences: 30 epochs at batch 32 on 800), a student trained closer to
# convergence (10 epochs at batch 32 on 512 fresh sequences: 160 steps
# against 96) and a search budget large enough that all 15 candidates reach
# the first cut (four trainings). KD is tuned over four temperatures, the
# same budget; the costlier LS-KD and KD + CE rows are left out by default.
OVERCONFIDENT = {
    **FULL,
    "sequences": splits_of(train=800, transfer=512, validation=192),
    "teacher": transformer_of(64, 4, 2, epochs=30),
    "student_epochs": 10,
    "batch_size": 32,
    "kd_temperatures": (1.0, 1.5, 2.0, 4.0),
    "tune_budget": 4,
    "methods": ("student", "kd", "pt_selected", "pt_search"),
    "teacher_curve": True,
}
PROFILES = {"full": FULL, "quick": QUICK, "overconfident": OVERCONFIDENT}
# The conditions reported side by side (profile names, as in the records).
CONDITIONS = {
    "full": "A: mildly over-confident teacher, student far from convergence",
    "overconfident": "B: strongly over-confident teacher, student trained "
    "longer, larger search budget",
}
METHOD_TITLES = {
    "student": "Student alone (CE on sampled tokens)",
    "kd": "KD (T tuned)",
    "kd_ce": "KD + CE, w = 0.5 (T tuned)",
    "lskd": "LS-KD (T tuned)",
    "pt_selected": "PTLoss, training-free (`select_coefficients`)",
    "pt_search": "PTLoss, searched on the logits",
    "pt_search_std": "PTLoss, searched (standardised)",
}
METRICS = ("accuracy", "perplexity", "kl", "ece")


# --------------------------------------------------------------------------
# Models.
# --------------------------------------------------------------------------


class PositionEmbedding(keras.layers.Layer):
    """Adds a learned embedding of each position to `(batch, S, d)`."""

    def __init__(self, length, dim, **kwargs):
        super().__init__(**kwargs)
        self.table = self.add_weight(
            shape=(length, dim),
            initializer=keras.initializers.RandomNormal(stddev=0.02),
            name="positions",
        )

    def call(self, x):
        return x + self.table[None]


def transformer(vocab_size, length, d_model, heads, layers, name):
    """A causal Transformer language model: logits `(batch, S, V)`."""
    inputs = keras.Input((length,), dtype="int32")
    h = keras.layers.Embedding(vocab_size, d_model)(inputs)
    h = PositionEmbedding(length, d_model)(h)
    for _ in range(layers):
        a = keras.layers.LayerNormalization()(h)
        a = keras.layers.MultiHeadAttention(heads, d_model // heads)(
            a, a, use_causal_mask=True
        )
        h = h + a
        f = keras.layers.LayerNormalization()(h)
        f = keras.layers.Dense(4 * d_model, activation="gelu")(f)
        h = h + keras.layers.Dense(d_model)(f)
    h = keras.layers.LayerNormalization()(h)
    return keras.Model(inputs, keras.layers.Dense(vocab_size)(h), name=name)


def logits_of(model, x, batch_size=256):
    parts = [
        keras.ops.convert_to_numpy(model(x[i : i + batch_size]))
        for i in range(0, len(x), batch_size)
    ]
    return np.concatenate(parts).astype("float32")


# --------------------------------------------------------------------------
# Data, teacher, metrics.
# --------------------------------------------------------------------------


def make_data(profile):
    sizes = dict(profile["sequences"], test=profile["test_sequences"])
    total = sum(sizes.values())
    fractions = {name: count / total for name, count in sizes.items()}
    splits, language = make_language(
        total,
        length=profile["length"],
        fractions=fractions,
        seed=profile["data_seed"],
        **profile["language"],
    )
    return splits, language


def metrics_of(logits, targets, p_star):
    """Per-token accuracy, perplexity, exact KL(p* || q), ECE, all positions."""
    k = logits.shape[-1]
    flat = logits.reshape(-1, k).astype("float64")
    labels = targets.reshape(-1)
    log_q = scipy.special.log_softmax(flat, axis=-1)
    nll = float(-np.mean(log_q[np.arange(labels.size), labels]))
    p = p_star.reshape(-1, k)
    with np.errstate(divide="ignore", invalid="ignore"):
        kl = np.sum(np.where(p > 0, p * (np.log(p) - log_q), 0.0), axis=-1)
    predicted = flat.argmax(-1)
    return {
        "accuracy": float(np.mean(predicted == labels)),
        "expected_accuracy": float(
            np.mean(p[np.arange(p.shape[0]), predicted])
        ),
        "nll": nll,
        "perplexity": math.exp(nll),
        "kl": float(kl.mean()),
        "ece": ece_of(flat, labels),
    }


def profile_fingerprint(profile):
    relevant = {k: v for k, v in profile.items() if k != "seeds"}
    relevant["code"] = CODE_VERSION
    text = json.dumps(relevant, sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def teacher_fingerprint(profile):
    """Fingerprint of what the teacher depends on (its data and training),
    so conditions differing only in the students share the cached teacher."""
    keys = (
        "language",
        "length",
        "sequences",
        "test_sequences",
        "teacher",
        "batch_size",
        "learning_rate",
        "data_seed",
    )
    relevant = {k: profile[k] for k in keys}
    text = json.dumps(relevant, sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def train_teacher(profile, splits, log, cache_dir=None):
    """The teacher, trained (or loaded from the cache of this profile), the
    seconds it took and its validation perplexity after each epoch (`None`
    when loaded)."""
    config = profile["teacher"]
    vocab = profile["language"]["vocab_size"]
    cache = Path(cache_dir or tempfile.gettempdir()) / (
        f"keras_ptloss_language_teacher_{keras.backend.backend()}_"
        f"{teacher_fingerprint(profile)}.weights.h5"
    )
    keras.utils.set_random_seed(profile["data_seed"])
    teacher = transformer(
        vocab,
        profile["length"],
        config["d_model"],
        config["heads"],
        config["layers"],
        "teacher",
    )
    if cache.exists():
        teacher.load_weights(cache)
        return teacher, 0.0, None
    start = time.perf_counter()
    teacher.compile(
        optimizer=keras.optimizers.Adam(profile["learning_rate"]),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    x, y = splits["train"]
    # The validation perplexity after each epoch, when the profile asks for
    # it (how far past its best the teacher is trained).
    with_curve = profile.get("teacher_curve", False)
    history = teacher.fit(
        x,
        y,
        batch_size=profile["batch_size"],
        epochs=config["epochs"],
        validation_data=splits["validation"] if with_curve else None,
        verbose=0,
    )
    teacher.save_weights(cache)
    seconds = time.perf_counter() - start
    log(f"teacher trained in {seconds:.0f} s")
    if not with_curve:
        return teacher, seconds, None
    curve = [math.exp(v) for v in history.history["val_loss"]]
    log(
        f"teacher validation perplexity: best {min(curve):.3f} (epoch "
        f"{int(np.argmin(curve)) + 1}), last {curve[-1]:.3f}"
    )
    return teacher, seconds, curve


# --------------------------------------------------------------------------
# Students.
# --------------------------------------------------------------------------


def build_student_fn(profile):
    config = profile["student"]

    def build():
        return transformer(
            profile["language"]["vocab_size"],
            profile["length"],
            config["d_model"],
            config["heads"],
            config["layers"],
            "student",
        )

    return build


def search(profile, data, seed, candidates, trainings, **options):
    """`keras_ptloss.search_coefficients` over `candidates` with a budget of
    `trainings` full student trainings, scored by validation NLL; the
    students are judged as trained (no method of this benchmark is
    calibrated). `options` go to the call."""
    epochs = profile["student_epochs"]
    return kp.search_coefficients(
        build_student_fn(profile),
        data["x"],
        data["teacher"],
        data["validation"],
        order=profile["order"],
        epochs=epochs,
        budget=trainings * epochs,
        candidates=candidates,
        metric="nll",
        optimizer=keras.optimizers.Adam(profile["learning_rate"]),
        batch_size=profile["batch_size"],
        seed=seed,
        calibrate=False,
        verbose=0,
        **options,
    )


def train_candidates(profile, data, candidates, seed, weight=0.0):
    """Trains each candidate fully through `search` (one candidate a call:
    a single rung, no cut; the seed's initial weights and batch order,
    common to every method) and scores it by validation NLL. Returns the
    `SearchResult`s, in order."""
    labels = data["labels"] if weight > 0 else None
    return [
        search(
            profile,
            data,
            seed,
            [candidate],
            1,
            labels=labels,
            student_loss_weight=weight,
        )
        for candidate in candidates
    ]


def candidate(coefficients, temperature, standardize=False):
    return Candidate(
        np.asarray(coefficients, "float64"), float(temperature), standardize
    )


def selection_positions(data):
    """Teacher probabilities and sampled next tokens at a fixed random
    subsample of validation positions (the training-free selection's cost
    grows with the number of rows times the vocabulary)."""
    probs = data["validation_teacher"].reshape(-1, data["vocab"])
    labels = data["validation"][1].reshape(-1)
    rng = np.random.default_rng(0)
    count = min(data["selection_positions"], labels.size)
    rows = np.sort(rng.choice(labels.size, size=count, replace=False))
    return scipy.special.softmax(probs[rows], axis=-1), labels[rows]


def run_seed(profile, data, seed, store, key, log, methods=None):
    """Every method (or those in `methods`) for one seed; each result is
    stored as it finishes."""
    SeedRun(profile, data, seed, store, key, log, methods).run()


class SeedRun:
    """The methods of one seed, each stored as it finishes (see `run`)."""

    def __init__(self, profile, data, seed, store, key, log, methods=None):
        self.profile, self.data, self.seed = profile, data, seed
        self.store, self.key, self.log = store, key, log
        self.methods = profile.get("methods") if methods is None else methods
        self.zero = np.zeros(profile["order"])

    def run(self):
        if not self.done("student"):
            start = time.perf_counter()
            (result,) = train_candidates(
                self.profile,
                self.data,
                [candidate(self.zero, 1.0)],
                self.seed,
                1,
            )
            seconds = time.perf_counter() - start
            self.finish("student", result.student, {"seconds": seconds})
        temperatures = self.profile.get("kd_temperatures", TEMPERATURES)
        # Each baseline's temperature tuned by validation NLL over its
        # grid of full trainings.
        for method, standardize, weight in (
            ("kd", False, 0.0),
            ("lskd", True, 0.0),
            ("kd_ce", False, 0.5),
        ):
            if not self.done(method):
                grid = [
                    candidate(self.zero, t, standardize) for t in temperatures
                ]
                self.tune(method, grid, weight)
        if not self.done("pt_selected"):
            self.pt_selected()
        searches = [("pt_search", False)]
        if self.profile["search_standardized"]:
            searches.append(("pt_search_std", True))
        for method, standardize in searches:
            if not self.done(method):
                self.pt_search(method, standardize)

    def done(self, method):
        skipped = self.methods is not None and method not in self.methods
        return (
            skipped or self.store.get(self.key(self.seed, method)) is not None
        )

    def finish(self, method, student, extra):
        data = self.data
        test_x, test_y = data["test"]
        record = metrics_of(logits_of(student, test_x), test_y, data["p_star"])
        record.update(extra)
        self.store.put(self.key(self.seed, method), record)
        self.log(
            f"seed {self.seed} {method}: ppl {record['perplexity']:.3f} "
            f"KL {record['kl']:.4f} acc {record['accuracy']:.4f}"
        )

    def tune(self, method, grid, weight):
        """The grid member with the lowest validation NLL."""
        start = time.perf_counter()
        results = train_candidates(
            self.profile, self.data, grid, self.seed, weight
        )
        scores = [r.score for r in results]
        best = int(np.argmin(scores))
        self.finish(
            method,
            results[best].student,
            {
                "temperature": grid[best].temperature,
                "validation_nll": scores,
                "seconds": time.perf_counter() - start,
            },
        )

    def pt_selected(self):
        """PTLoss at KD's tuned T, coefficients by `select_coefficients`."""
        start = time.perf_counter()
        kd = self.store.get(self.key(self.seed, "kd"))
        if kd is None:
            raise ValueError(
                "PTLoss training-free uses KD's tuned temperature: run kd "
                f"first (seed {self.seed})"
            )
        temperature = kd["temperature"]
        val_probs, val_labels = selection_positions(self.data)
        picked = kp.select_coefficients(
            val_probs,
            val_labels,
            order=self.profile["order"],
            temperature=temperature,
            seed=self.seed,
            verbose=0,
        )
        selection_seconds = time.perf_counter() - start
        eps = np.asarray(picked.coefficients, "float64")
        (result,) = train_candidates(
            self.profile, self.data, [candidate(eps, temperature)], self.seed
        )
        self.finish(
            "pt_selected",
            result.student,
            {
                "coefficients": eps.tolist(),
                "temperature": temperature,
                "selection_seconds": selection_seconds,
                "seconds": time.perf_counter() - start,
            },
        )

    def pt_search(self, method, standardize):
        """PTLoss by `search_coefficients`, KD's tuning budget."""
        profile, data, seed = self.profile, self.data, self.seed
        # The search's own proposal, with the training-free picks made on
        # the same subsample of validation positions as `pt_selected`.
        val_probs, val_labels = selection_positions(data)
        candidates = propose_candidates(
            val_probs,
            val_labels,
            order=profile["order"],
            temperatures=TEMPERATURES,
            strengths=profile["strengths"],
            standardize=standardize,
            seed=seed,
        )
        result = search(
            profile,
            data,
            seed,
            candidates,
            profile["tune_budget"],
            temperatures=TEMPERATURES,
            strengths=profile["strengths"],
        )
        self.finish(
            method,
            result.student,
            {
                "winner": result.candidates[result.winner].label,
                "coefficients": result.coefficients.tolist(),
                "temperature": result.temperature,
                "validation_nll": result.score,
                "kd_validation_nll": result.kd_score,
                "student_epochs": result.cost["student_epochs"],
                "candidates": len(result.candidates),
                "seconds": result.cost["seconds"],
            },
        )


def run(args):
    backend = keras.backend.backend()
    profile_name = args.profile_name
    profile = with_overrides(PROFILES[profile_name], seeds=args.seeds)
    store = Store(args.json)
    fingerprint = profile_fingerprint(profile)
    meta_key = record_key(profile_name, backend, "meta")
    old = (store.get(meta_key) or {}).get("fingerprint")
    drop_stale(store, record_key(profile_name, backend, ""), old, fingerprint)
    command = timing.command_line(script=__file__, argv=args.argv)
    command = f"KERAS_BACKEND={backend} {command}"
    store.put(meta_key, run_meta(command, profile, fingerprint))
    start = time.perf_counter()

    def log(message):
        if not args.silent:
            print(f"[{time.perf_counter() - start:7.1f} s] {message}")
            sys.stdout.flush()

    splits, language = make_data(profile)
    teacher, teacher_seconds, teacher_curve = train_teacher(
        profile, splits, log, args.cache_dir
    )
    data = student_data(profile, splits, language, teacher)
    reference_key = record_key(profile_name, backend, "reference")
    if store.get(reference_key) is None:
        teacher_record, bayes = references(
            splits, language, teacher, data["p_star"]
        )
        teacher_record["seconds"] = teacher_seconds
        if teacher_curve is not None:
            teacher_record["validation_perplexity"] = teacher_curve
        store.put(reference_key, {"teacher": teacher_record, "bayes": bayes})
        log(
            f"teacher: test ppl {teacher_record['perplexity']:.3f} KL "
            f"{teacher_record['kl']:.4f} ECE {teacher_record['ece']:.4f}; "
            f"Bayes ppl {bayes['perplexity']:.3f}"
        )

    def key(seed, method):
        return record_key(profile_name, backend, "run", seed, method)

    for seed in range(profile["seeds"]):
        run_seed(profile, data, seed, store, key, log, args.methods)
    store.put(
        record_key(profile_name, backend, "finished"),
        {"date": timing.utc_now(), "seconds": time.perf_counter() - start},
    )
    log("done")


def student_data(profile, splits, language, teacher):
    """What the students train and are measured on: transfer inputs with
    the teacher's logits and the sampled next tokens, validation and test
    splits, and the exact p* on them."""
    x, transfer_y = splits["transfer"]
    x_val, y_val = splits["validation"]
    return {
        "x": x,
        "vocab": profile["language"]["vocab_size"],
        "selection_positions": profile["selection_positions"],
        "teacher": logits_of(teacher, x),
        "labels": transfer_y,
        "validation": (x_val, y_val),
        "validation_teacher": logits_of(teacher, x_val),
        "validation_p_star": language.next_token_probs(x_val, "float32"),
        "test": splits["test"],
        "p_star": language.next_token_probs(splits["test"][0], "float32"),
    }


def references(splits, language, teacher, p_star):
    """The teacher's and the Bayes predictor's metrics on the test split
    (and the teacher's on its training split)."""
    test_x, test_y = splits["test"]
    teacher_record = metrics_of(logits_of(teacher, test_x), test_y, p_star)
    teacher_record["train"] = metrics_of(
        logits_of(teacher, splits["train"][0]),
        splits["train"][1],
        language.next_token_probs(splits["train"][0], "float32"),
    )
    bayes = metrics_of(np.log(np.maximum(p_star, 1e-30)), test_y, p_star)
    bayes["entropy_rate"] = language.entropy_rate(test_x)
    return teacher_record, bayes


# --------------------------------------------------------------------------
# Report.
# --------------------------------------------------------------------------


def summarize(records, profile_name, backend):
    """Per method: runs, and mean / std / SE of every metric over seeds;
    paired differences to KD."""
    meta = records.get(record_key(profile_name, backend, "meta"))
    reference = records.get(record_key(profile_name, backend, "reference"))
    if meta is None or reference is None:
        return None
    seeds = meta["profile"]["seeds"]
    rows = {}
    by_seed = {}
    for method in METHOD_TITLES:
        found = {
            s: records.get(record_key(profile_name, backend, "run", s, method))
            for s in range(seeds)
        }
        by_seed[method] = {s: r for s, r in found.items() if r is not None}
        runs = list(by_seed[method].values())
        if runs:
            rows[method] = {"runs": runs, "stats": stats_of(runs)}
    for method, row in rows.items():
        if "kd" not in rows or method == "kd":
            continue
        # Paired by seed: the same initial weights and batch order.
        common = sorted(set(by_seed[method]) & set(by_seed["kd"]))
        pairs = [(by_seed[method][s], by_seed["kd"][s]) for s in common]
        row["vs_kd"] = {
            metric: mean_std_se([r[metric] - k[metric] for r, k in pairs])
            for metric in METRICS
        }
    return {"meta": meta, "reference": reference, "rows": rows}


def mean_std_se(values):
    values = np.asarray(values, "float64")
    std = float(values.std(ddof=1)) if values.size > 1 else 0.0
    return {
        "mean": float(values.mean()),
        "std": std,
        "se": std / math.sqrt(values.size),
        "n": int(values.size),
    }


def stats_of(runs):
    return {
        metric: mean_std_se([r[metric] for r in runs])
        for metric in (*METRICS, "expected_accuracy")
    }


def target_verdict(summary, method="pt_search"):
    """The issue's target: PTLoss below tuned KD in KL and perplexity by more
    than one SE (paired over seeds), accuracy not below KD's by more than one
    standard deviation."""
    rows = summary["rows"]
    if method not in rows or "kd" not in rows:
        return None
    diff = rows[method]["vs_kd"]
    kl = diff["kl"]["mean"] < -diff["kl"]["se"]
    ppl = diff["perplexity"]["mean"] < -diff["perplexity"]["se"]
    acc = (
        rows[method]["stats"]["accuracy"]["mean"]
        >= rows["kd"]["stats"]["accuracy"]["mean"]
        - rows["kd"]["stats"]["accuracy"]["std"]
    )
    return {
        "kl": kl,
        "perplexity": ppl,
        "accuracy": acc,
        "met": kl and ppl and acc,
    }


def _fmt(stat, digits=4):
    return (
        f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f} "
        f"(SE {stat['se']:.{digits}f})"
    )


def _signed(stat, digits=4):
    return f"{stat['mean']:+.{digits}f} ± {stat['se']:.{digits}f}"


def markdown(summary, profile_name, heading="##"):
    """The section of one condition (its setup, references, the table and
    the paired differences to KD, the verdict)."""
    lines = _setup(summary, profile_name, heading)
    lines.append(_results_table(summary["rows"]))
    lines += [
        "",
        "Paired differences to tuned KD (mean ± SE over seeds; negative "
        "perplexity / KL / ECE is better):",
        "",
        _difference_table(summary["rows"]),
    ]
    lines += _verdict_lines(summary)
    return "\n".join(lines)


def _num_seeds(rows):
    return len(rows.get("kd", {"runs": []})["runs"])


def _setup(summary, profile_name, heading):
    """The heading, command, protocol and references of one condition."""
    meta, reference, rows = (
        summary["meta"],
        summary["reference"],
        summary["rows"],
    )
    profile = meta["profile"]
    lang = profile["language"]
    teacher, bayes = reference["teacher"], reference["bayes"]
    n = _num_seeds(rows)
    # A run made in parts (`--methods`) is regenerated by the plain command.
    command = shlex.join(
        timing.drop_options(shlex.split(meta["command"]), ["--methods"])
    )
    temperatures = list(profile.get("kd_temperatures", TEMPERATURES))
    budget = profile["tune_budget"]
    if len(temperatures) == budget:
        budgets = (
            f"the searches spend the same {budget} x "
            f"{profile['student_epochs']} student-epochs"
        )
    else:
        budgets = (
            f"the searches spend {budget} x {profile['student_epochs']} "
            "student-epochs"
        )
    title = CONDITIONS.get(profile_name)
    return [
        f"{heading} Language model distillation with exact p*"
        + (f" — condition {title}" if title else ""),
        "",
        f"Generated by `{command}` ({meta['date']}; "
        f"{meta['machine']['cpu']}; profile `{profile_name}`).",
        "",
        f"A synthetic language (`keras_ptloss.datasets.HiddenMarkovLanguage`: "
        f"{lang['num_states']} hidden states, vocabulary {lang['vocab_size']}, "
        f"{lang['tokens_per_state']} tokens per state, {lang['successors']} "
        f"successors, Dirichlet {lang['concentration']}) whose next-token "
        f"distribution p* is exact at every position; sequences of "
        f"{profile['length']} predicted tokens. Teacher: causal Transformer "
        f"(d={profile['teacher']['d_model']}, {profile['teacher']['layers']} "
        f"layers) trained {profile['teacher']['epochs']} epochs on "
        f"{profile['sequences']['train']} sequences (batch "
        f"{profile['batch_size']}). Student: Transformer "
        f"(d={profile['student']['d_model']}, {profile['student']['layers']} "
        f"layer) distilled for {profile['student_epochs']} epochs on "
        f"{profile['sequences']['transfer']} fresh sequences with the "
        f"teacher's pre-computed logits; tuning on "
        f"{profile['sequences']['validation']} validation sequences (NLL); "
        f"metrics on {profile['test_sequences']} test sequences, every "
        f"position. Tuned baselines: T in {temperatures} "
        f"({len(temperatures)} student trainings); {budgets} "
        f"(candidates at T in {list(TEMPERATURES)}, first-order strengths "
        f"{list(profile['strengths'])}); the training-free PTLoss (order "
        f"{profile['order']}) uses KD's tuned T. {n} seeds (student "
        f"initialisation and batch order; the teacher and data are fixed). "
        f"Mean ± std over seeds (SE = std / sqrt(n)).",
        "",
        f"References on the test positions: Bayes p*: accuracy "
        f"{bayes['accuracy']:.4f}, perplexity {bayes['perplexity']:.3f} "
        f"(entropy rate {bayes['entropy_rate']:.3f} nats), ECE "
        f"{bayes['ece']:.4f}. Teacher: accuracy {teacher['accuracy']:.4f}, "
        f"perplexity {teacher['perplexity']:.3f}, KL(p* ‖ teacher) "
        f"{teacher['kl']:.4f}, ECE {teacher['ece']:.4f} (train perplexity "
        f"{teacher['train']['perplexity']:.3f}: over-confident)."
        + _curve_note(teacher),
        "",
    ]


def _results_table(rows):
    """Mean ± std of every method's metrics, with what it chose."""
    n = _num_seeds(rows)
    table = []
    for method, row in rows.items():
        stats = row["stats"]
        chosen = row["runs"][0]
        note = ""
        if "winner" in chosen:
            winners = sorted({r["winner"] for r in row["runs"]})
            note = "; ".join(winners)
        elif "temperature" in chosen:
            note = "T = " + ", ".join(
                f"{r['temperature']:g}" for r in row["runs"]
            )
        title = METHOD_TITLES[method]
        if len(row["runs"]) != n:
            title += f" ({len(row['runs'])} seeds)"
        table.append(
            [
                title,
                _fmt(stats["accuracy"]),
                _fmt(stats["perplexity"], 3),
                _fmt(stats["kl"]),
                _fmt(stats["ece"]),
                note,
            ]
        )
    return timing.markdown_table(
        [
            "method",
            "accuracy",
            "perplexity",
            "KL(p* ‖ student)",
            "ECE",
            "chosen",
        ],
        table,
        align="lrrrrl",
    )


def _difference_table(rows):
    """Paired differences of every method to tuned KD."""
    diff_rows = []
    for method, row in rows.items():
        if "vs_kd" not in row:
            continue
        d = row["vs_kd"]
        diff_rows.append(
            [
                METHOD_TITLES[method],
                _signed(d["accuracy"]),
                _signed(d["perplexity"], 3),
                _signed(d["kl"]),
                _signed(d["ece"]),
            ]
        )
    return timing.markdown_table(
        ["method", "Δ accuracy", "Δ perplexity", "Δ KL", "Δ ECE"],
        diff_rows,
        align="lrrrr",
    )


def _verdict_lines(summary):
    verdict = target_verdict(summary)
    if verdict is None:
        return []
    word = {True: "yes", False: "no"}
    return [
        "",
        "Target (PTLoss searched, plain, against tuned KD): KL lower by "
        f"more than one SE: **{word[verdict['kl']]}**; perplexity lower "
        f"by more than one SE: **{word[verdict['perplexity']]}**; "
        "accuracy not below KD's by more than one std: "
        f"**{word[verdict['accuracy']]}**. Target met: "
        f"**{word[verdict['met']]}**.",
    ]


def _curve_note(teacher):
    curve = teacher.get("validation_perplexity")
    if not curve:
        return ""
    best = int(np.argmin(curve))
    return (
        f" Its validation perplexity was lowest after epoch {best + 1} of "
        f"{len(curve)} ({curve[best]:.3f}) and ends at {curve[-1]:.3f}."
    )


def side_by_side(summaries):
    """One table: every method's perplexity and KL in each condition, with
    the paired difference to that condition's tuned KD."""
    names = list(summaries)
    methods = [
        m
        for m in METHOD_TITLES
        if any(m in s["rows"] for s in summaries.values())
    ]
    headers = ["method"]
    for name in names:
        headers += [f"{name}: perplexity (Δ KD)", f"{name}: KL (Δ KD)"]
    table = []
    for method in methods:
        cells = [METHOD_TITLES[method]]
        for name in names:
            row = summaries[name]["rows"].get(method)
            if row is None:
                cells += ["—", "—"]
                continue
            for metric, digits in (("perplexity", 2), ("kl", 3)):
                mean = row["stats"][metric]["mean"]
                cell = f"{mean:.{digits}f}"
                if "vs_kd" in row:
                    diff = row["vs_kd"][metric]
                    cell += (
                        f" ({diff['mean']:+.{digits}f} ± "
                        f"{diff['se']:.{digits}f})"
                    )
                cells.append(cell)
        table.append(cells)
    return timing.markdown_table(
        headers, table, align="l" + "r" * (len(headers) - 1)
    )


def report_text(summaries):
    """The markdown of every condition found: one section, or, with both
    conditions, a side-by-side summary followed by each condition's own."""
    if len(summaries) == 1:
        ((name, summary),) = summaries.items()
        return markdown(summary, name)
    lines = [
        "## Language model distillation with exact p*",
        "",
        "Two conditions on the same synthetic language; each is detailed "
        "below. Conditions: "
        + "; ".join(f"`{name}` = {CONDITIONS[name]}" for name in summaries)
        + ". Mean over seeds; in brackets the paired difference to the "
        "condition's tuned KD (mean ± SE; negative is better).",
        "",
        side_by_side(summaries),
    ]
    for name, summary in summaries.items():
        lines += ["", markdown(summary, name, heading="###")]
    return "\n".join(lines)


def write_report(json_path, markdown_path, profile_name, backend):
    """Writes the markdown (the quick profile alone, or every condition
    with results) and returns the summary of `profile_name`."""
    records = Store(json_path).data().get("records", {})
    names = [profile_name] if profile_name not in CONDITIONS else CONDITIONS
    summaries = {}
    for name in names:
        summary = summarize(records, name, backend)
        if summary is not None:
            summaries[name] = summary
    if profile_name not in summaries:
        print(f"no {profile_name} results for {backend} in {json_path}")
        return None
    timing.write_markdown(markdown_path, report_text(summaries))
    return summaries[profile_name]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny profile")
    parser.add_argument(
        "--condition",
        choices=sorted(CONDITIONS),
        default="full",
        help="which condition to run (the report shows every one found)",
    )
    parser.add_argument("--seeds", type=int, default=None)
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--silent", action="store_true")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument(
        "--methods",
        nargs="+",
        choices=sorted(METHOD_TITLES),
        default=None,
        help="run only these methods (pt_selected needs kd's result)",
    )
    parser.add_argument(
        "--cache-dir", default=None, help="teacher weights (default: tmp)"
    )
    parser.add_argument(
        "--output-dir", default=str(ROOT / "benchmarks" / "results")
    )
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    args.argv = timing.drop_options(
        args.argv, ["--output-dir", "--silent", "--cache-dir"]
    )

    output = Path(args.output_dir)
    args.json = output / f"{NAME}.json"
    backend = keras.backend.backend()
    timing.configure_threads(backend, args.threads)
    args.profile_name = "quick" if args.quick else args.condition
    if not args.report_only:
        run(args)
    return write_report(
        args.json, output / f"{NAME}.md", args.profile_name, backend
    )


if __name__ == "__main__":
    main()
