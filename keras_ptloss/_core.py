"""Arithmetic shared by every loss of the package (private, unchecked)."""

import keras
from keras import ops

# log(0), finite so that no inf/NaN reaches a gradient; exp() gives 0.
LOG_ZERO = -1e30
_HALF_DTYPES = ("float16", "bfloat16")


def upcast(x):
    """A float tensor of at least float32 precision."""
    x = ops.convert_to_tensor(x)
    dtype = keras.backend.standardize_dtype(x.dtype)
    if dtype in _HALF_DTYPES or not dtype.startswith("float"):
        return ops.cast(x, "float32")
    return x


def is_python_one(value):
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
    """Log of `softmax(logits / T)`, or of `p ** (1 / T)` renormalised."""
    values = as_logits(values, from_logits)
    if not is_python_one(temperature):
        values = values / ops.cast(temperature, values.dtype)
    return ops.log_softmax(values, axis=-1)


def z_score(logits, delta):
    """`standardize_logits` without its checks."""
    centred = logits - ops.mean(logits, axis=-1, keepdims=True)
    num_classes = ops.cast(ops.shape(logits)[-1], logits.dtype)
    divisor = ops.maximum(num_classes - 1.0, 1.0)
    variance = ops.sum(ops.square(centred), axis=-1, keepdims=True) / divisor
    # sqrt'(0) is infinite: constant logits would give NaN gradients.
    positive = variance > 0
    std = ops.where(positive, ops.sqrt(ops.where(positive, variance, 1.0)), 0.0)
    denominator = std + ops.cast(delta, std.dtype)
    denominator = ops.where(denominator > 0, denominator, 1.0)
    return centred / denominator


def perturbed_terms(
    log_p, log_q, coefficients=None, derivative=False, support=None
):
    """Per-class terms `p * (log p - log q + sum_m eps_m (1 - q)**m)`.

    `coefficients` `(..., M)` broadcast against `(..., K)` (`None`: KL only);
    `derivative` adds `g = sum_m m eps_m (1 - q)**(m - 1)` to the returned
    `(p, terms)`; `support` masks the classes that count (default `p > 0`).
    """
    if support is None:
        p = ops.exp(log_p)
        support = p > 0
    else:
        p = ops.where(support, ops.exp(log_p), 0.0)
    difference = log_p - log_q
    g = None
    if coefficients is not None:
        # No `-expm1(log_q)`: log_q's own rounding near 0 bounds u's
        # precision anyway, and exp(log_q) is shared with the gradient.
        u = 1.0 - ops.exp(log_q)
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
    if is_python_one(temperature):
        return values
    temperature = ops.cast(temperature, values.dtype)
    return values * ops.square(temperature)


def distillation_loss(
    y_true, y_pred, coefficients, temperature, from_logits, teacher_from_logits
):
    """`T**2 * sum_k perturbed_terms` of the tempered teacher and student."""
    log_p = tempered_log_probs(y_true, temperature, teacher_from_logits)
    log_q = tempered_log_probs(y_pred, temperature, from_logits)
    _, terms = perturbed_terms(log_p, log_q, coefficients)
    return scale_by_t_squared(ops.sum(terms, axis=-1), temperature)
