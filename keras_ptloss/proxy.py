"""Proxy teacher: the exact minimiser of PTLoss, and closeness metrics.

For a teacher distribution `p` and coefficients `eps` (DESIGN.md §2), the
proxy teacher is

    p~(p, eps) = argmin_{q in simplex} sum_k p_k phi_k(q_k),
    phi_k(q) = -log q + sum_{m=1..M} eps[k, m] (1 - q)**m,

the distribution a student trained with PTLoss is pulled towards. Its
stationarity system

    p_k g_k(q_k) = lam,  g_k(q) = 1/q + sum_m m eps[k, m] (1 - q)**(m-1),
    sum_k q_k = 1,

is solved here with host-side numpy (independent of the Keras backend),
vectorised over examples and over candidate coefficient sets, in cache-sized
blocks. The unknowns are `u_k = 1/q_k` and `lam`: each class's equation
`u_k + s_k(1 - 1/u_k) = lam / p_k` is linear in `u_k` for `M = 1` and
nearly so otherwise, and the system's Jacobian is diagonal plus rank one,
so one Newton iteration (a step on every `u_k`, then on `lam` for
`1 / sum_k q_k - 1 = 0`, kept inside a bracket) costs O(K M) per example.
Rows it does not settle within `max_iter` iterations go to a nested solver
with brackets on `lam` and on every `u_k` (safeguarded Newton with
bisection; monotone when the loss is convex), and a KKT residual above
tolerance raises `ProxyTeacherConvergenceError` instead of returning an
inexact answer. Classes with `p_k = 0` get `q_k = 0`.

The KKT residual reported and checked is, per example,
`max(max_k |R_k| / p_k, |sum_k q_k - 1|)` with
`R_k = p_k (1 + q_k s_k(q_k)) - lam q_k` (the stationarity equation times
`q_k`), where `s_k(q) = sum_m m eps[k, m] (1 - q)**(m-1)`; `|R_k| / p_k`
is about the relative error of `q_k`.
"""

import numpy as np

from keras_ptloss.coefficients import _to_numpy
from keras_ptloss.coefficients import as_coefficient_array
from keras_ptloss.coefficients import check_convex

METRICS = ("brier", "l2", "tvd", "nll")
METHODS = ("auto", "newton", "bisection")
# Largest number of array elements one solver block works on at a time:
# small enough for the working arrays to stay in cache, large enough to
# amortise numpy's per-call overhead.
_BLOCK_ELEMENTS = 1 << 15
_PROB_SUM_ATOL = 1e-4
# Newton iterations all rows of a block take together before the unsettled
# rows continue on their own.
_BLOCK_ITERATIONS = 8


class ProxyTeacherConvergenceError(RuntimeError):
    """Raised when the proxy-teacher solver misses its KKT tolerance."""


# --------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------


def proxy_teacher(
    teacher_probs,
    coefficients,
    temperature=1.0,
    allow_nonconvex=False,
    detemper=False,
    batched=False,
    method="auto",
    tol=1e-10,
    max_iter=50,
    return_info=False,
):
    """Proxy teacher: the exact minimiser of the PTLoss objective.

    For each example, returns the distribution `q` over the `K` classes that
    minimises `sum_k p_k [-log q_k + sum_m eps[k, m] (1 - q_k)**m]`, where
    `p` is the teacher tempered by `T` (`p ∝ teacher_probs ** (1/T)`). This
    is the student distribution (at temperature `T`) at which PTLoss with
    these coefficients is minimal. `eps > 0` sharpens the teacher,
    `eps < 0` smooths it; `eps = 0` returns `p` itself.

    Args:
        teacher_probs: teacher probabilities, shape `(N, K)` (or `(K,)` for
            one example); rows must be non-negative and sum to 1 (within
            1e-4; they are renormalised). Exact zeros stay exact zeros.
        coefficients: `eps`, shape `(M,)` (shared over classes) or `(K, M)`
            (class-wise). With `batched=True`, a batch of `C` candidate sets:
            `(C, M)` or `(C, K, M)`.
        temperature: `T > 0`. A float, or with `batched=True` also an array
            of shape `(C,)` (one temperature per candidate).
        allow_nonconvex: coefficients outside the convex region (see
            `keras_ptloss.coefficients.check_convex`) raise `ValueError`
            unless this is `True`. Then the minimiser may not be unique, and
            what is returned is a KKT point (a stationary point on the
            simplex, reached from the teacher), not necessarily the global
            minimiser; a non-converged solve still raises.
        detemper: if `True`, return the student's `T = 1` prediction at the
            optimum, `normalise(p~ ** T)`, instead of the tempered proxy
            `p~`. Closeness to labels is measured on this distribution.
        batched: whether the first axis of `coefficients` (and of
            `temperature`) indexes candidate sets.
        method: `"auto"` (damped joint Newton with bisection fallback for
            the rows it does not settle), `"newton"` (no fallback) or
            `"bisection"` (nested safeguarded bisection only; slower).
        tol: tolerance on the KKT residual `max_k |R_k| / p_k` and on
            `|sum_k q_k - 1|`.
        max_iter: Newton iterations before the fallback.
        return_info: if `True`, also return a dict with `lam` (the
            multipliers), `residual` (largest KKT residual), `iterations`
            and `fallback_rows`.

    Returns:
        A float64 numpy array shaped like `teacher_probs`, or `(C, N, K)`
        with `batched=True`; with `return_info=True`, a tuple
        `(proxy, info)`.

    Raises:
        ValueError: on invalid inputs, or coefficients outside the convex
            region without `allow_nonconvex=True`.
        ProxyTeacherConvergenceError: if the KKT residual stays above `tol`.

    Example:

    >>> import numpy as np
    >>> teacher = np.array([[0.7, 0.2, 0.1]])
    >>> sharper = proxy_teacher(teacher, [1.0])
    >>> bool(sharper[0, 0] > 0.7)
    True
    >>> np.allclose(proxy_teacher(teacher, [0.0, 0.0]), teacher)
    True
    """
    for name, flag in (
        ("allow_nonconvex", allow_nonconvex),
        ("detemper", detemper),
        ("batched", batched),
        ("return_info", return_info),
    ):
        if not isinstance(flag, (bool, np.bool_)):
            raise ValueError(
                f"`{name}` must be a bool. Received: {name}={flag!r}"
            )
    if method not in METHODS:
        raise ValueError(
            f"`method` must be one of {METHODS}. Received: method={method!r}"
        )
    tol = _check_positive(tol, "tol")
    max_iter = _check_int(max_iter, "max_iter", minimum=1)
    probs = validate_probs(teacher_probs, "teacher_probs")
    single = probs.ndim == 1
    probs2d = probs[None] if single else probs
    num_classes = probs2d.shape[1]
    eps = validate_coefficients(
        coefficients, num_classes, batched, allow_nonconvex
    )
    temps = _validate_temperatures(
        temperature, eps.shape[0] if batched else None
    )
    if not batched:
        eps = eps[None]
    solver = _Solver(tol=tol, max_iter=max_iter, method=method)
    outputs, lams = [], []
    info = dict(residual=0.0, iterations=0, fallback_rows=0)
    log_p0 = _safe_log(probs2d)
    for c in range(eps.shape[0]):
        p = temper(probs2d, temps[c], log_probs=log_p0)
        q, lam = solver.solve(p, _columns(eps[c]))
        if detemper:
            q = _detemper(q, temps[c])
        outputs.append(q)
        lams.append(lam[:, 0])
    info.update(solver.info)
    out = np.stack(outputs) if batched else outputs[0]
    lam = np.stack(lams) if batched else lams[0]
    if single:
        out, lam = out[..., 0, :], lam[..., 0]
    if return_info:
        info["lam"] = lam
        return out, info
    return out


def closeness(probs, labels, metric="brier"):
    """Mean distance between predicted distributions and one-hot labels.

    Metrics, for a prediction `r` and label `y` (one-hot `e_y`):

    - `"brier"`: `||r - e_y||**2`. Since `E[e_y | x] = p*(x)`, its mean
      ranks distributions by `E||r - p*||**2` without knowing `p*`
      (DESIGN.md §2); the default.
    - `"l2"`: `||r - e_y||` (the paper's L2 quality score).
    - `"tvd"`: total variation `0.5 * sum_k |r_k - e_yk| = 1 - r_y`.
    - `"nll"`: `-log r_y` (infinite where `r_y = 0`).

    Args:
        probs: probabilities, shape `(N, K)`.
        labels: integer class ids in `[0, K)`, shape `(N,)`.
        metric: one of `"brier"`, `"l2"`, `"tvd"`, `"nll"`.

    Returns:
        The mean over examples, a Python float (lower is closer).

    Example:

    >>> import numpy as np
    >>> probs = np.array([[0.8, 0.2], [0.4, 0.6]])
    >>> round(closeness(probs, [0, 1]), 4)
    0.2
    >>> round(closeness(probs, [0, 1], metric="tvd"), 4)
    0.3
    """
    metric = check_metric(metric)
    values = validate_probs(probs, "probs")
    if values.ndim != 2:
        raise ValueError(
            "`probs` must have shape (N, K). Received: probs with shape "
            f"{values.shape}"
        )
    labels = validate_labels(labels, values.shape[0], values.shape[1])
    return float(np.mean(_metric_values(values, labels, metric)))


def temper(probs, temperature, log_probs=None):
    """Tempers probabilities: `p ** (1/T)`, renormalised; zeros stay zero.

    Args:
        probs: probabilities, shape `(..., K)`.
        temperature: `T > 0`.
        log_probs: optional precomputed `log(probs)` (`-inf` at zeros).

    Returns:
        A float64 numpy array shaped like `probs`.

    Example:

    >>> import numpy as np
    >>> np.round(temper(np.array([0.8, 0.2, 0.0]), 2.0), 4).tolist()
    [0.6667, 0.3333, 0.0]
    """
    probs = np.asarray(probs, dtype="float64")
    if temperature == 1.0:
        return probs
    if log_probs is None:
        log_probs = _safe_log(probs)
    return _softmax(log_probs / temperature)


def detemper(probs, temperature):
    """The student's `T = 1` distribution `normalise(q ** T)`.

    Inverse of `temper`: a student whose tempered prediction is `q` at
    temperature `T` predicts `normalise(q ** T)` at `T = 1`.

    Args:
        probs: tempered probabilities `q`, shape `(..., K)`.
        temperature: `T > 0`.

    Returns:
        A float64 numpy array shaped like `probs`.

    Example:

    >>> import numpy as np
    >>> q = temper(np.array([0.7, 0.2, 0.1]), 3.0)
    >>> np.round(detemper(q, 3.0), 6).tolist()
    [0.7, 0.2, 0.1]
    """
    return _detemper(np.asarray(probs, dtype="float64"), temperature)


def _detemper(probs, temperature):
    if temperature == 1.0:
        return probs
    return _softmax(_safe_log(probs) * temperature)


# --------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------


def validate_probs(probs, name="teacher_probs"):
    """Checks a `(N, K)` or `(K,)` probability array; returns it renormalised.

    Raises `ValueError` naming `name` for a wrong rank, an empty array,
    non-finite or negative values, or rows not summing to 1 (within 1e-4).
    """
    try:
        values = np.asarray(_to_numpy(probs), dtype="float64")
    except (TypeError, ValueError) as e:
        raise ValueError(
            f"`{name}` must be an array of probabilities with shape (N, K). "
            f"Received: {name}={probs!r}"
        ) from e
    if values.ndim not in (1, 2) or values.size == 0:
        raise ValueError(
            f"`{name}` must have shape (N, K) with N >= 1 and K >= 1. "
            f"Received: {name} with shape {values.shape}"
        )
    if not np.all(np.isfinite(values)):
        bad = np.argwhere(~np.isfinite(values))[0].tolist()
        raise ValueError(
            f"`{name}` must be finite; found {values[tuple(bad)]} at index "
            f"{bad}. Received: {name} with shape {values.shape}"
        )
    if np.any(values < 0):
        bad = np.argwhere(values < 0)[0].tolist()
        raise ValueError(
            f"`{name}` must be non-negative probabilities; found "
            f"{values[tuple(bad)]} at index {bad}."
        )
    sums = values.sum(axis=-1)
    off = np.abs(sums - 1.0) > _PROB_SUM_ATOL
    if np.any(off):
        row = int(np.flatnonzero(np.atleast_1d(off))[0])
        raise ValueError(
            f"Each row of `{name}` must sum to 1 (within {_PROB_SUM_ATOL}); "
            f"row {row} sums to {np.atleast_1d(sums)[row]:.6g}. Pass "
            "probabilities (e.g. softmax outputs), not logits."
        )
    return values / sums[..., None]


def validate_labels(labels, num_examples, num_classes, name="labels"):
    """Checks integer class ids of shape `(num_examples,)` in `[0, K)`."""
    try:
        values = np.asarray(_to_numpy(labels))
    except (TypeError, ValueError) as e:
        raise ValueError(
            f"`{name}` must be an array of integer class ids. Received: "
            f"{name}={labels!r}"
        ) from e
    if values.shape != (num_examples,):
        raise ValueError(
            f"`{name}` must be integer class ids of shape ({num_examples},), "
            f"one per example. Received: {name} with shape {values.shape}"
        )
    if values.dtype.kind == "f":
        if not np.all(np.isfinite(values)) or np.any(
            values != np.round(values)
        ):
            raise ValueError(
                f"`{name}` must hold integer class ids. Received non-integer "
                f"values, e.g. {values[values != np.round(values)][:3]}"
            )
    elif values.dtype.kind not in "iu":
        raise ValueError(
            f"`{name}` must hold integer class ids. Received dtype "
            f"{values.dtype}"
        )
    values = values.astype("int64")
    bad = (values < 0) | (values >= num_classes)
    if np.any(bad):
        raise ValueError(
            f"`{name}` must lie in [0, {num_classes}) for {num_classes} "
            f"classes. Received out-of-range values "
            f"{np.unique(values[bad])[:5].tolist()}"
        )
    return values


def validate_coefficients(
    coefficients, num_classes, batched=False, allow_nonconvex=False
):
    """Returns coefficients as float64 `(M,)`/`(K, M)` (or with a leading
    candidate axis when `batched`), checking shape, finiteness and, unless
    `allow_nonconvex`, convexity."""
    if not batched:
        eps = as_coefficient_array(coefficients, num_classes)
        if not allow_nonconvex:
            check_convex(eps)
        return eps
    try:
        eps = np.asarray(_to_numpy(coefficients), dtype="float64")
    except (TypeError, ValueError) as e:
        raise ValueError(
            "`coefficients` must be an array of candidate sets with shape "
            f"(C, M) or (C, K, M). Received: coefficients={coefficients!r}"
        ) from e
    if eps.ndim not in (2, 3) or eps.shape[0] == 0:
        raise ValueError(
            "With `batched=True`, `coefficients` must have shape (C, M) or "
            f"(C, K, M) with C >= 1. Received: shape {eps.shape}"
        )
    for c in range(eps.shape[0]):
        as_coefficient_array(eps[c], num_classes, name=f"coefficients[{c}]")
        if not allow_nonconvex:
            check_convex(eps[c], name=f"coefficients[{c}]")
    return eps


def check_metric(metric):
    if metric not in METRICS:
        raise ValueError(
            f"`metric` must be one of {METRICS}. Received: metric={metric!r}"
        )
    return metric


def _validate_temperatures(temperature, num_candidates):
    try:
        temps = np.asarray(_to_numpy(temperature), dtype="float64")
    except (TypeError, ValueError) as e:
        raise ValueError(
            "`temperature` must be a positive number. Received: "
            f"temperature={temperature!r}"
        ) from e
    if temps.ndim == 1 and num_candidates is not None:
        if temps.shape != (num_candidates,):
            raise ValueError(
                "A per-candidate `temperature` must have shape "
                f"({num_candidates},). Received: shape {temps.shape}"
            )
    elif temps.ndim != 0:
        raise ValueError(
            "`temperature` must be a scalar (or, with `batched=True`, of "
            f"shape (C,)). Received: shape {temps.shape}"
        )
    if not np.all(np.isfinite(temps)) or np.any(temps <= 0):
        raise ValueError(
            "`temperature` must be > 0 and finite. Received: "
            f"temperature={temps.tolist()}"
        )
    count = 1 if num_candidates is None else num_candidates
    return np.broadcast_to(temps, (count,)).tolist()


def _check_positive(value, name):
    if isinstance(value, bool) or not isinstance(
        value, (int, float, np.integer, np.floating)
    ):
        raise ValueError(f"`{name}` must be a number. Received: {value!r}")
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"`{name}` must be > 0. Received: {name}={value}")
    return float(value)


def _check_int(value, name, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(
            f"`{name}` must be an integer. Received: {name}={value!r}"
        )
    if value < minimum:
        raise ValueError(
            f"`{name}` must be >= {minimum}. Received: {name}={value}"
        )
    return int(value)

    try:
        from keras import ops

        return ops.convert_to_numpy(value)
    except Exception:
        return value


# --------------------------------------------------------------------------
# Numerical core (private; shared with keras_ptloss.selection)
# --------------------------------------------------------------------------


def _safe_log(values):
    with np.errstate(divide="ignore"):
        return np.log(values)


def _softmax(logits):
    """Softmax over the last axis; `-inf` logits give exact zeros."""
    top = np.max(logits, axis=-1, keepdims=True)
    e = np.exp(logits - top)
    return e / e.sum(axis=-1, keepdims=True)


def _columns(eps):
    """Coefficient columns: `M` floats (shared) or `M` arrays of shape (K,)."""
    eps = np.asarray(eps, dtype="float64")
    if eps.ndim == 1:
        return [float(v) for v in eps]
    return [np.ascontiguousarray(eps[:, m]) for m in range(eps.shape[1])]


def _horner(coeffs, x):
    """`sum_j coeffs[j] * x**j` by Horner's rule (coeffs broadcast)."""
    out = coeffs[-1] * x
    for c in reversed(coeffs[1:-1]):
        out += c
        out *= x
    return out + coeffs[0]


def _poly_terms(cols, x):
    """`s(x) = sum_m m eps_m x**(m-1)` and its derivative `s_x(x)`."""
    order = len(cols)
    s_coeffs = [(j + 1) * c for j, c in enumerate(cols)]
    if order == 1:
        return np.broadcast_to(np.asarray(s_coeffs[0]), x.shape), 0.0
    ds_coeffs = [j * s_coeffs[j] for j in range(1, order)]
    s = _horner(s_coeffs, x)
    if order == 2:
        return s, np.broadcast_to(np.asarray(ds_coeffs[0]), x.shape)
    return s, _horner(ds_coeffs, x)


def _row_blocks(num_rows, num_classes):
    step = max(1, _BLOCK_ELEMENTS // max(num_classes, 1))
    for start in range(0, num_rows, step):
        yield slice(start, min(start + step, num_rows))


class _Solver:
    """Vectorised solver of the stationarity system, block by block.

    `solve(p, cols, q0, lam0)` takes the tempered teacher `p` `(n, K)` and
    the coefficient columns; `q0`/`lam0` warm-start the Newton iteration.
    Rows are solved in cache-sized blocks; within a block, all rows take a
    few Newton iterations together, the rows still unsettled continue on
    their own, and any left after `max_iter` go to the nested solver
    (unless `method="newton"`).
    """

    def __init__(self, tol=1e-10, max_iter=50, method="auto"):
        self.tol = tol
        self.max_iter = max_iter
        self.method = method
        self.info = dict(residual=0.0, iterations=0, fallback_rows=0)

    def solve(self, p, cols, q0=None, lam0=None):
        n, k = p.shape
        q = np.empty((n, k))
        lam = np.empty((n, 1))
        for rows in _row_blocks(n, k):
            q[rows], lam[rows] = self._solve_block(
                p[rows],
                cols,
                None if q0 is None else q0[rows],
                None if lam0 is None else lam0[rows],
            )
        return q, lam

    def _solve_block(self, p, cols, q0=None, lam0=None):
        positive = p > 0
        has_zero = not positive.all()
        inv_p = np.divide(1.0, p, out=np.zeros_like(p), where=positive)
        tol = self.tol
        if self.method == "bisection":
            q, lam = _nested_solve(p, cols, positive, inv_p, tol)
            residual = _residual(p, cols, q, lam, inv_p)
        else:
            first = min(_BLOCK_ITERATIONS, self.max_iter)
            q, lam, residual, iters = _newton(
                p, cols, q0, lam0, inv_p, positive, has_zero, tol, first
            )
            failed = ~(residual <= tol)
            if failed.any() and self.max_iter > first:
                # The few unsettled rows continue on their own.
                rows = np.flatnonzero(failed)
                q[rows], lam[rows], residual[rows], more = _newton(
                    p[rows],
                    cols,
                    q[rows],
                    lam[rows],
                    inv_p[rows],
                    positive[rows],
                    has_zero,
                    tol,
                    self.max_iter - first,
                )
                iters += more
                failed = ~(residual <= tol)
            if failed.any() and q0 is not None:
                # A warm start that did not settle: retry from the teacher.
                rows = np.flatnonzero(failed)
                q[rows], lam[rows], residual[rows], _ = _newton(
                    p[rows],
                    cols,
                    None,
                    None,
                    inv_p[rows],
                    positive[rows],
                    has_zero,
                    tol,
                    self.max_iter,
                )
                failed = ~(residual <= tol)
            self.info["iterations"] = max(self.info["iterations"], iters)
            if failed.any() and self.method == "auto":
                rows = np.flatnonzero(failed)
                self.info["fallback_rows"] += rows.size
                q[rows], lam[rows] = _nested_solve(
                    p[rows], cols, positive[rows], inv_p[rows], tol
                )
                residual[rows] = _residual(
                    p[rows], cols, q[rows], lam[rows], inv_p[rows]
                )
        worst = float(np.max(residual)) if residual.size else 0.0
        if not worst <= tol:
            row = int(np.argmax(np.where(np.isnan(residual), np.inf, residual)))
            raise ProxyTeacherConvergenceError(
                f"Proxy-teacher solver did not converge: KKT residual "
                f"{worst:.3g} > tol={tol:.3g} (method={self.method!r}, "
                f"max_iter={self.max_iter}) for the teacher row "
                f"{np.array2string(p[row][:8], precision=4)}"
                f"{'...' if p.shape[1] > 8 else ''}. Increase `max_iter` or "
                "`tol`, or check that the coefficients are in the convex "
                "region."
            )
        self.info["residual"] = max(self.info["residual"], worst)
        return q, lam


def _lambda_bracket(p, cols, positive):
    """`[lam_lo, lam_hi]` holding the multiplier: at `lam_lo` the classes'
    exact solutions sum to >= 1 (one of them is 1), at `lam_hi` to <= 1
    (there `q_k <= p_k`, since `|s_k| <= sum_m m |eps_m|`)."""
    k = p.shape[-1]
    g_one = 1.0 + np.broadcast_to(np.asarray(cols[0], dtype="float64"), (k,))
    lam_lo = np.max(np.where(positive, p * g_one, -np.inf), axis=-1)
    lam_hi = 1.0 + np.max(p * _abs_poly_bound(cols), axis=-1)
    return lam_lo[:, None], np.maximum(lam_hi, lam_lo)[:, None]


def _abs_poly_bound(cols):
    """`sum_m m |eps_m|`, a bound on `|s(x)|` for `x` in `[0, 1]`."""
    total = 0.0
    for m, c in enumerate(cols, start=1):
        total = total + m * np.abs(np.asarray(c, dtype="float64"))
    return total


def _newton(p, cols, q0, lam0, inv_p, positive, has_zero, tol, max_iter):
    """Safeguarded Newton iteration for one block of rows.

    Works with `u_k = 1 / q_k`, in which each class's equation
    `E_k = u_k + s_k(1 - 1/u_k) - lam / p_k = 0` is linear for `M = 1` and
    nearly linear otherwise (`dE/du = c_k = q_k**2 phi_k'' > 0`). Each
    iteration takes one Newton step on every `u_k`, then one Newton step on
    `lam` for `1 / sum_k q_k(lam) - 1 = 0` (a harmonic mean of increasing
    functions: concave, so steps from below never overshoot), kept inside
    the bracket `[lam_lo, lam_hi]`, with the first-order change of `u`.

    Returns `(q, lam, residual, iterations)`, `residual` per row being
    `max(max_k |R_k| / p_k, |sum_k q_k - 1|)` with
    `R_k / p_k = q_k E_k`.
    """
    order = len(cols)
    s_coeffs = [(j + 1) * c for j, c in enumerate(cols)]
    ds_coeffs = [j * s_coeffs[j] for j in range(1, order)]
    lam_lo, lam_hi = _lambda_bracket(p, cols, positive)
    with np.errstate(divide="ignore"):
        if q0 is None:
            u = 1.0 / p
            s = _horner_into(s_coeffs, 1.0 - p, np.empty_like(p))
            lam = 1.0 + np.sum(p * p * s, axis=-1, keepdims=True)
        else:
            u = 1.0 / np.where(positive, q0, 0.0)
            lam = lam0.copy()
    np.clip(lam, lam_lo, lam_hi, out=lam)
    np.maximum(u, 1.0, out=u)
    q = np.empty_like(p)
    x = np.empty_like(p)
    s = np.empty_like(p)
    s_x = np.empty_like(p)
    e = np.empty_like(p)
    c = np.empty_like(p)
    tmp = np.empty_like(p)
    residual = np.full(p.shape[0], np.inf)
    it = 0
    for it in range(max_iter + 1):
        np.divide(1.0, u, out=q)
        np.subtract(1.0, q, out=x)
        _horner_into(s_coeffs, x, s)
        # E = u + s - lam / p   (= g_k(q_k) - lam / p_k)
        np.multiply(lam, inv_p, out=e)
        np.subtract(s, e, out=e)
        e += u
        # c = 1 + q^2 s_x   (= q^2 phi''(q) > 0)
        if order > 1:
            _horner_into(ds_coeffs, x, s_x)
            np.multiply(q, q, out=c)
            c *= s_x
            c += 1.0
        else:
            c.fill(1.0)
        if has_zero:
            np.copyto(e, 0.0, where=~positive)
            np.copyto(c, 1.0, where=~positive)
        np.abs(e, out=tmp)
        tmp *= q
        residual = np.maximum(tmp.max(axis=-1), np.abs(q.sum(axis=-1) - 1.0))
        if it == max_iter or not (residual.max() > tol):
            break
        # Newton on every u_k at fixed lam.
        e /= c
        u -= e
        np.maximum(u, 1.0, out=u)
        # Newton on lam for 1 / sum q - 1 = 0; dq_k/dlam = -q^2 / (p c).
        np.divide(1.0, u, out=q)
        total = q.sum(axis=-1, keepdims=True)
        np.multiply(q, q, out=tmp)
        tmp *= inv_p
        tmp /= c
        slope = tmp.sum(axis=-1, keepdims=True) / (total * total)
        with np.errstate(divide="ignore", invalid="ignore"):
            lam_new = lam - (1.0 / total - 1.0) / slope
        lam_new = np.where(np.isfinite(lam_new), lam_new, lam)
        np.clip(lam_new, lam_lo, lam_hi, out=lam_new)
        # First-order change of u: du_k/dlam = 1 / (p_k c_k).
        np.divide(inv_p, c, out=tmp)
        tmp *= lam_new - lam
        u += tmp
        np.maximum(u, 1.0, out=u)
        lam = lam_new
    return q, lam, residual, it


def _horner_into(coeffs, x, out):
    """`out = sum_j coeffs[j] * x**j` (Horner), written into `out`."""
    if len(coeffs) == 1:
        out[...] = coeffs[0]
        return out
    np.multiply(x, coeffs[-1], out=out)
    for c in reversed(coeffs[1:-1]):
        out += c
        out *= x
    out += coeffs[0]
    return out


def _residual(p, cols, q, lam, inv_p):
    """Per-row `max(max_k |R_k| / p_k, |sum_k q_k - 1|)`."""
    s, _ = _poly_terms(cols, 1.0 - q)
    r = p * (1.0 + q * s) - lam * q
    return np.maximum(
        np.max(np.abs(r) * inv_p, axis=-1), np.abs(q.sum(axis=-1) - 1.0)
    )


def _nested_solve(p, cols, positive, inv_p, tol, max_iter=200):
    """Robust solver for a convex loss: safeguarded Newton on `lam` for
    `1 / sum_k q_k(lam) - 1` (increasing in `lam`), each `q_k(lam)` solved
    exactly by safeguarded Newton on `u_k = 1/q_k` (increasing `E_k`).
    Both keep brackets, so they fall back to bisection and cannot fail."""
    lam_lo, lam_hi = _lambda_bracket(p, cols, positive)
    lam_lo, lam_hi = lam_lo[:, 0], lam_hi[:, 0]
    bound = _abs_poly_bound(cols)
    single = positive.sum(axis=-1) == 1
    lam = lam_lo.copy()
    u = np.where(positive, 1.0, np.inf)
    for _ in range(max_iter):
        u, c = _inner_solve(
            p, cols, positive, inv_p, lam[:, None], bound, u, tol
        )
        q = 1.0 / u
        total = q.sum(axis=-1)
        phi = 1.0 / total - 1.0
        lam_lo = np.where(phi <= 0, lam, lam_lo)
        lam_hi = np.where(phi >= 0, lam, lam_hi)
        done = single | (np.abs(total - 1.0) <= 0.1 * tol)
        done |= (lam_hi - lam_lo) <= 4e-16 * np.maximum(
            np.abs(lam_hi), np.abs(lam_lo)
        )
        if done.all():
            break
        slope = np.sum(q * q * inv_p / c, axis=-1) / (total * total)
        with np.errstate(divide="ignore", invalid="ignore"):
            newton = lam - phi / slope
        inside = np.isfinite(newton) & (newton > lam_lo) & (newton < lam_hi)
        step = np.where(inside, newton, 0.5 * (lam_lo + lam_hi))
        lam = np.where(done, lam, step)
    u, _ = _inner_solve(p, cols, positive, inv_p, lam[:, None], bound, u, tol)
    return 1.0 / u, lam[:, None]


def _inner_solve(p, cols, positive, inv_p, lam, bound, u0, tol, max_iter=200):
    """For fixed `lam`, solves `E_k(u) = u + s_k(1 - 1/u) - lam / p_k = 0`
    for each class on `u >= 1` (`q_k = 1/u_k`; clamped at `u = 1` when
    `E_k(1) >= 0`). Returns `u` and `c = dE/du`."""
    target = lam * inv_p
    with np.errstate(invalid="ignore"):
        lo = np.maximum(1.0, target - bound)
        hi = np.maximum(lo, target + bound)
    lo = np.where(positive, lo, np.inf)
    hi = np.where(positive, hi, np.inf)
    u = np.where(positive, np.clip(u0, lo, hi), np.inf)
    c = np.ones_like(u)
    for _ in range(max_iter):
        q = np.where(positive, 1.0 / u, 0.0)
        s, s_x = _poly_terms(cols, 1.0 - q)
        e = np.where(positive, u + s - target, 0.0)
        c = 1.0 + q * q * s_x
        lo = np.where(e < 0, u, lo)
        hi = np.where(e > 0, u, hi)
        with np.errstate(invalid="ignore"):
            newton = u - e / c
        inside = (newton > lo) & (newton < hi)
        step = np.where(inside, newton, 0.5 * (lo + hi))
        converged = ~positive | (np.abs(e) * q <= 0.01 * tol)
        with np.errstate(invalid="ignore"):
            converged |= (hi - lo) <= 4e-16 * hi
        converged |= (u == 1.0) & (e >= 0)
        u = np.where(converged, u, step)
        if converged.all():
            break
    return u, np.where(positive, c, 1.0)


# --------------------------------------------------------------------------
# Scores and their gradients through the proxy (implicit function theorem)
# --------------------------------------------------------------------------


def _metric_values(r, labels, metric):
    """Per-example closeness of `r` `(n, K)` to one-hot `labels`."""
    rows = np.arange(r.shape[0])
    r_y = r[rows, labels]
    if metric == "brier":
        return np.sum(r * r, axis=-1) - 2.0 * r_y + 1.0
    if metric == "l2":
        return np.sqrt(np.maximum(np.sum(r * r, axis=-1) - 2.0 * r_y + 1.0, 0))
    if metric == "tvd":
        return 1.0 - r_y
    with np.errstate(divide="ignore"):
        return -np.log(r_y)


def _metric_grad(r, labels, metric):
    """`d metric / d r`, shape `(n, K)`."""
    rows = np.arange(r.shape[0])
    if metric == "brier":
        u = 2.0 * r
        u[rows, labels] -= 2.0
        return u
    if metric == "l2":
        diff = r.copy()
        diff[rows, labels] -= 1.0
        norm = np.sqrt(np.sum(diff * diff, axis=-1, keepdims=True))
        return np.divide(diff, norm, out=np.zeros_like(diff), where=norm > 0)
    u = np.zeros_like(r)
    if metric == "tvd":
        u[rows, labels] = -1.0
        return u
    with np.errstate(divide="ignore"):
        u[rows, labels] = -1.0 / r[rows, labels]
    return u


def _score_and_grad(
    p, log_p0, labels, cols, temperature, metric, q, want_grad, want_grad_t
):
    """Score sum and gradients of one block at its solved proxy `q`.

    Args:
        p: tempered teacher `(n, K)`; `log_p0` the log of the untempered one.
        cols: coefficient columns; `temperature` the candidate's `T`.
        q: the solved (tempered) proxy.
        want_grad: whether to return the coefficient gradient.
        want_grad_t: whether to return the temperature gradient.

    Returns:
        `(score_sum, grad_eps, grad_log_t)`: the sum over the block of the
        per-example metric; `grad_eps` `(K, M)` holding
        `sum_i d metric_i / d eps[k, m]` (sum over `k` for shared
        coefficients is left to the caller); `grad_log_t` the derivative
        with respect to `log T`.
    """
    t = temperature
    r = _detemper(q, t)
    values = _metric_values(r, labels, metric)
    score = float(np.sum(values))
    if not want_grad:
        return score, None, None
    positive = p > 0
    u = _metric_grad(r, labels, metric)
    if metric == "nll":  # u = -e_y / r_y, so sum_k u_k r_k = -1
        u_bar = -np.ones((r.shape[0], 1))
    else:
        u_bar = np.sum(u * r, axis=-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        if t == 1.0:
            v = u - u_bar
        else:
            v = np.where(positive, t * (r / q) * (u - u_bar), 0.0)
        x = 1.0 - q
        s, s_x = _poly_terms(cols, x)
        curv = 1.0 + q * q * s_x  # q^2 phi''(q) > 0
        # 1/d_k = -eta_k with eta_k = q^2 / (p c_k); w = sum v eta / sum eta.
        eta = np.where(positive, q * q / (p * curv), 0.0)
    w = np.sum(v * eta, axis=-1, keepdims=True) / np.sum(
        eta, axis=-1, keepdims=True
    )
    # d metric / d eps[k, m] = rho_k m x_k^(m-1), rho = (v - w) q^2 / c.
    with np.errstate(invalid="ignore"):
        rho = np.where(positive, (v - w) * q * q / curv, 0.0)
    order = len(cols)
    grad = np.empty((p.shape[1], order))
    acc = rho
    for m in range(1, order + 1):
        grad[:, m - 1] = m * acc.sum(axis=0)
        if m < order:
            acc = acc * x
    grad_log_t = None
    if want_grad_t:
        # Through the tempered teacher: d metric / d log p_k = lam gamma_k,
        # lam gamma_k = (v_k - w) q_k (1 + q_k s_k) / c_k.
        with np.errstate(invalid="ignore", divide="ignore"):
            lam_gamma = np.where(
                positive, (v - w) * q * (1.0 + q * s) / curv, 0.0
            )
            log_p0_pos = np.where(positive, log_p0, 0.0)
            mean_log = np.sum(p * log_p0_pos, axis=-1, keepdims=True)
            dlogp_dt = -(log_p0_pos - mean_log) / (t * t)
            through_teacher = np.sum(lam_gamma * dlogp_dt)
            # Through de-tempering r = normalise(q^T).
            log_q = np.where(positive, np.log(np.where(positive, q, 1.0)), 0)
            l_bar = np.sum(r * log_q, axis=-1, keepdims=True)
            direct = np.sum(u * r * (log_q - l_bar))
        grad_log_t = float(t * (through_teacher + direct))
    return score, grad, grad_log_t
