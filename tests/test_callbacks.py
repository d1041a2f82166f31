"""ReestimateCoefficients: the change reaches the next epoch on every backend.

The callback changes the PTLoss; the next step reads the loss's variables.
The plain-model path (the loss's variables are not model state, so a JAX
step is retraced after a change) is tested with jit on and off on every
backend (JIT_MODES: XLA on TF, torch.compile on torch); the Distiller path
shares its mechanism with tests/test_distiller.py's JIT_MODES tests, and the
other `fit` tests use FIT_JIT_MODES (both modes on JAX; see tests/utils.py).
A deterministic selector (tests.utils.FixedSelector) makes the expected
losses exact; one test uses the real `select_coefficients`.
"""

import csv

import keras
import numpy as np
import pytest

from keras_ptloss import Distiller
from keras_ptloss import KDLoss
from keras_ptloss import PTLoss
from keras_ptloss import ReestimateCoefficients
from keras_ptloss.selection import select_coefficients
from tests.utils import BACKEND
from tests.utils import FIT_JIT_MODES
from tests.utils import JIT_MODES
from tests.utils import FixedSelector
from tests.utils import assert_allclose
from tests.utils import np_mlp_logits
from tests.utils import np_pt_loss
from tests.utils import np_softmax
from tests.utils import tiny_classifier

N, F, K = 64, 5, 3
EPS1 = [0.6, -0.1]
EPS2 = [-0.3, 0.2]
FIT = dict(batch_size=16, shuffle=False, verbose=0)


@pytest.fixture
def data(rng):
    x = rng.normal(size=(N, F)).astype("float32")
    x_val = rng.normal(size=(N, F)).astype("float32")
    y_val = rng.integers(0, K, size=N).astype("int32")
    return x, x_val, y_val


def make_distiller(eps=(0.0, 0.0), jit_compile="auto", temperature=2.0):
    distiller = Distiller(
        tiny_classifier(F, K, seed=0),
        tiny_classifier(F, K, hidden=6, seed=10),
        PTLoss(list(eps), temperature=temperature, teacher_from_logits=True),
        student_loss_weight=0.0,
    )
    distiller.compile(
        optimizer=keras.optimizers.SGD(0.0), jit_compile=jit_compile
    )
    return distiller


def distill_loss(distiller, x, eps, temperature=2.0):
    t = np_mlp_logits(distiller.teacher, x)
    z = np_mlp_logits(distiller.student, x)
    return np.mean(np_pt_loss(t, z, eps, temperature, True))


class ChangeLabels(keras.callbacks.Callback):
    """Changes the validation labels in place after the given epochs."""

    def __init__(self, labels, epochs):
        super().__init__()
        self.labels, self.epochs = labels, epochs

    def on_epoch_end(self, epoch, logs=None):
        if epoch in self.epochs:
            self.labels[:] = (self.labels + 1) % K


# --- a Distiller -------------------------------------------------------------


@pytest.mark.parametrize("jit_compile", FIT_JIT_MODES)
def test_distiller_coefficients_take_effect_in_the_next_epoch(
    data, jit_compile
):
    x, x_val, y_val = data
    distiller = make_distiller(jit_compile=jit_compile)
    selector = FixedSelector((EPS1, 2.0), (EPS2, 3.0))
    labels = y_val.copy()
    callback = ReestimateCoefficients(
        (x_val, labels), selector=selector, tune_temperature=True, verbose=0
    )
    # The first selection's labels change after epoch 0: a second selection
    # (EPS2, T=3) applies to epoch 1.
    history = distiller.fit(
        x,
        epochs=2,
        callbacks=[callback, ChangeLabels(labels, {0})],
        **FIT,
    ).history
    assert_allclose(history["loss"][0], distill_loss(distiller, x, EPS1))
    assert_allclose(
        history["loss"][1], distill_loss(distiller, x, EPS2, 3.0), rtol=1e-5
    )
    assert len(selector.calls) == 2
    call = selector.calls[0]
    assert_allclose(
        call["teacher_probs"],
        np_softmax(np_mlp_logits(distiller.teacher, x_val)),
        rtol=1e-5,
    )
    np.testing.assert_array_equal(call["labels"], y_val)
    assert call["order"] == 2 and call["mode"] == "shared"
    assert call["temperature"] == 2.0 and call["tune_temperature"] is True
    assert selector.calls[1]["temperature"] == 2.0
    assert_allclose(distiller.coefficients, EPS2)
    assert_allclose(distiller.temperature, 3.0)


@pytest.mark.parametrize("jit_compile", FIT_JIT_MODES)
def test_classwise_coefficients_are_selected_per_class(data, jit_compile):
    x, x_val, y_val = data
    eps = np.array([[0.5, 0.0], [0.1, 0.05], [-0.2, 0.1]])
    distiller = make_distiller(np.zeros((K, 2)), jit_compile)
    selector = FixedSelector((eps, 2.0))
    callback = ReestimateCoefficients(
        (x_val, y_val), selector=selector, verbose=0
    )
    history = distiller.fit(x, epochs=1, callbacks=[callback], **FIT).history
    assert selector.calls[0]["mode"] == "classwise"
    assert_allclose(history["loss"][0], distill_loss(distiller, x, eps))
    assert_allclose(history["pt_eps_1"][0], eps[:, 0].mean())
    assert_allclose(history["pt_eps_2"][0], eps[:, 1].mean())


# --- a model compiled with PTLoss --------------------------------------------


@pytest.mark.parametrize("jit_compile", JIT_MODES)
def test_plain_model_takes_the_change_also_in_a_second_fit(data, jit_compile):
    x, x_val, y_val = data
    teacher = tiny_classifier(F, K, seed=0)
    targets = np_softmax(np_mlp_logits(teacher, x)).astype("float32")
    model = tiny_classifier(F, K, hidden=6, seed=10)
    loss = PTLoss([0.0, 0.0], temperature=2.0, teacher_from_logits=False)
    model.compile(
        optimizer=keras.optimizers.SGD(0.0), loss=loss, jit_compile=jit_compile
    )
    z = np_mlp_logits(model, x)

    def expected(eps, temperature=2.0):
        return np.mean(np_pt_loss(targets, z, eps, temperature))

    # A first fit compiles the train function with zero coefficients.
    first = model.fit(x, targets, epochs=1, **FIT).history
    assert_allclose(first["loss"][0], expected([0.0, 0.0]), rtol=1e-5)

    selector = FixedSelector((EPS1, 2.0), (EPS2, 3.0))
    labels = y_val.copy()
    callback = ReestimateCoefficients(
        (x_val, labels),
        teacher=teacher,
        selector=selector,
        tune_temperature=True,
        verbose=0,
    )
    history = model.fit(
        x,
        targets,
        epochs=2,
        validation_data=(x, targets),
        callbacks=[callback, ChangeLabels(labels, {0})],
        **FIT,
    ).history
    assert_allclose(history["loss"][0], expected(EPS1), rtol=1e-5)
    assert_allclose(history["val_loss"][0], expected(EPS1), rtol=1e-5)
    assert_allclose(history["loss"][1], expected(EPS2, 3.0), rtol=1e-5)
    assert_allclose(history["val_loss"][1], expected(EPS2, 3.0), rtol=1e-5)
    assert_allclose(loss.coefficients, EPS2)
    assert loss.temperature == 3.0
    # The teacher's last layer is linear: its outputs were read as logits.
    assert_allclose(
        selector.calls[0]["teacher_probs"],
        np_softmax(np_mlp_logits(teacher, x_val)),
        rtol=1e-5,
    )
    # No variable was added to the model: it saves and loads as usual.
    assert len(model.non_trainable_variables) == 0


def test_plain_model_saved_after_the_callback_reloads(data, tmp_path):
    x, x_val, y_val = data
    teacher_probs = np_softmax(np_mlp_logits(tiny_classifier(F, K), x_val))
    model = tiny_classifier(F, K, seed=3)
    model.compile(optimizer="adam", loss=PTLoss([0.0, 0.0]))
    callback = ReestimateCoefficients(
        (None, y_val),
        teacher_probs=teacher_probs,
        selector=FixedSelector((EPS1, 1.0)),
        verbose=0,
    )
    targets = np_softmax(x[:, :K]).astype("float32")
    model.fit(x, targets, epochs=1, callbacks=[callback], **FIT)
    model.save(tmp_path / "model.keras")
    restored = keras.saving.load_model(tmp_path / "model.keras")
    assert_allclose(restored.loss.coefficients, EPS1)
    assert_allclose(restored.predict(x, verbose=0), model.predict(x, verbose=0))


class RecordTrainFunction(keras.callbacks.Callback):
    """Records whether the train function was rebuilt at an epoch's start."""

    def __init__(self):
        super().__init__()
        self.rebuilt = []

    def on_train_begin(self, logs=None):
        self.function = self.model.train_function

    def on_epoch_begin(self, epoch, logs=None):
        self.rebuilt.append(self.model.train_function is not self.function)
        self.function = self.model.train_function


def test_retrace_only_where_the_loss_is_not_model_state(data):
    x, x_val, y_val = data
    teacher = tiny_classifier(F, K, seed=0)
    plain = tiny_classifier(F, K, seed=3)
    plain.compile(optimizer="sgd", loss=PTLoss([0.0, 0.0]))
    targets = np_softmax(np_mlp_logits(teacher, x)).astype("float32")
    for model, fit_args, retrace in (
        (make_distiller(), (x,), False),
        # A compiled JAX step holds a variable that is not model state as a
        # constant: only there is the step rebuilt (backend-specific).
        (plain, (x, targets), BACKEND == "jax"),
    ):
        record = RecordTrainFunction()
        callback = ReestimateCoefficients(
            (x_val, y_val.copy()),
            teacher=teacher,
            selector=FixedSelector((EPS1, 2.0)),
            verbose=0,
        )
        model.fit(*fit_args, epochs=1, callbacks=[callback, record], **FIT)
        assert record.rebuilt == [retrace]


def test_explicit_teacher_flag_contradicting_the_teacher_raises(data):
    x, x_val, y_val = data
    model = tiny_classifier(F, K)
    model.compile(optimizer="sgd", loss=PTLoss())
    callback = ReestimateCoefficients(
        (x_val, y_val),
        teacher=tiny_classifier(F, K),
        teacher_from_logits=False,
        verbose=0,
    )
    with pytest.raises(ValueError, match="teacher outputs logits"):
        model.fit(x, np.full((N, K), 1 / K), callbacks=[callback], **FIT)


def test_teacher_with_an_unknown_last_layer_needs_the_flag(data):
    x, x_val, y_val = data
    teacher = keras.Sequential(
        [keras.Input((F,)), keras.layers.Dense(K, "relu", name="relu_out")]
    )
    model = tiny_classifier(F, K)
    model.compile(optimizer="sgd", loss=PTLoss([0.0]))
    callback = ReestimateCoefficients(
        (x_val, y_val), teacher=teacher, verbose=0
    )
    with pytest.raises(ValueError, match="Cannot tell.*'relu_out'"):
        model.fit(x, np.full((N, K), 1 / K), callbacks=[callback], **FIT)
    selector = FixedSelector((EPS1[:1], 1.0))
    callback = ReestimateCoefficients(
        (x_val, y_val),
        teacher=teacher,
        teacher_from_logits=True,
        selector=selector,
        verbose=0,
    )
    model.fit(x, np.full((N, K), 1 / K), callbacks=[callback], **FIT)
    assert_allclose(
        selector.calls[0]["teacher_probs"],
        np_softmax(np.asarray(teacher.predict(x_val, verbose=0))),
        rtol=1e-5,
    )


# --- recomputation, frequency, logs ------------------------------------------


def test_unchanged_teacher_and_data_are_not_recomputed(data, capsys):
    x, x_val, y_val = data
    distiller = make_distiller()
    selector = FixedSelector((EPS1, 2.0))
    callback = ReestimateCoefficients((x_val, y_val), selector=selector)
    history = distiller.fit(x, epochs=3, callbacks=[callback], **FIT).history
    assert len(selector.calls) == 1 and callback.num_selections == 1
    assert history["pt_reestimated"] == [1.0, 0.0, 0.0]
    lines = [
        line
        for line in capsys.readouterr().out.splitlines()
        if "ReestimateCoefficients" in line
    ]
    assert len(lines) == 3
    assert lines[0].startswith("Epoch 1: ") and "brier teacher 0.5" in lines[0]
    assert "unchanged" in lines[1] and lines[2].startswith("Epoch 3: ")


def test_a_changed_teacher_is_reselected(data):
    x, x_val, y_val = data
    teacher = tiny_classifier(F, K, seed=0)
    model = tiny_classifier(F, K, seed=3)
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss=PTLoss([0.0, 0.0]))
    targets = np_softmax(np_mlp_logits(teacher, x)).astype("float32")
    selector = FixedSelector((EPS1, 1.0), (EPS2, 1.0))
    callback = ReestimateCoefficients(
        (x_val, y_val), teacher=teacher, selector=selector, verbose=0
    )

    def perturb(epoch, logs):
        if epoch == 1:
            weights = teacher.get_weights()
            teacher.set_weights([w * 1.5 for w in weights])

    model.fit(
        x,
        targets,
        epochs=3,
        callbacks=[
            keras.callbacks.LambdaCallback(on_epoch_end=perturb),
            callback,
        ],
        **FIT,
    )
    assert len(selector.calls) == 2
    assert_allclose(
        selector.calls[1]["teacher_probs"],
        np_softmax(np_mlp_logits(teacher, x_val)),
        rtol=1e-5,
    )


def test_frequency_limits_the_reestimation_epochs(data):
    x, x_val, y_val = data
    distiller = make_distiller()
    selector = FixedSelector((EPS1, 2.0), (EPS2, 2.0))
    labels = y_val.copy()
    callback = ReestimateCoefficients(
        (x_val, labels), selector=selector, frequency=2, verbose=0
    )
    history = distiller.fit(
        x,
        epochs=4,
        callbacks=[callback, ChangeLabels(labels, {0, 1, 2, 3})],
        **FIT,
    ).history
    assert history["pt_reestimated"] == [1.0, 0.0, 1.0, 0.0]
    assert len(selector.calls) == 2
    assert history["pt_eps_1"] == pytest.approx([0.6, 0.6, -0.3, -0.3])


def test_logs_reach_history_and_csv_logger(data, tmp_path):
    x, x_val, y_val = data
    distiller = make_distiller()
    selector = FixedSelector((EPS1, 2.0), teacher_score=0.4, proxy_score=0.3)
    callback = ReestimateCoefficients(
        (x_val, y_val), selector=selector, verbose=0
    )
    path = tmp_path / "log.csv"
    history = distiller.fit(
        x,
        epochs=2,
        callbacks=[callback, keras.callbacks.CSVLogger(str(path))],
        **FIT,
    ).history
    expected = {
        "pt_eps_1": 0.6,
        "pt_eps_2": -0.1,
        "pt_temperature": 2.0,
        "pt_teacher_brier": 0.4,
        "pt_proxy_brier": 0.3,
    }
    with open(path) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2
    for key, value in expected.items():
        assert history[key] == pytest.approx([value, value])
        assert [float(r[key]) for r in rows] == pytest.approx([value, value])
    assert [float(r["pt_reestimated"]) for r in rows] == [1.0, 0.0]


# --- the real selector -------------------------------------------------------


def test_real_select_coefficients_result_is_applied(data):
    x, x_val, y_val = data
    distiller = make_distiller([0.0, 0.0, 0.0])
    options = dict(num_candidates=16, max_iter=5)
    callback = ReestimateCoefficients(
        (x_val, y_val), selector_kwargs=options, seed=3, verbose=0
    )
    history = distiller.fit(x, epochs=1, callbacks=[callback], **FIT).history
    probs = np_softmax(np_mlp_logits(distiller.teacher, x_val))
    expected = select_coefficients(
        probs,
        y_val,
        order=3,
        mode="shared",
        temperature=2.0,
        seed=3,
        verbose=0,
        **options,
    )
    assert_allclose(
        callback.result.coefficients,
        expected.coefficients,
        rtol=1e-4,
        atol=1e-6,
    )
    assert_allclose(distiller.coefficients, callback.result.coefficients)
    assert_allclose(
        history["loss"][0],
        distill_loss(distiller, x, callback.result.coefficients),
        rtol=1e-5,
    )
    assert history["pt_proxy_brier"][0] == pytest.approx(
        expected.proxy_score, rel=1e-4
    )
    assert history["pt_proxy_brier"][0] <= history["pt_teacher_brier"][0]


# --- errors ------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(validation_data=[1, 2, 3]), "validation_data"),
        (
            dict(validation_data=(np.zeros((4, F)), np.zeros((4, 2, 2)))),
            r"shape \(N,\)",
        ),
        (
            dict(validation_data=(np.zeros((5, F)), np.zeros(4, "int32"))),
            "as many inputs as labels",
        ),
        (dict(validation_data=(None, np.zeros(4, "int32"))), "x_val"),
        (dict(teacher_probs=np.ones((3, K)) / K), "teacher_probs"),
        (dict(frequency=0), "frequency"),
        (dict(selector="nope"), "selector"),
        (dict(verbose=2), "verbose"),
        (dict(loss=KDLoss()), "loss"),
        (dict(teacher="model"), "teacher"),
    ],
)
def test_invalid_arguments_raise_clear_errors(kwargs, match):
    arguments = dict(validation_data=(np.zeros((4, F)), np.zeros(4, "int32")))
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=match):
        ReestimateCoefficients(**arguments)


def test_plain_model_without_teacher_raises_at_fit(data):
    x, x_val, y_val = data
    model = tiny_classifier(F, K)
    model.compile(optimizer="sgd", loss=PTLoss())
    callback = ReestimateCoefficients((x_val, y_val), verbose=0)
    with pytest.raises(ValueError, match="pass the teacher"):
        model.fit(x, np.full((N, K), 1 / K), callbacks=[callback], **FIT)


def test_model_without_ptloss_or_kd_distiller_raises(data):
    x, x_val, y_val = data
    model = tiny_classifier(F, K)
    model.compile(optimizer="sgd", loss="mse")
    callback = ReestimateCoefficients((x_val, y_val), verbose=0)
    with pytest.raises(ValueError, match="exactly one keras_ptloss.PTLoss"):
        model.fit(x, np.zeros((N, K)), callbacks=[callback], **FIT)
    distiller = Distiller(
        tiny_classifier(F, K),
        tiny_classifier(F, K),
        KDLoss(teacher_from_logits=True),
    )
    distiller.compile(optimizer="sgd")
    with pytest.raises(ValueError, match="KDLoss"):
        distiller.fit(x, callbacks=[callback], **FIT)
