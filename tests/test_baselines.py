"""Baseline losses against independent numpy references.

Formulas and conventions: docs/design.md, "Baselines".
"""

import keras
import numpy as np
import pytest
import scipy.special
from keras import ops

from keras_ptloss import DKDLoss
from keras_ptloss import KDCELoss
from keras_ptloss import LSKDLoss
from keras_ptloss import Poly1Loss
from keras_ptloss import kd_loss
from keras_ptloss import pt_loss
from keras_ptloss.baselines import dkd_loss
from keras_ptloss.baselines import dkd_terms
from keras_ptloss.baselines import kd_ce_loss
from keras_ptloss.baselines import lskd_loss
from keras_ptloss.baselines import pack_targets
from keras_ptloss.baselines import poly1_loss
from keras_ptloss.baselines import unpack_targets
from keras_ptloss.losses import standardize_logits
from tests.utils import assert_allclose
from tests.utils import np_softmax
from tests.utils import np_standardize
from tests.utils import np_temper
from tests.utils import random_probs
from tests.utils import tiny_classifier
from tests.utils import to_numpy
from tests.utils import value_and_grad

K = 6
BATCH = 7


@pytest.fixture
def batch(rng):
    """Teacher logits, student logits and labels for one small batch."""
    teacher_logits = rng.normal(scale=2.5, size=(BATCH, K))
    student_logits = rng.normal(scale=2.0, size=(BATCH, K))
    labels = rng.integers(0, K, size=BATCH)
    return teacher_logits, student_logits, labels


# --- Independent float64 references -----------------------------------------


def np_kl(p, q):
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.sum(np.where(p > 0, p * (np.log(p) - np.log(q)), 0.0), -1)


def np_cross_entropy(labels, logits):
    log_q = scipy.special.log_softmax(np.asarray(logits, "float64"), axis=-1)
    return -log_q[np.arange(len(labels)), labels]


def np_dkd(p, q, labels):
    """TCKD and NCKD per example, one example at a time, from probabilities."""
    tckd, nckd = [], []
    for p_i, q_i, y in zip(p, q, labels, strict=True):
        b_p = np.array([p_i[y], 1.0 - p_i[y]])
        b_q = np.array([q_i[y], 1.0 - q_i[y]])
        others = np.arange(len(p_i)) != y
        p_hat = p_i[others] / p_i[others].sum()
        q_hat = q_i[others] / q_i[others].sum()
        tckd.append(np_kl(b_p, b_q))
        nckd.append(np_kl(p_hat, q_hat))
    return np.array(tckd), np.array(nckd)


def np_zscore(z, delta=0.0):
    return np_standardize(z, delta)


def np_lskd(teacher_logits, student_logits, temperature, delta=0.0):
    p = np_softmax(np_zscore(teacher_logits, delta), temperature)
    q = np_softmax(np_zscore(student_logits, delta), temperature)
    return temperature**2 * np_kl(p, q)


def optax_poly1(labels, logits, epsilon):
    """optax.poly_loss_cross_entropy's definition, written in numpy."""
    q = np_softmax(logits)
    log_q = scipy.special.log_softmax(np.asarray(logits, "float64"), axis=-1)
    cross_entropy = -np.sum(labels * log_q, axis=-1)
    return cross_entropy + epsilon * np.sum(labels * (1.0 - q), axis=-1)


# --- Targets convention ------------------------------------------------------


def test_pack_and_unpack_targets_round_trip(batch):
    teacher_logits, _, labels = batch
    teacher = np_softmax(teacher_logits)
    packed = pack_targets(teacher, labels)
    assert packed.shape == (BATCH, K + 1) and packed.dtype == np.float32
    unpacked_teacher, unpacked_labels = unpack_targets(packed, K)
    assert_allclose(unpacked_teacher, teacher.astype("float32"))
    assert_allclose(unpacked_labels, labels.astype("float32"))
    assert_allclose(pack_targets(teacher, labels[:, None]), packed)


@pytest.mark.parametrize("loss_fn", [kd_ce_loss, dkd_loss])
def test_dict_and_packed_targets_give_the_same_loss(batch, loss_fn):
    teacher_logits, logits, labels = batch
    teacher = np_softmax(teacher_logits)
    from_dict = loss_fn({"teacher": teacher, "label": labels}, logits)
    from_packed = loss_fn(pack_targets(teacher, labels), logits)
    assert_allclose(from_dict, from_packed)


# --- KD + cross-entropy ------------------------------------------------------


KD_CE_CASES = [(0.0, 1.0), (0.3, 4.0), (1.0, 2.0)]


@pytest.mark.parametrize("label_weight,temperature", KD_CE_CASES)
def test_kd_ce_matches_numpy(batch, label_weight, temperature):
    teacher_logits, logits, labels = batch
    teacher = np_softmax(teacher_logits)
    expected = label_weight * np_cross_entropy(labels, logits) + (
        1 - label_weight
    ) * temperature**2 * np_kl(
        np_temper(teacher, temperature), np_softmax(logits, temperature)
    )
    actual = kd_ce_loss(
        {"teacher": teacher, "label": labels},
        logits,
        label_weight=label_weight,
        temperature=temperature,
        teacher_from_logits=False,
    )
    assert_allclose(actual, expected, rtol=1e-5, atol=1e-5)
    loss = KDCELoss(
        label_weight, temperature, reduction=None, teacher_from_logits=False
    )
    assert_allclose(
        loss(pack_targets(teacher, labels), logits),
        expected,
        rtol=1e-5,
        atol=1e-5,
    )


def test_kd_ce_end_points_are_kd_and_keras_cross_entropy(batch):
    teacher_logits, logits, labels = batch
    y_true = {"teacher": teacher_logits, "label": labels}
    assert_allclose(
        kd_ce_loss(y_true, logits, 0.0, 3.0, teacher_from_logits=True),
        kd_loss(teacher_logits, logits, 3.0, teacher_from_logits=True),
    )
    assert_allclose(
        kd_ce_loss(y_true, logits, 1.0, 3.0, teacher_from_logits=True),
        keras.losses.sparse_categorical_crossentropy(
            labels, logits, from_logits=True
        ),
        rtol=1e-5,
    )


# --- DKD ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "alpha,beta,temperature",
    [(1.0, 8.0, 4.0), (0.5, 2.0, 1.0), (0.0, 1.0, 2.0)],
)
def test_dkd_matches_numpy(batch, temperature, alpha, beta):
    teacher_logits, logits, labels = batch
    tckd, nckd = np_dkd(
        np_softmax(teacher_logits, temperature),
        np_softmax(logits, temperature),
        labels,
    )
    expected = temperature**2 * (alpha * tckd + beta * nckd)
    y_true = {"teacher": teacher_logits, "label": labels}
    actual = dkd_loss(
        y_true, logits, alpha, beta, temperature, teacher_from_logits=True
    )
    assert_allclose(actual, expected, rtol=1e-5, atol=1e-5)
    loss = DKDLoss(
        alpha, beta, temperature, teacher_from_logits=True, reduction=None
    )
    assert_allclose(loss(y_true, logits), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_kd_is_tckd_plus_weighted_nckd(batch, temperature):
    """KD = TCKD + (1 - p_target) NCKD (Zhao et al., Eq. 4)."""
    teacher_logits, logits, labels = batch
    teacher = np_softmax(teacher_logits)
    y_true = {"teacher": teacher, "label": labels}
    tckd, nckd, p_target = dkd_terms(
        y_true, logits, temperature, teacher_from_logits=False
    )
    kd = kd_loss(teacher, logits, temperature, teacher_from_logits=False)
    p_t = np_temper(teacher, temperature)[np.arange(BATCH), labels]
    assert_allclose(p_target, p_t)
    assert_allclose(
        temperature**2 * (to_numpy(tckd) + (1 - p_t) * to_numpy(nckd)),
        kd,
        rtol=1e-5,
        atol=1e-5,
    )
    # The same identity through the loss: alpha = 1, beta = 1 - p_target.
    assert_allclose(
        dkd_loss(
            y_true,
            logits,
            1.0,
            1.0 - p_t,
            temperature,
            teacher_from_logits=False,
        ),
        kd,
        atol=1e-5,
    )
    # alpha = beta = 1 over-weights NCKD by exactly p_target * NCKD.
    assert_allclose(
        dkd_loss(
            y_true, logits, 1.0, 1.0, temperature, teacher_from_logits=False
        ),
        to_numpy(kd) + temperature**2 * p_t * to_numpy(nckd),
        rtol=1e-5,
        atol=1e-5,
    )


def test_dkd_teacher_probabilities_equal_teacher_logits(batch):
    teacher_logits, logits, labels = batch
    from_logits = dkd_loss(
        {"teacher": teacher_logits, "label": labels},
        logits,
        temperature=3.0,
        teacher_from_logits=True,
    )
    from_probs = dkd_loss(
        {"teacher": np_softmax(teacher_logits), "label": labels},
        logits,
        temperature=3.0,
        teacher_from_logits=False,
    )
    assert_allclose(from_probs, from_logits, rtol=1e-4, atol=1e-5)


def test_dkd_degenerate_teacher_and_extreme_logits_stay_finite():
    # Row 0: all teacher mass on the target (no non-target distribution).
    # Row 1: zero mass on the target. Row 2: extreme student logits.
    teacher = np.array(
        [[1.0, 0.0, 0.0, 0.0], [0.0, 0.5, 0.5, 0.0], [0.1, 0.2, 0.3, 0.4]]
    )
    logits = np.array(
        [[2.0, 0.0, -1.0, 1.0], [0.0, 1.0, 0.0, 3.0], [1e4, -1e4, 0.0, 5e3]]
    )
    labels = np.array([0, 0, 1])
    y_true = {"teacher": teacher, "label": labels}
    tckd, nckd, _ = dkd_terms(y_true, logits, teacher_from_logits=False)
    q = np_softmax(logits)
    # Row 0: TCKD = -log q_y, NCKD = 0 (documented convention).
    assert_allclose(tckd[0], -np.log(q[0, 0]), rtol=1e-5)
    assert to_numpy(nckd)[0] == 0.0
    # Row 1: TCKD = -log(1 - q_y); NCKD = KL among non-targets.
    expected_tckd, expected_nckd = np_dkd(teacher[1:2], q[1:2], labels[1:2])
    assert_allclose(tckd[1], expected_tckd[0], rtol=1e-5)
    assert_allclose(nckd[1], expected_nckd[0], rtol=1e-5)
    assert np.all(
        np.isfinite(
            to_numpy(
                dkd_loss(y_true, logits, 1.0, 8.0, teacher_from_logits=False)
            )
        )
    )


def np_dkd_total(teacher, logits, labels, alpha, beta, temperature):
    tckd, nckd = np_dkd(
        np_temper(teacher, temperature), np_softmax(logits, temperature), labels
    )
    return temperature**2 * np.sum(alpha * tckd + beta * nckd)


def test_dkd_gradient_matches_finite_differences(batch):
    teacher_logits, logits, labels = batch
    teacher = np_softmax(teacher_logits)
    # A teacher row with no mass on the target, and large student logits.
    teacher[0] = [0.0, 0.3, 0.3, 0.2, 0.2, 0.0]
    labels[0] = 0
    logits[1] *= 30.0
    args = (labels, 0.7, 3.0, 2.0)
    step = 1e-6
    numeric = np.zeros_like(logits)
    for idx in np.ndindex(*logits.shape):
        bump = np.zeros_like(logits)
        bump[idx] = step
        numeric[idx] = (
            np_dkd_total(teacher, logits + bump, *args)
            - np_dkd_total(teacher, logits - bump, *args)
        ) / (2 * step)
    y_true = {"teacher": teacher, "label": labels}
    value, grad = value_and_grad(
        lambda z: ops.sum(
            dkd_loss(y_true, z, 0.7, 3.0, 2.0, teacher_from_logits=False)
        ),
        logits,
    )
    assert value == pytest.approx(np_dkd_total(teacher, logits, *args), 1e-5)
    assert_allclose(grad, numeric, rtol=1e-3, atol=1e-4)


# --- Logit standardisation ------------------------------------------------


def test_standardize_logits_matches_numpy(rng):
    z = rng.normal(scale=3.0, size=(BATCH, K))
    assert_allclose(standardize_logits(z, 0.1), np_zscore(z, 0.1), rtol=1e-5)
    constant = np.full((2, K), 4.0)
    assert_allclose(standardize_logits(constant, 0.0), np.zeros((2, K)))


def test_standardize_logits_uses_the_sample_std_of_the_lskd_reference():
    # The LS-KD authors' code divides by torch.std (unbiased, K - 1): for
    # z = (1, 2, 3) the sample std is exactly 1 (the population one is
    # sqrt(2/3)), so the z-scores are (-1, 0, 1).
    z = standardize_logits(np.array([[1.0, 2.0, 3.0]]), 0.0)
    assert_allclose(z, [[-1.0, 0.0, 1.0]], atol=1e-6)
    # Constant logits have no spread: zeros, not NaN.
    assert_allclose(standardize_logits(np.full((1, 3), 5.0), 0.0), [[0.0] * 3])


@pytest.mark.parametrize("num_classes", [1, 2])
def test_standardize_logits_refuses_fewer_than_three_classes(num_classes):
    # Two logits always standardise to +-1/sqrt(2), whatever their gap.
    with pytest.raises(ValueError, match="at least 3 classes"):
        standardize_logits(np.array([[3.0, -1.0][:num_classes]]))


@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_lskd_matches_numpy(batch, temperature):
    teacher_logits, logits, _ = batch
    expected = np_lskd(teacher_logits, logits, temperature, delta=1e-3)
    actual = lskd_loss(
        teacher_logits,
        logits,
        temperature,
        delta=1e-3,
        teacher_from_logits=True,
    )
    assert_allclose(actual, expected, rtol=1e-5, atol=1e-6)
    loss = LSKDLoss(temperature, 1e-3, teacher_from_logits=True)
    assert_allclose(loss(teacher_logits, logits), expected.mean(), rtol=1e-5)


def test_lskd_is_invariant_to_shift_and_scale_of_logits(batch, rng):
    teacher_logits, logits, _ = batch
    shift_t = rng.normal(size=(BATCH, 1)) * 10
    shift_s = rng.normal(size=(BATCH, 1)) * 10
    scale_t = rng.uniform(0.2, 5.0, size=(BATCH, 1))
    scale_s = rng.uniform(0.2, 5.0, size=(BATCH, 1))
    kwargs = {"temperature": 2.0, "delta": 0.0, "teacher_from_logits": True}
    base = lskd_loss(teacher_logits, logits, **kwargs)
    moved = lskd_loss(
        scale_t * teacher_logits + shift_t, scale_s * logits + shift_s, **kwargs
    )
    assert_allclose(moved, base, rtol=1e-4, atol=1e-5)
    # Plain KD is not invariant: the check above is not vacuous.
    kd_moved = kd_loss(
        scale_t * teacher_logits,
        scale_s * logits,
        2.0,
        teacher_from_logits=True,
    )
    assert not np.allclose(
        to_numpy(kd_moved),
        to_numpy(
            kd_loss(teacher_logits, logits, 2.0, teacher_from_logits=True)
        ),
        rtol=1e-2,
    )


def test_lskd_gradient_is_finite_for_constant_student_logits(batch):
    teacher_logits, _, _ = batch
    constant = np.zeros((BATCH, K))
    value, grad = value_and_grad(
        lambda z: ops.sum(
            lskd_loss(teacher_logits, z, 2.0, teacher_from_logits=True)
        ),
        constant,
    )
    # Standardised constant logits are zeros: KL(teacher || uniform).
    p = np_softmax(np_zscore(teacher_logits, 1e-7), 2.0)
    assert value == pytest.approx(
        4.0 * np_kl(p, np.full(K, 1 / K)).sum(), rel=1e-5
    )
    assert np.all(np.isfinite(grad))


def test_lskd_teacher_probabilities_equal_teacher_logits(batch):
    teacher_logits, logits, _ = batch
    from_logits = lskd_loss(
        teacher_logits, logits, 2.0, teacher_from_logits=True
    )
    from_probs = lskd_loss(
        np_softmax(teacher_logits), logits, 2.0, teacher_from_logits=False
    )
    assert_allclose(from_probs, from_logits, rtol=1e-4, atol=1e-5)


def test_lskd_gradient_matches_finite_differences(batch):
    teacher_logits, logits, _ = batch
    step = 1e-6
    numeric = np.zeros_like(logits)
    for idx in np.ndindex(*logits.shape):
        bump = np.zeros_like(logits)
        bump[idx] = step
        numeric[idx] = (
            np_lskd(teacher_logits, logits + bump, 2.0, 1e-3).sum()
            - np_lskd(teacher_logits, logits - bump, 2.0, 1e-3).sum()
        ) / (2 * step)
    _, grad = value_and_grad(
        lambda z: ops.sum(
            lskd_loss(teacher_logits, z, 2.0, 1e-3, teacher_from_logits=True)
        ),
        logits,
    )
    assert_allclose(grad, numeric, rtol=1e-3, atol=1e-4)


# --- Poly-1 ----------------------------------------------------------------


def test_poly1_with_zero_epsilon_is_cross_entropy(batch):
    _, logits, labels = batch
    expected = np_cross_entropy(labels, logits)
    assert_allclose(poly1_loss(labels, logits, 0.0), expected, rtol=1e-5)
    keras_ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    assert_allclose(
        Poly1Loss(0.0)(labels, logits), keras_ce(labels, logits), rtol=1e-5
    )


@pytest.mark.parametrize("epsilon", [-1.0, 2.0])
def test_poly1_matches_optax_definition_and_pt_loss(batch, rng, epsilon):
    _, logits, labels = batch
    one_hot = np.eye(K)[labels]
    expected = optax_poly1(one_hot, logits, epsilon)
    assert_allclose(poly1_loss(labels, logits, epsilon), expected, rtol=1e-5)
    assert_allclose(poly1_loss(one_hot, logits, epsilon), expected, rtol=1e-5)
    assert_allclose(
        poly1_loss(labels[:, None], logits, epsilon), expected, rtol=1e-5
    )
    # PTLoss with a one-hot teacher and shared coefficients [epsilon].
    assert_allclose(
        pt_loss(one_hot, logits, [epsilon], teacher_from_logits=False),
        expected,
        rtol=1e-5,
    )
    # Soft labels follow optax's definition too.
    soft = random_probs(rng, (BATCH, K))
    assert_allclose(
        poly1_loss(soft, logits, epsilon),
        optax_poly1(soft, logits, epsilon),
        rtol=1e-5,
    )


def test_poly1_probability_inputs_equal_logits(batch):
    _, logits, labels = batch
    assert_allclose(
        poly1_loss(labels, np_softmax(logits), 1.0, from_logits=False),
        poly1_loss(labels, logits, 1.0),
        rtol=1e-5,
    )


# --- Keras integration -----------------------------------------------------


def make_losses():
    return [
        KDCELoss(
            label_weight=0.2,
            temperature=3.0,
            name="mixed",
            teacher_from_logits=False,
        ),
        DKDLoss(
            alpha=0.5,
            beta=4.0,
            temperature=2.0,
            reduction="sum",
            teacher_from_logits=False,
        ),
        LSKDLoss(temperature=2.0, delta=1e-3, teacher_from_logits=True),
        Poly1Loss(epsilon=1.5, from_logits=True),
    ]


def targets_for(loss, teacher_logits, labels):
    if isinstance(loss, (KDCELoss, DKDLoss)):
        return pack_targets(np_softmax(teacher_logits), labels)
    if isinstance(loss, LSKDLoss):
        return teacher_logits.astype("float32")
    return labels


def test_config_round_trip_through_registered_names(batch):
    teacher_logits, logits, labels = batch
    for loss in make_losses():
        restored = keras.losses.deserialize(keras.losses.serialize(loss))
        assert type(restored) is type(loss)
        assert restored.get_config() == loss.get_config()
        y_true = targets_for(loss, teacher_logits, labels)
        assert_allclose(restored(y_true, logits), loss(y_true, logits))


def test_half_precision_inputs_are_computed_in_float32(batch):
    teacher_logits, logits, labels = batch
    for policy in ("float16", "bfloat16"):
        teacher = ops.cast(np_softmax(teacher_logits), policy)
        student = ops.cast(logits, policy)
        y_true = {"teacher": teacher, "label": labels}
        values = [
            kd_ce_loss(
                y_true, student, temperature=2.0, teacher_from_logits=False
            ),
            dkd_loss(
                y_true, student, temperature=2.0, teacher_from_logits=False
            ),
            lskd_loss(
                teacher, student, temperature=2.0, teacher_from_logits=False
            ),
            poly1_loss(labels, student),
        ]
        for value in values:
            assert keras.backend.standardize_dtype(value.dtype) == "float32"
            assert np.all(np.isfinite(to_numpy(value)))


def test_fit_with_packed_targets_reduces_every_loss(rng):
    x = rng.normal(size=(64, 4)).astype("float32")
    teacher_logits = 3.0 * x[:, :3]
    labels = np.argmax(teacher_logits + rng.normal(size=(64, 3)), -1)
    for index, loss in enumerate(make_losses()):
        model = tiny_classifier(4, 3, hidden=16, seed=index)
        model.compile(optimizer=keras.optimizers.Adam(0.05), loss=loss)
        y = targets_for(loss, teacher_logits, labels)
        history = model.fit(x, y, epochs=5, batch_size=32, verbose=0)
        losses = history.history["loss"]
        assert np.all(np.isfinite(losses)), (loss.name, losses)
        assert losses[-1] < 0.8 * losses[0], (loss.name, losses)


# --- Bad input ------------------------------------------------------------


INVALID_ARGUMENTS = [
    (KDCELoss, {"label_weight": 1.5}, "label_weight"),
    (KDCELoss, {"label_weight": "half"}, "label_weight"),
    (KDCELoss, {"temperature": 0.0}, "temperature"),
    (DKDLoss, {"alpha": -1.0}, "alpha"),
    (DKDLoss, {"beta": float("nan")}, "beta"),
    (DKDLoss, {"teacher_from_logits": "yes"}, "teacher_from_logits"),
    (LSKDLoss, {"delta": -0.1}, "delta"),
    (LSKDLoss, {"temperature": -2.0}, "temperature"),
    (Poly1Loss, {"epsilon": -1.5}, "epsilon"),
    (Poly1Loss, {"from_logits": 1}, "from_logits"),
]


def test_invalid_arguments_raise_clear_errors():
    for cls, kwargs, match in INVALID_ARGUMENTS:
        with pytest.raises(ValueError, match=match):
            cls(**kwargs)


def test_bad_targets_raise_clear_errors(batch):
    teacher_logits, logits, labels = batch
    teacher = np_softmax(teacher_logits)
    with pytest.raises(ValueError, match="keys"):
        dkd_loss(
            {"teacher": teacher, "labels": labels},
            logits,
            teacher_from_logits=False,
        )
    with pytest.raises(ValueError, match="num_classes \\+ 1"):
        dkd_loss(teacher, logits, teacher_from_logits=False)
    with pytest.raises(ValueError, match="dict"):
        kd_ce_loss((teacher, labels), logits, teacher_from_logits=False)
    with pytest.raises(ValueError, match="same shape"):
        dkd_loss(
            {"teacher": teacher[:, :3], "label": labels},
            logits,
            teacher_from_logits=False,
        )
    with pytest.raises(ValueError, match=r"\[0, 5\]"):
        poly1_loss(labels + K, logits)
    with pytest.raises(ValueError, match=r"\[0, 5\]"):
        DKDLoss(teacher_from_logits=False)(
            {"teacher": teacher, "label": labels - 10}, logits
        )
    with pytest.raises(ValueError, match="integer class indices"):
        kd_ce_loss(
            {"teacher": teacher, "label": labels + 0.5},
            logits,
            teacher_from_logits=False,
        )
    with pytest.raises(ValueError, match="labels.shape"):
        poly1_loss(np.zeros((BATCH, K + 1)), logits)
    with pytest.raises(ValueError, match="labels"):
        pack_targets(teacher, labels[:3])
    with pytest.raises(ValueError, match="same shape"):
        lskd_loss(teacher[:, :4], logits, teacher_from_logits=False)


# --- Hyper-parameters held in variables -------------------------------------


# Per class: constructor arguments, new values for the setters, and a numpy
# reference of the per-example loss at given values.
def np_kd_ce_at(teacher_logits, logits, labels, label_weight, temperature):
    p = np_softmax(teacher_logits, temperature)
    q = np_softmax(logits, temperature)
    kd = temperature**2 * np_kl(p, q)
    return (
        label_weight * np_cross_entropy(labels, logits)
        + (1.0 - label_weight) * kd
    )


def np_dkd_at(teacher_logits, logits, labels, alpha, beta, temperature):
    p = np_softmax(teacher_logits, temperature)
    q = np_softmax(logits, temperature)
    tckd, nckd = np_dkd(p, q, labels)
    return temperature**2 * (alpha * tckd + beta * nckd)


def np_poly1_at(teacher_logits, logits, labels, epsilon):
    q_y = np_softmax(logits)[np.arange(len(labels)), labels]
    return np_cross_entropy(labels, logits) + epsilon * (1.0 - q_y)


def np_lskd_at(teacher_logits, logits, labels, temperature):
    return np_lskd(teacher_logits, logits, temperature, delta=1e-7)


VARIABLE_CASES = [
    (
        KDCELoss,
        {"label_weight": 0.2, "temperature": 3.0},
        {"label_weight": 0.9, "temperature": 1.5},
        np_kd_ce_at,
    ),
    (
        DKDLoss,
        {"alpha": 0.5, "beta": 4.0, "temperature": 2.0},
        {"alpha": 2.0, "beta": 1.0, "temperature": 5.0},
        np_dkd_at,
    ),
    (LSKDLoss, {"temperature": 2.0}, {"temperature": 0.5}, np_lskd_at),
    (Poly1Loss, {"epsilon": 1.5}, {"epsilon": -0.75}, np_poly1_at),
]


def y_true_for(cls, teacher_logits, labels):
    if cls in (KDCELoss, DKDLoss):
        return {"teacher": teacher_logits, "label": labels}
    if cls is LSKDLoss:
        return teacher_logits
    return labels


@pytest.mark.parametrize("cls, first, second, reference", VARIABLE_CASES)
def test_hyperparameters_are_variables_with_validating_setters(
    batch, cls, first, second, reference
):
    teacher_logits, logits, labels = batch
    flags = {} if cls is Poly1Loss else {"teacher_from_logits": True}
    loss = cls(**first, **flags)
    assert len(loss.variables) == len(first)
    for variable in loss.variables:
        assert not variable.trainable
        assert tuple(variable.shape) == ()
    y_true = y_true_for(cls, teacher_logits, labels)
    for values in (first, second):
        for name, value in values.items():
            getattr(loss, f"set_{name}")(value)
            assert getattr(loss, name) == pytest.approx(value)
            assert loss.get_config()[name] == pytest.approx(value)
        expected = reference(teacher_logits, logits, labels, **values)
        assert_allclose(loss(y_true, logits), expected.mean(), rtol=1e-5)
        restored = cls.from_config(loss.get_config())
        assert_allclose(restored(y_true, logits), expected.mean(), rtol=1e-5)


SETTER_ERRORS = [
    (KDCELoss, "set_label_weight", -0.1, "label_weight"),
    (KDCELoss, "set_temperature", 0.0, "temperature"),
    (DKDLoss, "set_alpha", float("inf"), "alpha"),
    (DKDLoss, "set_beta", "big", "beta"),
    (LSKDLoss, "set_temperature", -1.0, "temperature"),
    (Poly1Loss, "set_epsilon", -2.0, "epsilon"),
]


@pytest.mark.parametrize("cls, setter, value, name", SETTER_ERRORS)
def test_setters_reject_bad_values_and_keep_the_old_one(
    cls, setter, value, name
):
    loss = cls()
    before = loss.get_config()[name]
    with pytest.raises(ValueError, match=name):
        getattr(loss, setter)(value)
    assert loss.get_config()[name] == before


def test_losses_that_read_labels_say_so():
    assert KDCELoss.needs_labels and DKDLoss.needs_labels
    assert Poly1Loss.needs_labels
    assert not LSKDLoss.needs_labels
    with pytest.raises(ValueError, match="no temperature"):
        Poly1Loss().set_temperature(2.0)


def test_poly1_reads_the_labels_of_distiller_targets(batch):
    teacher_logits, logits, labels = batch
    y_true = {"teacher": teacher_logits, "label": labels}
    assert_allclose(
        Poly1Loss(epsilon=2.0)(y_true, logits),
        np_poly1_at(teacher_logits, logits, labels, 2.0).mean(),
    )
