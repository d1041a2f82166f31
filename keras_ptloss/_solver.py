"""Numerical core of the proxy teacher: the solver, scores and gradients.

Host-side numpy. The proxy `q` solves

    p_k g_k(q_k) = lam,  g_k(q) = 1/q + sum_m m eps[k, m] (1 - q)**(m-1),
    sum_k q_k = 1;

the solver and the KKT residual are in docs/design.md, "The proxy teacher".
Score gradients come from the implicit function theorem.
"""

import numpy as np

from keras_ptloss._checks import safe_log
from keras_ptloss._checks import softmax

# Keeps working arrays in cache while amortising numpy's per-call overhead.
BLOCK_ELEMENTS = 1 << 15
BLOCK_ITERATIONS = 8


class ProxyTeacherConvergenceError(RuntimeError):
    """Raised when the proxy-teacher solver misses its KKT tolerance."""


def tempered(probs, temperature, log_probs=None):
    """`probs ** (1/T)` renormalised, for a float64 array; zeros stay zero."""
    if temperature == 1.0:
        return probs
    if log_probs is None:
        log_probs = safe_log(probs)
    return softmax(log_probs / temperature)


def detempered(probs, temperature):
    """`normalise(probs ** T)` for a float64 array (inverse of `tempered`)."""
    if temperature == 1.0:
        return probs
    return softmax(safe_log(probs) * temperature)


def columns(eps):
    """Coefficient columns: `M` floats (shared) or `M` arrays of shape (K,)."""
    eps = np.asarray(eps, dtype="float64")
    if eps.ndim == 1:
        return [float(v) for v in eps]
    return [np.ascontiguousarray(eps[:, m]) for m in range(eps.shape[1])]


def horner(coeffs, x):
    """`sum_j coeffs[j] * x**j` by Horner's rule (coeffs broadcast)."""
    out = coeffs[-1] * x
    for c in reversed(coeffs[1:-1]):
        out += c
        out *= x
    return out + coeffs[0]


def horner_into(coeffs, x, out):
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


def poly_terms(cols, x):
    """`s(x) = sum_m m eps_m x**(m-1)` and its derivative `s_x(x)`."""
    order = len(cols)
    s_coeffs = [(j + 1) * c for j, c in enumerate(cols)]
    if order == 1:
        return np.broadcast_to(np.asarray(s_coeffs[0]), x.shape), 0.0
    ds_coeffs = [j * s_coeffs[j] for j in range(1, order)]
    s = horner(s_coeffs, x)
    if order == 2:
        return s, np.broadcast_to(np.asarray(ds_coeffs[0]), x.shape)
    return s, horner(ds_coeffs, x)


def row_blocks(num_rows, num_classes):
    """Slices of at most `BLOCK_ELEMENTS // num_classes` rows (at least 1)."""
    step = max(1, BLOCK_ELEMENTS // max(num_classes, 1))
    for start in range(0, num_rows, step):
        yield slice(start, min(start + step, num_rows))


class Solver:
    """Vectorised solver of the stationarity system, block by block.

    `method="newton"` sends no unsettled row to the nested solver.
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
        for rows in row_blocks(n, k):
            q[rows], lam[rows] = self.solve_block(
                p[rows],
                cols,
                None if q0 is None else q0[rows],
                None if lam0 is None else lam0[rows],
            )
        return q, lam

    def solve_block(self, p, cols, q0=None, lam0=None):
        """Proxy `q` `(n, K)` and multipliers `lam` `(n, 1)` of one block."""
        positive = p > 0
        has_zero = not positive.all()
        inv_p = np.divide(1.0, p, out=np.zeros_like(p), where=positive)
        tol = self.tol

        def run_newton(rows, q_start, lam_start, iterations):
            return newton_solve(
                p[rows],
                cols,
                q_start,
                lam_start,
                inv_p[rows],
                positive[rows],
                has_zero,
                tol,
                iterations,
            )

        if self.method == "bisection":
            q, lam = nested_solve(p, cols, positive, inv_p, tol)
            residual = kkt_residual(p, cols, q, lam, inv_p)
        else:
            first = min(BLOCK_ITERATIONS, self.max_iter)
            q, lam, residual, iters = run_newton(slice(None), q0, lam0, first)
            rows = np.flatnonzero(~(residual <= tol))
            if rows.size and self.max_iter > first:
                # The few unsettled rows continue on their own.
                q[rows], lam[rows], residual[rows], more = run_newton(
                    rows, q[rows], lam[rows], self.max_iter - first
                )
                iters += more
                rows = np.flatnonzero(~(residual <= tol))
            if rows.size and q0 is not None:
                # A warm start that did not settle: retry from the teacher.
                q[rows], lam[rows], residual[rows], _ = run_newton(
                    rows, None, None, self.max_iter
                )
                rows = np.flatnonzero(~(residual <= tol))
            self.info["iterations"] = max(self.info["iterations"], iters)
            if rows.size and self.method == "auto":
                self.info["fallback_rows"] += rows.size
                q[rows], lam[rows] = nested_solve(
                    p[rows], cols, positive[rows], inv_p[rows], tol
                )
                residual[rows] = kkt_residual(
                    p[rows], cols, q[rows], lam[rows], inv_p[rows]
                )
        worst = float(np.max(residual)) if residual.size else 0.0
        if not worst <= tol:
            self._raise_unconverged(p, residual, worst)
        self.info["residual"] = max(self.info["residual"], worst)
        return q, lam

    def _raise_unconverged(self, p, residual, worst):
        row = int(np.argmax(np.where(np.isnan(residual), np.inf, residual)))
        raise ProxyTeacherConvergenceError(
            f"Proxy-teacher solver did not converge: KKT residual "
            f"{worst:.3g} > tol={self.tol:.3g} (method={self.method!r}, "
            f"max_iter={self.max_iter}) for the teacher row "
            f"{np.array2string(p[row][:8], precision=4)}"
            f"{'...' if p.shape[1] > 8 else ''}. Increase `max_iter` or "
            "`tol`, or check that the coefficients are in the convex "
            "region."
        )


def lambda_bracket(p, cols, positive):
    """`[lam_lo, lam_hi]` holding the multiplier."""
    k = p.shape[-1]
    g_one = 1.0 + np.broadcast_to(np.asarray(cols[0], dtype="float64"), (k,))
    lam_lo = np.max(np.where(positive, p * g_one, -np.inf), axis=-1)
    lam_hi = 1.0 + np.max(p * abs_poly_bound(cols), axis=-1)
    return lam_lo[:, None], np.maximum(lam_hi, lam_lo)[:, None]


def abs_poly_bound(cols):
    """`sum_m m |eps_m|`, a bound on `|s(x)|` for `x` in `[0, 1]`."""
    total = 0.0
    for m, c in enumerate(cols, start=1):
        total = total + m * np.abs(np.asarray(c, dtype="float64"))
    return total


def newton_solve(p, cols, q0, lam0, inv_p, positive, has_zero, tol, max_iter):
    """Safeguarded Newton on `u_k = 1 / q_k` and `lam` for one block.

    Returns `(q, lam, residual, iterations)`.
    """
    order = len(cols)
    s_coeffs = [(j + 1) * c for j, c in enumerate(cols)]
    ds_coeffs = [j * s_coeffs[j] for j in range(1, order)]
    lam_lo, lam_hi = lambda_bracket(p, cols, positive)
    with np.errstate(divide="ignore"):
        if q0 is None:
            u = 1.0 / p
            s = horner_into(s_coeffs, 1.0 - p, np.empty_like(p))
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
        horner_into(s_coeffs, x, s)
        # E = u + s - lam / p   (= g_k(q_k) - lam / p_k)
        np.multiply(lam, inv_p, out=e)
        np.subtract(s, e, out=e)
        e += u
        # c = 1 + q^2 s_x   (= q^2 phi''(q) > 0)
        if order > 1:
            horner_into(ds_coeffs, x, s_x)
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


def kkt_residual(p, cols, q, lam, inv_p):
    """Per-row `max(max_k |R_k| / p_k, |sum_k q_k - 1|)`."""
    s, _ = poly_terms(cols, 1.0 - q)
    r = p * (1.0 + q * s) - lam * q
    return np.maximum(
        np.max(np.abs(r) * inv_p, axis=-1), np.abs(q.sum(axis=-1) - 1.0)
    )


def nested_solve(p, cols, positive, inv_p, tol, max_iter=200):
    """Nested bracketed Newton on `lam` and each `u_k`; cannot fail."""
    lam_lo, lam_hi = lambda_bracket(p, cols, positive)
    lam_lo, lam_hi = lam_lo[:, 0], lam_hi[:, 0]
    bound = abs_poly_bound(cols)
    single = positive.sum(axis=-1) == 1
    lam = lam_lo.copy()
    u = np.where(positive, 1.0, np.inf)
    for _ in range(max_iter):
        u, c = inner_solve(
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
    u, _ = inner_solve(p, cols, positive, inv_p, lam[:, None], bound, u, tol)
    return 1.0 / u, lam[:, None]


def inner_solve(p, cols, positive, inv_p, lam, bound, u0, tol, max_iter=200):
    """For fixed `lam`, `u` with `E_k(u) = 0` on `u >= 1`, and `dE/du`."""
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
        s, s_x = poly_terms(cols, 1.0 - q)
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


def metric_values(r, labels, metric):
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


def metric_grad(r, labels, metric):
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


def score_and_grad(
    p, log_p0, labels, cols, temperature, metric, q, want_grad, want_grad_t
):
    """Score sum and gradients of one block at its solved proxy `q`.

    Returns `(score_sum, grad_eps (K, M), grad_log_t)`; shared coefficients
    sum `grad_eps` over classes in the caller.
    """
    t = temperature
    r = detempered(q, t)
    values = metric_values(r, labels, metric)
    score = float(np.sum(values))
    if not want_grad:
        return score, None, None
    positive = p > 0
    u = metric_grad(r, labels, metric)
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
        s, s_x = poly_terms(cols, x)
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


class Objective:
    """Closeness of the de-tempered proxy on one split, with its gradient.

    The last whole-split solution warm-starts the next evaluation.

    Args:
        probs: teacher probabilities at `T = 1`, float64 `(N, K)`.
        labels: int64 class ids `(N,)`.
        metric: one of `proxy.METRICS`.
    """

    def __init__(self, probs, labels, metric):
        self.probs = probs
        self.log_probs = safe_log(probs)
        self.labels = labels
        self.metric = metric
        self.num = probs.shape[0]
        self.evaluations = 0
        self.example_solves = 0
        self._warm = None  # (q, lam) of the last whole-split evaluation

    def teacher_score(self):
        """The score of the teacher itself (`eps = 0`, `T = 1`)."""
        return self.score(np.zeros((1,)), 1.0)

    def score(self, eps, temperature):
        """The mean score at `eps` and `temperature`."""
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
        """Mean score, its gradient `(K, M)` and its derivative in `log T`.

        `rows` scores a subset (solved cold); `warm` warm-starts from, and
        keeps, the last solution. Returns `(mean, grad, grad_log_t)`.
        """
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
        cols = columns(eps)
        solver = Solver(tol=tol)
        start = self._warm if warm else None
        solved = (np.empty((n, k)), np.empty((n, 1))) if warm else None
        total = 0.0
        grad = np.zeros((k, len(cols))) if want_grad else None
        grad_t = 0.0
        for block in row_blocks(n, k):
            p = tempered(probs[block], temperature, log_probs[block])
            if start is None:
                q, lam = solver.solve_block(p, cols)
            else:
                q, lam = solver.solve_block(
                    p, cols, start[0][block], start[1][block]
                )
            if warm:
                solved[0][block], solved[1][block] = q, lam
            s, g, gt = score_and_grad(
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
            self._warm = solved
        mean = total / n
        if not want_grad:
            return mean, None, None
        return mean, grad / n, grad_t / n
