"""`SearchResult.build_distiller`: a Distiller that trains as the winner."""

import json

import keras
import numpy as np
import pytest

from keras_ptloss import PTLoss
from keras_ptloss.search import Candidate
from keras_ptloss.search import SearchBatches
from keras_ptloss.search import search_coefficients
from tests.utils import BACKEND
from tests.utils import assert_allclose
from tests.utils import np_softmax
from tests.utils import to_numpy

NUM_FEATURES, NUM_CLASSES = 6, 3
EPOCHS, BATCH_SIZE, SEED, WEIGHT = 3, 32, 5, 0.3


@pytest.fixture
def problem():
    """A linear teacher model (logits 2 x W), labels from x W, splits."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, NUM_FEATURES)).astype("float32")
    w = rng.normal(size=(NUM_FEATURES, NUM_CLASSES)).astype("float32")
    # Noisy labels, so that the student's accuracy is not saturated.
    labels = (x @ w + rng.normal(size=(300, NUM_CLASSES))).argmax(1)
    teacher = keras.Sequential(
        [keras.Input((NUM_FEATURES,)), keras.layers.Dense(3, use_bias=False)]
    )
    teacher.set_weights([2.0 * w])
    return {
        "teacher": teacher,
        "x": x[:240],
        "labels": labels[:240].astype("int32"),
        "x_val": x[240:],
        "y_val": labels[240:].astype("int32"),
    }


def build_student():
    """Initial weights from Keras's global seed (no fixed initializer
    seed): a new student starts elsewhere than the members did."""
    return keras.Sequential(
        [
            keras.Input((NUM_FEATURES,)),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.Dense(NUM_CLASSES),
        ]
    )


def search(problem, **kwargs):
    settings = dict(
        order=2,
        epochs=EPOCHS,
        candidates=[
            Candidate(np.array([2.0, 0.0]), 2.0),
            Candidate(np.array([1.0, 0.0]), 1.0, standardize=True),
            Candidate(np.array([-0.5, 0.0]), 4.0),
        ],
        eta=3,
        keep_kd=False,
        labels=problem["labels"],
        student_loss_weight=WEIGHT,
        optimizer=keras.optimizers.Adam(3e-3),
        batch_size=BATCH_SIZE,  # 240 = 7 * 32 + 16: a smaller last batch
        seed=SEED,
        calibrate=False,
        verbose=0,
    )
    settings.update(kwargs)
    return search_coefficients(
        build_student,
        problem["x"],
        problem["teacher"],
        (problem["x_val"], problem["y_val"]),
        **settings,
    )


def optimizer_settings(config):
    """An optimizer's config without its (uniquified) name."""
    return {k: v for k, v in config.items() if k != "name"}


def accuracy(model, x, y):
    logits = to_numpy(model(x))
    return float(np.mean(np_softmax(logits).argmax(-1) == y))


def test_built_distiller_retrains_the_winner(problem):
    """One search: the Distiller's settings are the search's, and trained
    on `fit_kwargs` it ends with the winner's weights."""
    result = search(problem)
    assert len(result.ranking) == 2  # the winner survived a cut
    student = build_student()
    distiller = result.build_distiller(problem["teacher"], student)
    loss = distiller.distillation_loss
    assert isinstance(loss, PTLoss)
    assert loss.get_config() == result.loss.get_config()
    assert_allclose(loss.coefficients, result.coefficients)
    assert loss.standardize == result.standardize
    assert loss.teacher_from_logits is True
    assert_allclose(distiller.temperature, result.temperature)
    assert_allclose(distiller.student_loss_weight, WEIGHT)
    assert isinstance(
        distiller.student_loss, keras.losses.SparseCategoricalCrossentropy
    )
    assert distiller.student_loss.get_config()["from_logits"] is True
    adam = optimizer_settings(keras.optimizers.Adam(3e-3).get_config())
    assert isinstance(distiller.optimizer, keras.optimizers.Adam)
    assert optimizer_settings(distiller.optimizer.get_config()) == adam
    training = dict(result.training)
    assert optimizer_settings(training.pop("optimizer")["config"]) == adam
    assert training == {
        "epochs": EPOCHS,
        "batch_size": BATCH_SIZE,
        "seed": SEED,
        "num_examples": 240,
        "student_loss_weight": WEIGHT,
        "teacher_from_logits": True,
    }
    json.dumps(result.to_dict())
    assert result.to_dict()["training"] == result.training
    assert (
        f"trained: {EPOCHS} epochs, batch_size={BATCH_SIZE}, seed={SEED}, "
        f"student_loss_weight={WEIGHT:g}, Adam, learning_rate=0.003"
    ) in result.summary()
    # The student starts where every member started.
    for got, want in zip(
        distiller.student.get_weights(), result.initial_weights, strict=True
    ):
        np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError, match="`y`.*student_loss_weight=0.3"):
        result.fit_kwargs(problem["x"])
    history = distiller.fit(
        **result.fit_kwargs(problem["x"], problem["labels"]), verbose=0
    )
    assert len(history.history["loss"]) == EPOCHS
    winner = result.uncalibrated_student
    got, want = student.get_weights(), winner.get_weights()
    # The winner moved away from its start: the comparison is not trivial.
    assert not np.allclose(want[0], result.initial_weights[0], atol=1e-2)
    for a, b in zip(got, want, strict=True):
        # One compiled step over all members rounds the last bits of a
        # few values differently on JAX and TensorFlow.
        assert_allclose(a, b, rtol=1e-6, atol=1e-7)
        if BACKEND == "torch":
            np.testing.assert_array_equal(a, b)
    x_val, y_val = problem["x_val"], problem["y_val"]
    assert abs(accuracy(student, x_val, y_val) - result.score) <= 0.005
    assert accuracy(winner, x_val, y_val) == result.score


def test_distillation_alone_and_bad_arguments(problem):
    result = search(
        problem,
        labels=None,
        student_loss_weight=0.0,
        candidates=[Candidate(np.array([0.5, 0.0]), 4.0)],
        epochs=1,
        optimizer=None,
    )
    distiller = result.build_distiller(problem["teacher"], build_student())
    assert distiller.student_loss is None
    assert_allclose(distiller.student_loss_weight, 0.0)
    assert_allclose(distiller.temperature, 4.0)
    # The search's default optimizer, Adam(1e-3).
    assert isinstance(distiller.optimizer, keras.optimizers.Adam)
    assert optimizer_settings(distiller.optimizer.get_config()) == (
        optimizer_settings(keras.optimizers.Adam(1e-3).get_config())
    )
    kwargs = result.fit_kwargs(problem["x"])  # no labels needed
    assert (kwargs["epochs"], kwargs["steps_per_epoch"]) == (1, 8)
    teacher = problem["teacher"]
    with pytest.raises(ValueError, match="the search's 240 examples"):
        result.fit_kwargs(problem["x"][:100])
    with pytest.raises(ValueError, match="`y`.*search's 240 examples"):
        result.fit_kwargs(problem["x"], problem["labels"][:100])
    wide = keras.Sequential(
        [keras.Input((NUM_FEATURES,)), keras.layers.Dense(NUM_CLASSES)]
    )
    with pytest.raises(ValueError, match="searched architecture"):
        result.build_distiller(teacher, wide)
    unbuilt = keras.Sequential([keras.layers.Dense(NUM_CLASSES)])
    with pytest.raises(ValueError, match="must be built"):
        result.build_distiller(teacher, unbuilt)
    with pytest.raises(ValueError, match="`student` must be a keras.Model"):
        result.build_distiller(teacher, "student")


def test_search_batches_follow_the_searchs_permutations():
    x = np.arange(10, dtype="float32")[:, None]
    y = np.arange(10) + 100
    batches = SearchBatches({"a": x}, y, batch_size=4, seed=7)
    assert batches.num_batches is None  # Keras never reorders it
    rng = np.random.default_rng(7)
    for epoch in range(3):
        order = rng.permutation(10)
        for step, rows in enumerate((order[:4], order[4:8], order[8:])):
            got_x, got_y = batches[3 * epoch + step]
            np.testing.assert_array_equal(got_x["a"][:, 0], rows)
            np.testing.assert_array_equal(got_y, rows + 100)
    (alone,) = SearchBatches(x, None, 4, seed=7)[2]
    assert alone.shape == (2, 1)
