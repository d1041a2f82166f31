"""Training-free choice of PTLoss coefficients on a labelled split.

Coefficients are chosen, without training any student, by how close the
proxy teacher (`keras_ptloss.proxy_teacher`) is to the labels of a
validation split (DESIGN.md §2): with the Brier score, the ranking is that
of the expected squared distance to the true label distribution `p*`.

Two modes:

- `"shared"` (`M` values): random candidates (the paper's search: sample,
  keep the best validation score) scored by successive halving on
  subsamples, the best rescored on the whole selection split, then refined
  by L-BFGS-B with the exact gradient of the score (implicit function
  theorem through the proxy teacher).
- `"classwise"` (`K x M` values): starts from the shared solution and runs
  L-BFGS-B on all `K x M` coefficients; part of the split is held out, and
  the iterate with the best held-out score is kept (early stopping).

Every iterate stays inside a box that lies in the convex region
(`sum_{m>=2} m (m-1) max(-eps_m, 0) <= 1`), so the result is valid for
`PTLoss` with its default `allow_nonconvex=False`.
"""

import json
import math
import time

import numpy as np
import scipy.optimize

from keras_ptloss.coefficients import check_convex
from keras_ptloss.proxy import _columns
from keras_ptloss.proxy import _row_blocks
from keras_ptloss.proxy import _safe_log
from keras_ptloss.proxy import _score_and_grad
from keras_ptloss.proxy import _Solver
from keras_ptloss.proxy import check_metric
from keras_ptloss.proxy import temper
from keras_ptloss.proxy import validate_labels
from keras_ptloss.proxy import validate_probs

MODES = ("shared", "classwise")
# Fraction of the convex-region budget a box coordinate may use: keeps the
# loss strictly convex on the box (margin >= 1e-3).
_CONVEX_SAFETY = 1.0 - 1e-3
_SCREEN_TOL = 1e-6
# L-BFGS-B stops once an iteration improves the score by less than this
# (scores are ~0.1-1; their sampling noise is orders of magnitude larger).
_FTOL = 1e-7
# Smallest screening subsample of the successive-halving search.
_MIN_RUNG = 128
_PROGRESS_DELAY = 2.0
# L-BFGS-B iterations of the shared refinement that starts a class-wise run.
_SHARED_ITER = 30


class SelectionResult:
    """Outcome of `select_coefficients`.

    Scores are closeness values (lower is closer to the labels) of the
    student's `T = 1` prediction at the proxy teacher, measured on the
    selection split (used to choose) and on the held-out split (not used
    for choosing, except for early stopping in `"classwise"` mode).

    Attributes:
        coefficients: numpy array for `PTLoss(coefficients=...)`: shape
            `(M,)` (shared) or `(K, M)` (class-wise).
        temperature: the temperature `T` the coefficients go with.
        mode: `"shared"` or `"classwise"`.
        metric: the closeness metric.
        order: `M`.
        num_classes: `K`.
        teacher_score: closeness of the teacher on the selection split.
        proxy_score: closeness of the chosen proxy teacher there.
        holdout_teacher_score: closeness of the teacher on the held-out
            split (`None` without one).
        holdout_proxy_score: closeness of the chosen proxy there.
        candidates: the sampled candidates, `(C, M)` (shared search; for
            `"classwise"` those of its shared start).
        candidate_temperatures: their temperatures, shape `(C,)`.
        candidate_scores: their scores on the first screening subsample
            (`num_screen` examples, the same for all), shape `(C,)`.
        screening: the successive-halving rungs, a list of dicts
            `{"examples": n, "candidates": c}`.
        history: one dict per refinement iteration (`"fit"`, and
            `"holdout"` when measured).
        wall_time: seconds the search took.
        num_fit: size of the selection split; `num_holdout` of the held-out
            one; `num_screen` of the screening subsample.
        num_evaluations: proxy-teacher evaluations over a whole split.
        num_example_solves: proxy teachers solved in all (one per example
            per evaluation, subsamples included).
        stop_reason: why the gradient refinement stopped.

    Example:

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> teacher = rng.dirichlet(np.full(3, 0.3), size=200)
    >>> labels = rng.integers(0, 3, size=200)
    >>> result = select_coefficients(
    ...     teacher, labels, order=2, num_candidates=16, verbose=0
    ... )
    >>> sorted(result.to_dict())[:3]
    ['candidate_scores', 'candidate_temperatures', 'candidates']
    >>> result.num_fit, result.num_holdout
    (160, 40)
    """

    def __init__(self, **fields):
        for name, value in fields.items():
            setattr(self, name, value)

    @property
    def improvement(self):
        """Teacher score minus proxy score on the selection split."""
        return self.teacher_score - self.proxy_score

    @property
    def holdout_improvement(self):
        """Teacher minus proxy score on the held-out split, or `None`."""
        if self.holdout_proxy_score is None:
            return None
        return self.holdout_teacher_score - self.holdout_proxy_score

    def summary(self):
        """A readable multi-line summary of the selection."""
        holdout = self.holdout_proxy_score is not None

        def row(label, fit, held):
            text = f"  {label:<15}{fit:>12.6f}"
            return text + (f"{held:>12.6f}" if holdout else "")

        coeffs = np.asarray(self.coefficients)
        if coeffs.ndim == 1:
            coeff_text = np.array2string(
                coeffs, precision=4, separator=", ", suppress_small=True
            )
        else:
            coeff_text = (
                f"class-wise array of shape {coeffs.shape}; mean over classes "
                + np.array2string(
                    coeffs.mean(axis=0), precision=4, separator=", "
                )
            )
        rungs = ", then ".join(
            f"{r['candidates']} on {r['examples']}" for r in self.screening
        )
        lines = [
            f"Coefficient selection: mode={self.mode}, order M={self.order}, "
            f"metric={self.metric}, {self.num_classes} classes, "
            f"{self.wall_time:.2f} s",
            f"  examples: {self.num_fit} selection / {self.num_holdout} "
            "held-out",
            f"  candidates scored: {rungs} examples",
            f"  refinement: {len(self.history)} L-BFGS-B steps; "
            f"{self.stop_reason}",
            f"  {'':<15}{'selection':>12}"
            + (f"{'held-out':>12}" if holdout else ""),
            row("teacher", self.teacher_score, self.holdout_teacher_score),
            row("proxy teacher", self.proxy_score, self.holdout_proxy_score),
            row("improvement", self.improvement, self.holdout_improvement),
            f"  temperature: {self.temperature:.4g}",
            f"  coefficients: {coeff_text}",
        ]
        return "\n".join(lines)

    def __str__(self):
        return self.summary()

    def __repr__(self):
        return (
            f"SelectionResult(mode={self.mode!r}, metric={self.metric!r}, "
            f"order={self.order}, proxy_score={self.proxy_score:.6g}, "
            f"teacher_score={self.teacher_score:.6g})"
        )

    def to_dict(self):
        """Plain JSON-able dict (lists, floats, ints, strings, `None`)."""
        out = dict(
            mode=self.mode,
            metric=self.metric,
            order=int(self.order),
            num_classes=int(self.num_classes),
            temperature=float(self.temperature),
            coefficients=np.asarray(self.coefficients).tolist(),
            teacher_score=float(self.teacher_score),
            proxy_score=float(self.proxy_score),
            holdout_teacher_score=_float_or_none(self.holdout_teacher_score),
            holdout_proxy_score=_float_or_none(self.holdout_proxy_score),
            improvement=float(self.improvement),
            holdout_improvement=_float_or_none(self.holdout_improvement),
            candidates=np.asarray(self.candidates).tolist(),
            candidate_temperatures=np.asarray(
                self.candidate_temperatures
            ).tolist(),
            candidate_scores=np.asarray(self.candidate_scores).tolist(),
            screening=[dict(r) for r in self.screening],
            history=[
                {k: _float_or_none(v) for k, v in h.items()}
                for h in self.history
            ],
            wall_time=float(self.wall_time),
            num_fit=int(self.num_fit),
            num_holdout=int(self.num_holdout),
            num_screen=int(self.num_screen),
            num_evaluations=int(self.num_evaluations),
            num_example_solves=int(self.num_example_solves),
            stop_reason=str(self.stop_reason),
        )
        json.dumps(out)  # fails loudly if anything is not JSON-able
        return out


def _float_or_none(value):
    return None if value is None else float(value)


def select_coefficients(
    teacher_probs,
    labels,
    order=5,
    mode="shared",
    metric="brier",
    temperature=1.0,
    tune_temperature=False,
    holdout_fraction=0.2,
    seed=0,
    verbose=1,
    num_candidates=256,
    coefficient_bound=20.0,
    temperature_range=(0.5, 8.0),
    screen_size=1024,
    num_finalists=4,
    max_iter=None,
    patience=10,
    l2_penalty=0.0,
):
    """Chooses PTLoss coefficients by how close the proxy teacher is to labels.

    No student is trained: for candidate coefficients `eps` the proxy
    teacher (the minimiser of PTLoss, `keras_ptloss.proxy_teacher`) is
    computed exactly on a labelled validation split, and the `eps` whose
    de-tempered proxy is closest to the labels is kept.

    - `mode="shared"`: `eps` of shape `(M,)`. `num_candidates` sets are
      sampled (plus `eps = 0`, the plain teacher), screened on
      `screen_size` examples of the selection split; the best
      `num_finalists` are rescored on the whole split and the best one is
      refined by L-BFGS-B with the exact gradient.
    - `mode="classwise"`: `eps` of shape `(K, M)`, started from the shared
      solution and optimised by L-BFGS-B with the exact gradient (implicit
      function theorem through the proxy teacher, O(K M) per example). The
      held-out split is scored after every iteration; the iterate with the
      best held-out score is returned, and the search stops after
      `patience` iterations without improvement.

    All coefficients searched lie in the box `|eps_1| <= coefficient_bound`,
    `-1 / (m (m-1) (M-1)) < eps_m <= coefficient_bound` for `m >= 2`, which
    is inside PTLoss's convex region, so the result is valid for `PTLoss`
    with `allow_nonconvex=False`.

    Args:
        teacher_probs: teacher probabilities on the validation split at
            `T = 1`, shape `(N, K)`; rows sum to 1.
        labels: integer class ids, shape `(N,)`.
        order: `M >= 1`, the number of perturbed series coefficients.
        mode: `"shared"` or `"classwise"`.
        metric: closeness metric, `"brier"` (default; see DESIGN.md §2),
            `"l2"`, `"tvd"` or `"nll"` (see `keras_ptloss.closeness`).
        temperature: distillation temperature `T > 0` (the one PTLoss will
            use); the starting point when `tune_temperature=True`.
        tune_temperature: also choose `T`, jointly with `eps`, within
            `temperature_range`.
        holdout_fraction: fraction of the examples held out from the
            choice, in `[0, 1)`; must be `> 0` for `"classwise"`.
        seed: seed of the split, the screening subsample and the sampled
            candidates.
        verbose: `0` silent; `1` a Keras progress bar once the search has
            run for more than 2 s, and the summary at the end; `2` the
            summary only.
        num_candidates: candidates sampled in the shared search (`>= 1`).
        coefficient_bound: largest `|eps|` searched (`> 0`).
        temperature_range: `(low, high)` for `tune_temperature=True`.
        screen_size: examples of the selection split on which all
            candidates are scored before the finalists are rescored on the
            whole split; `None` scores every candidate on the whole split.
        num_finalists: candidates rescored on the whole selection split.
        max_iter: L-BFGS-B iterations; defaults to 30 (shared) and 200
            (class-wise).
        patience: class-wise early stopping: iterations without held-out
            improvement before stopping.
        l2_penalty: class-wise only: weight of
            `mean((eps - eps_shared)**2)` added to the selection score.

    Returns:
        A `SelectionResult`; `result.coefficients` is ready for
        `PTLoss(coefficients=..., temperature=result.temperature)`.

    Raises:
        ValueError: on invalid arguments (shapes, NaN, probabilities not
            summing to 1, labels out of range, an empty split, unknown mode
            or metric, `order < 1`).

    Example:

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> true_probs = rng.dirichlet(np.ones(4), size=400)
    >>> labels = np.array([rng.choice(4, p=p) for p in true_probs])
    >>> teacher = true_probs**3 / (true_probs**3).sum(1, keepdims=True)
    >>> result = select_coefficients(
    ...     teacher, labels, order=2, num_candidates=32, verbose=0
    ... )
    >>> result.coefficients.shape
    (2,)
    >>> bool(result.proxy_score < result.teacher_score)
    True
    """
    start_time = time.perf_counter()
    config = _validate_arguments(
        order=order,
        mode=mode,
        metric=metric,
        temperature=temperature,
        tune_temperature=tune_temperature,
        holdout_fraction=holdout_fraction,
        seed=seed,
        verbose=verbose,
        num_candidates=num_candidates,
        coefficient_bound=coefficient_bound,
        temperature_range=temperature_range,
        screen_size=screen_size,
        num_finalists=num_finalists,
        max_iter=max_iter,
        patience=patience,
        l2_penalty=l2_penalty,
    )
    probs = validate_probs(teacher_probs, "teacher_probs")
    if probs.ndim != 2:
        raise ValueError(
            "`teacher_probs` must have shape (N, K). Received: shape "
            f"{probs.shape}"
        )
    num_examples, num_classes = probs.shape
    labels = validate_labels(labels, num_examples, num_classes)
    rng = np.random.default_rng(config["seed"])
    fit_idx, hold_idx = _split(num_examples, config["holdout_fraction"], rng)
    fit = _Objective(probs[fit_idx], labels[fit_idx], config["metric"])
    hold = (
        _Objective(probs[hold_idx], labels[hold_idx], config["metric"])
        if hold_idx.size
        else None
    )
    teacher_score = fit.teacher_score()
    if not math.isfinite(teacher_score):
        raise ValueError(
            f"The teacher's {config['metric']!r} score is infinite: it gives "
            "probability 0 to the label of some example, and no coefficients "
            "can change an exact zero. Use metric='brier'."
        )
    progress = _Progress(config["verbose"])
    search = _Search(fit, hold, config, num_classes, rng, progress)
    search.run_shared()
    if config["mode"] == "classwise":
        search.run_classwise()
    progress.close()
    coefficients, temperature = (
        search.best_coefficients,
        search.best_temperature,
    )
    check_convex(coefficients)
    result = SelectionResult(
        coefficients=coefficients,
        temperature=float(temperature),
        mode=config["mode"],
        metric=config["metric"],
        order=config["order"],
        num_classes=num_classes,
        teacher_score=teacher_score,
        proxy_score=fit.score(coefficients, temperature),
        holdout_teacher_score=None if hold is None else hold.teacher_score(),
        holdout_proxy_score=(
            None if hold is None else hold.score(coefficients, temperature)
        ),
        candidates=search.candidates,
        candidate_temperatures=search.candidate_temperatures,
        candidate_scores=search.candidate_scores,
        screening=search.screening,
        history=search.history,
        wall_time=time.perf_counter() - start_time,
        num_fit=fit_idx.size,
        num_holdout=hold_idx.size,
        num_screen=search.num_screen,
        num_evaluations=fit.evaluations
        + (0 if hold is None else hold.evaluations),
        num_example_solves=fit.example_solves
        + (0 if hold is None else hold.example_solves),
        stop_reason=search.stop_reason,
    )
    if config["verbose"]:
        print(result.summary())
    return result


# --------------------------------------------------------------------------
# Argument validation
# --------------------------------------------------------------------------


def _is_int(value):
    return isinstance(value, (int, np.integer)) and not isinstance(
        value, (bool, np.bool_)
    )


def _is_number(value):
    return isinstance(
        value, (int, float, np.integer, np.floating)
    ) and not isinstance(value, (bool, np.bool_))


def _validate_arguments(**args):
    if not _is_int(args["order"]) or args["order"] < 1:
        raise ValueError(
            "`order` (the number M of perturbed coefficients) must be an "
            f"integer >= 1. Received: order={args['order']!r}"
        )
    if args["mode"] not in MODES:
        raise ValueError(
            f"`mode` must be one of {MODES}. Received: mode={args['mode']!r}"
        )
    check_metric(args["metric"])
    t = args["temperature"]
    if not _is_number(t) or not math.isfinite(t) or t <= 0:
        raise ValueError(
            f"`temperature` must be > 0 and finite. Received: temperature={t!r}"
        )
    if not isinstance(args["tune_temperature"], (bool, np.bool_)):
        raise ValueError(
            "`tune_temperature` must be a bool. Received: "
            f"tune_temperature={args['tune_temperature']!r}"
        )
    frac = args["holdout_fraction"]
    if not _is_number(frac) or not 0.0 <= frac < 1.0:
        raise ValueError(
            "`holdout_fraction` must be a number in [0, 1). Received: "
            f"holdout_fraction={frac!r}"
        )
    if args["mode"] == "classwise" and frac == 0:
        raise ValueError(
            "mode='classwise' needs a held-out split to stop over-fitting "
            "the K x M coefficients: `holdout_fraction` must be > 0. "
            "Received: holdout_fraction=0"
        )
    if not _is_int(args["seed"]):
        raise ValueError(
            f"`seed` must be an integer. Received: {args['seed']!r}"
        )
    if args["verbose"] not in (0, 1, 2) or isinstance(args["verbose"], bool):
        raise ValueError(
            "`verbose` must be 0, 1 or 2. Received: "
            f"verbose={args['verbose']!r}"
        )
    for name, low in (
        ("num_candidates", 1),
        ("num_finalists", 1),
        ("patience", 1),
    ):
        if not _is_int(args[name]) or args[name] < low:
            raise ValueError(
                f"`{name}` must be an integer >= {low}. Received: "
                f"{name}={args[name]!r}"
            )
    for name in ("screen_size", "max_iter"):
        value = args[name]
        if value is not None and (not _is_int(value) or value < 1):
            raise ValueError(
                f"`{name}` must be None or an integer >= 1. Received: "
                f"{name}={value!r}"
            )
    bound = args["coefficient_bound"]
    if not _is_number(bound) or not math.isfinite(bound) or bound <= 0:
        raise ValueError(
            "`coefficient_bound` must be > 0 and finite. Received: "
            f"coefficient_bound={bound!r}"
        )
    penalty = args["l2_penalty"]
    if not _is_number(penalty) or not math.isfinite(penalty) or penalty < 0:
        raise ValueError(
            f"`l2_penalty` must be >= 0. Received: l2_penalty={penalty!r}"
        )
    t_range = args["temperature_range"]
    try:
        low, high = (float(v) for v in t_range)
    except (TypeError, ValueError) as e:
        raise ValueError(
            "`temperature_range` must be a pair (low, high). Received: "
            f"temperature_range={t_range!r}"
        ) from e
    if not (0 < low <= high and math.isfinite(high)):
        raise ValueError(
            "`temperature_range` must satisfy 0 < low <= high. Received: "
            f"temperature_range={t_range!r}"
        )
    if args["tune_temperature"] and not low <= t <= high:
        raise ValueError(
            f"`temperature` ({t}) must lie in `temperature_range` "
            f"{(low, high)} when tune_temperature=True."
        )
    config = dict(args)
    config["temperature"] = float(t)
    config["temperature_range"] = (low, high)
    config["holdout_fraction"] = float(frac)
    config["coefficient_bound"] = float(bound)
    config["l2_penalty"] = float(penalty)
    if config["max_iter"] is None:
        config["max_iter"] = 30 if config["mode"] == "shared" else 200
    return config


def _split(num_examples, fraction, rng):
    order = rng.permutation(num_examples)
    num_holdout = int(round(fraction * num_examples))
    if fraction > 0 and (num_holdout == 0 or num_holdout == num_examples):
        raise ValueError(
            f"holdout_fraction={fraction} of {num_examples} examples leaves "
            f"an empty split ({num_examples - num_holdout} selection, "
            f"{num_holdout} held-out). Pass more examples or change "
            "`holdout_fraction`."
        )
    return np.sort(order[num_holdout:]), np.sort(order[:num_holdout])


def coefficient_box(order, bound):
    """Lower and upper bounds, each `(M,)`, of the searched box.

    `eps_1` in `[-bound, bound]`; for `m >= 2`,
    `eps_m` in `[-(1 - 1e-3) / (m (m-1) (M-1)), bound]`, so that
    `sum_{m>=2} m (m-1) max(-eps_m, 0) < 1` (the sufficient convexity
    condition of DESIGN.md §2) everywhere in the box.
    """
    lower = np.full(order, -float(bound))
    upper = np.full(order, float(bound))
    for m in range(2, order + 1):
        lower[m - 1] = -_CONVEX_SAFETY / (m * (m - 1) * (order - 1))
    return lower, upper


# --------------------------------------------------------------------------
# Objective over one split
# --------------------------------------------------------------------------


class _Objective:
    """Closeness of the de-tempered proxy on one split, with its gradient.

    Solves block by block (cache-sized) and keeps each block's solution to
    warm-start the next evaluation.
    """

    def __init__(self, probs, labels, metric):
        self.probs = probs
        self.log_probs = _safe_log(probs)
        self.labels = labels
        self.metric = metric
        self.num = probs.shape[0]
        self.evaluations = 0
        self.example_solves = 0
        self._q = None
        self._lam = None

    def teacher_score(self):
        zeros = np.zeros((1,))
        return self.score(zeros, 1.0)

    def score(self, eps, temperature):
        return self.evaluate(eps, temperature)[0]

    def evaluate(
        self,
        eps,
        temperature,
        want_grad=False,
        want_grad_t=False,
        rows=None,
        tol=1e-10,
        warm=True,
    ):
        """Mean score; with `want_grad`, its gradient `(K, M)` and
        d/d log T. `rows` restricts to a subset (no warm start kept)."""
        probs, log_probs, labels = self.probs, self.log_probs, self.labels
        if rows is not None:
            probs, log_probs, labels = (
                probs[rows],
                log_probs[rows],
                labels[rows],
            )
            warm = False
        else:
            self.evaluations += 1
        n, k = probs.shape
        self.example_solves += n
        cols = _columns(eps)
        solver = _Solver(tol=tol)
        total = 0.0
        grad = np.zeros((k, len(cols))) if want_grad else None
        grad_t = 0.0
        if warm and self._q is None:
            self._q = np.empty((n, k))
            self._lam = np.empty((n, 1))
            self._warm_ok = False
        for block in _row_blocks(n, k):
            p0 = probs[block]
            p = temper(p0, temperature, log_probs=log_probs[block])
            if warm and self._warm_ok:
                q, lam = solver._solve_block(
                    p, cols, self._q[block], self._lam[block]
                )
            else:
                q, lam = solver._solve_block(p, cols)
            if warm:
                self._q[block], self._lam[block] = q, lam
            s, g, gt = _score_and_grad(
                p,
                log_probs[block],
                labels[block],
                cols,
                temperature,
                self.metric,
                q,
                want_grad,
                want_grad_t,
            )
            total += s
            if want_grad:
                grad += g
                if want_grad_t:
                    grad_t += gt
        if warm:
            self._warm_ok = True
        mean = total / n
        if not want_grad:
            return mean, None, None
        return mean, grad / n, grad_t / n


# --------------------------------------------------------------------------
# The search
# --------------------------------------------------------------------------


class _EarlyStop(Exception):
    pass


class _Search:
    def __init__(self, fit, hold, config, num_classes, rng, progress):
        self.fit = fit
        self.hold = hold
        self.config = config
        self.num_classes = num_classes
        self.rng = rng
        self.progress = progress
        self.order = config["order"]
        self.tune_t = config["tune_temperature"]
        self.lower, self.upper = coefficient_box(
            self.order, config["coefficient_bound"]
        )
        self.log_t_bounds = tuple(np.log(config["temperature_range"]))
        self.history = []
        self.stop_reason = "not run"
        self.shared_iter = (
            config["max_iter"] if config["mode"] == "shared" else _SHARED_ITER
        )

    # -- shared -----------------------------------------------------------

    def sample_candidates(self):
        """`num_candidates` sets in the box, plus `eps = 0` first.

        A quarter vary `eps_1` alone (the main sharpen/smooth knob) on a
        symmetric log grid; the rest draw each coordinate with a random
        sign and a log-uniform magnitude, zero with probability 1/4 for
        `m >= 2`, clipped to the box.
        """
        count, order = self.config["num_candidates"], self.order
        bound = self.config["coefficient_bound"]
        rng = self.rng
        num_line = count // 4
        mags = np.geomspace(bound * 1e-3, bound, max(num_line // 2, 1))
        line = np.concatenate([mags, -mags])[:num_line]
        cands = np.zeros((count, order))
        cands[:num_line, 0] = line
        rest = count - num_line
        sign = rng.choice([-1.0, 1.0], size=(rest, order))
        mag = bound * 10.0 ** rng.uniform(-3.0, 0.0, size=(rest, order))
        values = sign * mag
        if order > 1:
            values[:, 1:] *= rng.uniform(size=(rest, order - 1)) >= 0.25
        cands[num_line:] = values
        cands = np.clip(cands, self.lower, self.upper)
        cands = np.concatenate([np.zeros((1, order)), cands])
        temps = np.full(cands.shape[0], self.config["temperature"])
        if self.tune_t:
            lo, hi = self.log_t_bounds
            temps[1:] = np.exp(rng.uniform(lo, hi, size=count))
        return cands, temps

    def run_shared(self):
        """Successive halving: every candidate is scored on a small random
        subsample of the selection split, the best quarter on a subsample
        four times larger, ..., up to `screen_size` examples; the best
        `num_finalists` are then scored on the whole split."""
        config = self.config
        cands, temps = self.sample_candidates()
        num_fit = self.fit.num
        screen = config["screen_size"]
        sizes = [num_fit if screen is None else min(screen, num_fit)]
        while (
            screen is not None and sizes[0] // 4 >= _MIN_RUNG and len(sizes) < 3
        ):
            sizes.insert(0, sizes[0] // 4)
        perm = self.rng.permutation(num_fit)
        finalists = min(config["num_finalists"], cands.shape[0])
        counts = [cands.shape[0]]
        for _ in sizes[1:]:
            counts.append(max(finalists, -(-counts[-1] // 4)))
        steps = sum(counts) + finalists + self.shared_iter
        if config["mode"] == "classwise":
            steps += config["max_iter"]
        self.progress.start(steps)
        alive = np.arange(cands.shape[0])
        best_so_far = np.inf
        for rung, (size, count) in enumerate(zip(sizes, counts, strict=True)):
            alive = alive[:count]
            rows = None if size == num_fit else np.sort(perm[:size])
            scores = np.empty(alive.size)
            for i, c in enumerate(alive):
                scores[i] = self.fit.evaluate(
                    cands[c], temps[c], rows=rows, tol=_SCREEN_TOL
                )[0]
                best_so_far = min(best_so_far, scores[i])
                self.progress.advance(score=best_so_far)
            if rung == 0:
                self.candidate_scores = scores
            alive = alive[np.argsort(scores, kind="stable")]
        self.candidates, self.candidate_temperatures = cands, temps
        self.screening = [
            dict(examples=int(s), candidates=int(n))
            for s, n in zip(sizes, counts, strict=True)
        ]
        self.num_screen = sizes[0]
        order_idx = alive[:finalists]
        if sizes[-1] == num_fit:
            full = np.sort(scores)[:finalists]
            self.progress.advance(finalists)
        else:
            full = np.empty(finalists)
            for i, c in enumerate(order_idx):
                full[i] = self.fit.score(cands[c], temps[c])
                self.progress.advance(score=full[: i + 1].min())
        best = order_idx[int(np.argmin(full))]
        self.best_coefficients = cands[best].copy()
        self.best_temperature = float(temps[best])
        self.best_fit = float(full.min())
        self._refine_shared()

    def _pack(self, eps, temperature):
        flat = np.ravel(eps)
        if self.tune_t:
            flat = np.append(flat, math.log(temperature))
        return flat

    def _unpack(self, theta, shape):
        if self.tune_t:
            return theta[:-1].reshape(shape), float(math.exp(theta[-1]))
        return theta.reshape(shape), self.config["temperature"]

    def _bounds(self, rows):
        lower = np.tile(self.lower, rows)
        upper = np.tile(self.upper, rows)
        bounds = list(zip(lower, upper, strict=True))
        if self.tune_t:
            bounds.append(self.log_t_bounds)
        return bounds

    def _refine_shared(self):
        shape = (self.order,)

        def fun(theta):
            eps, t = self._unpack(theta, shape)
            value, grad, grad_t = self.fit.evaluate(
                eps, t, want_grad=True, want_grad_t=self.tune_t
            )
            flat = grad.sum(axis=0)
            if self.tune_t:
                flat = np.append(flat, grad_t)
            self._last = (theta.copy(), value)
            return value, flat

        def callback(theta):
            self.history.append(dict(fit=self._last_value(theta, shape)))
            self.progress.advance(score=self.history[-1]["fit"])

        x0 = self._pack(self.best_coefficients, self.best_temperature)
        res = self._minimize(
            fun, x0, self._bounds(1), callback, self.shared_iter
        )
        eps, t = self._unpack(res.x, shape)
        value = self.fit.score(eps, t)
        if value <= self.best_fit:
            self.best_coefficients = np.clip(eps, self.lower, self.upper)
            self.best_temperature = t
            self.best_fit = value
        self.stop_reason = _reason(res)
        self.progress.advance(
            self.shared_iter - len(self.history), score=self.best_fit
        )

    def _last_value(self, theta, shape):
        """The objective at `theta`: L-BFGS-B's last evaluation, if it was
        there (it nearly always is), else a fresh one (no penalty)."""
        last = getattr(self, "_last", None)
        if last is not None and np.array_equal(last[0], theta):
            return last[1]
        eps, t = self._unpack(theta, shape)
        return self.fit.score(eps, t)

    def _minimize(self, fun, x0, bounds, callback, max_iter):
        try:
            return scipy.optimize.minimize(
                fun,
                x0,
                jac=True,
                method="L-BFGS-B",
                bounds=bounds,
                callback=callback,
                options=dict(maxiter=max_iter, ftol=_FTOL, gtol=1e-7),
            )
        except _EarlyStop as stop:
            return stop.args[0]

    # -- class-wise -------------------------------------------------------

    def run_classwise(self):
        k, order = self.num_classes, self.order
        shape = (k, order)
        penalty = self.config["l2_penalty"]
        reference = np.tile(self.best_coefficients, (k, 1))
        start_t = self.best_temperature
        shared_history = len(self.history)
        best = dict(
            eps=reference.copy(),
            t=start_t,
            holdout=self.hold.score(reference, start_t),
            iteration=0,
        )
        self.history.append(dict(fit=self.best_fit, holdout=best["holdout"]))
        patience = self.config["patience"]

        def fun(theta):
            eps, t = self._unpack(theta, shape)
            value, grad, grad_t = self.fit.evaluate(
                eps, t, want_grad=True, want_grad_t=self.tune_t
            )
            if penalty:
                diff = eps - reference
                value += penalty * np.mean(diff * diff)
                grad = grad + penalty * 2.0 * diff / diff.size
            flat = grad.ravel()
            if self.tune_t:
                flat = np.append(flat, grad_t)
            self._last = (theta.copy(), value)
            return value, flat

        def callback(theta):
            eps, t = self._unpack(theta, shape)
            held = self.hold.score(eps, t)
            fit_value = self._last_value(theta, shape)
            iteration = len(self.history) - shared_history
            self.history.append(dict(fit=fit_value, holdout=held))
            self.progress.advance(score=fit_value, holdout=held)
            if held < best["holdout"]:
                best.update(
                    eps=eps.copy(), t=t, holdout=held, iteration=iteration
                )
            elif iteration - best["iteration"] >= patience:
                raise _EarlyStop(
                    scipy.optimize.OptimizeResult(
                        x=theta,
                        message="held-out score stopped improving",
                        success=True,
                        nit=iteration,
                    )
                )

        x0 = self._pack(reference, start_t)
        res = self._minimize(
            fun, x0, self._bounds(k), callback, self.config["max_iter"]
        )
        self.stop_reason = (
            f"{_reason(res)}; best held-out at iteration {best['iteration']}"
        )
        self.best_coefficients = np.clip(best["eps"], self.lower, self.upper)
        self.best_temperature = best["t"]


def _reason(res):
    message = res.message
    if isinstance(message, bytes):
        message = message.decode()
    return f"{message} after {res.nit} iterations"


# --------------------------------------------------------------------------
# Progress bar
# --------------------------------------------------------------------------


class _Progress:
    """A `keras.utils.Progbar` that appears only once the search has run
    for more than a couple of seconds (and never with `verbose=0`)."""

    def __init__(self, verbose, delay=None):
        self.verbose = verbose
        self.delay = _PROGRESS_DELAY if delay is None else delay
        self.target = None
        self.step = 0
        self.bar = None
        self.t0 = time.perf_counter()

    def start(self, target):
        self.target = target

    def advance(self, count=1, **values):
        self.step = min(self.step + max(count, 0), self.target or self.step)
        if self.verbose != 1:
            return
        if self.bar is None:
            if time.perf_counter() - self.t0 < self.delay:
                return
            import keras

            self.bar = keras.utils.Progbar(
                self.target,
                stateful_metrics=["score", "holdout"],
                interval=0.2,
            )
        finite = [(k, v) for k, v in values.items() if np.isfinite(v)]
        self.bar.update(self.step, values=finite)

    def close(self):
        if self.bar is not None and self.target is not None:
            self.bar.update(self.target, finalize=True)
