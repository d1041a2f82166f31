"""A Distiller passes the labels to the distillation losses that need them.

`KDCELoss`, `DKDLoss` and `Poly1Loss` declare `needs_labels = True`: the
Distiller gives them `{"teacher": teacher_outputs, "label": y}`. Their
hyper-parameters are non-trainable variables the Distiller tracks, so a value
assigned between `fit` calls reaches the compiled step on every backend.
"""

import keras
import numpy as np
import pytest
import scipy.special

from keras_ptloss import Distiller
from keras_ptloss import DKDLoss
from keras_ptloss import KDCELoss
from keras_ptloss import LSKDLoss
from keras_ptloss import Poly1Loss
from tests.utils import np_mlp_logits
from tests.utils import np_softmax
from tests.utils import np_sparse_ce
from tests.utils import tiny_classifier

K = 4
N = 16


# --- Independent float64 references -----------------------------------------


def np_kl(p, q):
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.sum(np.where(p > 0, p * (np.log(p) - np.log(q)), 0.0), -1)


def np_kd_ce(teacher_logits, logits, labels, label_weight, temperature):
    t = temperature
    kd = t**2 * np_kl(np_softmax(teacher_logits, t), np_softmax(logits, t))
    ce = np_sparse_ce(logits, labels)
    return label_weight * ce + (1.0 - label_weight) * kd


def np_dkd(teacher_logits, logits, labels, alpha, beta, temperature):
    p = np_softmax(teacher_logits, temperature)
    q = np_softmax(logits, temperature)
    values = []
    for p_i, q_i, y in zip(p, q, labels, strict=True):
        binary_p = np.array([p_i[y], 1.0 - p_i[y]])
        binary_q = np.array([q_i[y], 1.0 - q_i[y]])
        others = np.arange(K) != y
        tckd = np_kl(binary_p, binary_q)
        nckd = np_kl(
            p_i[others] / p_i[others].sum(), q_i[others] / q_i[others].sum()
        )
        values.append(temperature**2 * (alpha * tckd + beta * nckd))
    return np.array(values)


def np_poly1(logits, labels, epsilon):
    q_y = np_softmax(logits)[np.arange(len(labels)), labels]
    return np_sparse_ce(logits, labels) + epsilon * (1.0 - q_y)


# Per loss: constructor, reference, and a second configuration set through
# the loss's setters.
CASES = {
    "kd_ce": (
        lambda: KDCELoss(0.3, 2.0, teacher_from_logits=True),
        lambda t, z, y, hp: np_kd_ce(t, z, y, **hp),
        {"label_weight": 0.3, "temperature": 2.0},
        {"label_weight": 0.8, "temperature": 5.0},
    ),
    "dkd": (
        lambda: DKDLoss(0.5, 2.0, 3.0, teacher_from_logits=True),
        lambda t, z, y, hp: np_dkd(t, z, y, **hp),
        {"alpha": 0.5, "beta": 2.0, "temperature": 3.0},
        {"alpha": 2.0, "beta": 6.0, "temperature": 1.5},
    ),
    "poly1": (
        lambda: Poly1Loss(1.5),
        lambda t, z, y, hp: np_poly1(z, y, **hp),
        {"epsilon": 1.5},
        {"epsilon": -0.5},
    ),
}


def assign(loss, hp):
    for name, value in hp.items():
        getattr(loss, f"set_{name}")(value)


@pytest.fixture
def pair(rng):
    """Teacher, student, inputs and labels (not the teacher's argmax)."""
    teacher = tiny_classifier(5, K, hidden=8, seed=3)
    student = tiny_classifier(5, K, hidden=8, seed=7)
    x = rng.normal(size=(N, 5)).astype("float32")
    labels = rng.integers(0, K, size=N)
    return teacher, student, x, labels


def make_distiller(pair, loss, optimizer="sgd"):
    teacher, student, _, _ = pair
    distiller = Distiller(teacher, student, loss, student_loss_weight=0.0)
    distiller.compile(optimizer=optimizer)
    return distiller


def evaluate(distiller, x, y=None):
    """The logs of one compiled test step over the whole batch."""
    return distiller.evaluate(x, y, batch_size=N, return_dict=True, verbose=0)


@pytest.mark.parametrize("case", sorted(CASES))
def test_distillation_loss_gets_teacher_outputs_and_labels(pair, case):
    build, reference, hp, _ = CASES[case]
    teacher, student, x, labels = pair
    distiller = make_distiller(pair, build())
    expected = reference(
        np_mlp_logits(teacher, x), np_mlp_logits(student, x), labels, hp
    ).mean()
    logs = evaluate(distiller, x, labels)
    np.testing.assert_allclose(logs["distillation_loss"], expected, rtol=1e-5)
    x_offline, y, _ = distiller.precompute_teacher(x, labels)
    logs = evaluate(distiller, x_offline, y)
    np.testing.assert_allclose(logs["distillation_loss"], expected, rtol=1e-5)


@pytest.mark.parametrize("case", sorted(CASES))
def test_hyperparameters_set_between_fits_reach_the_compiled_step(pair, case):
    build, reference, first, second = CASES[case]
    teacher, student, x, labels = pair
    distiller = make_distiller(pair, build())
    loss = distiller.distillation_loss
    teacher_logits = np_mlp_logits(teacher, x)
    for hp in (first, second, first):
        assign(loss, hp)
        # One batch: the logged loss is computed before the update.
        expected = reference(
            teacher_logits, np_mlp_logits(student, x), labels, hp
        ).mean()
        history = distiller.fit(x, labels, batch_size=N, epochs=1, verbose=0)
        np.testing.assert_allclose(
            history.history["distillation_loss"][0], expected, rtol=1e-5
        )


@pytest.mark.parametrize("case", sorted(CASES))
def test_distiller_tracks_the_loss_variables(pair, case):
    distiller = make_distiller(pair, CASES[case][0]())
    loss = distiller.distillation_loss
    tracked = {id(v) for v in distiller.non_trainable_variables}
    assert loss.variables
    assert all(id(v) in tracked for v in loss.variables)
    assert not any(v.trainable for v in loss.variables)


def test_student_loss_weight_mixes_compiled_loss_with_label_loss(pair):
    teacher, student, x, labels = pair
    loss = DKDLoss(1.0, 4.0, 2.0, teacher_from_logits=True)
    distiller = Distiller(teacher, student, loss, student_loss_weight=0.25)
    distiller.compile(
        optimizer="sgd",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    student_logits = np_mlp_logits(student, x)
    dkd = np_dkd(np_mlp_logits(teacher, x), student_logits, labels, 1, 4, 2)
    ce = np_sparse_ce(student_logits, labels)
    logs = evaluate(distiller, x, labels)
    np.testing.assert_allclose(
        logs["loss"], 0.25 * ce.mean() + 0.75 * dkd.mean(), rtol=1e-5
    )


def test_label_free_losses_get_the_teacher_outputs_only(pair):
    teacher, student, x, _ = pair
    distiller = make_distiller(pair, LSKDLoss(2.0, teacher_from_logits=True))

    def zscore(z):
        centred = z - z.mean(-1, keepdims=True)
        return centred / z.std(-1, ddof=1, keepdims=True)

    p = np_softmax(zscore(np_mlp_logits(teacher, x)), 2.0)
    log_q = scipy.special.log_softmax(
        zscore(np_mlp_logits(student, x)) / 2.0, axis=-1
    )
    expected = 4.0 * np.sum(p * (np.log(p) - log_q), -1).mean()
    logs = evaluate(distiller, x)
    np.testing.assert_allclose(logs["distillation_loss"], expected, rtol=1e-4)


def test_missing_labels_raise_a_clear_error(pair):
    _, _, x, _ = pair
    distiller = make_distiller(pair, DKDLoss(teacher_from_logits=True))
    weights = distiller.get_weights()
    with pytest.raises(ValueError, match="needs labels"):
        distiller.fit(x, epochs=1, verbose=0)
    # Raised before Keras's training loop: the models keep their weights
    # (on JAX an error raised in a traced step empties the variables).
    for before, after in zip(weights, distiller.get_weights(), strict=True):
        np.testing.assert_array_equal(before, after)


def test_config_keeps_the_hyperparameters_assigned_later(pair):
    distiller = make_distiller(
        pair, KDCELoss(0.3, 2.0, teacher_from_logits=True)
    )
    loss = distiller.distillation_loss
    loss.set_label_weight(0.75)
    loss.set_temperature(4.0)
    restored = Distiller.from_config(distiller.get_config())
    assert restored.distillation_loss.label_weight == 0.75
    assert restored.distillation_loss.temperature == 4.0
    assert restored.distillation_loss.needs_labels
