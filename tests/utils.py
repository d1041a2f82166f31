"""Shared test helpers: independent numpy references and tiny models."""

import keras
import numpy as np
import scipy.special

BACKEND = keras.backend.backend()
JIT_MODES = (True, False)


def to_numpy(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


def assert_allclose(actual, expected, rtol=1e-5, atol=1e-6):
    np.testing.assert_allclose(
        to_numpy(actual), np.asarray(expected), rtol=rtol, atol=atol
    )


def np_softmax(logits, temperature=1.0):
    x = np.asarray(logits, dtype="float64") / temperature
    x = x - x.max(axis=-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=-1, keepdims=True)


def np_temper(probs, temperature):
    """p ** (1/T), renormalised; exact zeros stay zero."""
    p = np.asarray(probs, dtype="float64") ** (1.0 / temperature)
    return p / p.sum(axis=-1, keepdims=True)


def random_probs(rng, shape, concentration=1.0):
    return rng.dirichlet(np.full(shape[-1], concentration), size=shape[:-1])


def tiny_classifier(num_features, num_classes, hidden=8, seed=0):
    """A small MLP returning logits."""
    return keras.Sequential(
        [
            keras.Input((num_features,)),
            keras.layers.Dense(
                hidden,
                activation="relu",
                kernel_initializer=keras.initializers.GlorotUniform(seed),
            ),
            keras.layers.Dense(
                num_classes,
                kernel_initializer=keras.initializers.GlorotUniform(seed + 1),
            ),
        ]
    )


def value_and_grad(fn, x):
    """Scalar `fn(x)` and its gradient w.r.t. `x`, by the backend's autodiff.

    Backend-specific by necessity: Keras has no backend-agnostic `grad`.
    """
    x = np.asarray(x, dtype="float32")
    if BACKEND == "jax":
        import jax

        value, grad = jax.value_and_grad(fn)(jax.numpy.asarray(x))
    elif BACKEND == "tensorflow":
        import tensorflow as tf

        var = tf.Variable(x)
        with tf.GradientTape() as tape:
            value = fn(var)
        grad = tape.gradient(value, var)
    elif BACKEND == "torch":
        import torch

        var = torch.tensor(x, requires_grad=True)
        value = fn(var)
        value.backward()
        grad = var.grad
    else:  # pragma: no cover - numpy/openvino backends are not supported
        raise NotImplementedError(BACKEND)
    return float(to_numpy(value)), to_numpy(grad)


def np_pt_loss(
    teacher,
    student_logits,
    coefficients,
    temperature=1.0,
    teacher_from_logits=False,
):
    """Independent float64 PTLoss per example (DESIGN.md §2), direct powers.

    `teacher` holds probabilities (or logits if `teacher_from_logits`),
    `coefficients` has shape (M,) or (K, M).
    """
    t = temperature
    if teacher_from_logits:
        p = np_softmax(teacher, t)
    else:
        p = np_temper(teacher, t)
    log_q = scipy.special.log_softmax(
        np.asarray(student_logits, dtype="float64") / t, axis=-1
    )
    eps = np.asarray(coefficients, dtype="float64")
    eps = np.broadcast_to(np.atleast_2d(eps), (log_q.shape[-1], eps.shape[-1]))
    u = -np.expm1(log_q)
    poly = sum(eps[:, m - 1] * u**m for m in range(1, eps.shape[1] + 1))
    with np.errstate(divide="ignore", invalid="ignore"):
        kl = np.where(p > 0, p * (np.log(p) - log_q), 0.0)
    return t**2 * np.sum(kl + p * poly, axis=-1)
