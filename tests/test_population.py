"""`StudentPopulation`'s stacked weights: members with state, penalties,
the optimizers it refuses, saving, and the search's full last batch.

The references are the same students trained alone with `PTLoss`, and
numpy for the penalties.
"""

import keras
import numpy as np
import pytest

from keras_ptloss import PTLoss
from keras_ptloss.population import StudentPopulation
from keras_ptloss.search import _full_batches
from tests.utils import assert_allclose
from tests.utils import to_numpy

FEATURES, CLASSES = 5, 3
TEMPERATURES = (1.0, 3.0)


@pytest.fixture
def batch():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, FEATURES)).astype("float32")
    teacher = (2.0 * rng.normal(size=(40, CLASSES))).astype("float32")
    return x, teacher


def build(layers=(), regularizer=None, seed=0):
    """An MLP with `layers` (after its hidden layer) and the same start."""
    initializer = keras.initializers.GlorotUniform(seed)
    return keras.Sequential(
        [
            keras.Input((FEATURES,)),
            keras.layers.Dense(
                6,
                activation="tanh",
                kernel_initializer=initializer,
                kernel_regularizer=regularizer,
            ),
            *layers,
            keras.layers.Dense(CLASSES, kernel_initializer=initializer),
        ]
    )


def population_of(make):
    members = [make() for _ in TEMPERATURES]
    population = StudentPopulation(
        members, np.zeros((len(members), 2)), TEMPERATURES
    )
    population.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.5))
    return population, members


def trained_alone(make, temperature, x, teacher, **fit):
    alone = make()
    alone.compile(
        optimizer=keras.optimizers.SGD(0.1, momentum=0.5),
        loss=PTLoss(np.zeros(2), temperature, teacher_from_logits=True),
    )
    alone.fit(x, teacher, shuffle=False, verbose=0, **fit)
    return alone


def assert_members_train_as_alone(make, x, teacher, batch_size):
    """One population epoch of `make`'s students against each alone."""
    population, members = population_of(make)
    population.fit(x, teacher, batch_size=batch_size, shuffle=False, verbose=0)
    for member, temperature in zip(members, TEMPERATURES, strict=True):
        alone = trained_alone(
            make, temperature, x, teacher, batch_size=batch_size
        )
        for got, want in zip(
            member.get_weights(), alone.get_weights(), strict=True
        ):
            assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    return alone


def test_members_with_batch_statistics_train_as_alone(batch):
    def make():
        return build([keras.layers.BatchNormalization()])

    alone = assert_members_train_as_alone(make, *batch, batch_size=16)
    # The weights compared include the moving mean and variance.
    assert len(alone.non_trainable_weights) == 2


def test_random_members_train_and_keep_their_own_seeds(batch):
    x, teacher = batch

    def make():
        return build([keras.layers.Dropout(0.5, seed=7)])

    population, members = population_of(make)
    start = members[0].get_weights()
    population.fit(x, teacher, batch_size=16, shuffle=False, verbose=0)
    assert np.abs(members[0].get_weights()[0] - start[0]).max() > 1e-3
    # At inference Dropout is the identity: each column is its member.
    outputs = to_numpy(population(x))
    for i, member in enumerate(members):
        assert_allclose(outputs[:, i], to_numpy(member(x)), atol=1e-6)


def test_convolutional_members_train_as_alone(batch):
    """Conv2D, which torch.vmap cannot run: there the members take turns."""
    x, teacher = batch
    images = np.repeat(x[:, :4, None, None], 4, axis=2)  # (40, 4, 4, 1)

    def make():
        return keras.Sequential(
            [
                keras.Input((4, 4, 1)),
                keras.layers.Conv2D(
                    3,
                    2,
                    activation="tanh",
                    kernel_initializer=keras.initializers.GlorotUniform(0),
                ),
                keras.layers.Flatten(),
                keras.layers.Dense(
                    CLASSES,
                    kernel_initializer=keras.initializers.GlorotUniform(1),
                ),
            ]
        )

    assert_members_train_as_alone(make, images, teacher, batch_size=16)


def test_regularized_members_pay_their_own_penalty(batch):
    x, teacher = batch

    def make():
        return build(regularizer=keras.regularizers.L2(0.1))

    population, members = population_of(make)
    population(x)
    kernels = [to_numpy(m.layers[0].kernel) for m in members]
    expected = sum(0.1 * np.sum(k**2) for k in kernels)
    assert_allclose(to_numpy(sum(population.losses)), expected, rtol=1e-5)
    assert_members_train_as_alone(make, x, teacher, batch_size=20)


@pytest.mark.parametrize(
    "optimizer, match",
    [
        (keras.optimizers.SGD(clipnorm=1.0), "clipnorm=1.0"),
        (keras.optimizers.Adam(global_clipnorm=2.0), "global_clipnorm=2.0"),
        (keras.optimizers.Lamb(), "Received: Lamb"),
        (keras.optimizers.Adafactor(), "Received: Adafactor"),
    ],
)
def test_optimizers_that_couple_the_members_are_refused(optimizer, match):
    population = StudentPopulation([build(), build()], np.zeros((2, 1)), [1, 2])
    population.compile(optimizer=optimizer)
    with pytest.raises(ValueError, match=match):
        population.fit(np.zeros((2, FEATURES)), np.zeros((2, CLASSES)))


def test_saved_population_loads_with_its_weights(batch, tmp_path):
    x, teacher = batch
    population, members = population_of(build)
    population.fit(x, teacher, batch_size=16, verbose=0)
    path = str(tmp_path / "population.keras")
    population.save(path)
    restored = keras.saving.load_model(path)
    assert_allclose(to_numpy(restored(x)), to_numpy(population(x)))
    for got, want in zip(restored.members, members, strict=True):
        for a, b in zip(got.get_weights(), want.get_weights(), strict=True):
            assert_allclose(a, b)


def test_a_callback_reads_and_sets_the_weights_between_steps(batch):
    """At a batch end a callback sees that step's weights, and what it
    assigns is where the next step starts (JAX keeps them off the
    variables during `fit`)."""
    x, teacher = batch

    def start(zero=False):
        population, _ = population_of(build)
        population.compile(optimizer=keras.optimizers.SGD(0.1))
        for variable in population.trainable_variables * zero:
            variable.assign(np.zeros(variable.shape))
        return population

    class ZeroAfterFirstStep(keras.callbacks.Callback):
        def on_train_batch_end(self, step, logs=None):
            if step == 0:
                weights = self.model.trainable_variables
                self.seen = [to_numpy(v) for v in weights]
                for variable in weights:
                    variable.assign(np.zeros(variable.shape))

    callback = ZeroAfterFirstStep()
    population = start()
    population.fit(
        x,
        teacher,
        batch_size=20,
        shuffle=False,
        verbose=0,
        callbacks=[callback],
    )
    first, second = start(), start(zero=True)
    first.fit(x[:20], teacher[:20], batch_size=20, verbose=0)
    second.fit(x[20:], teacher[20:], batch_size=20, verbose=0)
    for got, want in zip(callback.seen, first.trainable_variables, strict=True):
        assert_allclose(got, to_numpy(want))
    for got, want in zip(
        population.trainable_variables, second.trainable_variables, strict=True
    ):
        assert_allclose(to_numpy(got), to_numpy(want))


def test_full_last_batch_trains_as_the_short_one(batch):
    """The search fills the last batch up with rows of weight 0 (JAX and
    TensorFlow): the same training as Keras's short last batch."""
    x, teacher = batch
    permutation = np.random.default_rng(1).permutation(len(x))
    settings = type("Training", (), {"batch_size": 16})
    filled, plain = population_of(build), population_of(build)
    order, weights = _full_batches(filled[0], permutation, settings)
    if keras.backend.backend() == "torch":
        assert weights is None  # nothing is compiled per shape
    else:
        assert len(order) == 48 and list(weights[32:]) == [2.0] * 8 + [0] * 8
    for _ in range(2):
        filled[0].fit(
            x[order],
            teacher[order],
            sample_weight=weights,
            batch_size=16,
            shuffle=False,
            verbose=0,
        )
        plain[0].fit(
            x[permutation],
            teacher[permutation],
            batch_size=16,
            shuffle=False,
            verbose=0,
        )
    for got, want in zip(filled[1], plain[1], strict=True):
        for a, b in zip(got.get_weights(), want.get_weights(), strict=True):
            assert_allclose(a, b, rtol=1e-5, atol=1e-6)
