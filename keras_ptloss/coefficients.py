"""Validation and convexity of PTLoss coefficients (numpy, host side)."""

import numpy as np

from keras_ptloss._checks import as_float_array


def as_coefficient_array(coefficients, num_classes=None, name="coefficients"):
    """Validated `(M,)` or `(K, M)` coefficients as a float64 numpy array."""
    values = as_float_array(
        coefficients,
        name,
        "array-like of numbers with shape (M,) or (K, M)",
    )
    if values.ndim not in (1, 2):
        raise ValueError(
            f"`{name}` must have shape (M,) (shared over classes) or (K, M) "
            f"(class-wise). Received: {name} with shape {values.shape}"
        )
    if values.size == 0 or values.shape[-1] == 0:
        raise ValueError(
            f"`{name}` must hold at least one coefficient (order M >= 1). "
            f"Received: {name} with shape {values.shape}"
        )
    if not np.all(np.isfinite(values)):
        raise ValueError(
            f"`{name}` must be finite. Received: {name}={values.tolist()}"
        )
    if values.ndim == 2 and num_classes is not None:
        if values.shape[0] != num_classes:
            raise ValueError(
                f"Class-wise `{name}` must have one row per class: expected "
                f"shape ({num_classes}, M). Received: shape {values.shape}"
            )
    return values


def convexity_margin(coefficients):
    """Minimum of `q**2 * phi''(q)` over `q` in `[0, 1]`, per class.

    `phi(q) = -log q + sum_m eps_m (1 - q)**m` is convex exactly when the
    margin is `>= 0`.

    Args:
        coefficients: array of shape `(M,)` or `(K, M)`.

    Returns:
        A float numpy array of shape `()` or `(K,)`.
    """
    eps = np.asarray(coefficients, dtype="float64")
    rows = np.atleast_2d(eps)
    margins = np.array([_row_margin(row) for row in rows])
    return margins if eps.ndim == 2 else margins[0]


def _row_margin(row):
    poly = np.polynomial.Polynomial([1.0])
    q_squared = np.polynomial.Polynomial([0.0, 0.0, 1.0])
    one_minus_q = np.polynomial.Polynomial([1.0, -1.0])
    for m in range(2, row.shape[0] + 1):
        eps_m = row[m - 1]
        if eps_m != 0.0:
            poly = poly + m * (m - 1) * eps_m * q_squared * one_minus_q ** (
                m - 2
            )
    candidates = [0.0, 1.0]
    if poly.degree() >= 2:
        roots = poly.deriv().roots()
        real = roots[np.abs(roots.imag) < 1e-12].real
        candidates.extend(r for r in real if 0.0 <= r <= 1.0)
    return float(np.min(poly(np.array(candidates))))


def check_convex(coefficients, name="coefficients"):
    margins = np.atleast_1d(convexity_margin(coefficients))
    bad = np.flatnonzero(margins < 0.0)
    if bad.size:
        where = (
            f"class(es) {bad[:10].tolist()}"
            if margins.size > 1
            else "the shared coefficients"
        )
        raise ValueError(
            f"`{name}` lie outside the convex region: the perturbed loss "
            f"-log q + sum_m eps_m (1 - q)^m is not convex in q for "
            f"{where}"
            f" (min of q^2 * phi''(q) = {margins[bad].min():.4g} < 0), so "
            "its minimiser can be non-unique. A sufficient condition is "
            "sum_{m>=2} m (m-1) max(-eps_m, 0) <= 1. Pass "
            "`allow_nonconvex=True` to use them anyway. Received: "
            f"{name}={np.asarray(coefficients).tolist()}"
        )
