"""Distillation under mixed precision: a float32 loss that stays finite.

Teacher logits in the hundreds overflow `exp` in float16; the loss is
computed in float32 from half-precision logits (docs/design.md, "The
loss") and must match an independent float64 reference.
"""

import keras
import numpy as np
import pytest

from keras_ptloss import Distiller
from keras_ptloss import PTLoss
from tests.utils import assert_allclose
from tests.utils import np_pt_loss
from tests.utils import tiny_classifier
from tests.utils import to_numpy

N, F, K = 32, 5, 3


@pytest.fixture
def data(rng):
    x = rng.normal(size=(N, F)).astype("float32")
    y = rng.integers(0, K, size=N).astype("int32")
    return x, y


def _half_distiller(policy, logit_scale):
    keras.config.set_dtype_policy(policy)
    teacher = tiny_classifier(F, K, seed=0)
    student = tiny_classifier(F, K, hidden=6, seed=10)
    weights = teacher.get_weights()
    # Extreme teacher logits (hundreds): exp() overflows in half precision.
    weights[2] = weights[2] * logit_scale
    teacher.set_weights(weights)
    distiller = Distiller(
        teacher,
        student,
        PTLoss([0.5, -0.1], temperature=2.0, teacher_from_logits=True),
        student_loss_weight=0.25,
    )
    distiller.compile(
        optimizer=keras.optimizers.Adam(0.01),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return distiller


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_loss_is_float32_and_matches_numpy(data, policy):
    x, _ = data
    distiller = _half_distiller(policy, logit_scale=200.0)
    half = "float16" if policy == "mixed_float16" else "bfloat16"
    t = distiller.teacher(x)
    z = distiller(x)
    assert keras.backend.standardize_dtype(t.dtype) == half
    assert keras.backend.standardize_dtype(z.dtype) == half
    t64 = to_numpy(keras.ops.cast(t, "float32")).astype("float64")
    z64 = to_numpy(keras.ops.cast(z, "float32")).astype("float64")
    assert np.abs(t64).max() > 100  # the extreme regime is reached
    loss = distiller.compute_loss(x=x, y=None, y_pred=z)
    assert keras.backend.standardize_dtype(loss.dtype) == "float32"
    expected = np.mean(np_pt_loss(t64, z64, [0.5, -0.1], 2.0, True))
    assert_allclose(loss, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_training_stays_finite(data, policy):
    x, y = data
    distiller = _half_distiller(policy, logit_scale=200.0)
    history = distiller.fit(x, y, epochs=3, batch_size=8, verbose=0)
    for key in ("loss", "distillation_loss", "student_loss"):
        assert np.all(np.isfinite(history.history[key])), key
    for weight in distiller.student.weights:
        assert keras.backend.standardize_dtype(weight.dtype) == "float32"
        assert np.all(np.isfinite(to_numpy(weight)))
    # The student's float32 weights moved; the teacher's did not.
    start = _half_distiller(policy, logit_scale=200.0)
    assert not np.allclose(
        to_numpy(distiller.student.weights[-1]),
        to_numpy(start.student.weights[-1]),
    )
    for a, b in zip(
        distiller.teacher.get_weights(),
        start.teacher.get_weights(),
        strict=True,
    ):
        np.testing.assert_array_equal(a, b)
