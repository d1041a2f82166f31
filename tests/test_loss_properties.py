"""Property-based checks of PTLoss (hypothesis), on every backend."""

import numpy as np
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from keras import ops

from keras_ptloss import PTLoss
from keras_ptloss import pt_loss
from tests.utils import np_softmax
from tests.utils import to_numpy
from tests.utils import value_and_grad

PROPERTY_SETTINGS = settings(max_examples=12, deadline=None, derandomize=True)

logits_strategy = st.sampled_from([3, 5]).flatmap(
    lambda k: arrays(
        "float64",
        (3, k),
        elements=st.floats(-30, 30, allow_nan=False, allow_infinity=False),
    )
)
temperatures = st.floats(0.25, 8.0)


@PROPERTY_SETTINGS
@given(teacher_logits=logits_strategy, data=st.data(), temperature=temperatures)
def test_zero_coefficients_loss_is_non_negative(
    teacher_logits, data, temperature
):
    student = data.draw(
        arrays("float64", teacher_logits.shape, elements=st.floats(-30, 30))
    )
    teacher = np_softmax(teacher_logits)
    loss = PTLoss(
        np.zeros(3),
        temperature=temperature,
        reduction=None,
        teacher_from_logits=False,
    )
    assert np.all(to_numpy(loss(teacher, student)) >= -1e-5)


@PROPERTY_SETTINGS
@given(teacher_logits=logits_strategy, temperature=temperatures)
def test_zero_coefficients_loss_is_zero_at_the_teacher(
    teacher_logits, temperature
):
    teacher = np_softmax(teacher_logits)
    # The student whose tempered softmax is the tempered teacher: z = log p.
    values = to_numpy(
        PTLoss(
            np.zeros(2),
            temperature=temperature,
            reduction=None,
            teacher_from_logits=False,
        )(teacher, np.log(teacher))
    )
    np.testing.assert_allclose(values, 0.0, atol=1e-4)


@PROPERTY_SETTINGS
@given(teacher_logits=logits_strategy, shift=st.floats(0.5, 5.0))
def test_zero_coefficients_loss_is_positive_away_from_the_teacher(
    teacher_logits, shift
):
    teacher = np_softmax(teacher_logits / 10.0)
    student = np.log(teacher)
    student[:, 0] += shift  # A different distribution for every row.
    values = to_numpy(
        PTLoss(np.zeros(2), reduction=None, teacher_from_logits=False)(
            teacher, student
        )
    )
    assert np.all(values > 0)


@PROPERTY_SETTINGS
@given(
    teacher_logits=logits_strategy,
    data=st.data(),
    eps=arrays("float64", (3,), elements=st.floats(0.0, 2.0)),
)
def test_permuting_classes_permutes_nothing_in_the_loss(
    teacher_logits, data, eps
):
    k = teacher_logits.shape[1]
    student = data.draw(
        arrays("float64", teacher_logits.shape, elements=st.floats(-20, 20))
    )
    classwise = np.linspace(0.0, 1.0, k * 3).reshape(k, 3) * eps
    perm = data.draw(st.permutations(range(k)))
    teacher = np_softmax(teacher_logits)
    loss = PTLoss(
        classwise, temperature=2.0, reduction=None, teacher_from_logits=False
    )
    permuted = PTLoss(
        classwise[perm],
        temperature=2.0,
        reduction=None,
        teacher_from_logits=False,
    )
    np.testing.assert_allclose(
        to_numpy(loss(teacher, student)),
        to_numpy(permuted(teacher[:, perm], student[:, perm])),
        rtol=1e-5,
        atol=1e-5,
    )


@PROPERTY_SETTINGS
@given(
    teacher_logits=logits_strategy,
    data=st.data(),
    eps=arrays("float64", (4,), elements=st.floats(0.0, 3.0)),
    temperature=temperatures,
    scale=st.sampled_from([1.0, 1e2, 1e4]),
)
def test_gradients_are_finite(teacher_logits, data, eps, temperature, scale):
    student = scale * data.draw(
        arrays("float64", teacher_logits.shape, elements=st.floats(-1, 1))
    )
    teacher = np_softmax(teacher_logits)
    teacher[0] = 0.0
    teacher[0, 0] = 1.0  # A one-hot row: exact zeros and an exact one.
    value, grad = value_and_grad(
        lambda z: ops.sum(
            pt_loss(teacher, z, eps, temperature, teacher_from_logits=False)
        ),
        student,
    )
    assert np.isfinite(value)
    assert np.all(np.isfinite(grad))


@PROPERTY_SETTINGS
@given(
    teacher_logits=logits_strategy,
    data=st.data(),
    shift=st.floats(-20.0, 20.0),
    scale=st.floats(0.2, 5.0),
)
def test_standardized_loss_ignores_logit_shift_and_scale(
    teacher_logits, data, shift, scale
):
    # Rows whose logits are not nearly constant (z-scoring divides by std).
    teacher_logits = teacher_logits + np.arange(teacher_logits.shape[-1])
    student = data.draw(
        arrays("float64", teacher_logits.shape, elements=st.floats(-5, 5))
    )
    student = student + 2.0 * np.arange(student.shape[-1])
    loss = PTLoss(
        [0.3, 0.1],
        temperature=2.0,
        teacher_from_logits=True,
        standardize=True,
        reduction=None,
    )
    base = to_numpy(loss(teacher_logits, student))
    moved = to_numpy(
        loss(scale * teacher_logits + shift, student / scale - shift)
    )
    np.testing.assert_allclose(moved, base, rtol=1e-3, atol=1e-4)
