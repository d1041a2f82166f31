"""The arithmetic every loss of the package shares, written once in `keras.ops`.

Private. The PTLoss terms `p * (log p - log q + sum_m eps_m (1 - q)**m)`
live in `perturbed_terms`; the dense (`pt_loss`, `kd_loss`), chunked
(`lean_loss`), top-k (`top_k_pt_loss`) and population
(`StudentPopulation`) losses and the baselines' KL parts call it with
differently shaped inputs. The public functions and classes convert and
validate their arguments; nothing here checks them again.
"""

import keras
from keras import ops

# Log-probability standing for an exact zero probability: finite, so that no
# inf/NaN reaches a gradient, and low enough that exp() underflows to 0.
LOG_ZERO = -1e30
_HALF_DTYPES = ("float16", "bfloat16")


def upcast(x):
    """A float tensor of at least float32 precision (half and ints -> f32)."""
    x = ops.convert_to_tensor(x)
    dtype = keras.backend.standardize_dtype(x.dtype)
    if dtype in _HALF_DTYPES or not dtype.startswith("float"):
        return ops.cast(x, "float32")
    return x


def is_python_one(value):
    """Whether `value` is the Python number 1 (a temperature to skip)."""
    return isinstance(value, (int, float)) and value == 1


def as_logits(values, from_logits):
    """Logits as given, or the logs of probabilities (`LOG_ZERO` for 0)."""
    if from_logits:
        return values
    positive = values > 0
    return ops.where(
        positive, ops.log(ops.where(positive, values, 1.0)), LOG_ZERO
    )


def tempered_log_probs(values, temperature=1.0, from_logits=True):
    """Log of `softmax(logits / T)`, or of probabilities re-tempered by `T`.

    Probabilities `p` are tempered as `p ** (1 / T)`, renormalised. Exact
    zeros stay exact zeros (their log is `LOG_ZERO`).

    Args:
        values: float logits or probabilities, shape `(..., K)`.
        temperature: positive float, scalar tensor or `keras.Variable`.
        from_logits: whether `values` are logits.

    Returns:
        A tensor of log-probabilities with the shape of `values`.
    """
    values = as_logits(values, from_logits)
    if not is_python_one(temperature):
        values = values / ops.cast(temperature, values.dtype)
    return ops.log_softmax(values, axis=-1)


def z_score(logits, delta):
    """`(z - mean(z)) / (std(z) + delta)` over the class axis.

    The maths of `keras_ptloss.losses.standardize_logits` (which upcasts and
    checks the class count) on float logits.
    """
    centred = logits - ops.mean(logits, axis=-1, keepdims=True)
    # Sample variance (divisor K - 1); a single class has no spread.
    num_classes = ops.cast(ops.shape(logits)[-1], logits.dtype)
    divisor = ops.maximum(num_classes - 1.0, 1.0)
    variance = ops.sum(ops.square(centred), axis=-1, keepdims=True) / divisor
    # sqrt has an infinite derivative at 0: constant logits (e.g. a freshly
    # initialised layer with dead ReLUs) would give NaN gradients.
    positive = variance > 0
    std = ops.where(positive, ops.sqrt(ops.where(positive, variance, 1.0)), 0.0)
    denominator = std + ops.cast(delta, std.dtype)
    denominator = ops.where(denominator > 0, denominator, 1.0)
    return centred / denominator


def perturbed_terms(
    log_p, log_q, coefficients=None, derivative=False, support=None
):
    """Per-class PTLoss terms, exactly 0 where the teacher's `p == 0`.

        terms_k = p_k * [log p_k - log q_k + sum_{m=1..M} eps_m (1 - q_k)**m]

    The series is evaluated by Horner's rule on the columns of `eps`:
    `sum_m eps_m u**m = u * inner` with `u = 1 - q` and
    `inner = eps_1 + u (eps_2 + u (... + u eps_M))`, added to
    `log p - log q` before the one product with `p` (fewer elementwise
    kernels, each a full pass over the batch forward and backward, than
    adding separate KL and series terms).

    Args:
        log_p: teacher log-probabilities, shape `(..., K)`.
        log_q: student log-probabilities, broadcastable with `log_p`.
        coefficients: `eps` of shape `(..., M)` (order `M` last) whose
            leading axes broadcast against `(..., K)`: `(M,)` shared over
            classes, `(K, M)` class-wise, `(N, 1..., K, M)` one row per
            member of a population (members are one more batch axis).
            `None`: the KL terms `p * (log p - log q)` only.
        derivative: also return the series derivative
            `g = sum_m m eps_m (1 - q)**(m - 1)` (the closed-form gradient
            of `lean_loss`), computed in the same Horner loop.
        support: optional boolean mask, broadcastable with `log_p`, of the
            classes whose terms count (`p` is taken as 0 elsewhere).
            Defaults to `p > 0`.

    Returns:
        `(p, terms)`, or `(p, terms, g)` when `derivative` is set (`g` is
        `None` without coefficients): `p = exp(log_p)` and the per-class
        terms, both of the broadcast shape `(..., K)`.
    """
    if support is None:
        p = ops.exp(log_p)
        support = p > 0
    else:
        p = ops.where(support, ops.exp(log_p), 0.0)
    difference = log_p - log_q
    g = None
    if coefficients is not None:
        u = -ops.expm1(log_q)
        columns = ops.unstack(coefficients, axis=-1)
        order = len(columns)
        inner = columns[-1]
        if derivative:
            g = columns[-1] * float(order)
        for m in range(order - 1, 0, -1):
            inner = columns[m - 1] + u * inner
            if derivative:
                g = columns[m - 1] * float(m) + u * g
        difference = difference + u * inner
    terms = ops.where(support, p * difference, 0.0)
    if derivative:
        return p, terms, g
    return p, terms


def scale_by_t_squared(values, temperature):
    """`values * T**2` (no operation for a Python `T == 1`)."""
    if is_python_one(temperature):
        return values
    temperature = ops.cast(temperature, values.dtype)
    return values * ops.square(temperature)


def distillation_loss(
    y_true, y_pred, coefficients, temperature, from_logits, teacher_from_logits
):
    """`T**2 * sum_k perturbed_terms` of tempered teacher and student.

    Args:
        y_true: teacher float logits or probabilities, shape `(..., K)`.
        y_pred: student float logits or probabilities, same shape and dtype.
        coefficients: `eps` (see `perturbed_terms`) or `None` for KD.
        temperature: `T > 0`, a number, scalar tensor or `keras.Variable`.
        from_logits: whether `y_pred` holds logits.
        teacher_from_logits: whether `y_true` holds logits.

    Returns:
        Per-example loss, shape `(...)`.
    """
    log_p = tempered_log_probs(y_true, temperature, teacher_from_logits)
    log_q = tempered_log_probs(y_pred, temperature, from_logits)
    _, terms = perturbed_terms(log_p, log_q, coefficients)
    return scale_by_t_squared(ops.sum(terms, axis=-1), temperature)
