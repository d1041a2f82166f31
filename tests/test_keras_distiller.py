"""`KDDistillation` as a drop-in for `keras.distillation.LogitsDistillation`.

Exercises `keras.distillation.Distiller` with `KDDistillation` the way
Keras's tests exercise `LogitsDistillation` (construction, several
distillation losses with weights, `student_loss_weight`, fit / evaluate /
predict, `get_config` / `from_config`, `.keras` saving), with every form of
`loss` that `LogitsDistillation` takes. Every loss value is compared with
numpy: `T**2 * KL` and `T**2 * CE` of the tempered softmaxes, in float64.
"""

import json

import keras
import numpy as np
import pytest
import scipy.special

from keras_ptloss import KDDistillation
from keras_ptloss import KDLoss
from keras_ptloss import PTLoss
from keras_ptloss import PTLossDistillation
from tests.utils import assert_allclose
from tests.utils import np_mlp_logits
from tests.utils import np_sparse_ce
from tests.utils import tiny_classifier
from tests.utils import to_numpy

N, F, K = 32, 5, 4
K2 = 3  # the second head of the two-output models
FIT = dict(batch_size=N, shuffle=False, verbose=0)
SCCE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def np_log_probs(values, temperature, from_logits=True):
    values = np.asarray(values, "float64")
    if not from_logits:
        with np.errstate(divide="ignore"):
            values = np.log(values)
    return scipy.special.log_softmax(values / temperature, axis=-1)


def np_kd_rows(t, s, temperature, teacher_from_logits=True):
    """`T**2 * KL(p || q)` per row (last axis: classes), float64."""
    log_p = np_log_probs(t, temperature, teacher_from_logits)
    log_q = np_log_probs(s, temperature)
    p = np.exp(log_p)
    terms = np.where(p > 0, p * (np.where(p > 0, log_p, 0.0) - log_q), 0.0)
    return temperature**2 * np.sum(terms, axis=-1)


def np_ce_rows(t, s, temperature, teacher_from_logits=True):
    """`T**2 * CE(p, q) = -T**2 * sum p log q` per row, float64."""
    p = np.exp(np_log_probs(t, temperature, teacher_from_logits))
    log_q = np_log_probs(s, temperature)
    return -(temperature**2) * np.sum(p * log_q, axis=-1)


def np_divergence(kind, t, s, temperature, summed=False, **flags):
    rows = (np_kd_rows if kind == "kl" else np_ce_rows)(
        t, s, temperature, **flags
    )
    return np.sum(rows) if summed else np.mean(rows)


# Every form of `loss` LogitsDistillation takes for one output, with the
# divergence it means here and whether it sums over the examples.
LOSS_FORMS = [
    ("kl_divergence", "kl", False),
    ("kld", "kl", False),
    ("KLD", "kl", False),
    ("KLDivergence", "kl", False),
    (keras.losses.kl_divergence, "kl", False),
    (keras.losses.KLDivergence(), "kl", False),
    (keras.losses.KLDivergence(reduction="mean"), "kl", False),
    (keras.losses.KLDivergence(reduction=None), "kl", False),
    (keras.losses.KLDivergence(reduction="sum"), "kl", True),
    ("categorical_crossentropy", "ce", False),
    ("CategoricalCrossentropy", "ce", False),
    (keras.losses.categorical_crossentropy, "ce", False),
    (keras.losses.CategoricalCrossentropy(from_logits=True), "ce", False),
    (keras.losses.CategoricalCrossentropy(), "ce", False),
    (keras.losses.CategoricalCrossentropy(reduction="sum"), "ce", True),
]


def form_id(form):
    loss = form[0]
    if isinstance(loss, str):
        return loss
    if isinstance(loss, keras.losses.Loss):
        return f"{type(loss).__name__}-{loss.reduction}"
    return f"fn-{loss.__name__}"


def random_logits(rng, shape, scale=3.0):
    return (scale * rng.normal(size=shape)).astype("float32")


@pytest.mark.parametrize("form", LOSS_FORMS, ids=form_id)
def test_every_loss_form_computes_its_divergence(rng, form):
    loss, kind, summed = form
    for shape in ((8, K), (2, 3, K)):  # classifier and sequence outputs
        t, s = random_logits(rng, shape), random_logits(rng, shape)
        expected = np_divergence(kind, t, s, 2.0, summed)
        # Keras's positional order: LogitsDistillation(temperature, loss).
        for adapter in (
            KDDistillation(2.0, loss),
            KDDistillation(temperature=2.0, loss=loss),
        ):
            assert_allclose(adapter.compute_loss(t, s), expected, rtol=1e-5)
        # Softmax inputs: a constant added to every logit changes nothing.
        assert_allclose(
            adapter.compute_loss(t + 7.0, s - 5.0), expected, rtol=1e-5
        )
    if not summed:
        # Same value as the KDLoss adapter (KL) or KL plus the entropy (CE).
        kd = PTLossDistillation(KDLoss(2.0, teacher_from_logits=True))
        entropy = np.mean(np_ce_rows(t, t, 2.0))
        offset = entropy if kind == "ce" else 0.0
        assert_allclose(
            adapter.compute_loss(t, s),
            float(kd.compute_loss(t, s)) + offset,
            rtol=1e-5,
        )


def test_default_loss_and_temperature_are_logits_distillations(rng):
    t, s = random_logits(rng, (8, K)), random_logits(rng, (8, K))
    adapter = KDDistillation()
    assert adapter.temperature == 3.0
    assert adapter.get_config()["loss"] == "kl_divergence"
    assert adapter.loss.teacher_from_logits is True
    assert_allclose(adapter.compute_loss(t, s), np_divergence("kl", t, s, 3.0))


@pytest.mark.parametrize("kind", ["kl", "ce"])
def test_chunked_path_gives_the_same_values(rng, kind):
    loss = "kld" if kind == "kl" else keras.losses.CategoricalCrossentropy()
    adapter = KDDistillation(2.0, loss, chunk_size=3)
    for shape in ((8, K), (2, 3, K)):
        t, s = random_logits(rng, shape), random_logits(rng, shape)
        expected = np_divergence(kind, t, s, 2.0)
        assert_allclose(adapter.compute_loss(t, s), expected, rtol=1e-5)


@pytest.mark.parametrize("kind", ["kl", "ce"])
def test_teacher_probabilities_with_zeros(rng, kind):
    t = scipy.special.softmax(random_logits(rng, (8, K)), axis=-1)
    t[:, 0] = 0.0
    t = (t / t.sum(-1, keepdims=True)).astype("float32")
    s = random_logits(rng, (8, K))
    loss = "kl_divergence" if kind == "kl" else "categorical_crossentropy"
    adapter = KDDistillation(2.0, loss, teacher_from_logits=False)
    value = adapter.compute_loss(t, s)
    expected = np_divergence(kind, t, s, 2.0, teacher_from_logits=False)
    assert np.isfinite(float(value))
    assert_allclose(value, expected, rtol=1e-5)


def test_temperature_set_during_training_reaches_both_terms(rng):
    t, s = random_logits(rng, (8, K)), random_logits(rng, (8, K))
    adapter = KDDistillation(2.0, "categorical_crossentropy")
    adapter.loss.set_temperature(4.0)
    assert adapter.temperature == 4.0
    assert_allclose(adapter.compute_loss(t, s), np_divergence("ce", t, s, 4.0))
    adapter.temperature = 1.5  # as LogitsDistillation's attribute
    assert adapter.loss.temperature == 1.5
    assert_allclose(adapter.compute_loss(t, s), np_divergence("ce", t, s, 1.5))
    with pytest.raises(ValueError, match="temperature"):
        adapter.temperature = -1.0


@pytest.mark.parametrize(
    "loss",
    [
        "mse",
        "not_a_loss",
        keras.losses.MeanSquaredError(),
        keras.losses.mean_absolute_error,
        KDLoss(),
        PTLoss(),
        keras.losses.KLDivergence,  # the class, not an instance
        keras.losses.CategoricalCrossentropy(label_smoothing=0.1),
        keras.losses.CategoricalCrossentropy(axis=0),
        ["kl_divergence", "mse"],
    ],
    ids=lambda loss: type(loss).__name__ if not isinstance(loss, str) else loss,
)
def test_unsupported_loss_raises_naming_the_accepted_values(loss):
    with pytest.raises(ValueError, match=r"`loss` must be 'kl_divergence'"):
        KDDistillation(3.0, loss)


@pytest.mark.parametrize("loss", [None, [None, None], {"a": None}])
def test_loss_of_only_none_raises(loss):
    with pytest.raises(ValueError, match="at least one output"):
        KDDistillation(3.0, loss)


@pytest.mark.parametrize("temperature", [0, -1.0, "3", None, float("nan")])
def test_invalid_temperature_raises(temperature):
    with pytest.raises(ValueError, match="temperature"):
        KDDistillation(temperature)


def test_loss_structure_must_match_the_outputs(rng):
    t, s = random_logits(rng, (8, K)), random_logits(rng, (8, K))
    two = KDDistillation(3.0, ["kl_divergence", None])
    with pytest.raises(ValueError, match="structure of the models' outputs"):
        two.compute_loss(t, s)
    one = KDDistillation(3.0)
    with pytest.raises(ValueError, match="structure of the models' outputs"):
        one.validate_outputs([t, t], [s, s])
    # Teacher and student outputs of different structures (Keras's check).
    with pytest.raises(ValueError):
        one.validate_outputs(t, {"output": s})
    one.validate_outputs(t, s)
    two.validate_outputs((t, t), (s, s))  # loss=[...] matches a tuple


# --- in keras.distillation.Distiller -----------------------------------------


@pytest.fixture
def data(rng):
    x = rng.normal(size=(N, F)).astype("float32")
    y = rng.integers(0, K, size=N).astype("int32")
    return x, y


def distiller_of(losses, weights=None, student_loss_weight=0.5, lr=0.0):
    distiller = keras.distillation.Distiller(
        teacher=tiny_classifier(F, K, seed=0),
        student=tiny_classifier(F, K, hidden=6, seed=10),
        distillation_losses=losses,
        distillation_loss_weights=weights,
        student_loss_weight=student_loss_weight,
    )
    optimizer = (
        keras.optimizers.SGD(0.0) if lr == 0.0 else keras.optimizers.Adam(lr)
    )
    distiller.compile(optimizer=optimizer, loss=SCCE, metrics=["accuracy"])
    return distiller


def np_logs(distiller, x, y, terms, student_loss_weight):
    """Keras's Distiller logs, from numpy: `terms` are (weight, kind, T)."""
    t = np_mlp_logits(distiller.teacher, x)
    z = np_mlp_logits(distiller.student, x)
    distillation = sum(w * np_divergence(k, t, z, T) for w, k, T in terms)
    student = np.mean(np_sparse_ce(z, y))
    total = (
        student_loss_weight * student + (1 - student_loss_weight) * distillation
    )
    return {
        "distillation_loss": distillation,
        "student_loss": student,
        "total_loss": total,
    }


def test_construction(data):
    distiller = distiller_of(KDDistillation(temperature=2.0))
    assert not distiller.teacher.trainable
    assert distiller.student.trainable
    assert distiller.student_loss_weight == 0.5
    assert isinstance(distiller.distillation_losses, list)
    assert len(distiller.distillation_losses) == 1
    adapter = distiller.distillation_losses[0]
    assert isinstance(adapter, KDDistillation)
    assert adapter.temperature == 2.0
    assert distiller.optimizer is not None
    # The adapter's temperature is model state of the Distiller.
    state = {id(v) for v in distiller.non_trainable_variables}
    assert all(id(v) in state for v in adapter.loss.variables)
    x, _ = data
    assert_allclose(to_numpy(distiller(x)), to_numpy(distiller.student(x)))


def test_several_distillation_losses_with_weights(data):
    x, y = data
    losses = [
        KDDistillation(temperature=3.0),
        KDDistillation(2.0, "categorical_crossentropy"),
    ]
    distiller = distiller_of(losses, weights=[0.7, 0.3])
    assert distiller.distillation_loss_weights == [0.7, 0.3]
    # SGD(0) and one batch: the logged losses are those of these weights.
    history = distiller.fit(x, y, epochs=1, **FIT).history
    expected = np_logs(
        distiller, x, y, [(0.7, "kl", 3.0), (0.3, "ce", 2.0)], 0.5
    )
    for name, value in expected.items():
        assert_allclose(history[name][0], value, rtol=1e-5)
    with pytest.raises(ValueError, match="distillation_loss_weights"):
        distiller_of(losses, weights=[1.0])


@pytest.mark.parametrize("student_loss_weight", [0.0, 0.25, 1.0])
def test_student_loss_weight(data, student_loss_weight):
    x, y = data
    distiller = distiller_of(
        KDDistillation(2.0), student_loss_weight=student_loss_weight
    )
    logs = distiller.evaluate(x, y, batch_size=N, verbose=0, return_dict=True)
    expected = np_logs(distiller, x, y, [(1.0, "kl", 2.0)], student_loss_weight)
    if student_loss_weight == 1.0:  # Keras skips the distillation loss
        expected["distillation_loss"] = 0.0
    if student_loss_weight == 0.0:  # and the student loss
        expected["student_loss"] = 0.0
    for name, value in expected.items():
        assert_allclose(logs[name], value, rtol=1e-5)


def test_fit_evaluate_predict(data, rng):
    x, y = data
    x_val = rng.normal(size=(16, F)).astype("float32")
    y_val = rng.integers(0, K, size=16).astype("int32")
    distiller = distiller_of(
        KDDistillation(2.0), student_loss_weight=0.1, lr=0.05
    )
    student_before = [np.array(w) for w in distiller.student.get_weights()]
    teacher_before = [np.array(w) for w in distiller.teacher.get_weights()]
    history = distiller.fit(
        x,
        y,
        validation_data=(x_val, y_val),
        epochs=6,
        batch_size=16,
        shuffle=False,
        verbose=0,
    ).history
    for name in ("total_loss", "student_loss", "distillation_loss"):
        assert len(history[name]) == 6
        assert np.all(np.isfinite(history[name]))
    assert "val_total_loss" in history
    assert history["distillation_loss"][-1] < history["distillation_loss"][0]
    for a, b in zip(teacher_before, distiller.teacher.get_weights(), strict=1):
        assert np.array_equal(a, b)
    assert any(
        not np.allclose(a, b)
        for a, b in zip(
            student_before, distiller.student.get_weights(), strict=1
        )
    )
    logs = distiller.evaluate(
        x_val, y_val, batch_size=16, verbose=0, return_dict=True
    )
    expected = np_logs(distiller, x_val, y_val, [(1.0, "kl", 2.0)], 0.1)
    for name, value in expected.items():
        assert_allclose(logs[name], value, rtol=1e-5)
    predictions = distiller.predict(x_val, verbose=0)
    assert predictions.shape == (16, K)
    assert_allclose(
        predictions, np_mlp_logits(distiller.student, x_val), rtol=1e-5
    )


# --- two-output models --------------------------------------------------------


def two_head_model(seed, hidden):
    inputs = keras.Input((F,))
    h = keras.layers.Dense(
        hidden,
        "relu",
        name="hidden",
        kernel_initializer=keras.initializers.GlorotUniform(seed),
    )(inputs)
    a = keras.layers.Dense(
        K,
        name="a",
        kernel_initializer=keras.initializers.GlorotUniform(seed + 1),
    )(h)
    b = keras.layers.Dense(
        K2,
        name="b",
        kernel_initializer=keras.initializers.GlorotUniform(seed + 2),
    )(h)
    return keras.Model(inputs, [a, b])


def np_two_heads(model, x):
    def dense(name, v):
        w, b = (
            np.asarray(a, "float64")
            for a in model.get_layer(name).get_weights()
        )
        return v @ w + b

    h = np.maximum(dense("hidden", np.asarray(x, "float64")), 0.0)
    return dense("a", h), dense("b", h)


# A skipped output's head gets no gradient (Keras warns).
@pytest.mark.filterwarnings("ignore:Gradients do not exist")
@pytest.mark.parametrize(
    "loss, terms",
    [
        (["kl_divergence", "categorical_crossentropy"], [("kl", 0), ("ce", 1)]),
        ([None, keras.losses.KLDivergence()], [("kl", 1)]),
        (("categorical_crossentropy", None), [("ce", 0)]),
    ],
)
def test_two_output_models(data, rng, loss, terms):
    x, _ = data
    y = [rng.integers(0, K, N), rng.integers(0, K2, N)]
    distiller = keras.distillation.Distiller(
        two_head_model(0, 8),
        two_head_model(10, 6),
        KDDistillation(2.0, loss),
        student_loss_weight=0.0,
    )
    distiller.compile(optimizer=keras.optimizers.SGD(0.0), loss=[SCCE, SCCE])
    history = distiller.fit(x, y, epochs=1, **FIT).history
    t = np_two_heads(distiller.teacher, x)
    z = np_two_heads(distiller.student, x)
    expected = sum(np_divergence(k, t[i], z[i], 2.0) for k, i in terms)
    assert_allclose(history["distillation_loss"][0], expected, rtol=1e-5)
    assert_allclose(history["total_loss"][0], expected, rtol=1e-5)
    # One loss for two outputs: a clear error, not a silent broadcast.
    distiller = keras.distillation.Distiller(
        two_head_model(0, 8),
        two_head_model(10, 6),
        KDDistillation(2.0),
        student_loss_weight=0.0,
    )
    distiller.compile(optimizer="sgd", loss=[SCCE, SCCE])
    with pytest.raises(ValueError, match="structure of the models' outputs"):
        distiller.evaluate(x, y, batch_size=N, verbose=0)


def test_dict_outputs(data, rng):
    x, _ = data

    def model(seed):
        inputs = keras.Input((F,))
        h = keras.layers.Dense(8, "relu", name="hidden")(inputs)
        return keras.Model(
            inputs,
            {
                "a": keras.layers.Dense(K, name="a")(h),
                "b": keras.layers.Dense(K2, name="b")(h),
            },
        )

    teacher, student = model(0), model(1)
    adapter = KDDistillation(2.0, {"a": None, "b": "kld"})
    t = teacher(x)
    z = student(x)
    assert_allclose(
        adapter.compute_loss(t, z),
        np_divergence("kl", to_numpy(t["b"]), to_numpy(z["b"]), 2.0),
        rtol=1e-5,
    )


# --- get_config / from_config and .keras saving ------------------------------

CONFIG_FORMS = [
    "kl_divergence",
    keras.losses.kl_divergence,
    keras.losses.KLDivergence(reduction="sum"),
    ["kl_divergence", None],
    [keras.losses.CategoricalCrossentropy(from_logits=True), "kld"],
    {"a": "categorical_crossentropy", "b": None},
]


@pytest.mark.parametrize(
    "loss",
    CONFIG_FORMS,
    ids=["str", "fn", "KLD-sum", "list", "list-CCE", "dict"],
)
def test_config_round_trip(rng, loss):
    adapter = KDDistillation(
        2.5, loss, teacher_from_logits=None, chunk_size=3, name="kd"
    )
    config = adapter.get_config()
    json.dumps(config)
    restored = KDDistillation.from_config(json.loads(json.dumps(config)))
    assert restored.get_config() == config
    assert restored.name == "kd" and restored.temperature == 2.5
    assert restored.loss.teacher_from_logits is None
    assert restored.loss.chunk_size == 3
    again = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(adapter)
    )
    assert isinstance(again, KDDistillation)
    assert again.get_config() == config
    # Same values on outputs of the loss's structure.
    t = keras.tree.map_structure(
        lambda _: random_logits(rng, (8, K)), adapter._loss_structure
    )
    s = keras.tree.map_structure(
        lambda _: random_logits(rng, (8, K)), adapter._loss_structure
    )
    restored.loss.teacher_from_logits = adapter.loss.teacher_from_logits = True
    assert_allclose(restored.compute_loss(t, s), adapter.compute_loss(t, s))


def test_distiller_get_config_and_from_config(data):
    x, _ = data
    losses = [
        KDDistillation(3.0, "kl_divergence"),
        KDDistillation(2.0, keras.losses.CategoricalCrossentropy()),
    ]
    original = distiller_of(losses, weights=[0.6, 0.4], student_loss_weight=0.7)
    config = original.get_config()
    for key in (
        "teacher",
        "student",
        "distillation_losses",
        "distillation_loss_weights",
        "student_loss_weight",
    ):
        assert key in config
    config = json.loads(json.dumps(config))
    rebuilt = keras.distillation.Distiller.from_config(config)
    assert rebuilt.student_loss_weight == 0.7
    assert rebuilt.distillation_loss_weights == [0.6, 0.4]
    for a, b in zip(rebuilt.distillation_losses, losses, strict=True):
        assert isinstance(a, KDDistillation)
        assert a.get_config()["loss"] == b.get_config()["loss"]
        assert a.temperature == b.temperature
    assert rebuilt(x[:2]).shape == (2, K)


def test_keras_save_and_load(data, tmp_path):
    x, y = data
    losses = [
        KDDistillation(3.0, keras.losses.KLDivergence(reduction="sum")),
        KDDistillation(2.0, "categorical_crossentropy"),
    ]
    distiller = distiller_of(
        losses, weights=[0.2, 0.8], student_loss_weight=0.3, lr=0.05
    )
    distiller.fit(x, y, epochs=2, batch_size=16, shuffle=False, verbose=0)
    distiller.distillation_losses[1].loss.set_temperature(4.0)
    path = tmp_path / "distiller.keras"
    distiller.save(path)
    loaded = keras.saving.load_model(path, compile=False)
    assert isinstance(loaded, keras.distillation.Distiller)
    assert loaded.student_loss_weight == 0.3
    assert loaded.distillation_loss_weights == [0.2, 0.8]
    for a, b in zip(
        loaded.distillation_losses, distiller.distillation_losses, strict=1
    ):
        assert isinstance(a, KDDistillation)
        assert a.get_config() == b.get_config()
    assert loaded.distillation_losses[1].temperature == 4.0
    assert_allclose(
        loaded.predict(x, verbose=0),
        distiller.predict(x, verbose=0),
        rtol=0,
        atol=0,
    )
    # The loaded Distiller computes the same losses as the original.
    loaded.compile(optimizer="sgd", loss=SCCE)
    logs = loaded.evaluate(x, y, batch_size=N, verbose=0, return_dict=True)
    t = np_mlp_logits(loaded.teacher, x)
    z = np_mlp_logits(loaded.student, x)
    distillation = 0.2 * np_divergence("kl", t, z, 3.0, summed=True) + 0.8 * (
        np_divergence("ce", t, z, 4.0)
    )
    assert_allclose(logs["distillation_loss"], distillation, rtol=1e-5)


# --- PTLossDistillation takes the common arguments --------------------------


def test_pt_loss_distillation_temperature(rng):
    t, s = random_logits(rng, (8, K)), random_logits(rng, (8, K))
    loss = PTLoss([0.0], temperature=1.0, teacher_from_logits=True)
    adapter = PTLossDistillation(loss, temperature=2.5)
    assert adapter.loss.temperature == 2.5
    assert loss.temperature == 1.0  # the loss passed in: unchanged
    # Zero coefficients: PTLoss is KD.
    assert_allclose(adapter.compute_loss(t, s), np_divergence("kl", t, s, 2.5))
    kept = PTLossDistillation(KDLoss(1.5, teacher_from_logits=True))
    assert kept.loss.temperature == 1.5
    restored = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(adapter)
    )
    assert restored.loss.temperature == 2.5
    with pytest.raises(ValueError, match="temperature"):
        PTLossDistillation(loss, temperature=0.0)
    with pytest.raises(ValueError, match="distils one output"):
        adapter.validate_outputs([t, t], [s, s])
