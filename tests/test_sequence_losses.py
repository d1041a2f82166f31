"""PTLoss and KDLoss on (batch, seq, K) outputs with padding masks.

Per-token values and reduced values against float64 numpy, with masked
tokens excluded: Keras masks (Embedding(mask_zero=True)), sample_weight of
shape (batch, seq), both, and inside `model.fit`.
"""

import keras
import numpy as np
import pytest
from keras import ops

from keras_ptloss.losses import KDLoss
from keras_ptloss.losses import PTLoss
from keras_ptloss.losses import kd_loss
from keras_ptloss.losses import pt_loss

BATCH, SEQ, VOCAB, CLASSES = 3, 5, 8, 6
EPS = np.array([0.4, -0.1, 0.03])


def np_log_softmax(x):
    x = np.asarray(x, dtype="float64")
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def np_per_token(teacher_probs, student_logits, eps, temperature):
    """PTLoss per token in float64 (`eps=None`: KD)."""
    log_p = np_log_softmax(np.log(teacher_probs) / temperature)
    log_q = np_log_softmax(np.asarray(student_logits) / temperature)
    p, u = np.exp(log_p), 1.0 - np.exp(log_q)
    series = 0.0
    if eps is not None:
        eps = np.asarray(eps, dtype="float64")
        series = sum(eps[..., m] * u ** (m + 1) for m in range(eps.shape[-1]))
    return temperature**2 * np.sum(p * (log_p - log_q + series), axis=-1)


@pytest.fixture
def tokens(rng):
    ids = rng.integers(1, VOCAB, size=(BATCH, SEQ))
    ids[0, 3:] = 0  # padding
    ids[2, 1:] = 0
    return ids


@pytest.fixture
def teacher(rng):
    logits = rng.normal(size=(BATCH, SEQ, CLASSES)) * 2.0
    return np.exp(np_log_softmax(logits)).astype("float32")


def student_model():
    return keras.Sequential(
        [
            keras.Input((SEQ,), dtype="int32"),
            keras.layers.Embedding(VOCAB, 4, mask_zero=True),
            keras.layers.Dense(CLASSES),
        ]
    )


def make_loss(kind, chunk_size=None, reduction="sum_over_batch_size"):
    if kind == "pt":
        return PTLoss(
            EPS,
            temperature=2.0,
            chunk_size=chunk_size,
            reduction=reduction,
            teacher_from_logits=False,
        )
    return KDLoss(
        temperature=2.0,
        chunk_size=chunk_size,
        reduction=reduction,
        teacher_from_logits=False,
    )


def kind_eps(kind):
    return EPS if kind == "pt" else None


@pytest.mark.parametrize("classwise", [False, True])
def test_per_token_values_equal_numpy(rng, teacher, classwise):
    logits = rng.normal(size=(BATCH, SEQ, CLASSES)).astype("float32")
    eps = EPS * rng.uniform(0.5, 1.5, size=(CLASSES, 1)) if classwise else EPS
    got_pt = pt_loss(
        teacher, logits, eps, temperature=2.0, teacher_from_logits=False
    )
    got_kd = kd_loss(
        teacher, logits, temperature=2.0, teacher_from_logits=False
    )
    assert tuple(got_pt.shape) == (BATCH, SEQ)
    np.testing.assert_allclose(
        ops.convert_to_numpy(got_pt),
        np_per_token(teacher, logits, eps, 2.0),
        atol=1e-5,
    )
    np.testing.assert_allclose(
        ops.convert_to_numpy(got_kd),
        np_per_token(teacher, logits, None, 2.0),
        atol=1e-5,
    )


@pytest.mark.parametrize("chunk_size", [None, 4])
@pytest.mark.parametrize("kind", ["pt", "kd"])
def test_keras_mask_excludes_padding(tokens, teacher, kind, chunk_size):
    model = student_model()
    outputs = model(tokens)  # carries the Embedding's mask
    per_token = np_per_token(
        teacher, ops.convert_to_numpy(outputs), kind_eps(kind), 2.0
    )
    valid = tokens != 0
    for reduction, expected in (
        ("sum_over_batch_size", per_token[valid].mean()),
        ("sum", per_token[valid].sum()),
    ):
        loss = make_loss(kind, chunk_size, reduction)
        got = float(ops.convert_to_numpy(loss(teacher, outputs)))
        np.testing.assert_allclose(got, expected, rtol=1e-5)


@pytest.mark.parametrize("chunk_size", [None, 4])
@pytest.mark.parametrize("kind", ["pt", "kd"])
def test_sample_weight_per_token(rng, tokens, teacher, kind, chunk_size):
    logits = rng.normal(size=(BATCH, SEQ, CLASSES)).astype("float32")
    weights = (tokens != 0).astype("float32") * rng.uniform(
        0.5, 2.0, size=(BATCH, SEQ)
    ).astype("float32")
    per_token = np_per_token(teacher, logits, kind_eps(kind), 2.0)
    loss = make_loss(kind, chunk_size)
    got = float(ops.convert_to_numpy(loss(teacher, logits, weights)))
    expected = np.sum(per_token * weights) / weights.size
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    unreduced = make_loss(kind, chunk_size, reduction="none")
    np.testing.assert_allclose(
        ops.convert_to_numpy(unreduced(teacher, logits, weights)),
        per_token * weights,
        rtol=1e-5,
        atol=1e-7,
    )


@pytest.mark.parametrize("kind", ["pt", "kd"])
def test_mask_and_sample_weight_together(rng, tokens, teacher, kind):
    model = student_model()
    outputs = model(tokens)
    weights = rng.uniform(0.5, 2.0, size=(BATCH, SEQ)).astype("float32")
    per_token = np_per_token(
        teacher, ops.convert_to_numpy(outputs), kind_eps(kind), 2.0
    )
    valid = tokens != 0
    expected = np.sum((per_token * weights)[valid]) / valid.sum()
    got = float(
        ops.convert_to_numpy(make_loss(kind)(teacher, outputs, weights))
    )
    np.testing.assert_allclose(got, expected, rtol=1e-5)


@pytest.mark.parametrize("chunk_size", [None, 4])
@pytest.mark.parametrize("kind", ["pt", "kd"])
def test_fit_ignores_teacher_values_at_padding(
    tokens, teacher, kind, chunk_size
):
    """Garbage teacher rows at padded tokens change nothing in `fit`."""
    garbage = teacher.copy()
    garbage[tokens == 0] = np.eye(CLASSES, dtype="float32")[0]

    def train(targets):
        keras.utils.set_random_seed(7)
        model = student_model()
        model.compile(
            optimizer=keras.optimizers.SGD(0.3),
            loss=make_loss(kind, chunk_size),
        )
        history = model.fit(
            tokens, targets, epochs=3, batch_size=BATCH, verbose=0
        )
        return model, history.history["loss"]

    model, losses = train(teacher)
    garbage_model, garbage_losses = train(garbage)
    np.testing.assert_allclose(losses, garbage_losses, rtol=1e-5)
    for a, b in zip(
        model.get_weights(), garbage_model.get_weights(), strict=True
    ):
        np.testing.assert_allclose(a, b, atol=1e-6)
    assert losses[-1] < losses[0]
    # The reported loss is the masked mean of the per-token values.
    outputs = model.predict(tokens, verbose=0)
    per_token = np_per_token(teacher, outputs, kind_eps(kind), 2.0)
    evaluated = model.evaluate(tokens, teacher, verbose=0)
    np.testing.assert_allclose(
        evaluated, per_token[tokens != 0].mean(), rtol=1e-4
    )
