"""PTLossDistillation: PTLoss inside `keras.distillation.Distiller`.

`fit` tests use FIT_JIT_MODES (jit on and off on JAX; see tests/utils.py).
The mechanism used here (the loss's variables tracked as model state) is
tested under XLA and torch.compile in tests/test_distiller.py.
"""

import keras
import numpy as np
import pytest

from keras_ptloss import KDLoss
from keras_ptloss import PTLoss
from keras_ptloss import PTLossDistillation
from keras_ptloss import ReestimateCoefficients
from keras_ptloss import pt_loss
from tests.utils import FIT_JIT_MODES
from tests.utils import FixedSelector
from tests.utils import assert_allclose
from tests.utils import np_mlp_logits
from tests.utils import np_pt_loss
from tests.utils import tiny_classifier

N, F, K = 64, 5, 3
EPS1 = [0.6, -0.1]
EPS2 = [-0.3, 0.2]
FIT = dict(batch_size=16, shuffle=False, verbose=0)


@pytest.fixture
def data(rng):
    x = rng.normal(size=(N, F)).astype("float32")
    y = rng.integers(0, K, size=N).astype("int32")
    return x, y


def keras_distiller(loss, jit_compile="auto", lr=0.0, weight=0.0):
    distiller = keras.distillation.Distiller(
        tiny_classifier(F, K, seed=0),
        tiny_classifier(F, K, hidden=6, seed=10),
        PTLossDistillation(loss),
        student_loss_weight=weight,
    )
    optimizer = (
        keras.optimizers.SGD(0.0) if lr == 0.0 else keras.optimizers.Adam(lr)
    )
    distiller.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=jit_compile,
    )
    return distiller


def expected(distiller, x, eps, temperature):
    t = np_mlp_logits(distiller.teacher, x)
    z = np_mlp_logits(distiller.student, x)
    return np.mean(np_pt_loss(t, z, eps, temperature, True))


def test_compute_loss_equals_the_functional_pt_loss(rng):
    loss = PTLoss(EPS1, temperature=2.0, teacher_from_logits=True)
    adapter = PTLossDistillation(loss)
    teacher = rng.normal(size=(8, K)).astype("float32")
    student = rng.normal(size=(8, K)).astype("float32")
    reference = np.mean(
        np.asarray(
            keras.ops.convert_to_numpy(
                pt_loss(teacher, student, EPS1, 2.0, teacher_from_logits=True)
            )
        )
    )
    assert_allclose(adapter.compute_loss(teacher, student), reference)
    assert_allclose(
        adapter.compute_loss(teacher, student),
        np.mean(np_pt_loss(teacher, student, EPS1, 2.0, True)),
    )


@pytest.mark.parametrize("jit_compile", FIT_JIT_MODES)
def test_coefficients_set_during_fit_take_effect(data, jit_compile):
    x, y = data
    loss = PTLoss(EPS1, temperature=2.0, teacher_from_logits=True)
    distiller = keras_distiller(loss, jit_compile)
    schedule = keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda epoch, logs: (
            epoch == 1 and loss.set_coefficients(EPS2)
        )
    )
    history = distiller.fit(x, y, epochs=2, callbacks=[schedule], **FIT)
    losses = history.history["distillation_loss"]
    assert_allclose(losses[0], expected(distiller, x, EPS1, 2.0), rtol=1e-5)
    assert_allclose(losses[1], expected(distiller, x, EPS2, 2.0), rtol=1e-5)


class ChangeLabels(keras.callbacks.Callback):
    def __init__(self, labels):
        super().__init__()
        self.labels = labels

    def on_epoch_end(self, epoch, logs=None):
        self.labels[:] = (self.labels + 1) % K


@pytest.mark.parametrize("jit_compile", FIT_JIT_MODES)
def test_reestimate_callback_drives_the_keras_distiller(data, jit_compile):
    x, y = data
    x_val, labels = x[::-1].copy(), y.copy()
    loss = PTLoss([0.0, 0.0], temperature=2.0, teacher_from_logits=True)
    distiller = keras_distiller(loss, jit_compile)
    # Epoch 0: new coefficients only; epoch 1 (the labels changed): new
    # coefficients and temperature. Both are tracked variables: the step is
    # not rebuilt.
    selector = FixedSelector((EPS1, 2.0), (EPS2, 3.0))
    callback = ReestimateCoefficients(
        (x_val, labels), selector=selector, tune_temperature=True, verbose=0
    )
    function = []
    record = keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda epoch, logs: function.append(
            distiller.train_function
        )
    )
    history = distiller.fit(
        x,
        y,
        epochs=2,
        callbacks=[callback, ChangeLabels(labels), record],
        **FIT,
    ).history
    assert function[0] is function[1]
    losses = history["distillation_loss"]
    assert_allclose(losses[0], expected(distiller, x, EPS1, 2.0), rtol=1e-5)
    assert_allclose(losses[1], expected(distiller, x, EPS2, 3.0), rtol=1e-5)
    assert loss.temperature == 3.0
    assert history["pt_temperature"] == [2.0, 3.0]


@pytest.mark.parametrize("jit_compile", FIT_JIT_MODES)
def test_adapter_trains_the_student_and_keeps_the_teacher(data, jit_compile):
    x, y = data
    loss = PTLoss(EPS1, temperature=2.0, teacher_from_logits=True)
    distiller = keras_distiller(loss, jit_compile, lr=0.05, weight=0.1)
    teacher_before = [np.array(w) for w in distiller.teacher.get_weights()]
    history = distiller.fit(x, y, epochs=6, **FIT).history
    assert history["distillation_loss"][-1] < history["distillation_loss"][0]
    for a, b in zip(
        teacher_before, distiller.teacher.get_weights(), strict=True
    ):
        assert np.array_equal(a, b)
    # After training, the loss of the final student still matches numpy.
    logs = distiller.evaluate(x, y, batch_size=16, verbose=0, return_dict=True)
    assert_allclose(
        logs["distillation_loss"], expected(distiller, x, EPS1, 2.0), 1e-5
    )


def test_coefficients_are_saved_with_the_keras_distiller(data, tmp_path):
    x, y = data
    loss = PTLoss(EPS1, temperature=2.0, teacher_from_logits=True)
    distiller = keras_distiller(loss)
    distiller.fit(x, y, epochs=1, **FIT)
    loss.coefficients.assign(EPS2)  # a direct assignment
    loss.set_temperature(3.0)
    path = tmp_path / "keras_distiller.keras"
    distiller.save(path)
    restored = keras.saving.load_model(path, compile=False)
    adapter = restored.distillation_losses[0]
    assert isinstance(adapter, PTLossDistillation)
    assert_allclose(adapter.loss.coefficients, EPS2)
    assert adapter.loss.temperature == 3.0
    state = {id(v) for v in restored.non_trainable_variables}
    assert all(id(v) in state for v in adapter.loss.variables)
    assert_allclose(
        restored.student.predict(x, verbose=0),
        distiller.student.predict(x, verbose=0),
    )


def test_adapter_tracks_the_loss_variables_and_reads_the_teacher_kind(data):
    x, y = data
    loss = PTLoss(EPS1, temperature=2.0)
    distiller = keras_distiller(loss)
    assert loss.teacher_from_logits is True  # the teacher's last layer
    state = {id(v) for v in distiller.non_trainable_variables}
    assert all(id(v) in state for v in loss.variables)
    history = distiller.fit(x, y, epochs=1, **FIT).history
    assert_allclose(
        history["distillation_loss"][0],
        expected(distiller, x, EPS1, 2.0),
        rtol=1e-5,
    )


def test_config_round_trip():
    adapter = PTLossDistillation(
        PTLoss(EPS1, temperature=3.0, teacher_from_logits=True), name="pt"
    )
    config = keras.saving.serialize_keras_object(adapter)
    restored = keras.saving.deserialize_keras_object(config)
    assert isinstance(restored, PTLossDistillation)
    assert restored.name == "pt"
    assert restored.loss.get_config() == adapter.loss.get_config()
    kd = PTLossDistillation(KDLoss(temperature=2.0, teacher_from_logits=True))
    assert kd.coefficients is None
    assert (
        keras.saving.deserialize_keras_object(
            keras.saving.serialize_keras_object(kd)
        ).loss.temperature
        == 2.0
    )


def test_invalid_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="`loss` must be"):
        PTLossDistillation(keras.losses.KLDivergence())
    with pytest.raises(ValueError, match="teacher_from_logits=True"):
        keras.distillation.Distiller(
            tiny_classifier(F, K),
            tiny_classifier(F, K),
            PTLossDistillation(PTLoss(teacher_from_logits=False)),
        )
