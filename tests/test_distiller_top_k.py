"""Distiller with a TopKPTLoss: top-k teacher targets, cached or online.

Expected losses are computed in float64 numpy from the models' weights
(`np_mlp_logits`) and the tail-bucket formula of `top_k_pt_loss`.
"""

import keras
import numpy as np
import pytest

from keras_ptloss import Distiller
from keras_ptloss import PTLoss
from keras_ptloss import TopKPTLoss
from keras_ptloss.top_k import pack_top_k
from keras_ptloss.top_k import precompute_top_k
from tests.test_top_k import np_top_k_loss
from tests.utils import JIT_MODES
from tests.utils import assert_allclose
from tests.utils import np_mlp_logits
from tests.utils import np_softmax
from tests.utils import tiny_classifier

N, F, K, TOP = 16, 5, 10, 4
EPS1 = [0.5, -0.1]
EPS2 = [-0.2, 0.1]
T1, T2 = 2.0, 3.0


def np_top_k_from_packed(packed, student_logits, eps, temperature):
    """The tail-bucket loss per example from packed targets, float64."""
    k = packed.shape[-1] // 2
    idx = packed[..., :k].astype("int64")
    p = np.exp(packed[..., k:].astype("float64"))
    q = np_softmax(student_logits, temperature)
    q_top = np.take_along_axis(q, idx, axis=-1)
    tail_p = 1.0 - p.sum(-1, keepdims=True)
    tail_p = np.where(tail_p > 1e-6, tail_p, 0.0)
    tail_q = np.maximum(1.0 - q_top.sum(-1, keepdims=True), 1e-30)
    pb = np.concatenate([p, tail_p], -1)
    qb = np.concatenate([q_top, tail_q], -1)
    series = sum(e * (1.0 - qb) ** (m + 1) for m, e in enumerate(eps))
    safe = np.where(pb > 0, pb, 1.0)
    terms = np.where(pb > 0, pb * (np.log(safe) - np.log(qb) + series), 0.0)
    return temperature**2 * terms.sum(-1)


@pytest.fixture
def x(rng):
    return rng.normal(size=(N, F)).astype("float32")


def make_distiller(teacher_classes=K, **kwargs):
    teacher = tiny_classifier(F, teacher_classes, hidden=8, seed=0)
    student = tiny_classifier(F, K, hidden=6, seed=10)
    loss = TopKPTLoss(EPS1, temperature=T1)
    return Distiller(teacher, student, loss, **kwargs)


def compile_distiller(distiller, jit_compile="auto", lr=0.0):
    optimizer = (
        keras.optimizers.SGD(lr) if lr == 0.0 else keras.optimizers.Adam(lr)
    )
    distiller.compile(optimizer=optimizer, jit_compile=jit_compile)
    return distiller


def evaluate(distiller, data, **kwargs):
    return distiller.evaluate(
        data, batch_size=N, verbose=0, return_dict=True, **kwargs
    )


def offline(x, packed):
    return {"student_inputs": x, "teacher_outputs": packed}


@pytest.mark.parametrize("jit_compile", JIT_MODES)
def test_cached_top_k_loss_equals_numpy(x, jit_compile):
    distiller = compile_distiller(make_distiller(), jit_compile)
    packed = precompute_top_k(distiller.teacher, x, k=TOP, temperature=T1)
    t = np_mlp_logits(distiller.teacher, x)
    z = np_mlp_logits(distiller.student, x)
    expected = np.mean(np_top_k_loss(t, z, TOP, EPS1, T1))
    logs = evaluate(distiller, offline(x, packed))
    assert_allclose(logs["loss"], expected, rtol=1e-5)
    assert_allclose(logs["distillation_loss"], expected, rtol=1e-5)


@pytest.mark.parametrize("jit_compile", JIT_MODES)
def test_online_top_k_loss_equals_numpy(x, jit_compile):
    distiller = compile_distiller(make_distiller(top_k=TOP), jit_compile)
    t = np_mlp_logits(distiller.teacher, x)
    z = np_mlp_logits(distiller.student, x)
    expected = np.mean(np_top_k_loss(t, z, TOP, EPS1, T1))
    assert_allclose(evaluate(distiller, x)["loss"], expected, rtol=1e-5)


def test_online_top_k_of_a_softmax_teacher_equals_numpy(x):
    teacher = keras.Sequential(
        [tiny_classifier(F, K, hidden=8, seed=0), keras.layers.Softmax()]
    )
    student = tiny_classifier(F, K, hidden=6, seed=10)
    loss = TopKPTLoss(EPS1, temperature=T1, teacher_from_logits=False)
    distiller = Distiller(teacher, student, loss, top_k=TOP)
    compile_distiller(distiller)
    t = np_mlp_logits(teacher.layers[0], x)
    z = np_mlp_logits(student, x)
    expected = np.mean(np_top_k_loss(t, z, TOP, EPS1, T1))
    assert_allclose(evaluate(distiller, x)["loss"], expected, rtol=1e-5)


def test_sample_weights_weigh_the_top_k_loss(x):
    distiller = compile_distiller(make_distiller())
    packed = precompute_top_k(distiller.teacher, x, k=TOP, temperature=T1)
    weights = np.linspace(0.0, 2.0, N).astype("float32")
    # `y` (unused: compile(loss=None)) carries the weights through Keras.
    y = np.zeros(N, "int32")
    per_example = np_top_k_from_packed(
        packed, np_mlp_logits(distiller.student, x), EPS1, T1
    )
    logs = evaluate(distiller, offline(x, packed), y=y, sample_weight=weights)
    assert_allclose(logs["loss"], np.sum(weights * per_example) / N)


@pytest.mark.parametrize("jit_compile", JIT_MODES)
def test_set_coefficients_and_temperature_reach_the_next_step(x, jit_compile):
    distiller = compile_distiller(make_distiller(), jit_compile)
    packed = precompute_top_k(distiller.teacher, x, k=TOP, temperature=T1)
    z = np_mlp_logits(distiller.student, x)

    class Schedule(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 1:
                self.model.set_coefficients(EPS2)
            if epoch == 2:
                self.model.set_temperature(T2)

    history = distiller.fit(
        offline(x, packed),
        batch_size=N,
        epochs=3,
        callbacks=[Schedule()],
        verbose=0,
    )
    # The cache stays at T1; the student is read at the loss's temperature.
    expected = [
        np.mean(np_top_k_from_packed(packed, z, EPS1, T1)),
        np.mean(np_top_k_from_packed(packed, z, EPS2, T1)),
        np.mean(np_top_k_from_packed(packed, z, EPS2, T2)),
    ]
    assert_allclose(history.history["loss"], expected, rtol=1e-5)


def test_online_top_k_follows_the_temperature(x):
    distiller = compile_distiller(make_distiller(top_k=TOP))
    distiller.set_temperature(T2)
    t = np_mlp_logits(distiller.teacher, x)
    z = np_mlp_logits(distiller.student, x)
    expected = np.mean(np_top_k_loss(t, z, TOP, EPS1, T2))
    assert_allclose(evaluate(distiller, x)["loss"], expected, rtol=1e-5)


@pytest.mark.parametrize("top_k", [None, TOP])
def test_training_on_top_k_targets_lowers_the_loss(x, top_k):
    distiller = compile_distiller(make_distiller(top_k=top_k), lr=0.05)
    data = x
    if top_k is None:
        data = offline(
            x, precompute_top_k(distiller.teacher, x, k=TOP, temperature=T1)
        )
    teacher_before = [np.array(w) for w in distiller.teacher.get_weights()]
    history = distiller.fit(data, batch_size=8, epochs=20, verbose=0)
    losses = history.history["loss"]
    assert np.all(np.isfinite(losses))
    assert losses[-1] < 0.95 * losses[0]
    for old, new in zip(
        teacher_before, distiller.teacher.get_weights(), strict=True
    ):
        np.testing.assert_array_equal(old, new)


def padded_distiller(**kwargs):
    """A teacher with 2 padding ids (no mass) over a 10-id student."""
    distiller = make_distiller(teacher_classes=K + 2, vocab_size=K, **kwargs)
    w1, b1, w2, b2 = distiller.teacher.get_weights()
    w2[:, K:] = 0.0
    b2[K:] = -60.0
    distiller.teacher.set_weights([w1, b1, w2, b2])
    return compile_distiller(distiller)


@pytest.mark.parametrize("top_k", [None, TOP])
def test_vocab_size_aligns_the_top_k_teacher(x, top_k):
    distiller = padded_distiller(top_k=top_k)
    t = np_mlp_logits(distiller.teacher, x)[:, :K]
    z = np_mlp_logits(distiller.student, x)
    expected = np.mean(np_top_k_loss(t, z, TOP, EPS1, T1))
    data = x
    if top_k is None:
        packed = precompute_top_k(
            distiller.teacher, x, k=TOP, temperature=T1, vocab_size=K
        )
        data = offline(x, packed)
    assert_allclose(evaluate(distiller, data)["loss"], expected, rtol=1e-5)


def test_cached_ids_beyond_the_students_raise(x):
    distiller = compile_distiller(make_distiller())
    indices = np.tile(np.arange(K - 1, K + 1), (N, 1))
    packed = pack_top_k(indices, np.log(np.full((N, 2), 0.3)))
    with pytest.raises(ValueError, match="must be ids of the student's 10"):
        distiller.fit(offline(x, packed), epochs=1, verbose=0)


def test_full_teacher_outputs_for_a_top_k_loss_raise(x):
    distiller = compile_distiller(make_distiller())
    outputs = np_mlp_logits(distiller.teacher, x).astype("float32")
    with pytest.raises(ValueError, match="holds other values"):
        distiller.evaluate(offline(x, outputs), verbose=0)


def test_packed_targets_of_the_wrong_shape_raise(x):
    distiller = compile_distiller(make_distiller())
    packed = precompute_top_k(distiller.teacher, x, k=TOP)
    with pytest.raises(ValueError, match=r"Received: teacher_outputs.shape"):
        distiller.fit(offline(x, packed[:, :-1]), epochs=1, verbose=0)
    with pytest.raises(ValueError, match="one teacher output row|2k"):
        distiller.fit(offline(x, packed[:8]), epochs=1, verbose=0)


def test_online_top_k_loss_without_top_k_raises(x):
    distiller = compile_distiller(make_distiller())
    with pytest.raises(ValueError, match="precompute_top_k"):
        distiller.fit(x, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="Received: top_k=None"):
        distiller.evaluate(x, verbose=0)
    with pytest.raises(ValueError, match="precompute_top_k"):
        distiller.precompute_teacher(x)


def test_top_k_needs_a_top_k_loss_and_a_valid_k():
    teacher = tiny_classifier(F, K, seed=0)
    student = tiny_classifier(F, K, seed=10)
    with pytest.raises(ValueError, match="`top_k` is for a TopKPTLoss"):
        Distiller(teacher, student, PTLoss(), top_k=3)
    with pytest.raises(ValueError, match="`top_k` must be <= 10"):
        Distiller(teacher, student, TopKPTLoss(), top_k=11)


def test_top_k_round_trips_through_the_config():
    distiller = make_distiller(top_k=TOP)
    restored = Distiller.from_config(distiller.get_config())
    assert restored.top_k == TOP
    assert isinstance(restored.distillation_loss, TopKPTLoss)
    np.testing.assert_allclose(
        np.array(restored.coefficients), np.array(distiller.coefficients)
    )


def test_a_saved_top_k_distiller_reloads_with_its_state(x, tmp_path):
    distiller = compile_distiller(make_distiller(top_k=TOP))
    distiller.set_coefficients(EPS2)
    distiller.set_temperature(T2)
    path = tmp_path / "top_k_distiller.keras"
    distiller.save(path)
    restored = keras.saving.load_model(path)
    assert restored.top_k == TOP
    np.testing.assert_allclose(np.array(restored.coefficients), EPS2)
    t = np_mlp_logits(restored.teacher, x)
    z = np_mlp_logits(restored.student, x)
    expected = np.mean(np_top_k_loss(t, z, TOP, EPS2, T2))
    assert_allclose(evaluate(restored, x)["loss"], expected, rtol=1e-5)
