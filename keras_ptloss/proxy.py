"""Proxy teacher: the exact minimiser of PTLoss, and closeness metrics.

The proxy teacher (docs/design.md, "The proxy teacher") is

    p~(p, eps) = argmin_{q in simplex} sum_k p_k phi_k(q_k),
    phi_k(q) = -log q + sum_{m=1..M} eps[k, m] (1 - q)**m,

computed exactly in host-side numpy.
"""

import numpy as np

from keras_ptloss._checks import as_float_array
from keras_ptloss._checks import check_bool
from keras_ptloss._checks import check_choice
from keras_ptloss._checks import check_int
from keras_ptloss._checks import check_labels
from keras_ptloss._checks import check_number
from keras_ptloss._checks import check_probabilities
from keras_ptloss._checks import check_temperature
from keras_ptloss._checks import safe_log
from keras_ptloss._names import METRICS
from keras_ptloss._solver import ProxyTeacherConvergenceError
from keras_ptloss._solver import Solver
from keras_ptloss._solver import columns
from keras_ptloss._solver import detempered
from keras_ptloss._solver import metric_values
from keras_ptloss._solver import tempered
from keras_ptloss.coefficients import as_coefficient_array
from keras_ptloss.coefficients import check_convex

__all__ = [
    "METHODS",
    "METRICS",
    "ProxyTeacherConvergenceError",
    "check_metric",
    "closeness",
    "detemper",
    "proxy_teacher",
    "temper",
]

METHODS = ("auto", "newton", "bisection")


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

    For each example, the `q` minimising
    `sum_k p_k [-log q_k + sum_m eps[k, m] (1 - q_k)**m]`, `p` the teacher
    tempered by `T`. `eps > 0` sharpens, `eps < 0` smooths, `eps = 0`
    returns `p`.

    Args:
        teacher_probs: probabilities, shape `(N, K)` or `(K,)`; rows sum to
            1 (within 1e-3; renormalised).
        coefficients: `eps`, shape `(M,)` or `(K, M)`; with `batched=True`
            `C` candidate sets, `(C, M)` or `(C, K, M)`.
        temperature: `T > 0`; with `batched=True` also shape `(C,)`.
        allow_nonconvex: allow coefficients outside the convex region
            (else `ValueError`); a KKT point is then returned.
        detemper: return the student's `T = 1` prediction
            `normalise(p~ ** T)` instead of `p~`.
        batched: whether the first axis of `coefficients` indexes
            candidate sets.
        method: `"auto"` (Newton with bisection fallback), `"newton"` or
            `"bisection"`.
        tol: tolerance on the KKT residual and on `|sum_k q_k - 1|`.
        max_iter: Newton iterations before the fallback.
        return_info: also return a dict (`lam`, `residual`, `iterations`,
            `fallback_rows`).

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
        check_bool(flag, name)
    check_choice(method, "method", METHODS)
    tol = check_number(tol, "tol", low=0.0, low_open=True)
    max_iter = check_int(max_iter, "max_iter", minimum=1)
    probs = check_probabilities(teacher_probs, "teacher_probs", ndims=(1, 2))
    single = probs.ndim == 1
    probs2d = probs[None] if single else probs
    num_classes = probs2d.shape[1]
    eps = _validate_coefficients(
        coefficients, num_classes, batched, allow_nonconvex
    )
    temps = _check_temperatures(temperature, eps.shape[0] if batched else None)
    if not batched:
        eps = eps[None]
    solver = Solver(tol=tol, max_iter=max_iter, method=method)
    outputs, lams = [], []
    log_p0 = safe_log(probs2d)
    for c in range(eps.shape[0]):
        p = tempered(probs2d, temps[c], log_p0)
        q, lam = solver.solve(p, columns(eps[c]))
        if detemper:
            q = detempered(q, temps[c])
        outputs.append(q)
        lams.append(lam[:, 0])
    info = dict(solver.info)
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

    For prediction `r` and one-hot label `e_y`: `"brier"` `||r - e_y||**2`,
    `"l2"` `||r - e_y||`, `"tvd"` `1 - r_y`, `"nll"` `-log r_y`.

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
    values = check_probabilities(probs, "probs", ndims=(2,))
    labels = check_labels(labels, values.shape[0], values.shape[1])
    return float(np.mean(metric_values(values, labels, metric)))


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
    temperature = check_temperature(temperature)
    return tempered(np.asarray(probs, dtype="float64"), temperature, log_probs)


def detemper(probs, temperature):
    """The student's `T = 1` distribution `normalise(q ** T)`.

    The inverse of `temper`.

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
    temperature = check_temperature(temperature)
    return detempered(np.asarray(probs, dtype="float64"), temperature)


def _validate_coefficients(
    coefficients, num_classes, batched=False, allow_nonconvex=False
):
    if not batched:
        eps = as_coefficient_array(coefficients, num_classes)
        if not allow_nonconvex:
            check_convex(eps)
        return eps
    eps = as_float_array(
        coefficients,
        "coefficients",
        "an array of candidate sets with shape (C, M) or (C, K, M)",
    )
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
    """`metric`, checked against `METRICS`."""
    return check_choice(metric, "metric", METRICS)


def _check_temperatures(temperature, num_candidates):
    temps = as_float_array(temperature, "temperature", "a positive number")
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
