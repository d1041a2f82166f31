"""PTLossDistillation: PTLoss inside `keras.distillation.Distiller`.

`fit` tests use FIT_JIT_MODES (jit on and off on JAX; see tests/utils.py).
The mechanism used here (the loss's variables tracked as model state) is
tested under XLA and torch.compile in tests/test_distiller.py.
"""

import keras
import numpy as np
import pytest
import scipy.special

from keras_ptloss import KDDistillation
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
from tests.utils import to_numpy

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
    """A Keras Distiller of two tiny MLPs; a PTLoss/KDLoss is wrapped in
    `PTLossDistillation`, a `DistillationLoss` is used as it is."""
    if not isinstance(loss, keras.distillation.DistillationLoss):
        loss = PTLossDistillation(loss)
    distiller = keras.distillation.Distiller(
        tiny_classifier(F, K, seed=0),
        tiny_classifier(F, K, hidden=6, seed=10),
        loss,
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
    loss = distiller.distillation_losses[0].loss  # the adapter's copy
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
    assert distiller.distillation_losses[0].loss.temperature == 3.0
    assert loss.temperature == 2.0  # the loss passed in: unchanged
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
    loss = distiller.distillation_losses[0].loss
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
    before = loss.get_config()
    distiller = keras_distiller(loss)
    adapter = distiller.distillation_losses[0]
    assert adapter.loss.teacher_from_logits is True  # the teacher's layer
    state = {id(v) for v in distiller.non_trainable_variables}
    assert all(id(v) in state for v in adapter.loss.variables)
    assert [id(v) for v in adapter.schedulable_variables] == [
        id(v) for v in adapter.loss.variables
    ]
    history = distiller.fit(x, y, epochs=1, **FIT).history
    assert_allclose(
        history["distillation_loss"][0],
        expected(distiller, x, EPS1, 2.0),
        rtol=1e-5,
    )
    assert loss.get_config() == before  # the loss passed in: unchanged


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


# --- KDDistillation: the fix for keras.distillation.LogitsDistillation -------


def np_kd(teacher_logits, student_logits, temperature):
    """T**2 * KL(softmax(t / T) || softmax(s / T)), batch mean, float64."""
    log_p = scipy.special.log_softmax(
        np.asarray(teacher_logits, "float64") / temperature, axis=-1
    )
    log_q = scipy.special.log_softmax(
        np.asarray(student_logits, "float64") / temperature, axis=-1
    )
    kl = np.sum(np.exp(log_p) * (log_p - log_q), axis=-1)
    return temperature**2 * np.mean(kl)


def np_keras_default(teacher_logits, student_logits, temperature):
    """What `LogitsDistillation(temperature=T)` computes in Keras 3.15.1.

    Its `loss="kl_divergence"` is resolved to the function
    `keras.losses.kl_divergence`, so the branch for `KLDivergence`
    instances (softmax, then `* T**2`) is skipped: `kl_divergence` runs on
    the tempered logits, clipped to [1e-7, 1], and the result has no
    `T**2`. A batch mean of `sum_k c(t_k) * log(c(t_k) / c(s_k))`.
    """
    t = np.clip(np.asarray(teacher_logits, "float64") / temperature, 1e-7, 1)
    s = np.clip(np.asarray(student_logits, "float64") / temperature, 1e-7, 1)
    return np.mean(np.sum(t * np.log(t / s), axis=-1))


def random_logits(rng, shape=(8, 10), scale=3.0):
    return (scale * rng.normal(size=shape)).astype("float32")


@pytest.mark.parametrize("temperature", [0.5, 1.0, 3.0, 8.0])
def test_kd_distillation_is_hintons_kd(rng, temperature):
    t, s = random_logits(rng), random_logits(rng)
    expected = np_kd(t, s, temperature)
    adapters = (
        KDDistillation(temperature=temperature),
        PTLossDistillation(
            KDLoss(temperature=temperature, teacher_from_logits=True)
        ),
    )
    for adapter in adapters:
        assert_allclose(adapter.compute_loss(t, s), expected, rtol=1e-5)
    # Invariant to a constant added to every logit (one per row, per side).
    shift_t = rng.normal(size=(8, 1)).astype("float32") * 10
    shift_s = rng.normal(size=(8, 1)).astype("float32") * 10
    for adapter in adapters:
        assert_allclose(
            adapter.compute_loss(t + shift_t, s + shift_s),
            expected,
            rtol=1e-5,
        )
    # Sequence outputs: the mean over every token.
    t3, s3 = random_logits(rng, (2, 4, 10)), random_logits(rng, (2, 4, 10))
    assert_allclose(
        adapters[0].compute_loss(t3, s3),
        np_kd(t3.reshape(8, 10), s3.reshape(8, 10), temperature),
        rtol=1e-5,
    )


@pytest.mark.parametrize("jit_compile", FIT_JIT_MODES)
def test_kd_distillation_trains_in_the_keras_distiller(data, jit_compile):
    x, y = data
    distiller = keras_distiller(KDDistillation(3.0), jit_compile)
    # SGD(0): the student stays put, so each batch's loss is the reference.
    history = distiller.fit(x, y, epochs=1, **FIT).history
    t = np_mlp_logits(distiller.teacher, x)
    z = np_mlp_logits(distiller.student, x)
    assert_allclose(history["distillation_loss"][0], np_kd(t, z, 3.0), 1e-5)
    batch = x[:16]
    assert_allclose(
        distiller.distillation_losses[0].compute_loss(
            distiller.teacher(batch), distiller.student(batch)
        ),
        np_kd(t[:16], z[:16], 3.0),
        rtol=1e-5,
    )
    distiller = keras_distiller(
        KDDistillation(3.0), jit_compile, lr=0.05, weight=0.1
    )
    losses = distiller.fit(x, y, epochs=6, **FIT).history["distillation_loss"]
    assert losses[-1] < 0.7 * losses[0]
    logs = distiller.evaluate(x, y, batch_size=16, verbose=0, return_dict=True)
    t = np_mlp_logits(distiller.teacher, x)
    z = np_mlp_logits(distiller.student, x)
    assert_allclose(logs["distillation_loss"], np_kd(t, z, 3.0), rtol=1e-5)


def test_keras_default_logits_distillation_is_not_kd(rng):
    # keras.distillation.LogitsDistillation(temperature=3.0), Keras 3.15.1:
    # its default loss="kl_divergence" resolves to the *function*
    # keras.losses.kl_divergence, and only a KLDivergence *instance* takes
    # the branch that applies the softmax and the T**2 factor. So it
    # compares the tempered logits themselves, clipped to [1e-7, 1]: every
    # logit <= 0 counts as 1e-7, every logit >= T as 1. That is no
    # divergence between distributions (it changes when a constant is added
    # to every logit, which leaves both softmaxes unchanged). This test pins
    # that behaviour: docs/design.md ("Keras traps"), docs/guide.md and the
    # README state it. If Keras fixes it, update them.
    t, s = random_logits(rng), random_logits(rng)
    keras_default = keras.distillation.LogitsDistillation(temperature=3.0)
    for shift in (0.0, 10.0):
        value = float(
            to_numpy(keras_default.compute_loss(t + shift, s + shift))
        )
        documented = np_keras_default(t + shift, s + shift, 3.0)
        kd = np_kd(t, s, 3.0)
        if not np.isclose(value, documented, rtol=1e-5, atol=1e-6):
            pytest.fail(
                "keras.distillation.LogitsDistillation(temperature=3.0) no "
                "longer computes the clipped kl_divergence of the tempered "
                f"logits (got {value:.6g}, that formula gives "
                f"{documented:.6g}, KD gives {kd:.6g}; logits shifted by "
                f"{shift}). Keras changed its default: update the docs that "
                "describe it (docs/design.md, docs/guide.md, the README's "
                "comparison with Keras's Distiller) and this test."
            )
        assert abs(value - kd) > 1.0
    # The numbers the docs quote: 28.53 and 0.012 where KD is 5.54.
    assert np_keras_default(t, s, 3.0) == pytest.approx(28.53, abs=0.005)
    assert np_keras_default(t + 10, s + 10, 3.0) == pytest.approx(
        0.0124, abs=5e-5
    )
    assert np_kd(t, s, 3.0) == pytest.approx(5.5407, abs=5e-5)


def test_kd_distillation_config_round_trip_and_saving(data, tmp_path):
    kd = KDDistillation(temperature=2.0, chunk_size=4, name="kd")
    restored = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(kd)
    )
    assert isinstance(restored, KDDistillation)
    assert restored.get_config() == kd.get_config()
    assert restored.temperature == 2.0 and restored.loss.chunk_size == 4
    x, y = data
    distiller = keras_distiller(KDDistillation(3.0))
    distiller.fit(x, y, epochs=1, **FIT)
    distiller.distillation_losses[0].loss.set_temperature(4.0)
    path = tmp_path / "kd_distiller.keras"
    distiller.save(path)
    loaded = keras.saving.load_model(path, compile=False)
    adapter = loaded.distillation_losses[0]
    assert isinstance(adapter, KDDistillation)
    assert adapter.temperature == 4.0


def test_kd_distillation_invalid_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="temperature=0"):
        KDDistillation(temperature=0)
    with pytest.raises(ValueError, match="teacher_from_logits=False"):
        keras.distillation.Distiller(
            keras.Sequential(
                [keras.Input((F,)), keras.layers.Dense(K, "softmax")]
            ),
            tiny_classifier(F, K),
            KDDistillation(3.0),
        )
