"""Training-free choice of PTLoss coefficients on a labelled split.

Coefficients are ranked by how close the proxy teacher is to the labels of
a validation split (docs/design.md, "Choosing the coefficients").
"""

import dataclasses
import json
import math
import time

import numpy as np
import scipy.optimize

from keras_ptloss._checks import check_bool
from keras_ptloss._checks import check_choice
from keras_ptloss._checks import check_int
from keras_ptloss._checks import check_labels
from keras_ptloss._checks import check_number
from keras_ptloss._checks import check_probabilities
from keras_ptloss._checks import check_temperature
from keras_ptloss._names import MODES
from keras_ptloss._progress import Progress
from keras_ptloss._solver import Objective
from keras_ptloss.coefficients import check_convex
from keras_ptloss.proxy import check_metric

# Keeps the loss strictly convex on the box (margin >= 1e-3).
_CONVEX_SAFETY = 1.0 - 1e-3
_SCREEN_TOL = 1e-6
# Far below the sampling noise of the scores (~0.1-1).
_FTOL = 1e-7
_MIN_RUNG = 128
_PROGRESS_DELAY = 2.0
_SHARED_ITER = 30


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class SelectionResult:
    """Outcome of `select_coefficients`.

    Scores are closeness values (lower is closer to the labels) on the
    selection split and on the held-out split.

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
        candidates: the sampled candidates, `(C, M)`.
        candidate_temperatures: their temperatures, shape `(C,)`.
        candidate_scores: their scores on the first screening subsample.
        screening: the rungs, dicts `{"examples": n, "candidates": c}`.
        history: one dict per refinement iteration (`"fit"`, `"holdout"`).
        wall_time: seconds the search took.
        num_fit: size of the selection split; `num_holdout` of the held-out
            one; `num_screen` of the screening subsample.
        num_evaluations: proxy-teacher evaluations over a whole split.
        num_example_solves: proxy teachers solved in all.
        stop_reason: why the gradient refinement stopped.

    Example:

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> teacher = rng.dirichlet(np.full(3, 0.3), size=200)
    >>> labels = rng.integers(0, 3, size=200)
    >>> result = select_coefficients(
    ...     teacher, labels, order=2, num_candidates=16, verbose=0
    ... )
    >>> result.num_fit, result.num_holdout
    (160, 40)
    """

    coefficients: np.ndarray
    temperature: float
    mode: str
    metric: str
    order: int
    num_classes: int
    teacher_score: float
    proxy_score: float
    holdout_teacher_score: float | None
    holdout_proxy_score: float | None
    candidates: np.ndarray
    candidate_temperatures: np.ndarray
    candidate_scores: np.ndarray
    screening: list
    history: list
    wall_time: float
    num_fit: int
    num_holdout: int
    num_screen: int
    num_evaluations: int
    num_example_solves: int
    stop_reason: str

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


@dataclasses.dataclass(frozen=True)
class SelectionConfig:
    """The validated settings of `select_coefficients`, with their defaults.

    `max_iter=None` resolves to 30 (shared) or 200 (class-wise).

    Example:

    >>> config = SelectionConfig(order=2, temperature=2)
    >>> config.temperature, config.max_iter
    (2.0, 30)
    """

    order: int = 5
    mode: str = "shared"
    metric: str = "brier"
    temperature: float = 1.0
    tune_temperature: bool = False
    holdout_fraction: float = 0.2
    seed: int = 0
    verbose: int = 1
    num_candidates: int = 256
    coefficient_bound: float = 20.0
    temperature_range: tuple = (0.5, 8.0)
    screen_size: int | None = 1024
    num_finalists: int = 4
    max_iter: int | None = None
    patience: int = 10
    l2_penalty: float = 0.0

    def __post_init__(self):
        for name, value in _checked_settings(self).items():
            object.__setattr__(self, name, value)

    @property
    def shared_iter(self):
        return self.max_iter if self.mode == "shared" else _SHARED_ITER


def _checked_settings(config):
    order = check_int(config.order, "order", minimum=1)
    mode = check_choice(config.mode, "mode", MODES)
    metric = check_metric(config.metric)
    temperature = check_temperature(config.temperature)
    tune_temperature = check_bool(config.tune_temperature, "tune_temperature")
    holdout_fraction = check_number(
        config.holdout_fraction, "holdout_fraction", 0.0, 1.0, high_open=True
    )
    if mode == "classwise" and holdout_fraction == 0:
        raise ValueError(
            "mode='classwise' needs a held-out split to stop over-fitting "
            "the K x M coefficients: `holdout_fraction` must be > 0. "
            "Received: holdout_fraction=0"
        )
    low, high = _check_temperature_range(config.temperature_range)
    if tune_temperature and not low <= temperature <= high:
        raise ValueError(
            f"`temperature` ({temperature}) must lie in "
            f"`temperature_range` {(low, high)} when tune_temperature=True."
        )
    max_iter = config.max_iter
    if max_iter is None:
        max_iter = 30 if mode == "shared" else 200
    screen_size = config.screen_size
    if screen_size is not None:
        screen_size = check_int(screen_size, "screen_size", minimum=1)
    return dict(
        order=order,
        mode=mode,
        metric=metric,
        temperature=temperature,
        tune_temperature=tune_temperature,
        holdout_fraction=holdout_fraction,
        seed=check_int(config.seed, "seed", minimum=0),
        verbose=check_int(config.verbose, "verbose", minimum=0, maximum=2),
        num_candidates=check_int(
            config.num_candidates, "num_candidates", minimum=1
        ),
        coefficient_bound=check_number(
            config.coefficient_bound,
            "coefficient_bound",
            low=0.0,
            low_open=True,
        ),
        temperature_range=(low, high),
        screen_size=screen_size,
        num_finalists=check_int(
            config.num_finalists, "num_finalists", minimum=1
        ),
        max_iter=check_int(max_iter, "max_iter", minimum=1),
        patience=check_int(config.patience, "patience", minimum=1),
        l2_penalty=check_number(config.l2_penalty, "l2_penalty", low=0.0),
    )


def _check_temperature_range(value):
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError) as e:
        raise ValueError(
            "`temperature_range` must be a pair (low, high). Received: "
            f"temperature_range={value!r}"
        ) from e
    if not (0 < low <= high and math.isfinite(high)):
        raise ValueError(
            "`temperature_range` must satisfy 0 < low <= high. Received: "
            f"temperature_range={value!r}"
        )
    return low, high


def select_coefficients(
    teacher_probs,
    labels,
    order=SelectionConfig.order,
    mode=SelectionConfig.mode,
    metric=SelectionConfig.metric,
    temperature=SelectionConfig.temperature,
    tune_temperature=SelectionConfig.tune_temperature,
    holdout_fraction=SelectionConfig.holdout_fraction,
    seed=SelectionConfig.seed,
    verbose=SelectionConfig.verbose,
    num_candidates=SelectionConfig.num_candidates,
    coefficient_bound=SelectionConfig.coefficient_bound,
    temperature_range=SelectionConfig.temperature_range,
    screen_size=SelectionConfig.screen_size,
    num_finalists=SelectionConfig.num_finalists,
    max_iter=SelectionConfig.max_iter,
    patience=SelectionConfig.patience,
    l2_penalty=SelectionConfig.l2_penalty,
):
    """Chooses PTLoss coefficients by how close the proxy teacher is to labels.

    No student is trained: the proxy teacher (the minimiser of PTLoss) is
    computed exactly on a labelled split and the `eps` whose proxy is
    closest to the labels is kept. `"shared"` (`eps` of shape `(M,)`)
    screens sampled candidates by successive halving, then refines the best
    by L-BFGS-B with the exact gradient; `"classwise"` (`(K, M)`) continues
    from it with early stopping on the held-out split. Every searched `eps`
    lies in a box inside PTLoss's convex region.

    Args:
        teacher_probs: teacher probabilities on the validation split at
            `T = 1`, shape `(N, K)`; rows sum to 1.
        labels: integer class ids, shape `(N,)`.
        order: `M >= 1`, the number of perturbed series coefficients.
        mode: `"shared"` or `"classwise"`.
        metric: `"brier"` (default), `"l2"`, `"tvd"` or `"nll"` (see
            `keras_ptloss.proxy.closeness`).
        temperature: distillation temperature `T > 0` (the one PTLoss will
            use); the starting point when `tune_temperature=True`.
        tune_temperature: also choose `T`, jointly with `eps`, within
            `temperature_range`.
        holdout_fraction: fraction of the examples held out from the
            choice, in `[0, 1)`; must be `> 0` for `"classwise"`.
        seed: seed of the split, the subsample and the candidates.
        verbose: `0` silent; `1` a progress bar (after 2 s) and the
            summary; `2` the summary only.
        num_candidates: candidates sampled in the shared search (`>= 1`).
        coefficient_bound: largest `|eps|` searched (`> 0`).
        temperature_range: `(low, high)` for `tune_temperature=True`.
        screen_size: examples on which all candidates are screened; `None`
            scores every candidate on the whole selection split.
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
        ValueError: on invalid arguments, or an empty split.

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
    settings = dict(locals())
    del settings["teacher_probs"], settings["labels"]
    config = SelectionConfig(**settings)
    probs = check_probabilities(teacher_probs, "teacher_probs", ndims=(2,))
    labels = check_labels(labels, probs.shape[0], probs.shape[1])
    return select_with_config(probs, labels, config)


def select_with_config(probs, labels, config):
    """`select_coefficients` on checked inputs and a `SelectionConfig`."""
    start_time = time.perf_counter()
    rng = np.random.default_rng(config.seed)
    fit_idx, hold_idx = _split(probs.shape[0], config.holdout_fraction, rng)
    fit = Objective(probs[fit_idx], labels[fit_idx], config.metric)
    hold = (
        Objective(probs[hold_idx], labels[hold_idx], config.metric)
        if hold_idx.size
        else None
    )
    teacher_score = fit.teacher_score()
    if not math.isfinite(teacher_score):
        raise ValueError(
            f"The teacher's {config.metric!r} score is infinite: it gives "
            "probability 0 to the label of some example, and no coefficients "
            "can change an exact zero. Use metric='brier'."
        )
    progress = Progress(
        config.verbose,
        stateful_metrics=["score", "holdout"],
        delay=_PROGRESS_DELAY,
        interval=0.2,
    )
    search = _Search(fit, hold, config, rng, progress)
    screening = search.screen()
    chosen, history, stop_reason = search.refine_shared(screening.best)
    if config.mode == "classwise":
        chosen, more, stop_reason = search.refine_classwise(chosen)
        history = history + more
    progress.close()
    check_convex(chosen.eps)
    result = SelectionResult(
        coefficients=chosen.eps,
        temperature=float(chosen.temperature),
        mode=config.mode,
        metric=config.metric,
        order=config.order,
        num_classes=probs.shape[1],
        teacher_score=teacher_score,
        history=history,
        stop_reason=stop_reason,
        **_screening_fields(screening),
        **_split_scores(fit, hold, chosen),
        wall_time=time.perf_counter() - start_time,
    )
    if config.verbose:
        print(result.summary())
    return result


def _screening_fields(screening):
    return dict(
        candidates=screening.candidates,
        candidate_temperatures=screening.temperatures,
        candidate_scores=screening.scores,
        screening=screening.rungs,
        num_screen=screening.rungs[0]["examples"],
    )


def _split_scores(fit, hold, chosen):
    eps, temperature = chosen.eps, float(chosen.temperature)
    objectives = [fit] if hold is None else [fit, hold]
    return dict(
        proxy_score=fit.score(eps, temperature),
        holdout_teacher_score=None if hold is None else hold.teacher_score(),
        holdout_proxy_score=(
            None if hold is None else hold.score(eps, temperature)
        ),
        num_fit=fit.num,
        num_holdout=0 if hold is None else hold.num,
        num_evaluations=sum(o.evaluations for o in objectives),
        num_example_solves=sum(o.example_solves for o in objectives),
    )


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
    """Lower and upper bounds, each `(M,)`, of a box in the convex region."""
    lower = np.full(order, -float(bound))
    upper = np.full(order, float(bound))
    for m in range(2, order + 1):
        lower[m - 1] = -_CONVEX_SAFETY / (m * (m - 1) * (order - 1))
    return lower, upper


@dataclasses.dataclass(frozen=True)
class _Point:
    eps: np.ndarray
    temperature: float
    score: float


@dataclasses.dataclass(frozen=True)
class _Screening:
    candidates: np.ndarray
    temperatures: np.ndarray
    scores: np.ndarray
    rungs: list
    best: _Point


class _EarlyStop(Exception):
    pass


class _Search:
    """The steps of `select_coefficients`; each returns its outcome."""

    def __init__(self, fit, hold, config, rng, progress):
        self.fit = fit
        self.hold = hold
        self.config = config
        self.rng = rng
        self.progress = progress
        self.box = coefficient_box(config.order, config.coefficient_bound)

    def screen(self):
        config, fit = self.config, self.fit
        cands, temps = _sample_candidates(config, self.rng)
        sizes, counts = _rungs(fit.num, cands.shape[0], config)
        perm = self.rng.permutation(fit.num)
        finalists = min(config.num_finalists, cands.shape[0])
        steps = sum(counts) + finalists + config.shared_iter
        if config.mode == "classwise":
            steps += config.max_iter
        self.progress.start(steps)
        alive = np.arange(cands.shape[0])
        best_so_far = np.inf
        rung_scores = []
        for size, count in zip(sizes, counts, strict=True):
            alive = alive[:count]
            rows = None if size == fit.num else np.sort(perm[:size])
            scores = np.empty(alive.size)
            for i, c in enumerate(alive):
                scores[i] = fit.evaluate(
                    cands[c], temps[c], rows=rows, tol=_SCREEN_TOL
                )[0]
                best_so_far = min(best_so_far, scores[i])
                self.progress.advance(score=best_so_far)
            rung_scores.append(scores)
            alive = alive[np.argsort(scores, kind="stable")]
        order_idx = alive[:finalists]
        if sizes[-1] == fit.num:
            full = np.sort(rung_scores[-1])[:finalists]
            self.progress.advance(finalists)
        else:
            full = np.empty(finalists)
            for i, c in enumerate(order_idx):
                full[i] = fit.score(cands[c], temps[c])
                self.progress.advance(score=full[: i + 1].min())
        best = order_idx[int(np.argmin(full))]
        return _Screening(
            candidates=cands,
            temperatures=temps,
            scores=rung_scores[0],
            rungs=[
                dict(examples=int(s), candidates=int(n))
                for s, n in zip(sizes, counts, strict=True)
            ],
            best=_Point(
                cands[best].copy(), float(temps[best]), float(full.min())
            ),
        )

    def refine_shared(self, start):
        """Returns `(point, history, stop_reason)`."""
        shape = (self.config.order,)
        history = []

        def on_step(theta, value):
            history.append(dict(fit=value))
            self.progress.advance(score=value)

        res = self._minimize(shape, start, on_step, self.config.shared_iter)
        eps, t = _unpack(res.x, shape, self.config)
        value = self.fit.score(eps, t)
        point = start
        if value <= start.score:
            point = _Point(np.clip(eps, *self.box), t, value)
        self.progress.advance(
            self.config.shared_iter - len(history), score=point.score
        )
        return point, history, _reason(res)

    def refine_classwise(self, start):
        """Returns `(point, history, reason)`; `point.score` is held-out."""
        shape = (self.fit.probs.shape[1], self.config.order)
        reference = np.tile(start.eps, (shape[0], 1))
        held = self.hold.score(reference, start.temperature)
        best = dict(point=_Point(reference, start.temperature, held), step=0)
        history = [dict(fit=start.score, holdout=held)]

        def on_step(theta, value):
            eps, t = _unpack(theta, shape, self.config)
            held = self.hold.score(eps, t)
            step = len(history)
            history.append(dict(fit=value, holdout=held))
            self.progress.advance(score=value, holdout=held)
            if held < best["point"].score:
                best.update(point=_Point(eps.copy(), t, held), step=step)
            elif step - best["step"] >= self.config.patience:
                raise _EarlyStop(theta, step)

        res = self._minimize(
            shape, start, on_step, self.config.max_iter, reference
        )
        point = best["point"]
        eps = np.clip(point.eps, *self.box)
        reason = f"{_reason(res)}; best held-out at iteration {best['step']}"
        return _Point(eps, point.temperature, point.score), history, reason

    def _minimize(self, shape, start, on_step, max_iter, reference=None):
        last = {}

        def fun(theta):
            value, grad = _value_and_grad(
                self.fit, theta, shape, self.config, reference
            )
            last.update(theta=theta.copy(), value=value)
            return value, grad

        def callback(theta):
            # Reuses L-BFGS-B's last evaluation when it was at `theta`.
            if "theta" in last and np.array_equal(last["theta"], theta):
                value = last["value"]
            else:
                value = self.fit.score(*_unpack(theta, shape, self.config))
            on_step(theta, value)

        bounds = _box_bounds(self.config, 1 if len(shape) == 1 else shape[0])
        x0 = np.ravel(np.broadcast_to(start.eps, shape))
        if self.config.tune_temperature:
            x0 = np.append(x0, math.log(start.temperature))
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
            theta, iteration = stop.args
            return scipy.optimize.OptimizeResult(
                x=theta,
                message="held-out score stopped improving",
                success=True,
                nit=iteration,
            )


def _sample_candidates(config, rng):
    """`eps = 0` then `num_candidates` sets in the box, and temperatures.

    A quarter vary `eps_1` alone (the main sharpen/smooth knob).
    """
    count, order = config.num_candidates, config.order
    bound = config.coefficient_bound
    num_line = count // 4
    mags = np.geomspace(bound * 1e-3, bound, max(-(-num_line // 2), 1))
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
    cands = np.clip(cands, *coefficient_box(order, bound))
    cands = np.concatenate([np.zeros((1, order)), cands])
    temps = np.full(cands.shape[0], config.temperature)
    if config.tune_temperature:
        lo, hi = np.log(config.temperature_range)
        temps[1:] = np.exp(rng.uniform(lo, hi, size=count))
    return cands, temps


def _rungs(num_fit, num_candidates, config):
    """Each rung keeps the best quarter on a subsample four times larger."""
    screen = config.screen_size
    sizes = [num_fit if screen is None else min(screen, num_fit)]
    while screen is not None and sizes[0] // 4 >= _MIN_RUNG and len(sizes) < 3:
        sizes.insert(0, sizes[0] // 4)
    finalists = min(config.num_finalists, num_candidates)
    counts = [num_candidates]
    for _ in sizes[1:]:
        counts.append(max(finalists, -(-counts[-1] // 4)))
    return sizes, counts


def _box_bounds(config, rows):
    lower, upper = coefficient_box(config.order, config.coefficient_bound)
    bounds = list(zip(np.tile(lower, rows), np.tile(upper, rows), strict=True))
    if config.tune_temperature:
        bounds.append(tuple(np.log(config.temperature_range)))
    return bounds


def _value_and_grad(fit, theta, shape, config, reference=None):
    """The score at L-BFGS-B's vector `theta`, and its gradient."""
    eps, t = _unpack(theta, shape, config)
    value, grad, grad_t = fit.evaluate(
        eps, t, want_grad=True, want_grad_t=config.tune_temperature
    )
    if reference is None:
        flat = grad.sum(axis=0)
    else:
        penalty = config.l2_penalty
        if penalty:
            diff = eps - reference
            value += penalty * np.mean(diff * diff)
            grad = grad + penalty * 2.0 * diff / diff.size
        flat = grad.ravel()
    if config.tune_temperature:
        flat = np.append(flat, grad_t)
    return value, flat


def _unpack(theta, shape, config):
    if config.tune_temperature:
        return theta[:-1].reshape(shape), float(math.exp(theta[-1]))
    return theta.reshape(shape), config.temperature


def _reason(res):
    message = res.message
    if isinstance(message, bytes):
        message = message.decode()
    return f"{message} after {res.nit} iterations"
