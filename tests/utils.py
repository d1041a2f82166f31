"""Shared test helpers: independent numpy references and tiny models."""

import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import scipy.special

BACKEND = keras.backend.backend()
ROOT = Path(__file__).resolve().parent.parent
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
    """Independent float64 PTLoss per example, with direct powers.

    The formula: docs/design.md, "The loss".

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


def np_standardize(logits, delta=1e-7):
    """Z-scored logits over the last axis (sample std, ddof=1), float64."""
    z = np.asarray(logits, dtype="float64")
    centred = z - z.mean(axis=-1, keepdims=True)
    return centred / (z.std(axis=-1, ddof=1, keepdims=True) + delta)


def np_mlp_logits(model, x):
    """float64 forward pass of `tiny_classifier` (Dense-relu-Dense) in numpy.

    Reads the weights through `get_weights()`, so it is independent of the
    backend's forward pass.
    """
    w1, b1, w2, b2 = (np.asarray(w, "float64") for w in model.get_weights())
    hidden = np.maximum(np.asarray(x, "float64") @ w1 + b1, 0.0)
    return hidden @ w2 + b2


def np_sparse_ce(logits, labels):
    """Per-example cross-entropy of integer labels and logits, float64."""
    log_q = scipy.special.log_softmax(np.asarray(logits, "float64"), axis=-1)
    return -np.take_along_axis(log_q, np.asarray(labels)[:, None], -1)[:, 0]


class FixedSelector:
    """A deterministic stand-in for `select_coefficients`.

    Returns `results[i]` (coefficients, temperature) on its i-th call (the
    last one repeatedly) and records each call's arguments.
    """

    def __init__(self, *results, teacher_score=0.5, proxy_score=0.25):
        self.results = results
        self.teacher_score = teacher_score
        self.proxy_score = proxy_score
        self.calls = []

    def __call__(self, teacher_probs, labels, **kwargs):
        import types

        self.calls.append(
            dict(
                teacher_probs=np.array(teacher_probs),
                labels=np.array(labels),
                **kwargs,
            )
        )
        coefficients, temperature = self.results[
            min(len(self.calls), len(self.results)) - 1
        ]
        return types.SimpleNamespace(
            coefficients=np.asarray(coefficients, "float64"),
            temperature=float(temperature),
            teacher_score=self.teacher_score,
            proxy_score=self.proxy_score,
            holdout_teacher_score=None,
            holdout_proxy_score=None,
        )


def readme_commands(readme_path=None):
    """The two commands of the README's first screen, as strings.

    Returns a dict `{"demo": ..., "test": ...}`: the command lines (not
    comments) of the README's first two ```bash blocks, which precede its
    first `##` section. Used by tests/test_readme.py and tests/test_demo.py.
    """
    import re
    from pathlib import Path

    if readme_path is None:
        readme_path = Path(__file__).resolve().parent.parent / "README.md"
    text = Path(readme_path).read_text()
    first_screen = text.split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", first_screen, flags=re.S)
    commands = [
        [
            line.strip()
            for line in block.splitlines()
            if line.strip() and not line.strip().startswith("#")
        ]
        for block in blocks
    ]
    if len(commands) != 2 or any(len(c) != 1 for c in commands):
        raise AssertionError(
            "The README's first screen must hold exactly two ```bash blocks "
            f"of one command each. Found: {commands}"
        )
    return {"demo": commands[0][0], "test": commands[1][0]}


# `jit_compile` values for tests that run `fit`: on JAX, where jit is the
# default and a compiled step can freeze values, both modes; on TF and torch
# the default ("auto": a tf.function without XLA, eager torch), because XLA
# and torch.compile cost 5-40 s per compiled step on a 2-core machine. The
# tests of values changed during `fit` use JIT_MODES on every backend.
FIT_JIT_MODES = JIT_MODES if BACKEND == "jax" else ("auto",)


def run_program(*args, env=None, cwd=None, timeout=600):
    """`python ARGS` in a child process; fails the test, with the exit status
    and the end of standard error, unless it exits 0.

    Whole programs (examples, benchmarks) run so: a crash inside a backend
    (a segfault, an abort) then fails one test instead of ending the whole
    backend's pytest run.
    """
    # The child imports this checkout's package, whatever is installed.
    env = dict(os.environ if env is None else env)
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(ROOT), env.get("PYTHONPATH")])
    )
    done = subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=timeout,
    )
    assert done.returncode == 0, (
        f"`python {' '.join(map(str, args))[:200]}` ended with exit status "
        f"{done.returncode}\n{done.stderr[-3000:]}"
    )
    return done
