"""Top-k teachers with a tail bucket: loss, packed targets, fit and cache,
against float64 numpy (the proxy/selection entry points:
test_top_k_selection.py)."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_ptloss.losses import pt_loss
from keras_ptloss.top_k import TopKPTLoss
from keras_ptloss.top_k import pack_top_k
from keras_ptloss.top_k import precompute_top_k
from keras_ptloss.top_k import top_k_log_probs
from keras_ptloss.top_k import top_k_pt_loss

EPS = np.array([0.4, -0.1, 0.03])


def np_log_softmax(x):
    x = np.asarray(x, dtype="float64")
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def np_top_k_loss(teacher_logits, student_logits, k, eps, temperature):
    """Tail-bucket PTLoss by explicit loops over examples."""
    t = np.asarray(teacher_logits, "float64").reshape(
        -1, teacher_logits.shape[-1]
    )
    z = np.asarray(student_logits, "float64").reshape(t.shape)
    out = []
    for row_t, row_z in zip(t, z, strict=True):
        p = np.exp(np_log_softmax(row_t / temperature))
        q = np.exp(np_log_softmax(row_z / temperature))
        top = np.argsort(-p)[:k]
        pb = np.append(p[top], max(1.0 - p[top].sum(), 0.0))
        qb = np.append(q[top], max(1.0 - q[top].sum(), 1e-300))
        u = 1.0 - qb
        series = sum(e * u ** (m + 1) for m, e in enumerate(eps))
        terms = np.where(
            pb > 0,
            pb * (np.log(np.where(pb > 0, pb, 1)) - np.log(qb) + series),
            0,
        )
        out.append(temperature**2 * terms.sum())
    return np.array(out).reshape(teacher_logits.shape[:-1])


@pytest.fixture
def logits(rng):
    t = rng.normal(size=(3, 4, 12)) * 2.0
    z = rng.normal(size=(3, 4, 12))
    return t.astype("float32"), z.astype("float32")


def test_top_k_log_probs_are_the_largest_tempered_ones(rng):
    t = rng.normal(size=(5, 9))
    indices, log_probs = top_k_log_probs(t, 3, temperature=2.0)
    full = np_log_softmax(t / 2.0)
    expected = np.argsort(-full, axis=-1)[:, :3]
    np.testing.assert_array_equal(indices, expected)
    np.testing.assert_allclose(
        log_probs, np.take_along_axis(full, expected, -1), atol=1e-6
    )


@pytest.mark.parametrize("k", [1, 4, 12])
def test_top_k_loss_equals_numpy(logits, k):
    t, z = logits
    indices, log_probs = top_k_log_probs(t, k, temperature=2.0)
    packed = pack_top_k(indices, log_probs)
    got = top_k_pt_loss(packed, z, EPS, temperature=2.0)
    np.testing.assert_allclose(
        ops.convert_to_numpy(got), np_top_k_loss(t, z, k, EPS, 2.0), atol=1e-5
    )


def test_full_support_equals_the_dense_loss(logits):
    t, z = logits
    packed = pack_top_k(*top_k_log_probs(t, 12, temperature=2.0))
    dense = pt_loss(t, z, EPS, 2.0, teacher_from_logits=True)
    np.testing.assert_allclose(
        ops.convert_to_numpy(top_k_pt_loss(packed, z, EPS, 2.0)),
        ops.convert_to_numpy(dense),
        atol=1e-5,
    )


def test_loss_class_reduces_with_sample_weight_and_round_trips(rng, logits):
    t, z = logits
    packed = pack_top_k(*top_k_log_probs(t, 4, temperature=2.0))
    weights = rng.uniform(size=(3, 4)).astype("float32")
    loss = TopKPTLoss(EPS, temperature=2.0)
    expected = np.sum(np_top_k_loss(t, z, 4, EPS, 2.0) * weights) / 12
    np.testing.assert_allclose(
        float(ops.convert_to_numpy(loss(packed, z, weights))),
        expected,
        rtol=1e-5,
    )
    restored = TopKPTLoss.from_config(loss.get_config())
    assert restored.get_config() == loss.get_config()
    np.testing.assert_allclose(
        ops.convert_to_numpy(restored.coefficients), EPS, atol=1e-7
    )


def test_top_k_loss_trains_a_sequence_model_with_fit(rng):
    tokens = rng.integers(1, 10, size=(24, 6))
    teacher = rng.normal(size=(24, 6, 20)).astype("float32") * 2
    packed = pack_top_k(*top_k_log_probs(teacher, 5))
    model = keras.Sequential(
        [
            keras.Input((6,), dtype="int32"),
            keras.layers.Embedding(10, 8),
            keras.layers.Dense(20),
        ]
    )
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss=TopKPTLoss(EPS))
    before = model.evaluate(tokens, packed, verbose=0)
    model.fit(tokens, packed, epochs=5, batch_size=8, verbose=0)
    after = model.evaluate(tokens, packed, verbose=0)
    assert after < before
    outputs = model.predict(tokens, verbose=0)
    np.testing.assert_allclose(
        after, np_top_k_loss(teacher, outputs, 5, EPS, 1.0).mean(), rtol=1e-4
    )


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(indices=[[0, 1]], log_probs=[[0.1, -1.0]]), "log_probs"),
        (dict(indices=[[0, -1]], log_probs=[[-1.0, -1.0]]), "indices"),
        (dict(indices=[[0, 1, 2]], log_probs=[[-1.0, -1.0]]), "same shape"),
        (dict(indices=[[0, 1]], log_probs=[[-0.1, -0.2]]), "at most 1"),
    ],
)
def test_bad_packed_targets_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        pack_top_k(**kwargs)


def test_classwise_coefficients_are_rejected():
    with pytest.raises(ValueError, match="shared"):
        TopKPTLoss(np.zeros((4, 2)))


def tiny_teacher(classes=15):
    return keras.Sequential(
        [
            keras.Input((4,), dtype="int32"),
            keras.layers.Embedding(9, 6),
            keras.layers.Dense(classes),
        ]
    )


def test_precompute_top_k_packs_the_teachers_outputs(rng, tmp_path):
    teacher = tiny_teacher()
    x = rng.integers(0, 9, size=(10, 4))
    packed = precompute_top_k(teacher, x, 3, temperature=2.0, batch_size=4)
    logits = ops.convert_to_numpy(teacher(x))
    full = np_log_softmax(logits / 2.0)
    top = np.argsort(-full, axis=-1)[..., :3]
    np.testing.assert_array_equal(packed[..., :3], top)
    np.testing.assert_allclose(
        packed[..., 3:], np.take_along_axis(full, top, -1), atol=1e-5
    )
    cache = str(tmp_path / "top_k.npz")
    first = precompute_top_k(teacher, x, 3, temperature=2.0, cache=cache)
    np.testing.assert_array_equal(first, packed)
    again = precompute_top_k(teacher, x, 3, temperature=2.0, cache=cache)
    np.testing.assert_array_equal(again, packed)
    with pytest.raises(ValueError, match="top-k"):
        precompute_top_k(teacher, x, 4, temperature=2.0, cache=cache)
    with pytest.raises(ValueError, match="other inputs"):
        precompute_top_k(teacher, x[:5], 3, temperature=2.0, cache=cache)
    other = tiny_teacher()
    with pytest.raises(ValueError, match="other weights"):
        precompute_top_k(other, x, 3, temperature=2.0, cache=cache)
