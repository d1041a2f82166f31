"""`search_coefficients` with dict inputs (multi-input students)."""

import keras
import numpy as np
import pytest

from keras_ptloss import PTLoss
from keras_ptloss.search import Candidate
from keras_ptloss.search import search_coefficients
from tests.test_search import assert_same_weights
from tests.test_search import train_alone
from tests.utils import assert_allclose
from tests.utils import np_softmax

NUM_CLASSES = 3


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(200, 4)).astype("float32")
    b = rng.normal(size=(200, 2)).astype("float32")
    weights = rng.normal(size=(6, NUM_CLASSES))
    clean = np.concatenate([a, b], axis=1) @ weights
    teacher = (2.0 * clean + rng.normal(size=clean.shape)).astype("float32")
    labels = clean.argmax(axis=1).astype("int32")
    return {
        "x": {"a": a[:160], "b": b[:160]},
        "teacher": teacher[:160],
        "x_val": {"a": a[160:], "b": b[160:]},
        "y_val": labels[160:],
    }


def build_student():
    """Two named inputs, concatenated, then an MLP (seeded weights)."""
    a = keras.Input((4,), name="a")
    b = keras.Input((2,), name="b")
    h = keras.layers.Concatenate()([a, b])
    h = keras.layers.Dense(
        8,
        activation="relu",
        kernel_initializer=keras.initializers.GlorotUniform(3),
    )(h)
    out = keras.layers.Dense(
        NUM_CLASSES, kernel_initializer=keras.initializers.GlorotUniform(4)
    )(h)
    return keras.Model({"a": a, "b": b}, out)


def np_logits(model, x):
    """float64 forward pass of `build_student`'s model in numpy."""
    w1, b1, w2, b2 = (np.asarray(w, "float64") for w in model.get_weights())
    h = np.concatenate([x["a"], x["b"]], axis=1).astype("float64")
    return np.maximum(h @ w1 + b1, 0.0) @ w2 + b2


def test_dict_inputs_winner_equals_its_separate_training(data):
    candidates = [
        Candidate(np.zeros(2), 2.0),
        Candidate(np.array([2.0, 0.0]), 2.0),
        Candidate(np.array([-0.5, 0.0]), 1.0),
    ]
    result = search_coefficients(
        build_student,
        data["x"],
        data["teacher"],
        (data["x_val"], data["y_val"]),
        order=2,
        epochs=3,
        candidates=candidates,
        eta=2,
        keep_kd=False,
        batch_size=32,
        seed=5,
        verbose=0,
    )
    # The winner, trained alone on the same dicts in the search's order.
    loss = PTLoss(
        result.coefficients, result.temperature, teacher_from_logits=True
    )
    alone = train_alone(
        loss, data["x"], data["teacher"], 3, 32, seed=5, build=build_student
    )
    student = result.uncalibrated_student
    assert_same_weights(student, alone)
    # The scores are those of the winner's validation predictions.
    probs = np_softmax(np_logits(student, data["x_val"]))
    accuracy = np.mean(probs.argmax(-1) == data["y_val"])
    assert_allclose(result.ranking[-1]["members"][0]["score"], accuracy)


@pytest.mark.parametrize(
    "x, match",
    [
        ({}, "empty dict"),
        (
            {"a": np.zeros((160, 4)), "b": np.zeros((150, 2))},
            "same number of examples",
        ),
        ({"a": np.zeros((0, 4)), "b": np.zeros((0, 2))}, r"`x\['a'\]` must"),
    ],
)
def test_bad_dict_inputs_are_refused_clearly(data, x, match):
    with pytest.raises(ValueError, match=match):
        search_coefficients(
            build_student,
            x,
            data["teacher"],
            (data["x_val"], data["y_val"]),
            order=2,
            epochs=1,
            verbose=0,
        )
