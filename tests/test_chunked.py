"""The memory-lean path: `lean_loss` and `PTLoss/KDLoss(chunk_size=...)`.

Values against an independent float64 numpy PTLoss; gradients against
numpy finite differences of that value (the closed form is not reused).
"""

import keras
import numpy as np
import pytest
from keras import ops

from keras_ptloss.losses import KDLoss
from keras_ptloss.losses import PTLoss
from keras_ptloss.losses import lean_loss
from keras_ptloss.losses import pt_loss


def np_log_softmax(x):
    x = np.asarray(x, dtype="float64")
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def np_pt_loss(teacher_logits, student_logits, eps, temperature):
    """PTLoss per token in float64, with the series summed term by term."""
    log_p = np_log_softmax(np.asarray(teacher_logits) / temperature)
    log_q = np_log_softmax(np.asarray(student_logits) / temperature)
    p, u = np.exp(log_p), 1.0 - np.exp(log_q)
    eps = np.asarray(eps, dtype="float64")
    series = sum(eps[..., m] * u ** (m + 1) for m in range(eps.shape[-1]))
    return temperature**2 * np.sum(p * (log_p - log_q + series), axis=-1)


def backend_grad(fn, z):
    """Gradient of `sum(fn(z))` with respect to `z`, as numpy."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return np.asarray(jax.grad(lambda v: ops.sum(fn(v)))(z))
    if backend == "tensorflow":
        import tensorflow as tf

        v = tf.Variable(z)
        with tf.GradientTape() as tape:
            value = ops.sum(fn(v))
        return tape.gradient(value, v).numpy()
    import torch

    v = torch.tensor(z, requires_grad=True)
    ops.sum(fn(v)).backward()
    return v.grad.numpy()


@pytest.fixture
def sequences(rng):
    t = rng.normal(size=(3, 5, 7)) * 2.0
    z = rng.normal(size=(3, 5, 7)) * 2.0
    return t.astype("float32"), z.astype("float32")


# 1 and 5 divide the 15 rows (chunks only); 4 leaves a smaller last chunk;
# 15 and 100 give one chunk.
@pytest.mark.parametrize("chunk_size", [1, 4, 5, 15, 100])
@pytest.mark.parametrize(
    "eps", [[0.0], [0.5, -0.1, 0.05], [1.0, 0.2, -0.08, 0.0, 0.02]]
)
def test_lean_loss_equals_numpy(sequences, chunk_size, eps):
    t, z = sequences
    got = lean_loss(
        t,
        z,
        eps,
        temperature=2.0,
        teacher_from_logits=True,
        chunk_size=chunk_size,
    )
    expected = np_pt_loss(t, z, eps, 2.0)
    assert tuple(got.shape) == (3, 5)
    np.testing.assert_allclose(ops.convert_to_numpy(got), expected, atol=1e-5)


def test_lean_loss_without_coefficients_is_kd(sequences):
    t, z = sequences
    got = lean_loss(t, z, None, temperature=3.0, teacher_from_logits=True)
    log_p = np_log_softmax(t / 3.0)
    log_q = np_log_softmax(z / 3.0)
    expected = 9.0 * np.sum(np.exp(log_p) * (log_p - log_q), axis=-1)
    np.testing.assert_allclose(ops.convert_to_numpy(got), expected, atol=1e-5)


@pytest.mark.parametrize("chunk_size", [2, 3])
@pytest.mark.parametrize("classwise", [False, True])
def test_closed_form_gradient_matches_finite_differences(
    rng, classwise, chunk_size
):
    t = rng.normal(size=(4, 6)) * 2.0
    z = rng.normal(size=(4, 6)) * 2.0
    eps = np.array([0.5, -0.1, 0.05])
    if classwise:
        eps = eps * rng.uniform(0.5, 1.5, size=(6, 1))
    weights = rng.uniform(0.5, 2.0, size=(4,))
    got = backend_grad(
        lambda v: (
            lean_loss(
                t.astype("float32"),
                v,
                eps,
                temperature=1.5,
                teacher_from_logits=True,
                chunk_size=chunk_size,
            )
            * ops.convert_to_tensor(weights.astype("float32"))
        ),
        z.astype("float32"),
    )
    step = 1e-6
    expected = np.zeros_like(z)
    for index in np.ndindex(z.shape):
        up, down = z.copy(), z.copy()
        up[index] += step
        down[index] -= step
        expected[index] = np.sum(
            weights
            * (np_pt_loss(t, up, eps, 1.5) - np_pt_loss(t, down, eps, 1.5))
        ) / (2 * step)
    np.testing.assert_allclose(got, expected, atol=2e-5)


def test_chunked_gradient_equals_default_gradient(sequences):
    t, z = sequences
    eps = [0.5, -0.1, 0.05]
    default = backend_grad(
        lambda v: pt_loss(t, v, eps, 2.0, teacher_from_logits=True), z
    )
    chunked = backend_grad(
        lambda v: lean_loss(
            t, v, eps, 2.0, teacher_from_logits=True, chunk_size=4
        ),
        z,
    )
    np.testing.assert_allclose(chunked, default, atol=1e-5)


@pytest.mark.parametrize("standardize", [False, True])
@pytest.mark.parametrize(
    "cls, kwargs", [(PTLoss, {"coefficients": [0.5, -0.1]}), (KDLoss, {})]
)
def test_loss_classes_with_chunks_equal_the_default_path(
    sequences, standardize, cls, kwargs
):
    t, z = sequences
    weights = np.linspace(0.0, 1.0, 15).reshape(3, 5).astype("float32")
    flags = dict(
        temperature=2.0,
        teacher_from_logits=True,
        standardize=standardize,
        **kwargs,
    )
    default = cls(**flags)
    chunked = cls(chunk_size=4, **flags)
    np.testing.assert_allclose(
        ops.convert_to_numpy(chunked(t, z, sample_weight=weights)),
        ops.convert_to_numpy(default(t, z, sample_weight=weights)),
        atol=1e-5,
    )
    np.testing.assert_allclose(
        backend_grad(lambda v: chunked(t, v), z),
        backend_grad(lambda v: default(t, v), z),
        atol=1e-5,
    )


def test_probabilities_on_both_sides_give_the_default_values(sequences):
    t, z = sequences
    p = np.exp(np_log_softmax(t)).astype("float32")
    p[0, 0, :3] = 0.0  # exact zeros in the teacher
    p[0, 0] /= p[0, 0].sum()
    q = np.exp(np_log_softmax(z)).astype("float32")
    got = lean_loss(
        p,
        q,
        [0.3, -0.05],
        2.0,
        from_logits=False,
        chunk_size=2,
        teacher_from_logits=False,
    )
    expected = pt_loss(
        p, q, [0.3, -0.05], 2.0, from_logits=False, teacher_from_logits=False
    )
    np.testing.assert_allclose(
        ops.convert_to_numpy(got), ops.convert_to_numpy(expected), atol=1e-5
    )


@pytest.mark.parametrize("cls", [PTLoss, KDLoss])
def test_chunk_size_round_trips_through_config(cls):
    loss = cls(chunk_size=256, temperature=2.0)
    restored = cls.from_config(loss.get_config())
    assert restored.chunk_size == 256
    assert restored.get_config() == loss.get_config()
    assert cls().get_config()["chunk_size"] is None


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "8"])
def test_bad_chunk_size_raises(bad):
    with pytest.raises(ValueError, match="chunk_size"):
        PTLoss(chunk_size=bad, teacher_from_logits=False)


def test_chunked_loss_trains_a_model_with_fit(rng):
    x = rng.normal(size=(32, 6, 4)).astype("float32")
    teacher = np.exp(np_log_softmax(rng.normal(size=(32, 6, 9)))).astype(
        "float32"
    )
    model = keras.Sequential([keras.Input((6, 4)), keras.layers.Dense(9)])
    model.compile(
        optimizer=keras.optimizers.SGD(0.5),
        loss=PTLoss([0.3, -0.05], chunk_size=16, teacher_from_logits=False),
    )
    before = model.evaluate(x, teacher, verbose=0)
    model.fit(x, teacher, epochs=5, batch_size=8, verbose=0)
    assert model.evaluate(x, teacher, verbose=0) < before
