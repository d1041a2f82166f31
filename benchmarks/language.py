"""Language-model distillation where the true next-token distribution is
known: a `keras_ptloss.datasets.HiddenMarkovLanguage` gives the exact
`p*(next | prefix)` at every position, so a student's `KL(p* || q)` is
measured without sampling error.

A causal Transformer teacher is trained on the `train` sequences until
over-confident; a smaller Transformer student is distilled on FRESH
`transfer` sequences from the teacher's pre-computed logits. Every method
trains through the public API: the baselines and the training-free PTLoss
by `student.compile(loss=...)` and `fit` (one initial weight set and one
batch order per seed, common to these methods, so the differences are
paired), the searches by `keras_ptloss.search_coefficients`. Tuned
temperatures are chosen by validation NLL over a grid of full trainings.
Metrics on every test position: accuracy (sampled next token), perplexity,
exact KL(p* || q), ECE (`keras_ptloss.calibration`).
"""

import math

import numpy as np
from scipy import special

from benchmarks.harness import Case
from benchmarks.render import Table
from benchmarks.render import groups
from benchmarks.render import mean_se
from benchmarks.render import mean_std

# Conditions: A, a mildly over-confident teacher and a student far from
# convergence; B, a teacher trained about twice as long on half the
# sequences (it memorises them) and a student trained longer.
CONDITIONS = {
    "A": dict(
        train=1600, transfer=1024, teacher_epochs=14, student_epochs=6,
        batch_size=64,
    ),
    "B": dict(
        train=800, transfer=512, teacher_epochs=30, student_epochs=10,
        batch_size=32,
    ),
}  # fmt: skip
METHODS = {
    "teacher": "teacher (reference)",
    "bayes": "Bayes p* (reference)",
    "student": "student alone (CE on sampled tokens)",
    "kd": "KD (T tuned)",
    "kd_calibrated": "KD (T tuned), then `calibrate`",
    "kd_ce": "KD + CE, w = 0.5 (T tuned)",
    "lskd": "LS-KD (T tuned)",
    "pt_selected": "PTLoss M=5, training-free (`select_coefficients`)",
    "pt_search": "PTLoss, searched on the logits (metric NLL)",
    "pt_default_raw": "PTLoss, default `search_coefficients`, as trained",
    "pt_default": "PTLoss, default `search_coefficients` (calibrated)",
}
METRICS = ("accuracy", "perplexity", "kl", "ece")


def transformer(keras, vocab_size, length, d_model, heads, layers):
    """A causal Transformer language model: logits `(batch, S, V)`."""

    class PositionEmbedding(keras.layers.Layer):
        def build(self, shape):
            self.table = self.add_weight(
                shape=(length, d_model),
                initializer=keras.initializers.RandomNormal(stddev=0.02),
            )

        def call(self, x):
            return x + self.table[None]

    inputs = keras.Input((length,), dtype="int32")
    h = PositionEmbedding()(keras.layers.Embedding(vocab_size, d_model)(inputs))
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
    return keras.Model(inputs, keras.layers.Dense(vocab_size)(h))


def log_softmax(logits):
    return special.log_softmax(np.asarray(logits, "float64"), axis=-1)


def nll_of(logits, labels):
    log_q = log_softmax(logits)
    return float(-np.take_along_axis(log_q, labels[..., None], -1).mean())


def metrics_of(logits, labels, p_star):
    """Accuracy, perplexity, exact KL(p* || q) and ECE over all positions."""
    from keras_ptloss.calibration import expected_calibration_error

    log_q = log_softmax(logits)
    nll = float(-np.take_along_axis(log_q, labels[..., None], -1).mean())
    with np.errstate(divide="ignore", invalid="ignore"):
        kl = np.where(p_star > 0, p_star * (np.log(p_star) - log_q), 0.0)
    return {
        "accuracy": float(np.mean(log_q.argmax(-1) == labels)),
        "nll": nll,
        "perplexity": math.exp(nll),
        "kl": float(kl.sum(-1).mean()),
        "ece": expected_calibration_error(np.exp(log_q), labels),
    }


class Condition:
    """One condition's data, teacher and students (one backend)."""

    def __init__(self, name, size):
        import keras

        from keras_ptloss.datasets import make_language

        self.keras, self.name, self.size = keras, name, size
        self.setting = dict(CONDITIONS[name], **size.get("shrink", {}))
        counts = {
            "train": self.setting["train"],
            "transfer": self.setting["transfer"],
            "validation": size["validation"],
            "test": size["test"],
        }
        total = sum(counts.values())
        splits, language = make_language(
            total,
            length=size["length"],
            fractions={k: v / total for k, v in counts.items()},
            seed=0,
            **size["language"],
        )
        self.splits = splits
        self.vocab = size["language"]["vocab_size"]
        keras.utils.set_random_seed(0)
        teacher = self.model(size["teacher"])
        teacher.compile(
            optimizer=keras.optimizers.Adam(size["learning_rate"]),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        teacher.fit(
            *splits["train"],
            batch_size=self.setting["batch_size"],
            epochs=self.setting["teacher_epochs"],
            verbose=0,
        )
        self.x, self.labels = splits["transfer"]
        self.teacher = self.logits(teacher, self.x)
        self.validation = splits["validation"]
        self.validation_teacher = self.logits(teacher, self.validation[0])
        self.test_x, self.test_y = splits["test"]
        self.p_star = language.next_token_probs(self.test_x)
        train_x, train_y = splits["train"]
        self.references = [
            dict(
                method="teacher",
                **self.measure(teacher),
                train_perplexity=math.exp(
                    nll_of(self.logits(teacher, train_x), train_y)
                ),
            ),
            dict(
                method="bayes",
                **metrics_of(
                    np.log(np.maximum(self.p_star, 1e-30)),
                    self.test_y,
                    self.p_star,
                ),
                entropy_rate=language.entropy_rate(self.test_x),
            ),
        ]

    def model(self, config):
        return transformer(
            self.keras,
            self.vocab,
            self.size["length"],
            config["d_model"],
            config["heads"],
            config["layers"],
        )

    def build_student(self):
        return self.model(self.size["student"])

    def logits(self, model, x):
        return np.asarray(model.predict(x, batch_size=256, verbose=0))

    def measure(self, model):
        return metrics_of(
            self.logits(model, self.test_x), self.test_y, self.p_star
        )

    def optimizer(self):
        return self.keras.optimizers.Adam(self.size["learning_rate"])

    def train(self, base, loss, targets):
        """A student from the search `base`'s initial weights, trained with
        `loss` against `targets` on its batches, in its order."""
        student = self.build_student()
        student.set_weights(base.initial_weights)
        student.compile(optimizer=self.optimizer(), loss=loss)
        student.fit(**base.fit_kwargs(self.x, targets), verbose=0)
        return student

    def tune(self, base, make_loss, targets):
        """The temperature of the grid whose student has the lowest
        validation NLL: `(student, T, validation NLLs)`."""
        found = []
        for t in self.size["temperatures"]:
            student = self.train(base, make_loss(t), targets)
            score = nll_of(
                self.logits(student, self.validation[0]), self.validation[1]
            )
            found.append((score, t, student))
        best = min(range(len(found)), key=lambda i: found[i][0])
        return found[best][2], found[best][1], [f[0] for f in found]

    def search(self, seed, **options):
        import keras_ptloss as kp

        epochs = self.setting["student_epochs"]
        if "budget" in options:
            options["budget"] *= epochs
        return kp.search_coefficients(
            self.build_student,
            self.x,
            self.teacher,
            self.validation,
            order=self.size["order"],
            epochs=epochs,
            validation_teacher=self.validation_teacher,
            optimizer=self.optimizer,
            batch_size=self.setting["batch_size"],
            seed=seed,
            verbose=0,
            **options,
        )

    def selection_rows(self, seed):
        """Teacher probabilities (T = 1) and sampled next tokens at a random
        subsample of validation positions (the selection's cost grows with
        rows times vocabulary)."""
        probs = np.exp(log_softmax(self.validation_teacher)).reshape(
            -1, self.vocab
        )
        labels = self.validation[1].reshape(-1)
        count = min(self.size["selection_positions"], labels.size)
        rows = np.random.default_rng(seed).choice(
            labels.size, count, replace=False
        )
        return probs[rows], labels[rows]

    def seed_records(self, seed):
        """Every method of one seed: a record each."""
        import time

        import keras_ptloss as kp

        keras = self.keras
        out = []

        def record(method, student, started, **chosen):
            out.append(
                dict(
                    method=method,
                    seed=seed,
                    seconds=time.perf_counter() - started,
                    **self.measure(student),
                    **chosen,
                )
            )

        # The search on the logits first: every compiled baseline then
        # starts from its initial weights and replays its batches (paired).
        started = time.perf_counter()
        base = self.search(
            seed,
            budget=len(self.size["temperatures"]),
            temperatures=self.size["temperatures"],
            strengths=self.size["strengths"],
            standardize=False,
            metric="nll",
            calibrate=False,
        )
        record("pt_search", base.student, started, **self.chosen(base))

        started = time.perf_counter()
        scce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        record("student", self.train(base, scce, self.labels), started)

        started = time.perf_counter()
        kd, t_kd, scores = self.tune(base, lambda t: kp.KDLoss(t), self.teacher)
        record("kd", kd, started, temperature=t_kd, validation_nll=scores)
        started = time.perf_counter()
        calibrated = kp.calibrate(kd, self.validation)
        record(
            "kd_calibrated",
            calibrated,
            started,
            temperature=t_kd,
            calibration_temperature=calibrated.temperature,
        )

        packed = np.concatenate(
            [self.teacher, self.labels[..., None].astype("float32")], -1
        )
        for method, make_loss, targets in (
            ("kd_ce", lambda t: kp.KDCELoss(0.5, t), packed),
            ("lskd", lambda t: kp.LSKDLoss(t), self.teacher),
        ):
            started = time.perf_counter()
            student, t, scores = self.tune(base, make_loss, targets)
            record(
                method, student, started, temperature=t, validation_nll=scores
            )

        started = time.perf_counter()
        picked = kp.select_coefficients(
            *self.selection_rows(seed),
            order=self.size["order"],
            temperature=t_kd,
            seed=seed,
            verbose=0,
        )
        eps = [float(e) for e in picked.coefficients]
        student = self.train(base, kp.PTLoss(eps, t_kd), self.teacher)
        record(
            "pt_selected", student, started, temperature=t_kd, coefficients=eps
        )

        started = time.perf_counter()
        default = self.search(seed)
        chosen = self.chosen(default)
        record(
            "pt_default_raw", default.uncalibrated_student, started, **chosen
        )
        chosen["calibration_temperature"] = default.student.temperature
        record("pt_default", default.student, started, **chosen)
        return out

    def chosen(self, result):
        """What a search chose, and what it cost."""
        return {
            "winner": result.candidates[result.winner].label,
            "temperature": float(result.temperature),
            "coefficients": [float(e) for e in np.ravel(result.coefficients)],
            "standardize": bool(result.standardize),
            "candidates": len(result.candidates),
            "student_epochs": result.cost["student_epochs"],
        }


def language(conditions, seeds, **size):
    """Per condition: the teacher's and p*'s metrics, then every method's
    on each seed (student initial weights and batch order; the language,
    the data and the teacher are fixed by the condition)."""
    import time

    records = []
    for name in conditions:
        started = time.perf_counter()
        condition = Condition(name, size)
        for reference in condition.references:
            reference["seconds"] = time.perf_counter() - started
            records.append({"condition": name, "seed": None, **reference})
        for seed in range(seeds):
            for record in condition.seed_records(seed):
                records.append({"condition": name, **record})
            print(f"condition {name} seed {seed} done", flush=True)
    return records


def chosen_text(runs):
    """What a method chose on each seed, counted: "T=1 ×3"."""
    counts = {}
    for run in runs:
        text = run.get("winner") or (
            f"T={run['temperature']:g}" if "temperature" in run else ""
        )
        if "calibration_temperature" in run:
            text += f", calibrated T={run['calibration_temperature']:.2f}"
        counts[text] = counts.get(text, 0) + 1
    return "; ".join(
        f"{text} ×{n}" if n > 1 else text for text, n in counts.items() if text
    )


def by_method(records):
    """Records grouped by (condition, method), methods in `METHODS` order."""
    found = groups(records, ("condition", "method"))
    order = list(METHODS)
    return sorted(found.items(), key=lambda item: order.index(item[0][1]))


def spread(values, digits):
    """`mean ± std` over seeds; the mean alone for one value."""
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return mean_std(values, digits)


def method_rows(records):
    """One row per (condition, method): its metrics over seeds."""
    rows = []
    for (condition, method), runs in by_method(records):
        row = {
            "condition": condition,
            "method": METHODS[method],
            "n": len(runs),
        }
        row.update({m: [r[m] for r in runs] for m in METRICS})
        rows.append(dict(row, chosen=chosen_text(runs)))
    return rows


def signed_mean_se(values, digits):
    """`mean ± SE` (signed) of paired differences."""
    mean, se = mean_se(values)
    return f"{mean:+.{digits}f} ± {se:.{digits}f}"


def difference_rows(records):
    """Each method's paired differences to tuned KD (same condition, seed)."""
    kd = {
        (r["condition"], r["seed"]): r for r in records if r["method"] == "kd"
    }
    rows = []
    for (condition, method), runs in by_method(records):
        pairs = [
            (r, kd[condition, r["seed"]])
            for r in runs
            if (condition, r["seed"]) in kd
        ]
        if method == "kd" or not pairs or runs[0]["seed"] is None:
            continue
        row = {
            "condition": condition,
            "method": METHODS[method],
            "n": len(pairs),
        }
        row.update({m: [r[m] - k[m] for r, k in pairs] for m in METRICS})
        rows.append(row)
    return rows


DIGITS = {"accuracy": 3, "perplexity": 1, "kl": 3, "ece": 3}
HEADERS = {
    "accuracy": "accuracy",
    "perplexity": "perplexity",
    "kl": "KL(p* ‖ q)",
    "ece": "ECE",
}

CASES = {
    "language": Case(
        run=language,
        sizes={
            "full": dict(
                conditions=["B"],
                seeds=3,
                language=dict(
                    vocab_size=1024,
                    num_states=32,
                    tokens_per_state=64,
                    successors=4,
                    concentration=0.2,
                ),
                length=32,
                validation=192,
                test=384,
                teacher=dict(d_model=64, heads=4, layers=2),
                student=dict(d_model=32, heads=2, layers=1),
                learning_rate=2e-3,
                order=5,
                temperatures=[1.0, 2.0, 4.0],
                strengths=[-0.5, 0.5, 2.0],
                selection_positions=2048,
            ),
            "quick": dict(
                conditions=["B"],
                seeds=1,
                language=dict(
                    vocab_size=24,
                    num_states=3,
                    tokens_per_state=8,
                    successors=2,
                    concentration=0.3,
                ),
                length=4,
                validation=8,
                test=8,
                shrink=dict(
                    train=16, transfer=16, teacher_epochs=1, student_epochs=1
                ),
                teacher=dict(d_model=4, heads=1, layers=1),
                student=dict(d_model=4, heads=1, layers=1),
                learning_rate=2e-3,
                order=2,
                temperatures=[1.0],
                strengths=[2.0],
                selection_positions=16,
            ),
        },  # fmt: skip
        backends=("jax",),
        merge=("condition",),
        description="LM distillation with exact p*: KD, PTLoss, searches",
    ),
}
TABLES = {
    "language": Table(
        case="language",
        columns=[
            ("condition", "condition", "{}"),
            ("method", "method", "{}"),
            ("seeds", "n", "{}"),
            *[
                (HEADERS[m], m, lambda v, d=DIGITS[m]: spread(v, d))
                for m in METRICS
            ],
            ("chosen", "chosen", "{}"),
        ],
        rows=method_rows,
    ),
    "language_vs_kd": Table(
        case="language",
        columns=[
            ("condition", "condition", "{}"),
            ("method", "method", "{}"),
            ("pairs", "n", "{}"),
            *[
                (
                    f"Δ {HEADERS[m]}",
                    m,
                    lambda v, d=DIGITS[m]: signed_mean_se(v, d),
                )
                for m in METRICS
            ],
        ],
        rows=difference_rows,
    ),
}
