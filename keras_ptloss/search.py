"""Student-aware choice of PTLoss coefficients: a population, halved.

`search_coefficients` trains candidate losses as students, all at once in
one `StudentPopulation`, and keeps the best on a labelled validation split
by successive halving (docs/design.md, "The student-aware search").
"""

import dataclasses
import itertools
import math
import operator
import threading
import time
import warnings

import keras
import numpy as np

from keras_ptloss._checks import as_logits_array
from keras_ptloss._checks import check_bool
from keras_ptloss._checks import check_choice
from keras_ptloss._checks import check_finite
from keras_ptloss._checks import check_int
from keras_ptloss._checks import check_labels
from keras_ptloss._checks import check_number
from keras_ptloss._checks import check_probabilities
from keras_ptloss._checks import check_standardizable
from keras_ptloss._checks import check_temperature
from keras_ptloss._checks import mean_nll
from keras_ptloss._checks import softmax
from keras_ptloss._checks import to_numpy
from keras_ptloss._names import MODES
from keras_ptloss._names import SCORE_METRICS
from keras_ptloss._progress import Progress
from keras_ptloss.calibration import calibrate_outputs
from keras_ptloss.distiller import Distiller
from keras_ptloss.losses import PTLoss
from keras_ptloss.population import StudentPopulation
from keras_ptloss.population import _check_member_axis
from keras_ptloss.population import _check_member_optimizer
from keras_ptloss.selection import SelectionConfig
from keras_ptloss.selection import select_with_config

# KD's usual tuning grid, so that the KD anchor is as strong as tuned KD.
DEFAULT_TEMPERATURES = (1.0, 2.0, 4.0, 8.0)
# Z-scored logits (unit standard deviation) need lower temperatures.
DEFAULT_STANDARDIZED_TEMPERATURES = (0.5, 1.0, 2.0, 4.0)
DEFAULT_STRENGTHS = (-2.0, -0.5, 0.5, 2.0, 8.0)


@dataclasses.dataclass(frozen=True, eq=False)
class Candidate:
    """One configuration of the loss to try.

    Attributes:
        coefficients: numpy array `(M,)` (shared) or `(K, M)` (class-wise).
        temperature: the distillation temperature `T > 0`.
        standardize: whether teacher and student logits are z-scored
            before tempering (logit standardisation).
        source: where it comes from: `"kd"` (`eps = 0`), `"selection"` (the
            training-free pick), `"direction"` (`eps = (s, 0, ...)`) or
            `"user"`.
    """

    coefficients: np.ndarray
    temperature: float
    standardize: bool = False
    source: str = "user"

    @property
    def is_kd(self):
        """Whether this is plain KD (`eps = 0`, no standardisation)."""
        return not self.standardize and not np.any(self.coefficients)

    @property
    def is_lskd(self):
        """Whether this is LS-KD (`eps = 0` on standardised logits)."""
        return self.standardize and not np.any(self.coefficients)

    @property
    def label(self):
        """A short readable name, e.g. `"KD T=2"` or `"eps1=+8 T=4"`."""
        if not np.any(self.coefficients):
            name = "KD"
        elif self.source == "direction":
            name = f"eps1={self.coefficients.reshape(-1)[0]:+g}"
        elif self.source == "selection":
            shape = "classwise" if self.coefficients.ndim == 2 else "shared"
            name = f"selection ({shape})"
        else:
            values = np.round(self.coefficients.reshape(-1)[:3], 3).tolist()
            more = ", ..." if self.coefficients.size > 3 else ""
            name = f"eps=({', '.join(f'{v:g}' for v in values)}{more})"
        suffix = " LS" if self.standardize else ""
        return f"{name} T={self.temperature:g}{suffix}"

    def to_dict(self):
        """The candidate as JSON-ready plain Python values."""
        return {
            "coefficients": self.coefficients.tolist(),
            "temperature": self.temperature,
            "standardize": self.standardize,
            "source": self.source,
            "label": self.label,
        }


@dataclasses.dataclass(frozen=True, eq=False)
class SearchResult:
    """Outcome of `search_coefficients`.

    Attributes:
        coefficients: the winner's `eps`, `(M,)` or `(K, M)`.
        temperature: its temperature.
        standardize: whether it z-scores the logits.
        loss: a ready `PTLoss` with these settings.
        student: the winner's student, trained for the full `epochs`,
            calibrated (a `keras_ptloss.CalibratedModel`) unless the search
            ran with `calibrate=False`.
        uncalibrated_student: the winner's student as trained.
        calibration: `CalibratedModel.calibration` on the validation split;
            `{}` with `calibrate=False`.
        score: its validation score at the end.
        kd_score: the best plain KD member's final validation score
            (`None` when none was kept to the last rung).
        lskd_score: the same for LS-KD (`eps = 0` on z-scored logits).
        metric: the metric's name; `higher_is_better` its direction.
        candidates: every candidate tried, in priority order.
        ranking: one dict per rung: `{"rung", "epochs", "members":
            [{"candidate", "label", "score"}, ...]}`, best first.
        schedule: the rungs planned: `[{"members", "epochs"}, ...]`
            (`epochs` cumulative).
        cost: `{"student_epochs": ..., "seconds": ...,
            "training_seconds": ..., "budget": ...}`.
        training: how every member was trained, JSON-ready: `{"epochs",
            "batch_size", "seed", "num_examples", "student_loss_weight",
            "teacher_from_logits", "optimizer"}`. Each epoch's batch order
            is the next `numpy.random.default_rng(seed).permutation(
            num_examples)`, cut into batches of `batch_size`.
        initial_weights: the weights every member started from (numpy
            arrays, in `student.get_weights()` order).
    """

    coefficients: np.ndarray
    temperature: float
    standardize: bool
    loss: PTLoss
    student: keras.Model
    uncalibrated_student: keras.Model
    calibration: dict
    score: float
    kd_score: float | None
    lskd_score: float | None
    metric: str
    higher_is_better: bool
    candidates: tuple
    ranking: tuple
    schedule: tuple
    cost: dict
    training: dict
    initial_weights: tuple

    @property
    def winner(self):
        """Index of the winning candidate in `candidates`."""
        return self.ranking[-1]["members"][0]["candidate"]

    def summary(self):
        """A readable multi-line summary of the search."""
        arrow = "higher" if self.higher_is_better else "lower"
        lines = [
            f"Student-aware search: {len(self.candidates)} candidates, "
            f"{len(self.ranking)} rung(s), validation {self.metric} "
            f"({arrow} is better)",
        ]
        for rung in self.ranking:
            best = rung["members"][:3]
            shown = ", ".join(f"{m['label']}: {m['score']:.4f}" for m in best)
            more = len(rung["members"]) - len(best)
            tail = f" (+{more} more)" if more > 0 else ""
            lines.append(
                f"  rung {rung['rung']}: {len(rung['members'])} students to "
                f"epoch {rung['epochs']}: {shown}{tail}"
            )
        winner = self.candidates[self.winner]
        lines.append(
            f"  winner: {winner.label}, {self.metric} {self.score:.4f}"
        )
        for name, score in (
            ("KD (eps = 0)", self.kd_score),
            ("LS-KD (eps = 0, z-scored logits)", self.lskd_score),
        ):
            if score is not None:
                lines.append(f"  {name} at the same epochs: {score:.4f}")
        if self.calibration:
            c = self.calibration
            lines.append(
                f"  calibrated: T = {c['temperature']:.3g} fitted on the "
                f"validation split; NLL {c['nll_before']:.4f} -> "
                f"{c['nll_after']:.4f}, ECE {c['ece_before']:.4f} -> "
                f"{c['ece_after']:.4f} (accuracy unchanged)"
            )
        t = self.training
        optimizer = t["optimizer"]
        learning_rate = optimizer["config"].get("learning_rate")
        rate = (
            f", learning_rate={learning_rate:g}"
            if isinstance(learning_rate, (int, float))
            else ""
        )
        lines.append(
            f"  trained: {t['epochs']} epochs, batch_size={t['batch_size']}, "
            f"seed={t['seed']}, student_loss_weight="
            f"{t['student_loss_weight']:g}, "
            f"{_optimizer_name(optimizer)}{rate}"
        )
        lines.append(
            f"  cost: {self.cost['student_epochs']:g} student-epochs of "
            f"{self.cost['budget']:g}, {self.cost['seconds']:.1f} s"
        )
        return "\n".join(lines)

    def __str__(self):
        return self.summary()

    def to_dict(self):
        """The result as JSON-ready plain Python values (no models)."""
        return {
            "coefficients": self.coefficients.tolist(),
            "temperature": self.temperature,
            "standardize": self.standardize,
            "score": self.score,
            "kd_score": self.kd_score,
            "lskd_score": self.lskd_score,
            "calibration": dict(self.calibration),
            "metric": self.metric,
            "higher_is_better": self.higher_is_better,
            "winner": self.winner,
            "candidates": [c.to_dict() for c in self.candidates],
            "ranking": [dict(r) for r in self.ranking],
            "schedule": [dict(s) for s in self.schedule],
            "cost": dict(self.cost),
            "training": dict(self.training),
        }

    def build_distiller(self, teacher, student):
        """A compiled `Distiller` that trains `student` as the winner was.

        The Distiller uses the winner's `loss`, the search's
        `student_loss_weight` (with `SparseCategoricalCrossentropy(
        from_logits=True)` as hard-label loss when `w > 0`) and a new
        optimizer from `training["optimizer"]`; `student` gets
        `initial_weights`. Trained with `fit(**result.fit_kwargs(x,
        labels))`, it sees the members' batches in their order and ends
        where the winner's student ended, up to floating-point rounding,
        the random draws of layers such as dropout, and optimizer slots
        the search could not carry to the survivors (it warns then).

        Args:
            teacher: the teacher `keras.Model` whose outputs the search
                read.
            student: a new, built student `keras.Model` of the searched
                architecture; its weights are set to `initial_weights`.

        Returns:
            A compiled `keras_ptloss.Distiller`.

        Raises:
            ValueError: if `student` is not a built `keras.Model` with the
                members' weight shapes, or if the teacher's last layer
                contradicts `teacher_from_logits`.

        Example:

        >>> import keras, numpy as np
        >>> from keras_ptloss import search_coefficients
        >>> rng = np.random.default_rng(0)
        >>> x = rng.normal(size=(96, 4)).astype("float32")
        >>> def build():
        ...     return keras.Sequential(
        ...         [keras.Input((4,)), keras.layers.Dense(3)])
        >>> teacher = build()
        >>> y_val = teacher.predict(x[:32], verbose=0).argmax(1)
        >>> result = search_coefficients(
        ...     build, x, teacher, (x[:32], y_val), order=2, epochs=2,
        ...     temperatures=(1.0,), strengths=(2.0,), calibrate=False,
        ...     verbose=0,
        ... )
        >>> distiller = result.build_distiller(teacher, build())
        >>> history = distiller.fit(**result.fit_kwargs(x), verbose=0)
        >>> len(history.history["loss"]) == result.training["epochs"]
        True
        """
        if not isinstance(student, keras.Model):
            raise ValueError(
                "`student` must be a keras.Model. Received: "
                f"student={student!r}"
            )
        if not student.built or not student.weights:
            raise ValueError(
                "`student` must be built, so that it can take the members' "
                "initial weights: call it once on a batch first, e.g. "
                "`student(x[:1])`. Received: an unbuilt student"
            )
        shapes = [tuple(w.shape) for w in student.get_weights()]
        expected = [tuple(w.shape) for w in self.initial_weights]
        if shapes != expected:
            raise ValueError(
                "`student` must have the searched architecture. Received: "
                f"weight shapes {shapes}, expected {expected}"
            )
        student.set_weights(self.initial_weights)
        weight = self.training["student_loss_weight"]
        distiller = Distiller(
            teacher,
            student,
            self.loss,
            student_loss_weight=weight,
        )
        hard = None
        if weight > 0:
            hard = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        distiller.compile(
            optimizer=keras.optimizers.deserialize(self.training["optimizer"]),
            loss=hard,
        )
        return distiller

    def fit_kwargs(self, x, y=None):
        """`fit` arguments that replay the search's batches, epoch by epoch.

        For `Distiller.fit` (or `keras.Model.fit`): `x` is a `SearchBatches`
        yielding the members' batches in their order; one search epoch is
        one Keras epoch.

        Args:
            x: the search's transfer inputs, the same examples in the same
                order: an array, a dict of arrays, or offline data
                (`{"student_inputs": x, "teacher_outputs": t}`, as
                `Distiller.precompute_teacher` returns).
            y: the search's `labels` (needed when `student_loss_weight > 0`).

        Returns:
            A dict `{"x", "epochs", "steps_per_epoch", "shuffle"}`.

        Raises:
            ValueError: if `x` or `y` does not hold the search's number of
                examples, or `y` is missing with `student_loss_weight > 0`.

        Example:

        >>> import keras, numpy as np
        >>> from keras_ptloss import search_coefficients
        >>> rng = np.random.default_rng(0)
        >>> x = rng.normal(size=(80, 4)).astype("float32")
        >>> def build():
        ...     return keras.Sequential(
        ...         [keras.Input((4,)), keras.layers.Dense(3)])
        >>> result = search_coefficients(
        ...     build, x, 3 * x[:, :3], (x[:32], x[:32, :3].argmax(1)),
        ...     order=2, epochs=3, temperatures=(1.0,), strengths=(2.0,),
        ...     batch_size=32, calibrate=False, verbose=0,
        ... )
        >>> kwargs = result.fit_kwargs(x)
        >>> kwargs["epochs"], kwargs["steps_per_epoch"], kwargs["shuffle"]
        (3, 3, False)
        """
        t = self.training
        count = t["num_examples"]
        x = _replay_arrays(x, "x", count)
        if y is None and t["student_loss_weight"] > 0:
            raise ValueError(
                "`y` (the search's `labels`) is needed: the search mixed "
                "hard labels in with student_loss_weight="
                f"{t['student_loss_weight']:g}. Received: y=None"
            )
        if y is not None:
            y = _replay_arrays(y, "y", count)
        return {
            "x": SearchBatches(x, y, t["batch_size"], t["seed"]),
            "epochs": t["epochs"],
            "steps_per_epoch": math.ceil(count / t["batch_size"]),
            "shuffle": False,
        }

    def plot(self, path=None):
        """Plots each rung's scores (matplotlib, imported here).

        Args:
            path: file to save the figure to; `None` only returns it.

        Returns:
            The matplotlib `Figure`.
        """
        import matplotlib

        if path is not None:
            matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        figure, axis = plt.subplots(figsize=(7, 4))
        tracks = {}
        for rung in self.ranking:
            for member in rung["members"]:
                tracks.setdefault(member["candidate"], []).append(
                    (rung["epochs"], member["score"])
                )
        for index, points in tracks.items():
            epochs, scores = zip(*points, strict=True)
            winner = index == self.winner
            axis.plot(
                epochs,
                scores,
                marker="o",
                lw=2.5 if winner else 1.0,
                alpha=1.0 if winner else 0.5,
                label=self.candidates[index].label if winner else None,
            )
        axis.set_xlabel("epochs trained")
        axis.set_ylabel(f"validation {self.metric}")
        axis.set_title("Successive halving of the student population")
        axis.legend(loc="best")
        figure.tight_layout()
        if path is not None:
            figure.savefig(path, dpi=120)
        return figure


class SearchBatches(keras.utils.PyDataset):
    """The batches of `search_coefficients`, in its order, for `fit`.

    Batch `i` is step `i % steps` of epoch `i // steps`
    (`steps = ceil(N / batch_size)`), cut from that epoch's permutation. The
    data set has no end, so pass `steps_per_epoch=steps` to `fit` (as
    `SearchResult.fit_kwargs` does).

    Args:
        x: an array or a (nested) dict of arrays with `N` rows.
        y: labels with `N` rows, or `None`.
        batch_size: the search's batch size.
        seed: the search's seed.

    Example:

    >>> import numpy as np
    >>> batches = SearchBatches(np.arange(5)[:, None], None, 2, seed=0)
    >>> first, = batches[0]
    >>> first.shape
    (2, 1)
    """

    def __init__(self, x, y, batch_size, seed, **kwargs):
        super().__init__(**kwargs)
        self.x = x
        self.y = y
        self.batch_size = check_int(batch_size, "batch_size", 1)
        self.seed = check_int(seed, "seed", 0)
        self.count = keras.tree.flatten(x)[0].shape[0]
        self.steps = math.ceil(self.count / self.batch_size)
        self._rng = np.random.default_rng(self.seed)
        self._permutations = []
        self._lock = threading.Lock()

    @property
    def num_batches(self):
        return None

    def permutation(self, epoch):
        """Epoch `epoch`'s order of the examples (as the search drew it)."""
        with self._lock:
            while len(self._permutations) <= epoch:
                self._permutations.append(self._rng.permutation(self.count))
            return self._permutations[epoch]

    def __getitem__(self, index):
        epoch, step = divmod(int(index), self.steps)
        rows = self.permutation(epoch)[
            step * self.batch_size : (step + 1) * self.batch_size
        ]
        x = keras.tree.map_structure(lambda v: v[rows], self.x)
        if self.y is None:
            return (x,)
        return x, self.y[rows]


def _replay_arrays(values, name, count):
    """`values` (an array or a structure of them) as numpy, `count` rows."""
    try:
        values = keras.tree.map_structure(
            lambda v: np.asarray(to_numpy(v)), values
        )
    except (TypeError, ValueError) as e:
        raise ValueError(
            f"`{name}` must be an array or a dict of arrays. Received: "
            f"{name}={values!r}"
        ) from e
    rows = [v.shape[0] if v.ndim else None for v in keras.tree.flatten(values)]
    if not rows or any(r != count for r in rows):
        raise ValueError(
            f"`{name}` must hold the search's {count} examples (its arrays' "
            f"first dimension). Received: first dimensions {rows}"
        )
    return values


def halving_schedule(
    num_candidates, epochs, eta=3, num_final=1, first_epochs=None
):
    """Rungs of successive halving: how many students to which epoch.

    Rung `i` trains `members[i]` students up to `epochs[i]` (cumulative);
    then the best `members[i + 1]` go on. Epochs grow by `eta` per rung and
    the last rung reaches `epochs`; members shrink by `eta` per rung down to
    `num_final`. With fewer `epochs` than the rungs need, fewer rungs each
    cut more.

    Args:
        num_candidates: students in the first rung (`>= 1`).
        epochs: epochs of the last rung (`>= 1`).
        eta: reduction factor (`>= 2`).
        num_final: students in the last rung (`>= 1`).
        first_epochs: epochs of the first rung, or `None` for
            `epochs / eta**rungs` (rounded, at least 1).

    Returns:
        A list of dicts `{"members": n, "epochs": e}`.

    Example:

    >>> halving_schedule(21, 27, eta=3, num_final=2)
    [{'members': 21, 'epochs': 1}, {'members': 7, 'epochs': 3}, \
{'members': 3, 'epochs': 9}, {'members': 2, 'epochs': 27}]
    """
    num_candidates = check_int(num_candidates, "num_candidates", 1)
    epochs = check_int(epochs, "epochs", 1)
    eta = check_int(eta, "eta", 2)
    num_final = min(check_int(num_final, "num_final", 1), num_candidates)
    if num_candidates <= num_final:
        return [{"members": num_candidates, "epochs": epochs}]
    rungs = math.ceil(
        math.log(num_candidates / num_final) / math.log(eta) - 1e-9
    )
    rungs = min(rungs, epochs - 1)
    if rungs == 0:
        return [{"members": num_candidates, "epochs": epochs}]
    ratio = (num_candidates / num_final) ** (1.0 / rungs)
    ratio = max(ratio, float(eta)) if rungs > 1 else ratio
    members = [num_candidates]
    for _ in range(rungs - 1):
        members.append(max(num_final, math.ceil(members[-1] / ratio - 1e-9)))
    members.append(num_final)
    if first_epochs is None:
        counts = [round(epochs / eta ** (rungs - i)) for i in range(rungs)]
    else:
        first = check_int(first_epochs, "first_epochs", 1, epochs)
        counts = [
            round(first * (epochs / first) ** (i / rungs)) for i in range(rungs)
        ]
    schedule, previous = [], 0
    for i, count in enumerate(counts):
        count = min(max(count, previous + 1), epochs - (rungs - i))
        schedule.append({"members": members[i], "epochs": count})
        previous = count
    schedule.append({"members": num_final, "epochs": epochs})
    return schedule


def schedule_cost(schedule):
    """Student-epochs a schedule trains: `sum_i n_i (e_i - e_{i-1})`."""
    cost, previous = 0, 0
    for rung in schedule:
        cost += rung["members"] * (rung["epochs"] - previous)
        previous = rung["epochs"]
    return cost


def propose_candidates(
    validation_teacher=None,
    validation_labels=None,
    order=5,
    temperatures=DEFAULT_TEMPERATURES,
    strengths=DEFAULT_STRENGTHS,
    mode="shared",
    standardize=False,
    seed=0,
    standardized_temperatures=DEFAULT_STANDARDIZED_TEMPERATURES,
):
    """Candidates for `search_coefficients`, most promising first.

    At each temperature: `eps = 0` (plain KD), the pick of
    `select_coefficients` on the validation split (when the teacher's
    validation probabilities are given; class-wise too with
    `mode="classwise"`), and `eps = (s, 0, ..., 0)` for each `s` in
    `strengths`. With `standardize="search"` the same comes on z-scored
    logits too (`eps = 0` there is LS-KD), at `standardized_temperatures`;
    with `True` only on z-scored logits. The training-free picks come on
    the logits only.

    Args:
        validation_teacher: teacher probabilities `(N, K)` on the validation
            split at `T = 1`, or `None` (no training-free pick).
        validation_labels: integer labels `(N,)` of that split.
        order: `M >= 1`.
        temperatures: temperatures to try.
        strengths: first-order coefficients `s` to try (nonzero).
        mode: `"shared"` or `"classwise"` (adds the class-wise pick).
        standardize: `False`, `True` or `"search"` (z-scored logits need
            at least 3 classes).
        seed: seed of `select_coefficients`.
        standardized_temperatures: temperatures of the candidates on
            z-scored logits.

    Returns:
        A list of `Candidate`; the `eps = 0` ones first (KD, then LS-KD),
        then the picks, then the directions by decreasing `|s|` (for equal
        `|s|`, sharpening first).

    Example:

    >>> candidates = propose_candidates(order=2, temperatures=(1.0, 4.0),
    ...                                 strengths=(-1.0, 2.0))
    >>> [c.label for c in candidates]
    ['KD T=1', 'KD T=4', 'eps1=+2 T=1', 'eps1=+2 T=4', 'eps1=-1 T=1', \
'eps1=-1 T=4']
    """
    proposal = _Proposal.check(
        check_int(order, "order", 1),
        temperatures,
        strengths,
        mode,
        standardize,
        seed,
        standardized_temperatures,
    )
    probs = labels = None
    if validation_teacher is not None and False in proposal.flags:
        probs = check_probabilities(validation_teacher, "validation_teacher")
        if proposal.standardize:
            check_standardizable(probs.shape[-1], "validation_teacher")
        labels = check_labels(
            validation_labels,
            probs.shape[0],
            probs.shape[-1],
            "validation_labels",
        )
    return _propose(proposal, probs, labels)


@dataclasses.dataclass(frozen=True)
class _Proposal:
    """The checked settings of `propose_candidates`."""

    order: int
    temperatures: tuple
    strengths: tuple
    mode: str
    standardize: object  # False, True or "search"
    seed: object  # checked by the selection's own settings
    standardized_temperatures: tuple

    @classmethod
    def check(
        cls,
        order,
        temperatures,
        strengths,
        mode,
        standardize,
        seed,
        standardized_temperatures,
    ):
        """Checks the settings (`order` already checked)."""
        temperatures = _check_temperature_grid(temperatures)
        standardized_temperatures = _check_temperature_grid(
            standardized_temperatures, "standardized_temperatures"
        )
        return cls(
            order=order,
            temperatures=temperatures,
            strengths=_check_strengths(strengths),
            mode=check_choice(mode, "mode", MODES),
            standardize=_check_standardize_option(standardize, False),
            seed=seed,
            standardized_temperatures=standardized_temperatures,
        )

    @property
    def flags(self):
        """The standardisation flags proposed."""
        return {False: (False,), True: (True,), "search": (False, True)}[
            self.standardize
        ]


def _propose(proposal, probs=None, labels=None):
    """`propose_candidates` on checked arguments."""
    flags = proposal.flags
    grids = {
        False: proposal.temperatures,
        True: proposal.standardized_temperatures,
    }
    picks = []
    if probs is not None and False in flags:
        picks = _picks(proposal, probs, labels)
    zero = np.zeros((proposal.order,))
    # A budget drops candidates from the end; the anchors already stand
    # for small perturbations, so the directions go by decreasing |s|.
    candidates = [
        Candidate(zero.copy(), float(t), flag, "kd")
        for flag in flags
        for t in grids[flag]
    ]
    candidates += picks
    for s in sorted(proposal.strengths, key=lambda s: (-abs(s), -s)):
        direction = zero.copy()
        direction[0] = s
        twins = itertools.zip_longest(*(grids[flag] for flag in flags))
        candidates += [
            Candidate(direction.copy(), float(t), flag, "direction")
            for pair in twins
            for flag, t in zip(flags, pair, strict=True)
            if t is not None
        ]
    return candidates


def _picks(proposal, probs, labels):
    """The training-free picks (`select_coefficients`) at every temperature."""
    # Divided again as in `select_coefficients`: the picks depend on the
    # last bits of the rows.
    probs = _renormalized(probs)
    classwise = proposal.mode == "classwise"
    modes = ("shared", "classwise") if classwise else ("shared",)
    picks = []
    for pick_mode in modes:
        for temperature in proposal.temperatures:
            config = SelectionConfig(
                order=proposal.order,
                mode=pick_mode,
                temperature=temperature,
                seed=proposal.seed,
                verbose=0,
                num_candidates=64,
            )
            picked = select_with_config(probs, labels, config)
            coefficients = np.asarray(picked.coefficients, dtype="float64")
            picks.append(
                Candidate(coefficients, float(temperature), False, "selection")
            )
    return picks


def _renormalized(probs):
    """Rows divided by their sums, as `check_probabilities` returns them."""
    return probs / probs.sum(axis=-1)[..., None]


def search_coefficients(
    build_student,
    x,
    teacher,
    validation_data,
    order=5,
    epochs=10,
    budget=None,
    time_budget=None,
    temperatures=DEFAULT_TEMPERATURES,
    strengths=DEFAULT_STRENGTHS,
    mode="shared",
    standardize="auto",
    standardized_temperatures=DEFAULT_STANDARDIZED_TEMPERATURES,
    candidates=None,
    teacher_from_logits=True,
    validation_teacher=None,
    labels=None,
    student_loss_weight=0.0,
    metric="accuracy",
    higher_is_better=None,
    eta=3,
    keep_kd=True,
    optimizer=None,
    batch_size=64,
    seed=0,
    calibrate=True,
    verbose=1,
    member_axis=None,
):
    """Chooses PTLoss coefficients by training the students they give.

    Candidates (`propose_candidates`, or yours) are trained together as one
    `StudentPopulation`, all starting from the same weights and seeing the
    same batches. Successive halving keeps the best `1 / eta` on
    `validation_data` after each rung (weights and optimiser state carried
    over) and trains the last rung to `epochs`. By default the candidates
    cover the logits (`T` 1 to 8) and z-scored logits (`T` 0.5 to 4), and
    the best KD and LS-KD members (`eps = 0`) are kept to the last rung,
    so the winner scores at least as well as both on the validation split.
    The winner is the best on `metric` (ties go to the lower validation
    NLL); its student is returned calibrated (`keras_ptloss.calibrate`).

    Args:
        build_student: function with no arguments returning a fresh,
            uncompiled student `keras.Model` mapping `x` to logits. Every
            call must give the same architecture.
        x: the transfer inputs, shape `(N, ...)`, or a dict of such
            arrays with the same `N`.
        teacher: a teacher `keras.Model` (run once on `x`), or its outputs
            on `x`, shape `(N, K)`, or `(N, S, K)` for sequence models
            (the loss is then the mean over all positions).
        validation_data: `(x_val, y_val)` with integer labels, `(N_val,)`
            or, for sequences, `(N_val, S)` (scored over all positions);
            `x_val` an array or a dict, as `x`.
        order: `M >= 1`.
        epochs: epochs of the winner's full training.
        budget: most student-epochs to spend; defaults to `6 * epochs`.
            Candidates are dropped from the end of the list until the
            halving schedule fits.
        time_budget: optional seconds for the training: when the planned
            rungs would exceed it, the halving skips to the last rung
            (which always runs).
        temperatures, strengths, mode, standardized_temperatures: see
            `propose_candidates`.
        standardize: `"auto"` (default): candidates on the logits and, with
            `K >= 3` classes, on z-scored logits; `"search"` both (refused
            with `K = 2`), `True` z-scored only, `False` logits only.
        candidates: your own list of `Candidate` (replaces the proposal).
        teacher_from_logits: whether the teacher's outputs (its model's, or
            the arrays given) are logits (default) or probabilities.
        validation_teacher: the teacher's outputs on `x_val` when `teacher`
            is an array, for the training-free candidates.
        labels: hard labels of `x`, needed when `student_loss_weight > 0`.
        student_loss_weight: `w` in `[0, 1]`: each member's loss is
            `(1 - w) * PTLoss + w * cross-entropy`.
        metric: `"accuracy"` (default), `"nll"`, or a callable
            `(y_true, probs) -> float`.
        higher_is_better: direction of a callable `metric` (required then).
        eta: halving factor `>= 2`.
        keep_kd: keep the best `eps = 0` members (KD, and LS-KD when
            z-scored logits are searched) to the last rung.
        optimizer: a Keras optimizer (cloned for each rung) or a function
            returning one; defaults to `Adam(1e-3)`. Norm clipping and
            optimizers that couple a variable's entries (Adafactor, Lamb,
            Muon) are refused: they would mix the stacked members.
        batch_size: batch size.
        seed: seed of the initial weights and of the batch order.
        calibrate: calibrate the winner's student on `validation_data`.
            Defaults to `True`.
        verbose: `0` silent, `1` a progress bar and the summary, `2` the
            summary only.
        member_axis: name of an axis of the current `keras.distribution`'s
            device mesh (JAX backend only) to shard the population's
            member axis over in each training step (see
            `StudentPopulation`); the batch goes on the distribution's batch
            axis. Defaults to `None`: under `DataParallel` (or no
            distribution) every device holds every member.

    Returns:
        A `SearchResult`.

    Raises:
        ValueError: on invalid arguments, an empty candidate list, a budget
            below one full training (`epochs` student-epochs), or a
            `build_student` whose models differ in weight shapes.

    Example:

    >>> import keras, numpy as np
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(96, 4)).astype("float32")
    >>> teacher_logits = 3 * x[:, :3]
    >>> def build_student():
    ...     return keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> result = search_coefficients(
    ...     build_student, x, teacher_logits,
    ...     (x[:32], teacher_logits[:32].argmax(1)),
    ...     order=2, epochs=2, temperatures=(1.0,), strengths=(2.0,),
    ...     verbose=0,
    ... )
    >>> result.loss.order, result.cost["student_epochs"] <= 12
    (2, True)
    """
    start = time.perf_counter()
    settings = _check_settings(
        order=order,
        epochs=epochs,
        budget=budget,
        time_budget=time_budget,
        teacher_from_logits=teacher_from_logits,
        keep_kd=keep_kd,
        eta=eta,
        batch_size=batch_size,
        seed=seed,
        verbose=verbose,
        student_loss_weight=student_loss_weight,
        standardize=standardize,
        metric=metric,
        higher_is_better=higher_is_better,
        calibrate=calibrate,
        optimizer=optimizer,
        member_axis=member_axis,
    )
    if not callable(build_student):
        raise ValueError(
            "`build_student` must be a function returning a new student "
            f"model. Received: build_student={build_student!r}"
        )
    data = _teacher_pass(
        x, teacher, validation_data, validation_teacher, labels, settings
    )
    if candidates is None:
        proposal = _Proposal.check(
            settings.order,
            temperatures,
            strengths,
            mode,
            data.standardize,
            settings.training.seed,
            standardized_temperatures,
        )
        candidates = _propose(proposal, data.val_probs, data.y_val)
    candidates = _check_candidates(candidates, settings.order, data.classes)
    plan = _plan(candidates, settings)
    trained = _successive_halving(build_student, data, plan, settings)
    result = _assemble(trained, plan, data, settings, start)
    if settings.verbose:
        print(result.summary())
    return result


@dataclasses.dataclass(frozen=True)
class _Training:
    """How each member trains."""

    epochs: int
    batch_size: int
    seed: int
    student_loss_weight: float
    make_optimizer: object  # () -> a new Keras optimizer
    member_axis: str | None = None


@dataclasses.dataclass(frozen=True)
class _Halving:
    """How many student-epochs and seconds, and which anchors survive."""

    eta: int
    budget: float
    time_budget: float | None
    keep_kd: bool


@dataclasses.dataclass(frozen=True)
class _Scoring:
    """The validation metric: `fn(y_true, probs) -> float`."""

    fn: object
    name: str
    higher_is_better: bool


@dataclasses.dataclass(frozen=True)
class _Settings:
    """The checked scalar arguments of `search_coefficients`."""

    order: int
    standardize: object  # False, True, "search" or "auto"
    teacher_from_logits: bool
    calibrate: bool
    verbose: int
    training: _Training
    halving: _Halving
    scoring: _Scoring


def _check_settings(
    order,
    epochs,
    budget,
    time_budget,
    teacher_from_logits,
    keep_kd,
    eta,
    batch_size,
    seed,
    verbose,
    student_loss_weight,
    standardize,
    metric,
    higher_is_better,
    calibrate,
    optimizer,
    member_axis=None,
):
    """Checks the scalar arguments (in the order of the signature)."""
    order = check_int(order, "order", 1)
    epochs = check_int(epochs, "epochs", 1)
    budget = _check_budget(budget, epochs)
    if time_budget is not None:
        time_budget = check_number(
            time_budget, "time_budget", low=0.0, low_open=True
        )
    teacher_from_logits = check_bool(teacher_from_logits, "teacher_from_logits")
    keep_kd = check_bool(keep_kd, "keep_kd")
    halving = _Halving(check_int(eta, "eta", 2), budget, time_budget, keep_kd)
    batch_size = check_int(batch_size, "batch_size", 1)
    seed = check_int(seed, "seed", 0)
    verbose = check_int(verbose, "verbose", 0, 2)
    weight = check_number(student_loss_weight, "student_loss_weight", 0.0, 1.0)
    standardize = _check_standardize_option(standardize)
    scoring = _Scoring(*_check_metric(metric, higher_is_better))
    calibrate = check_bool(calibrate, "calibrate")
    training = _Training(
        epochs,
        batch_size,
        seed,
        weight,
        _optimizer_factory(optimizer),
        _check_member_axis(member_axis),
    )
    return _Settings(
        order=order,
        standardize=standardize,
        teacher_from_logits=teacher_from_logits,
        calibrate=calibrate,
        verbose=verbose,
        training=training,
        halving=halving,
        scoring=scoring,
    )


@dataclasses.dataclass(frozen=True)
class _Data:
    """The checked arrays of a search (`standardize` resolved)."""

    x: object  # an array or a dict of arrays
    targets: np.ndarray
    x_val: object
    y_val: np.ndarray
    positions: tuple
    classes: int
    val_probs: np.ndarray | None
    standardize: object


def _teacher_pass(
    x, teacher, validation_data, validation_teacher, labels, settings
):
    """Checks the arrays, runs a teacher model once; returns a `_Data`."""
    x = _check_inputs(x, "x")
    x_val, y_val = _check_validation_pair(validation_data)
    logits, val_logits = _teacher_logits(
        teacher,
        x,
        x_val,
        validation_teacher,
        settings.teacher_from_logits,
        settings.training.batch_size,
    )
    classes = logits.shape[-1]
    positions = logits.shape[1:-1]
    y_val = _position_labels(
        y_val, _num_examples(x_val), positions, classes, "validation_data"
    )
    standardize = _resolve_standardize(settings.standardize, classes)
    targets = logits.astype("float32")
    weight = settings.training.student_loss_weight
    if weight > 0:
        if labels is None:
            raise ValueError(
                "`labels` (hard labels of `x`) are needed when "
                f"`student_loss_weight` > 0. Received: labels=None, "
                f"student_loss_weight={weight}"
            )
        count = _num_examples(x)
        hard = _position_labels(
            labels, count, positions, classes, "labels"
        ).reshape(count, *positions)
        one_hot = np.eye(classes, dtype="float32")[hard]
        targets = np.concatenate([targets, one_hot], axis=-1)
    val_probs = None
    if val_logits is not None:
        val_probs = _renormalized(softmax(val_logits.reshape(-1, classes)))
    return _Data(
        x, targets, x_val, y_val, positions, classes, val_probs, standardize
    )


# The eps = 0 anchors a search may keep to the last rung: KD, then LS-KD.
_ANCHORS = (operator.attrgetter("is_kd"), operator.attrgetter("is_lskd"))


@dataclasses.dataclass(frozen=True)
class _Plan:
    """The candidates that fit the budget, their rungs, the anchors kept."""

    candidates: list
    schedule: list
    kinds: list


def _plan(candidates, settings):
    """Fits the candidates and the halving schedule into the budget."""
    halving = settings.halving
    kinds = [
        kind
        for kind in _ANCHORS
        if halving.keep_kd and any(kind(c) for c in candidates)
    ]
    num_final = min(len(candidates), len(kinds) + 1)
    candidates, schedule = _fit_budget(
        candidates,
        settings.training.epochs,
        halving.eta,
        num_final,
        halving.budget,
        kinds,
    )
    return _Plan(candidates, schedule, kinds)


@dataclasses.dataclass(frozen=True)
class _Trained:
    """What the halving produced."""

    students: list
    ranking: list
    schedule: list
    student_epochs: int
    seconds: float
    winner_logits: np.ndarray
    initial_weights: tuple


def _successive_halving(build_student, data, plan, settings):
    """Trains the rungs of `plan`, the best surviving each; a `_Trained`."""
    training = settings.training
    candidates, schedule = plan.candidates, plan.schedule
    keras.utils.set_random_seed(training.seed)
    students = _build_members(
        build_student, len(candidates), _take(data.x, slice(0, 1))
    )
    initial_weights = tuple(students[0].get_weights())
    losses = _MemberLosses.of(candidates, data.classes, settings.order)
    order_rng = np.random.default_rng(training.seed)
    permutations = [
        order_rng.permutation(_num_examples(data.x))
        for _ in range(training.epochs)
    ]
    progress = Progress(
        settings.verbose, stateful_metrics=["best"], unit_name="student-epoch"
    )
    progress.start(schedule_cost(schedule))
    alive = list(range(len(candidates)))
    ranking, spent, trained, previous = [], 0, 0, None
    start = time.perf_counter()
    index = 0
    while index < len(schedule):
        rung = schedule[index]
        population, optimizer = _population(
            students, alive, losses, training, previous
        )
        for epoch in range(trained, rung["epochs"]):
            _train_epoch(population, data, permutations[epoch], training)
            spent += len(alive)
            progress.update(spent)
        trained = rung["epochs"]
        outputs = _predict(population, data.x_val)
        ranked, members = _score_rung(outputs, alive, data, settings, plan)
        ranking.append({"rung": index, "epochs": trained, "members": members})
        progress.update(spent, best=members[0]["score"])
        schedule = _check_time(schedule, index, spent, start, settings)
        if index + 1 < len(schedule):
            survivors = _with_anchors(
                [alive[j] for j in ranked],
                schedule[index + 1]["members"],
                plan.kinds,
                candidates,
            )
            previous = (
                optimizer,
                len(alive),
                [alive.index(c) for c in survivors],
            )
            alive = survivors
        index += 1
    seconds = time.perf_counter() - start
    progress.close()
    winner_logits = outputs[:, ranked[0]]
    return _Trained(
        students,
        ranking,
        schedule,
        spent,
        seconds,
        winner_logits,
        initial_weights,
    )


@dataclasses.dataclass(frozen=True)
class _MemberLosses:
    """Every candidate's loss settings, stacked."""

    coefficients: np.ndarray
    temperatures: np.ndarray
    standardize: np.ndarray

    @classmethod
    def of(cls, candidates, classes, order):
        coefficients = np.stack(
            [
                np.broadcast_to(c.coefficients, (classes, order))
                for c in candidates
            ]
        )
        return cls(
            coefficients,
            np.array([c.temperature for c in candidates]),
            np.array([c.standardize for c in candidates]),
        )


def _population(students, alive, losses, training, previous):
    """The rung's compiled `StudentPopulation`, with `previous`'s state."""
    population = StudentPopulation(
        [students[i] for i in alive],
        losses.coefficients[alive],
        losses.temperatures[alive],
        losses.standardize[alive],
        student_loss_weight=training.student_loss_weight,
        member_axis=training.member_axis,
    )
    optimizer = training.make_optimizer()
    optimizer.build(population.trainable_variables)
    if previous is not None:
        _carry_optimizer_state(*previous, optimizer)
    population.compile(optimizer=optimizer)
    return population, optimizer


def _train_epoch(population, data, permutation, training):
    """One epoch in the given example order (the same for every rung)."""
    order, sample_weight = _full_batches(population, permutation, training)
    population.fit(
        _take(data.x, order),
        data.targets[order],
        sample_weight=sample_weight,
        batch_size=training.batch_size,
        epochs=1,
        shuffle=False,
        verbose=0,
    )


def _full_batches(population, permutation, training):
    """`(order, sample_weight)`: the epoch with its last batch made full.

    JAX and TensorFlow compile a second step for a last batch of another
    size. For members without state (no batch statistics, no random
    layers), the last batch is filled up with repeated rows of weight 0
    and its rows weighted `batch_size / rows`, so that the batch mean is
    that of its own rows; torch, which does not compile, trains as given.
    """
    size, count = training.batch_size, len(permutation)
    rest = count % size
    stateful = population._members[0].non_trainable_variables
    compiles = keras.backend.backend() != "torch"
    if not rest or count < size or stateful or not compiles:
        return permutation, None
    weights = np.ones(count + size - rest, dtype="float32")
    weights[count - rest : count] = size / rest
    weights[count:] = 0.0
    order = np.concatenate([permutation, permutation[: size - rest]])
    return order, weights


def _score_rung(outputs, alive, data, settings, plan):
    """`(ranked, members)`: the members' validation scores, best first."""
    scoring, classes = settings.scoring, data.classes
    probs = [
        softmax(outputs[:, j].reshape(-1, classes)) for j in range(len(alive))
    ]
    scores = [float(scoring.fn(data.y_val, p)) for p in probs]
    nlls = [_nll(data.y_val, p) for p in probs]
    # Ties on the metric go to the lower validation NLL.
    ranked = sorted(
        range(len(alive)),
        key=lambda j: (
            -scores[j] if scoring.higher_is_better else scores[j],
            nlls[j],
            alive[j],
        ),
    )
    members = [
        {
            "candidate": alive[j],
            "label": plan.candidates[alive[j]].label,
            "score": scores[j],
            "nll": nlls[j],
        }
        for j in ranked
    ]
    return ranked, members


def _check_time(schedule, index, spent, start, settings):
    """The schedule, cut to the last rung if it would overrun the time."""
    time_budget = settings.halving.time_budget
    if index + 1 < len(schedule) and time_budget is not None:
        elapsed = time.perf_counter() - start
        rate = elapsed / spent
        planned = schedule_cost(schedule) - spent
        if elapsed + rate * planned > time_budget:
            return schedule[: index + 1] + schedule[-1:]
    return schedule


def _assemble(trained, plan, data, settings, start):
    """The `SearchResult`: the winner, calibrated unless asked not to."""
    final = trained.ranking[-1]["members"]
    best = plan.candidates[final[0]["candidate"]]
    anchor_scores = [
        next(
            (
                m["score"]
                for m in final
                if kind(plan.candidates[m["candidate"]])
            ),
            None,
        )
        for kind in _ANCHORS
    ]
    winner = trained.students[final[0]["candidate"]]
    student, calibration = winner, {}
    if settings.calibrate:
        # The winner's logits from its last scoring: no second pass.
        labels_val = data.y_val.reshape(
            _num_examples(data.x_val), *data.positions
        )
        student = calibrate_outputs(winner, trained.winner_logits, labels_val)
        calibration = student.calibration
    return SearchResult(
        coefficients=best.coefficients.copy(),
        temperature=best.temperature,
        standardize=best.standardize,
        loss=PTLoss(
            coefficients=best.coefficients,
            temperature=best.temperature,
            teacher_from_logits=settings.teacher_from_logits,
            standardize=best.standardize,
        ),
        student=student,
        uncalibrated_student=winner,
        calibration=calibration,
        score=final[0]["score"],
        kd_score=anchor_scores[0],
        lskd_score=anchor_scores[1],
        metric=settings.scoring.name,
        higher_is_better=settings.scoring.higher_is_better,
        candidates=tuple(plan.candidates),
        ranking=tuple(trained.ranking),
        schedule=tuple(trained.schedule),
        cost={
            "student_epochs": trained.student_epochs,
            "seconds": time.perf_counter() - start,
            "training_seconds": trained.seconds,
            "budget": settings.halving.budget,
            "time_budget": settings.halving.time_budget,
        },
        training=_training_record(data, settings),
        initial_weights=trained.initial_weights,
    )


def _optimizer_name(serialized):
    """The class name of a serialized optimizer."""
    return type(keras.optimizers.deserialize(serialized)).__name__


def _training_record(data, settings):
    """`SearchResult.training`: how the members were trained."""
    training = settings.training
    return {
        "epochs": training.epochs,
        "batch_size": training.batch_size,
        "seed": training.seed,
        "num_examples": _num_examples(data.x),
        "student_loss_weight": training.student_loss_weight,
        "teacher_from_logits": settings.teacher_from_logits,
        "optimizer": keras.optimizers.serialize(training.make_optimizer()),
    }


def _predict(population, x):
    """Stacked member logits as numpy, by one compiled step per rung."""
    return population.predict(x, batch_size=1024, verbose=0)


def _accuracy(y_true, probs):
    return float(np.mean(np.argmax(probs, axis=-1) == y_true))


def _nll(y_true, probs):
    return mean_nll(np.log(np.maximum(probs, 1e-12)), y_true)


def _check_metric(metric, higher_is_better):
    if callable(metric):
        if not isinstance(higher_is_better, (bool, np.bool_)):
            raise ValueError(
                "`higher_is_better` must be True or False for a callable "
                f"`metric`. Received: higher_is_better={higher_is_better!r}"
            )
        name = getattr(metric, "__name__", "metric")
        return metric, name, bool(higher_is_better)
    check_choice(metric, "metric", SCORE_METRICS)
    default = metric == "accuracy"
    if higher_is_better is not None and higher_is_better != default:
        raise ValueError(
            f"`higher_is_better` must be {default} (or None) for "
            f"metric={metric!r}. Received: higher_is_better="
            f"{higher_is_better!r}"
        )
    return (_accuracy if default else _nll), metric, default


def _check_budget(budget, epochs):
    if budget is None:
        return float(6 * epochs)
    budget = check_number(budget, "budget", low=0.0, low_open=True)
    if budget < epochs:
        raise ValueError(
            "`budget` (student-epochs) must cover at least one full training "
            f"of the winner, `epochs`={epochs}. Received: budget={budget:g}"
        )
    return budget


def _check_standardize_option(value, allow_auto=True):
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if value == "search" or (allow_auto and value == "auto"):
        return value
    choices = (
        "False, True, 'search' or 'auto'"
        if allow_auto
        else ("False, True or 'search'")
    )
    raise ValueError(
        f"`standardize` must be {choices}. Received: standardize={value!r}"
    )


def _resolve_standardize(value, num_classes):
    """Resolves `"auto"`; z-scored logits need `K >= 3`."""
    if value == "auto":
        return "search" if num_classes >= 3 else False
    if value:
        check_standardizable(num_classes, "teacher outputs")
    return value


def _check_temperature_grid(values, name="temperatures"):
    values = _as_tuple(values, name)
    return tuple(check_temperature(t, name) for t in values)


def _check_strengths(values):
    values = tuple(
        check_number(s, "strengths") for s in _as_tuple(values, "strengths", 0)
    )
    if any(s == 0 for s in values):
        raise ValueError(
            "`strengths` must be nonzero (eps = 0, plain KD, is always "
            f"included). Received: strengths={list(values)}"
        )
    return values


def _as_tuple(values, name, minimum=1):
    try:
        values = tuple(values)
    except TypeError:
        raise ValueError(
            f"`{name}` must be a list of numbers. Received: {name}={values!r}"
        ) from None
    if len(values) < minimum:
        raise ValueError(
            f"`{name}` must not be empty. Received: {name}={list(values)}"
        )
    return values


def _check_candidates(candidates, order, num_classes):
    try:
        candidates = list(candidates)
    except TypeError:
        raise ValueError(
            "`candidates` must be a list of `Candidate`. Received: "
            f"candidates={candidates!r}"
        ) from None
    if not candidates:
        raise ValueError(
            "`candidates` must hold at least one candidate. Received: "
            "candidates=[]"
        )
    checked = []
    for i, candidate in enumerate(candidates):
        if not isinstance(candidate, Candidate):
            raise ValueError(
                f"`candidates[{i}]` must be a `Candidate`. Received: "
                f"{candidate!r}"
            )
        eps = np.asarray(candidate.coefficients, dtype="float64")
        if eps.shape not in ((order,), (num_classes, order)):
            raise ValueError(
                f"`candidates[{i}].coefficients` must have shape ({order},) "
                f"or ({num_classes}, {order}). Received: shape {eps.shape}"
            )
        check_finite(eps, f"candidates[{i}].coefficients")
        # PTLoss's own checks (convexity): the winner must be a valid loss.
        PTLoss(coefficients=eps, temperature=candidate.temperature)
        checked.append(
            dataclasses.replace(
                candidate,
                coefficients=eps,
                temperature=check_temperature(
                    candidate.temperature, f"candidates[{i}].temperature"
                ),
                standardize=check_bool(
                    candidate.standardize, f"candidates[{i}].standardize"
                ),
            )
        )
    if any(c.standardize for c in checked):
        check_standardizable(num_classes, "teacher outputs")
    return checked


def _with_anchors(ranked, count, kinds, candidates):
    """The best `count` of `ranked`, with the best of each anchor kind."""
    anchors = []
    for kind in kinds:
        best = next((i for i in ranked if kind(candidates[i])), None)
        if best is not None and best not in anchors:
            anchors.append(best)
    rest = [i for i in ranked if i not in anchors]
    return sorted(anchors[:count] + rest[: max(count - len(anchors), 0)])


def _fit_budget(candidates, epochs, eta, num_final, budget, kinds):
    """Drops candidates from the end until the halving schedule fits."""
    count = len(candidates)
    while True:
        schedule = halving_schedule(count, epochs, eta, min(num_final, count))
        if schedule_cost(schedule) <= budget or count == 1:
            break
        count -= 1
    kept = [
        candidates[i]
        for i in _with_anchors(range(len(candidates)), count, kinds, candidates)
    ]
    if schedule_cost(schedule) > budget:
        return kept, [{"members": 1, "epochs": epochs}]
    # Spend what is left of the budget on a later first cut.
    final = schedule[-1]["members"]
    for first in range(schedule[0]["epochs"] + 1, epochs):
        longer = halving_schedule(count, epochs, eta, final, first)
        if schedule_cost(longer) > budget:
            break
        schedule = longer
    return kept, schedule


def _check_inputs(values, name):
    """Checks an array, or a dict of arrays with one number of examples."""
    if isinstance(values, dict):
        if not values:
            raise ValueError(
                f"`{name}` must be an array or a dict of arrays, one row "
                f"per example. Received: an empty dict"
            )
        arrays = {
            key: _check_inputs(value, f"{name}[{key!r}]")
            for key, value in values.items()
        }
        counts = {key: a.shape[0] for key, a in arrays.items()}
        if len(set(counts.values())) > 1:
            raise ValueError(
                f"The arrays of `{name}` must hold the same number of "
                f"examples. Received: {name} with first dimensions {counts}"
            )
        return arrays
    try:
        array = np.asarray(to_numpy(values))
    except (TypeError, ValueError) as e:
        raise ValueError(
            f"`{name}` must be an array or a dict of arrays. Received: "
            f"{name}={values!r}"
        ) from e
    if array.ndim < 1 or array.shape[0] == 0:
        raise ValueError(
            f"`{name}` must be an array (or a dict of arrays) holding at "
            f"least one example. Received: {name} of type "
            f"{type(values).__name__} with shape {array.shape}"
        )
    return array


def _num_examples(x):
    """The number of examples of checked inputs (an array or a dict)."""
    return keras.tree.flatten(x)[0].shape[0]


def _take(x, index):
    """The examples `index` (a slice or positions) of every array of `x`."""
    if isinstance(x, dict):
        return {key: _take(value, index) for key, value in x.items()}
    return x[index]


def _check_validation_pair(validation_data):
    if (
        not isinstance(validation_data, (tuple, list))
        or len(validation_data) != 2
    ):
        raise ValueError(
            "`validation_data` must be a pair (x_val, y_val). Received: "
            f"validation_data={validation_data!r}"
        )
    x_val = _check_inputs(validation_data[0], "validation_data")
    return x_val, validation_data[1]


def _teacher_logits(
    teacher, x, x_val, validation_teacher, from_logits, batch_size
):
    """Teacher logits on `x` and (when available) on `x_val`."""
    if isinstance(teacher, keras.Model):
        outputs = teacher.predict(x, batch_size=batch_size, verbose=0)
        if validation_teacher is None:
            validation_teacher = teacher.predict(
                x_val, batch_size=batch_size, verbose=0
            )
    else:
        outputs = teacher
    logits = _as_logits(outputs, from_logits, "teacher")
    count = _num_examples(x)
    if logits.ndim < 2 or logits.shape[0] != count:
        raise ValueError(
            f"`teacher` outputs must have shape ({count}, K) (or "
            f"({count}, S, K) for sequences), one row per example of "
            f"`x`. Received: shape {logits.shape}"
        )
    val_logits = None
    if validation_teacher is not None:
        val_logits = _as_logits(
            validation_teacher, from_logits, "validation_teacher"
        )
        expected = (_num_examples(x_val), *logits.shape[1:])
        if val_logits.shape != expected:
            raise ValueError(
                f"`validation_teacher` must have shape {expected}. Received: "
                f"shape {val_logits.shape}"
            )
    return logits, val_logits


def _position_labels(values, count, positions, classes, name):
    """Checked integer labels in `[0, classes)`, flattened (int64)."""
    labels = np.asarray(to_numpy(values))
    if labels.shape != (count, *positions):
        raise ValueError(
            f"`{name}` labels must have shape {(count, *positions)}, one per "
            f"example (and position) of the teacher outputs. Received: shape "
            f"{labels.shape}"
        )
    return check_labels(labels.reshape(-1), labels.size, classes, name)


def _as_logits(values, from_logits, name):
    """Validated float64 logits of teacher outputs (see `as_logits_array`)."""
    if from_logits:
        values = check_finite(
            np.asarray(to_numpy(values), dtype="float64"), name
        )
    else:
        values = check_probabilities(values, name)
    return as_logits_array(values, from_logits)


def _build_members(build_student, count, sample):
    """`count` students from `build_student`, all with the first's weights."""
    students = []
    for i in range(count):
        student = build_student()
        if not isinstance(student, keras.Model):
            raise ValueError(
                "`build_student` must return a keras.Model. Received: "
                f"{student!r}"
            )
        if any(student is other for other in students):
            raise ValueError(
                "`build_student` must return a new model on every call; it "
                "returned the same object twice."
            )
        if not student.built or not student.weights:
            student(sample)
        if students:
            first = [tuple(w.shape) for w in students[0].weights]
            shapes = [tuple(w.shape) for w in student.weights]
            if shapes != first:
                raise ValueError(
                    "`build_student` must build the same architecture on "
                    f"every call. Received: weight shapes {first} on the "
                    f"first call and {shapes} on call {i + 1}"
                )
            student.set_weights(students[0].get_weights())
        students.append(student)
    return students


def _optimizer_factory(optimizer):
    if optimizer is None:
        return lambda: keras.optimizers.Adam(1e-3)
    if isinstance(optimizer, keras.optimizers.Optimizer):
        _check_member_optimizer(optimizer)
        config = optimizer.get_config()
        return lambda: optimizer.__class__.from_config(config)
    if callable(optimizer):

        def make():
            made = optimizer()
            if not isinstance(made, keras.optimizers.Optimizer):
                raise ValueError(
                    "`optimizer` must return a Keras optimizer. Received: "
                    f"{made!r}"
                )
            _check_member_optimizer(made)
            return made

        return make
    raise ValueError(
        "`optimizer` must be a Keras optimizer or a function returning one. "
        f"Received: optimizer={optimizer!r}"
    )


def _carry_optimizer_state(old, count, rows, new):
    """Copies the survivors' optimizer state; returns whether it could.

    Every weight of a population is stacked over its `count` members, so a
    slot with `count` rows first holds the members' rows: the survivors'
    `rows` are taken from it. Other slots (the step count) are copied. A
    layout that does not match warns and leaves fresh slots.
    """
    old_slots, new_slots = list(old.variables), list(new.variables)
    pairs = []
    if len(old_slots) == len(new_slots):
        for source, target in zip(old_slots, new_slots, strict=True):
            value = keras.ops.convert_to_numpy(source)
            if value.ndim and value.shape[0] == count:
                value = value[rows]
            shape = value.shape
            if shape != tuple(target.shape):
                break
            pairs.append((target, value))
    if pairs and len(pairs) == len(new_slots):
        for target, value in pairs:
            target.assign(value)
        return True
    warnings.warn(
        f"The state of {type(old).__name__} could not be carried to the "
        "surviving students; they continue with fresh optimizer slots.",
        stacklevel=3,
    )
    return False
