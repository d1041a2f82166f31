"""Distiller: losses against numpy, frozen teacher, offline data, saving.

Values changed during `fit` are tested with jit on and off on every backend
(JIT_MODES); the other `fit` tests use FIT_JIT_MODES (both on JAX, the
default elsewhere; see tests/utils.py).
"""

import inspect

import keras
import numpy as np
import pytest

from keras_ptloss import Distiller
from keras_ptloss import KDLoss
from keras_ptloss import PTLoss
from keras_ptloss import ReestimateCoefficients
from keras_ptloss import teacher_outputs
from keras_ptloss._checks import fingerprint
from keras_ptloss.datasets import load_mnist1d
from tests.utils import FIT_JIT_MODES
from tests.utils import JIT_MODES
from tests.utils import assert_allclose
from tests.utils import np_mlp_logits
from tests.utils import np_pt_loss
from tests.utils import np_sparse_ce
from tests.utils import tiny_classifier
from tests.utils import to_numpy

N, F, K = 64, 5, 3
EPS0 = [0.0, 0.0]
EPS1 = [0.6, -0.1]
EPS2 = [-0.3, 0.2]


@pytest.fixture
def data(rng):
    x = rng.normal(size=(N, F)).astype("float32")
    y = rng.integers(0, K, size=N).astype("int32")
    return x, y


def make_distiller(
    eps=EPS0, temperature=2.0, student_loss_weight=0.25, teacher=None
):
    if teacher is None:
        teacher = tiny_classifier(F, K, hidden=8, seed=0)
    student = tiny_classifier(F, K, hidden=6, seed=10)
    loss = PTLoss(eps, temperature=temperature, teacher_from_logits=True)
    return Distiller(
        teacher, student, loss, student_loss_weight=student_loss_weight
    )


def compile_distiller(distiller, jit_compile="auto", lr=0.0, **kwargs):
    optimizer = (
        keras.optimizers.SGD(lr) if lr == 0.0 else keras.optimizers.Adam(lr)
    )
    distiller.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=jit_compile,
        **kwargs,
    )
    return distiller


def expected_losses(distiller, x, y, eps, temperature, weight):
    """(total, distillation, student) epoch means, in float64 numpy."""
    t = np_mlp_logits(distiller.teacher, x)
    z = np_mlp_logits(distiller.student, x)
    distill = np.mean(np_pt_loss(t, z, eps, temperature, True))
    if y is None:
        return distill, distill, 0.0
    student = np.mean(np_sparse_ce(z, y))
    return weight * student + (1 - weight) * distill, distill, student


def weights_of(model):
    return [np.array(w) for w in model.get_weights()]


# --- schedulable state -------------------------------------------------------


@pytest.mark.parametrize("jit_compile", JIT_MODES)
def test_values_assigned_by_a_callback_set_the_next_epochs_loss(
    data, jit_compile
):
    x, y = data
    distiller = compile_distiller(make_distiller(), jit_compile)

    def schedule(epoch, logs):
        if epoch == 1:
            distiller.set_coefficients(EPS1)
        if epoch == 2:
            distiller.set_temperature(3.0)
            distiller.set_student_loss_weight(0.5)

    history = distiller.fit(
        x,
        y,
        epochs=3,
        batch_size=16,
        shuffle=False,
        verbose=0,
        callbacks=[keras.callbacks.LambdaCallback(on_epoch_begin=schedule)],
    ).history
    settings = [(EPS0, 2.0, 0.25), (EPS1, 2.0, 0.25), (EPS1, 3.0, 0.5)]
    for epoch, (eps, temperature, weight) in enumerate(settings):
        total, distill, student = expected_losses(
            distiller, x, y, eps, temperature, weight
        )
        assert_allclose(history["loss"][epoch], total, rtol=1e-5)
        assert_allclose(history["distillation_loss"][epoch], distill, 1e-5)
        assert_allclose(history["student_loss"][epoch], student, rtol=1e-5)
    assert_allclose(distiller.coefficients, EPS1)
    assert_allclose(distiller.temperature, 3.0)
    assert_allclose(distiller.student_loss_weight, 0.5)


@pytest.mark.parametrize("jit_compile", JIT_MODES)
@pytest.mark.parametrize("loss_cls", [PTLoss, KDLoss])
def test_changes_made_on_the_loss_set_the_next_epochs_loss(
    data, jit_compile, loss_cls
):
    # The Distiller's loss is the one place of the state: a callback that
    # changes it (not the Distiller) reaches the next compiled step.
    x, y = data
    eps_after = EPS1 if loss_cls is PTLoss else [0.0]
    loss = loss_cls(temperature=2.0)
    if loss_cls is PTLoss:
        loss = PTLoss(EPS0, temperature=2.0)
    distiller = Distiller(
        tiny_classifier(F, K, hidden=8, seed=0),
        tiny_classifier(F, K, hidden=6, seed=10),
        loss,
        student_loss_weight=0.0,
    )
    compile_distiller(distiller, jit_compile)
    loss = distiller.distillation_loss

    def schedule(epoch, logs):
        if epoch == 1:
            loss.set_temperature(3.0)
            if loss_cls is PTLoss:
                loss.set_coefficients(EPS1)

    history = distiller.fit(
        x,
        epochs=2,
        batch_size=16,
        verbose=0,
        callbacks=[keras.callbacks.LambdaCallback(on_epoch_begin=schedule)],
    ).history
    for epoch, (eps, temperature) in enumerate(
        [([0.0], 2.0), (eps_after, 3.0)]
    ):
        _, distill, _ = expected_losses(
            distiller, x, None, eps, temperature, 0.0
        )
        assert_allclose(history["loss"][epoch], distill, rtol=1e-5)
    assert_allclose(distiller.temperature, 3.0)


def test_schedulable_values_are_non_trainable_model_variables():
    distiller = make_distiller()
    loss = distiller.distillation_loss
    # The loss's own variables, not copies.
    assert distiller.coefficients is loss.coefficients
    assert distiller.temperature is loss.temperature_variable
    own = {id(v) for v in distiller.non_trainable_variables}
    assert all(id(v) in own for v in loss.variables)
    # The Distiller's own variables keep the saved layout of the versions
    # that copied the loss's values: coefficients, weight, temperature.
    assert [id(v) for v in distiller.non_trainable_variables[:3]] == [
        id(loss.coefficients),
        id(distiller.student_loss_weight),
        id(loss.temperature_variable),
    ]
    assert [id(v) for v in distiller.schedulable_variables] == [
        id(loss.coefficients),
        id(distiller.student_loss_weight),
        id(loss.temperature_variable),
    ]
    # Teacher (frozen), loss (2) and the student-loss weight: nothing else.
    assert len(distiller.non_trainable_variables) == (
        len(distiller.teacher.weights) + len(loss.variables) + 1
    )
    for variable in (
        distiller.coefficients,
        distiller.temperature,
        distiller.student_loss_weight,
    ):
        assert id(variable) in own
        assert not variable.trainable
    assert {id(v) for v in distiller.trainable_variables} == {
        id(v) for v in distiller.student.trainable_variables
    }


@pytest.mark.parametrize("jit_compile", FIT_JIT_MODES)
def test_fit_without_labels_is_pure_distillation(data, jit_compile):
    x, _ = data
    distiller = compile_distiller(
        make_distiller(eps=EPS1), jit_compile, metrics=["accuracy"]
    )
    history = distiller.fit(x, epochs=1, batch_size=16, verbose=0).history
    _, distill, _ = expected_losses(distiller, x, None, EPS1, 2.0, 0.25)
    assert sorted(history) == ["distillation_loss", "loss", "student_loss"]
    assert_allclose(history["loss"][0], distill, rtol=1e-5)
    assert_allclose(history["distillation_loss"][0], distill, rtol=1e-5)
    assert history["student_loss"][0] == 0.0


def test_kd_loss_distiller_matches_numpy(data):
    x, y = data
    teacher = tiny_classifier(F, K, seed=0)
    student = tiny_classifier(F, K, hidden=6, seed=10)
    distiller = Distiller(
        teacher,
        student,
        KDLoss(temperature=4.0, teacher_from_logits=True),
        student_loss_weight=0.0,
    )
    assert distiller.coefficients is None
    compile_distiller(distiller)
    history = distiller.fit(x, y, epochs=1, batch_size=16, verbose=0).history
    t, z = np_mlp_logits(teacher, x), np_mlp_logits(student, x)
    expected = np.mean(np_pt_loss(t, z, [0.0], 4.0, True))
    assert_allclose(history["loss"][0], expected, rtol=1e-5)
    with pytest.raises(ValueError, match="KDLoss"):
        distiller.set_coefficients([0.1])


def test_sample_weights_weight_both_terms(data, rng):
    x, y = data
    weights = rng.uniform(0.0, 2.0, size=N).astype("float32")
    distiller = compile_distiller(make_distiller(eps=EPS1))
    history = distiller.fit(
        x, y, sample_weight=weights, epochs=1, batch_size=16, verbose=0
    ).history
    t = np_mlp_logits(distiller.teacher, x)
    z = np_mlp_logits(distiller.student, x)
    distill = np.mean(weights * np_pt_loss(t, z, EPS1, 2.0, True))
    student = np.mean(weights * np_sparse_ce(z, y))
    assert_allclose(history["distillation_loss"][0], distill, rtol=1e-5)
    assert_allclose(
        history["loss"][0], 0.25 * student + 0.75 * distill, rtol=1e-5
    )


# --- the teacher -------------------------------------------------------------


@pytest.mark.parametrize("jit_compile", FIT_JIT_MODES)
def test_teacher_weights_are_bit_identical_after_fit(data, jit_compile):
    x, y = data
    teacher = keras.Sequential(
        [
            keras.Input((F,)),
            keras.layers.Dense(8),
            keras.layers.BatchNormalization(),
            keras.layers.Dropout(0.5),
            keras.layers.Dense(K),
        ]
    )
    distiller = compile_distiller(
        make_distiller(eps=EPS1, teacher=teacher), jit_compile, lr=0.05
    )
    teacher_before = weights_of(teacher)
    student_before = weights_of(distiller.student)
    distiller.fit(x, y, epochs=2, batch_size=16, verbose=0)
    assert not teacher.trainable
    for before, after in zip(teacher_before, weights_of(teacher), strict=True):
        assert np.array_equal(before, after)
    changed = [
        not np.array_equal(a, b)
        for a, b in zip(
            student_before, weights_of(distiller.student), strict=True
        )
    ]
    assert all(changed)


# --- evaluate / predict / metrics --------------------------------------------


def test_predict_and_metrics_use_the_student(data):
    x, y = data
    distiller = compile_distiller(
        make_distiller(eps=EPS1), metrics=["sparse_categorical_accuracy"]
    )
    assert_allclose(
        distiller.predict(x, verbose=0),
        np_mlp_logits(distiller.student, x),
        rtol=1e-5,
        atol=1e-5,
    )
    logs = distiller.evaluate(x, y, batch_size=16, verbose=0, return_dict=True)
    z = np_mlp_logits(distiller.student, x)
    accuracy = np.mean(z.argmax(-1) == y)
    assert_allclose(logs["sparse_categorical_accuracy"], accuracy)
    total, distill, student = expected_losses(distiller, x, y, EPS1, 2.0, 0.25)
    assert_allclose(logs["loss"], total, rtol=1e-5)
    assert_allclose(logs["distillation_loss"], distill, rtol=1e-5)
    assert_allclose(logs["student_loss"], student, rtol=1e-5)


# --- offline distillation ----------------------------------------------------


class ArrayBatches(keras.utils.PyDataset):
    def __init__(self, x, y, batch_size, noise=0.0):
        super().__init__()
        self.x, self.y, self.batch_size, self.noise = x, y, batch_size, noise

    def __len__(self):
        return -(-len(self.x) // self.batch_size)

    def __getitem__(self, index):
        rows = slice(index * self.batch_size, (index + 1) * self.batch_size)
        x = self.x[rows]
        if self.noise:
            x = x + np.random.normal(scale=self.noise, size=x.shape)
        return x.astype("float32"), self.y[rows]


def _source(kind, x, y):
    if kind == "numpy":
        return (x, y)
    if kind == "tf.data":
        import tensorflow as tf

        return (tf.data.Dataset.from_tensor_slices((x, y)).batch(20),)
    return (ArrayBatches(x, y, 20),)


@pytest.mark.parametrize("kind", ["numpy", "tf.data", "PyDataset"])
@pytest.mark.parametrize("jit_compile", FIT_JIT_MODES)
def test_offline_losses_equal_online_without_teacher_forward(
    data, kind, jit_compile
):
    x, y = data
    fit_kwargs = dict(epochs=2, verbose=0, shuffle=False)
    if kind == "numpy":
        fit_kwargs["batch_size"] = 20

    keras.utils.set_random_seed(7)
    online = compile_distiller(make_distiller(eps=EPS1), jit_compile, 0.05)
    online_history = online.fit(*_source(kind, x, y), **fit_kwargs).history

    keras.utils.set_random_seed(7)
    offline = compile_distiller(make_distiller(eps=EPS1), jit_compile, 0.05)
    source = _source(kind, x, y)
    if kind == "numpy":
        data_offline = offline.precompute_teacher(*source, batch_size=7)
        x_offline, y_offline, _ = data_offline
        assert sorted(x_offline) == ["student_inputs", "teacher_outputs"]
        source = (x_offline, y_offline)
    else:
        source = (offline.precompute_teacher(source[0]),)
    # A poisoned teacher: any forward pass from now on would give NaN losses.
    offline.teacher.set_weights(
        [np.full_like(w, np.nan) for w in offline.teacher.get_weights()]
    )
    offline_history = offline.fit(*source, **fit_kwargs).history

    for key in ("loss", "distillation_loss", "student_loss"):
        assert_allclose(offline_history[key], online_history[key], rtol=1e-5)
    for a, b in zip(
        weights_of(offline.student), weights_of(online.student), strict=True
    ):
        assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_offline_pydataset_with_random_augmentation_raises(data):
    x, y = data
    distiller = compile_distiller(make_distiller())
    offline = distiller.precompute_teacher(ArrayBatches(x, y, 16, noise=0.1))
    with pytest.raises(ValueError, match="changed since its teacher outputs"):
        offline[0]


def test_precompute_rejects_irregular_tf_data_batches(data):
    import tensorflow as tf

    x, y = data
    ds = tf.data.Dataset.from_tensor_slices((x, y)).take(30).batch(10)
    ds = ds.concatenate(tf.data.Dataset.from_tensor_slices((x, y)).batch(16))
    with pytest.raises(ValueError, match="same size"):
        make_distiller().precompute_teacher(ds)


def test_teacher_output_cache_functions(data, tmp_path):
    x, _ = data
    teacher = tiny_classifier(F, K, seed=0)
    path = str(tmp_path / "teacher.npz")
    outputs = teacher_outputs.precompute_arrays(teacher, x, 16, cache=path)
    assert_allclose(outputs, np_mlp_logits(teacher, x), rtol=1e-5, atol=1e-5)
    with np.load(path) as archive:
        # One fingerprint function for inputs, outputs and weights.
        assert int(archive["data_fingerprint"]) == fingerprint(x)
        assert int(archive["outputs_fingerprint"]) == fingerprint(outputs)
    np.testing.assert_array_equal(
        teacher_outputs.load_cache(path, teacher, x), outputs
    )
    with pytest.raises(ValueError, match="other weights"):
        teacher_outputs.load_cache(path, tiny_classifier(F, K, seed=5), x)
    with pytest.raises(ValueError, match="other inputs"):
        teacher_outputs.load_cache(path, teacher, x + 1.0)


# --- saving ------------------------------------------------------------------


def test_save_load_and_continue_training(data, tmp_path):
    x, y = data
    distiller = compile_distiller(
        make_distiller(eps=EPS1), lr=0.05, metrics=["accuracy"]
    )
    distiller.fit(x, y, epochs=1, batch_size=16, shuffle=False, verbose=0)
    distiller.set_coefficients(EPS2)
    distiller.set_temperature(3.0)
    path = tmp_path / "distiller.keras"
    distiller.save(path)

    restored = keras.saving.load_model(path)
    assert isinstance(restored, Distiller)
    assert restored.compiled
    assert isinstance(restored.optimizer, keras.optimizers.Adam)
    assert int(to_numpy(restored.optimizer.iterations)) == 4
    assert not restored.teacher.trainable
    assert len(restored.trainable_variables) == len(
        restored.student.trainable_variables
    )
    assert_allclose(restored.coefficients, EPS2)
    assert_allclose(restored.temperature, 3.0)
    assert restored.distillation_loss.temperature == 3.0
    assert restored.coefficients is restored.distillation_loss.coefficients
    assert restored.distillation_loss.teacher_from_logits is True
    assert_allclose(restored.student_loss_weight, 0.25)
    assert_allclose(
        restored.predict(x, verbose=0), distiller.predict(x, verbose=0)
    )

    teacher_before = weights_of(restored.teacher)
    kwargs = dict(epochs=1, batch_size=16, shuffle=False, verbose=0)
    h1 = distiller.fit(x, y, **kwargs).history
    h2 = restored.fit(x, y, **kwargs).history
    assert_allclose(h2["loss"], h1["loss"], rtol=1e-6)
    for a, b in zip(weights_of(restored), weights_of(distiller), strict=True):
        assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    for a, b in zip(teacher_before, weights_of(restored.teacher), strict=True):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("jit_compile", FIT_JIT_MODES)
def test_a_reloaded_distiller_takes_changes_in_the_next_epoch(
    data, tmp_path, jit_compile
):
    x, y = data
    distiller = compile_distiller(make_distiller(eps=EPS1), jit_compile)
    distiller.save(tmp_path / "distiller.keras")
    restored = keras.saving.load_model(tmp_path / "distiller.keras")
    loss = restored.distillation_loss
    schedule = keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda epoch, logs: (
            epoch == 1
            and (loss.set_coefficients(EPS2), loss.set_temperature(3.0))
        )
    )
    history = restored.fit(
        x, y, epochs=2, batch_size=16, verbose=0, callbacks=[schedule]
    ).history
    for epoch, (eps, temperature) in enumerate([(EPS1, 2.0), (EPS2, 3.0)]):
        total, distill, _ = expected_losses(
            restored, x, y, eps, temperature, 0.25
        )
        assert_allclose(history["loss"][epoch], total, rtol=1e-5)
        assert_allclose(history["distillation_loss"][epoch], distill, 1e-5)


def test_export_student_is_one_call(data, tmp_path):
    x, _ = data
    distiller = make_distiller()
    path = tmp_path / "student.keras"
    distiller.export_student(path)
    student = keras.saving.load_model(path)
    assert_allclose(
        student.predict(x, verbose=0), distiller.student.predict(x, verbose=0)
    )
    with pytest.raises(ValueError, match="filepath"):
        distiller.export_student(tmp_path / "student.h5")


def test_config_round_trip_refreezes_the_teacher():
    distiller = make_distiller(eps=EPS1, student_loss_weight=0.4)
    config = distiller.get_config()
    restored = Distiller.from_config(config)
    assert not restored.teacher.trainable
    assert_allclose(restored.coefficients, EPS1)
    assert_allclose(restored.student_loss_weight, 0.4)
    assert_allclose(restored.temperature, 2.0)
    assert restored.get_config() == config


class Interrupt(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 1:
            raise RuntimeError("interrupted")


@pytest.mark.parametrize("jit_compile", FIT_JIT_MODES)
def test_backup_and_restore_resumes_to_the_uninterrupted_weights(
    data, tmp_path, jit_compile
):
    x, y = data
    kwargs = dict(epochs=3, batch_size=16, shuffle=False, verbose=0)

    def fresh():
        distiller = compile_distiller(
            make_distiller(eps=EPS1), jit_compile, lr=0.05
        )
        schedule = keras.callbacks.LambdaCallback(
            on_epoch_begin=lambda epoch, logs: (
                epoch == 2 and distiller.set_coefficients(EPS2)
            )
        )
        return distiller, schedule

    reference, schedule = fresh()
    reference.fit(x, y, callbacks=[schedule], **kwargs)

    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))
    interrupted, schedule = fresh()
    with pytest.raises(RuntimeError, match="interrupted"):
        interrupted.fit(
            x, y, callbacks=[schedule, backup, Interrupt()], **kwargs
        )
    resumed, schedule = fresh()
    history = resumed.fit(x, y, callbacks=[schedule, backup], **kwargs)
    assert len(history.history["loss"]) == 1  # only the last epoch ran
    for a, b in zip(weights_of(resumed), weights_of(reference), strict=True):
        assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    assert_allclose(resumed.coefficients, EPS2)


# --- end to end --------------------------------------------------------------


def test_mnist1d_cnn_teacher_to_mlp_student_beats_chance():
    splits = load_mnist1d(num_samples=2000, seed=0)
    (x_train, y_train), (x_transfer, _) = splits["train"], splits["transfer"]
    x_val, y_val = splits["validation"]
    x_test, y_test = splits["test"]
    teacher = keras.Sequential(
        [
            keras.Input((40,)),
            keras.layers.Reshape((40, 1)),
            keras.layers.Conv1D(16, 5, padding="same", activation="relu"),
            keras.layers.MaxPooling1D(2),
            keras.layers.Conv1D(32, 3, padding="same", activation="relu"),
            keras.layers.GlobalMaxPooling1D(),
            keras.layers.Dense(10),
        ]
    )
    teacher.compile(
        optimizer=keras.optimizers.Adam(0.01),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    teacher.fit(x_train, y_train, epochs=6, batch_size=32, verbose=0)
    student = keras.Sequential(
        [
            keras.Input((40,)),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(10),
        ]
    )
    distiller = Distiller(
        teacher,
        student,
        PTLoss(temperature=2.0, teacher_from_logits=True),
        student_loss_weight=0.0,
    )
    distiller.compile(
        optimizer=keras.optimizers.Adam(0.01),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    callback = ReestimateCoefficients(
        (x_val, y_val),
        selector_kwargs=dict(num_candidates=16, max_iter=5),
        verbose=0,
    )
    history = distiller.fit(
        x_transfer, epochs=2, batch_size=32, callbacks=[callback], verbose=0
    ).history
    assert callback.num_selections == 1
    assert np.all(np.isfinite(history["loss"]))
    assert history["loss"][1] < history["loss"][0]
    chance = 0.1  # 10 balanced classes; 400 test examples: sd ~ 0.015
    teacher_acc = np.mean(
        to_numpy(teacher.predict(x_test, verbose=0)).argmax(-1) == y_test
    )
    logs = distiller.evaluate(x_test, y_test, verbose=0, return_dict=True)
    assert teacher_acc > chance + 0.2
    assert logs["accuracy"] > chance + 0.1


# --- argument validation -----------------------------------------------------


def _models():
    return tiny_classifier(F, K, seed=0), tiny_classifier(F, K, seed=1)


def _relu_model():
    return keras.Sequential(
        [keras.Input((F,)), keras.layers.Dense(K, "relu", name="relu_out")]
    )


def _softmax_model():
    return keras.Sequential(
        [keras.Input((F,)), keras.layers.Dense(K, activation="softmax")]
    )


@pytest.mark.parametrize(
    "build, match",
    [
        (
            lambda t, s: Distiller("t", s, PTLoss(teacher_from_logits=True)),
            "`teacher` must be a keras.Model",
        ),
        (
            lambda t, s: Distiller(t, s, keras.losses.KLDivergence()),
            "`distillation_loss` must be",
        ),
        (
            lambda t, s: Distiller(
                t, s, PTLoss(teacher_from_logits=True), student_loss_weight=2
            ),
            r"student_loss_weight.*<= 1",
        ),
        (
            lambda t, s: Distiller(
                t, s, PTLoss(teacher_from_logits=True), temperature=0.0
            ),
            "temperature",
        ),
        (
            lambda t, s: Distiller(t, s, PTLoss(teacher_from_logits=False)),
            "teacher outputs logits.*teacher_from_logits=True",
        ),
        (
            lambda t, s: Distiller(
                _softmax_model(), s, KDLoss(teacher_from_logits=True)
            ),
            "teacher outputs probabilities.*teacher_from_logits=False",
        ),
        (
            lambda t, s: Distiller(
                _relu_model(), s, PTLoss(teacher_from_logits=None)
            ),
            "Cannot tell.*'relu_out'.*teacher_from_logits=None",
        ),
        (
            lambda t, s: Distiller(
                _softmax_model(),
                s,
                PTLoss(standardize=True, teacher_from_logits=None),
            ),
            "standardize=True.*teacher_from_logits=False",
        ),
        (
            lambda t, s: Distiller(
                t, _softmax_model(), PTLoss(teacher_from_logits=True)
            ),
            "student outputs probabilities.*from_logits=False",
        ),
        (
            lambda t, s: Distiller(
                t,
                tiny_classifier(F, K + 1),
                PTLoss(teacher_from_logits=True),
            ),
            "same shape",
        ),
    ],
)
def test_invalid_arguments_raise_clear_errors(build, match):
    teacher, student = _models()
    with pytest.raises(ValueError, match=match):
        build(teacher, student)


@pytest.mark.parametrize("jit_compile", FIT_JIT_MODES)
def test_logits_teacher_under_the_default_flag_is_read_as_logits(
    data, jit_compile
):
    x, _ = data
    teacher = tiny_classifier(F, K, seed=0)
    loss = PTLoss([0.2], temperature=2.0)
    distiller = Distiller(teacher, tiny_classifier(F, K), loss)
    assert distiller.distillation_loss.teacher_from_logits is True
    assert loss.teacher_from_logits is True
    compile_distiller(distiller, jit_compile)
    history = distiller.fit(x, epochs=1, batch_size=16, verbose=0).history
    t = np_mlp_logits(teacher, x)
    z = np_mlp_logits(distiller.student, x)
    assert_allclose(
        history["loss"][0],
        np.mean(np_pt_loss(t, z, [0.2], 2.0, teacher_from_logits=True)),
        rtol=1e-5,
    )


def test_unknown_last_layer_works_with_an_explicit_flag(data):
    x, _ = data
    distiller = Distiller(
        _relu_model(), tiny_classifier(F, K), KDLoss(teacher_from_logits=True)
    )
    compile_distiller(distiller)
    history = distiller.fit(x, epochs=1, batch_size=16, verbose=0).history
    t = to_numpy(distiller.teacher.predict(x, verbose=0))
    z = np_mlp_logits(distiller.student, x)
    assert_allclose(
        history["loss"][0],
        np.mean(np_pt_loss(t, z, [0.0], 1.0, teacher_from_logits=True)),
        rtol=1e-5,
    )


def test_temperature_argument_sets_the_loss():
    loss = PTLoss(temperature=2.0)
    distiller = Distiller(
        tiny_classifier(F, K), tiny_classifier(F, K), loss, temperature=4.0
    )
    assert distiller.distillation_loss.temperature == 4.0
    assert loss.temperature == 2.0  # the loss passed in: unchanged
    assert_allclose(distiller.temperature, 4.0)
    assert "temperature" not in distiller.get_config()


def test_softmax_teacher_with_probability_flag_is_accepted(data):
    x, _ = data
    distiller = Distiller(
        _softmax_model(),
        tiny_classifier(F, K),
        PTLoss([0.2], teacher_from_logits=False),
    )
    compile_distiller(distiller)
    history = distiller.fit(x, epochs=1, batch_size=16, verbose=0).history
    p = to_numpy(distiller.teacher.predict(x, verbose=0))
    z = np_mlp_logits(distiller.student, x)
    assert_allclose(
        history["loss"][0], np.mean(np_pt_loss(p, z, [0.2])), rtol=1e-5
    )


def test_setters_validate(data):
    distiller = make_distiller()
    with pytest.raises(ValueError, match="convex"):
        distiller.set_coefficients([0.0, -5.0])
    with pytest.raises(ValueError, match="keep the loss's shape"):
        distiller.set_coefficients([0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="temperature"):
        distiller.set_temperature(-1.0)
    with pytest.raises(ValueError, match="student_loss_weight"):
        distiller.set_student_loss_weight(1.5)
    with pytest.raises(ValueError, match="`y` and `sample_weight` must be"):
        distiller.precompute_teacher(ArrayBatches(*data, 16), y=data[1])


# --- compile and fit keep Keras's arguments -------------------------------


def ce_from_logits(y_true, y_pred):
    return keras.losses.sparse_categorical_crossentropy(
        y_true, y_pred, from_logits=True
    )


@pytest.mark.parametrize("jit_compile", FIT_JIT_MODES)
def test_loss_function_gets_the_sample_weights(data, rng, jit_compile):
    x, y = data
    weights = rng.uniform(0.0, 2.0, size=N).astype("float32")
    distiller = make_distiller(eps=EPS1)
    distiller.compile(
        optimizer=keras.optimizers.SGD(0.0),
        loss=ce_from_logits,
        jit_compile=jit_compile,
    )
    assert isinstance(distiller.student_loss, keras.losses.Loss)
    logs = distiller.evaluate(
        x, y, sample_weight=weights, batch_size=16, verbose=0, return_dict=True
    )
    z = np_mlp_logits(distiller.student, x)
    assert_allclose(
        logs["student_loss"], np.mean(weights * np_sparse_ce(z, y)), 1e-5
    )


def test_loss_passed_in_is_unchanged_by_building_and_fitting(data):
    x, y = data
    loss = PTLoss(EPS1, temperature=2.0)  # teacher_from_logits=None
    before = loss.get_config()
    distiller = Distiller(
        tiny_classifier(F, K, seed=0),
        tiny_classifier(F, K, seed=1),
        loss,
        temperature=3.0,
    )
    compile_distiller(distiller, lr=0.05)
    distiller.set_coefficients(EPS2)
    distiller.fit(x, y, epochs=1, batch_size=16, verbose=0)
    assert loss.get_config() == before
    assert distiller.distillation_loss is not loss
    assert distiller.distillation_loss.teacher_from_logits is True
    assert_allclose(distiller.coefficients, EPS2)
    assert_allclose(loss.coefficients, EPS1)


def test_string_loss_and_metrics_are_saved_with_the_compile_config(
    data, tmp_path
):
    x, labels = data
    y = np.eye(K, dtype="float32")[labels]
    distiller = make_distiller(eps=EPS1)
    distiller.compile(
        optimizer="sgd",
        loss="categorical_hinge",
        metrics=["categorical_accuracy"],
    )
    logs = distiller.evaluate(x, y, verbose=0, return_dict=True)
    z = np_mlp_logits(distiller.student, x)
    hinge = np.maximum(
        np.max((1 - y) * z, axis=-1) - np.sum(y * z, axis=-1) + 1, 0
    )
    assert_allclose(logs["student_loss"], hinge.mean(), rtol=1e-5)
    assert_allclose(
        logs["categorical_accuracy"], np.mean(z.argmax(-1) == labels)
    )
    distiller.save(tmp_path / "distiller.keras")
    restored = keras.saving.load_model(tmp_path / "distiller.keras")
    assert restored.get_compile_config()["loss"] == "categorical_hinge"
    restored_logs = restored.evaluate(x, y, verbose=0, return_dict=True)
    assert (
        sorted(restored_logs)
        == sorted(logs)
        == [
            "categorical_accuracy",
            "distillation_loss",
            "loss",
            "student_loss",
        ]
    )
    for key, value in logs.items():
        assert_allclose(restored_logs[key], value, rtol=1e-6)


def test_fit_passes_keyword_arguments_to_keras(data):
    x, y = data
    distiller = compile_distiller(make_distiller(eps=EPS1))
    history = distiller.fit(
        x,
        y,
        16,
        epochs=2,
        verbose=0,
        validation_data=(x, y),
        shuffle=False,
        validation_batch_size=8,
        validation_freq=2,
    ).history
    assert len(history["loss"]) == 2
    # validation_freq=2: validation ran after the second epoch only.
    assert len(history["val_loss"]) == 1
    total, _, _ = expected_losses(distiller, x, y, EPS1, 2.0, 0.25)
    assert_allclose(history["val_loss"][0], total, rtol=1e-5)
    with pytest.raises(ValueError, match="loss_weights.*student_loss_weight"):
        distiller.compile(optimizer="sgd", loss_weights=[0.5])


@pytest.mark.parametrize("method", ["fit", "evaluate"])
def test_fit_and_evaluate_have_keras_signatures(method):
    """Same parameters as keras.Model's: names, order, kinds, defaults."""
    got = inspect.signature(getattr(Distiller, method)).parameters
    want = inspect.signature(getattr(keras.Model, method)).parameters
    assert [(p.name, p.kind, p.default) for p in got.values()] == [
        (p.name, p.kind, p.default) for p in want.values()
    ]


def test_fit_and_evaluate_take_keras_positional_arguments(data):
    """`fit(x, y, 16, 2)`: batch size 16, two epochs, as keras.Model.fit."""
    x, y = data
    distiller = compile_distiller(make_distiller(eps=EPS1), lr=1e-2)
    batches = []
    counter = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: batches.append(batch)
    )
    history = distiller.fit(x, y, 16, 2, 0, [counter]).history
    assert len(history["loss"]) == 2
    assert len(batches) == 2 * N // 16
    # evaluate(x, y, batch_size, verbose, sample_weight, steps, callbacks,
    # return_dict), positionally.
    logs = distiller.evaluate(x, y, 16, 0, None, None, None, True)
    total, distill, student = expected_losses(distiller, x, y, EPS1, 2.0, 0.25)
    assert_allclose(logs["loss"], total, rtol=1e-5)
    assert_allclose(logs["distillation_loss"], distill, rtol=1e-5)
    assert_allclose(logs["student_loss"], student, rtol=1e-5)
    # The checks still run on positional arguments: labels out of range.
    with pytest.raises(ValueError, match="class indices"):
        distiller.fit(x, y + K, 16, 1, 0)
    # And array weights without labels, given positionally.
    weights = np.ones((N,), "float32")
    with pytest.raises(ValueError, match="sample_weight.*without `y`"):
        distiller.fit(x, None, 16, 1, 0, None, 0.0, None, True, None, weights)
    with pytest.raises(ValueError, match="sample_weight.*without `y`"):
        distiller.evaluate(x, None, 16, 0, weights)
