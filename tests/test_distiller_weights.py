"""Distiller: sample weights without labels reach the loss, or raise.

Keras packs arrays `(x, None, sample_weight)` as `(x,)`, dropping the
weights; the Distiller refuses that case instead of ignoring a padding mask.
"""

import keras
import numpy as np
import pytest

from keras_ptloss import Distiller
from keras_ptloss import KDLoss
from tests.utils import assert_allclose
from tests.utils import np_mlp_logits
from tests.utils import np_pt_loss
from tests.utils import tiny_classifier

N, F, K, T = 8, 5, 3, 2.0


@pytest.fixture
def distiller():
    teacher = tiny_classifier(F, K, hidden=8, seed=0)
    student = tiny_classifier(F, K, hidden=6, seed=10)
    model = Distiller(teacher, student, KDLoss(temperature=T))
    model.compile(optimizer=keras.optimizers.SGD(0.0))
    return model


@pytest.fixture
def batch(rng):
    x = rng.normal(size=(N, F)).astype("float32")
    weights = np.zeros(N, "float32")
    weights[:3] = [1.0, 0.5, 2.0]
    return x, weights


def expected_loss(distiller, x, weights):
    """`sum_over_batch_size` of the weighted KD loss, in float64 numpy."""
    t = np_mlp_logits(distiller.teacher, x)
    z = np_mlp_logits(distiller.student, x)
    return np.sum(weights * np_pt_loss(t, z, [0.0], T, True)) / len(x)


def test_evaluate_with_weights_and_no_labels_raises(distiller, batch):
    x, weights = batch
    with pytest.raises(ValueError, match="`sample_weight` was given without"):
        distiller.evaluate(x, sample_weight=weights, verbose=0)


def test_fit_with_weights_and_no_labels_raises(distiller, batch):
    x, weights = batch
    before = [np.array(w) for w in distiller.get_weights()]
    with pytest.raises(ValueError, match="Received: y=None, sample_weight"):
        distiller.fit(x, sample_weight=weights, epochs=1, verbose=0)
    for old, new in zip(before, distiller.get_weights(), strict=True):
        np.testing.assert_array_equal(old, new)


def test_validation_data_with_weights_and_no_labels_raises(distiller, batch):
    x, weights = batch
    y = np.zeros(N, "int32")
    with pytest.raises(ValueError, match="in `validation_data`"):
        distiller.fit(
            x, y, validation_data=(x, None, weights), epochs=1, verbose=0
        )


def test_unweighted_unlabelled_data_still_runs(distiller, batch):
    x, _ = batch
    loss = distiller.evaluate(x, batch_size=N, verbose=0, return_dict=True)
    assert_allclose(
        loss["loss"], expected_loss(distiller, x, np.ones(N)), rtol=1e-5
    )


def test_labels_with_no_student_loss_carry_the_weights(distiller, batch):
    # The way out the error names: y (here the teacher's argmax) after
    # compile(loss=None) feeds no loss, and the weights reach the loss.
    x, weights = batch
    y = np.argmax(np_mlp_logits(distiller.teacher, x), axis=-1)
    logs = distiller.evaluate(
        x, y, sample_weight=weights, batch_size=N, verbose=0, return_dict=True
    )
    assert_allclose(logs["loss"], expected_loss(distiller, x, weights))
    assert_allclose(logs["student_loss"], 0.0)


def test_a_tf_dataset_yielding_weights_without_labels_keeps_them(
    distiller, batch
):
    import tensorflow as tf

    x, weights = batch
    dataset = tf.data.Dataset.from_tensor_slices((x, None, weights)).batch(N)
    logs = distiller.evaluate(dataset, verbose=0, return_dict=True)
    assert_allclose(logs["loss"], expected_loss(distiller, x, weights))
    assert not np.isclose(
        logs["loss"], expected_loss(distiller, x, np.ones(N)), rtol=1e-3
    )
