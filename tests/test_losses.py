"""PTLoss and KDLoss against independent numpy references.

The identities checked are those of docs/design.md, "The loss".
"""

import keras
import numpy as np
import pytest
from keras import ops

from keras_ptloss import KDLoss
from keras_ptloss import LSKDLoss
from keras_ptloss import PTLoss
from keras_ptloss import kd_loss
from keras_ptloss import pt_loss
from tests.utils import assert_allclose
from tests.utils import np_pt_loss
from tests.utils import np_softmax
from tests.utils import np_standardize
from tests.utils import np_temper
from tests.utils import random_probs
from tests.utils import tiny_classifier
from tests.utils import to_numpy
from tests.utils import value_and_grad

K = 6
BATCH = 5


@pytest.fixture
def batch(rng):
    """Teacher probabilities and student logits for one small batch."""
    teacher = random_probs(rng, (BATCH, K), concentration=0.7)
    logits = rng.normal(scale=2.0, size=(BATCH, K))
    return teacher, logits


def np_kl(p, q):
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.sum(np.where(p > 0, p * (np.log(p) - np.log(q)), 0.0), -1)


# --- The identities of docs/design.md, "The loss" ----------------------------


@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_zero_coefficients_equal_tempered_kl(batch, temperature):
    teacher, logits = batch
    expected = temperature**2 * np_kl(
        np_temper(teacher, temperature), np_softmax(logits, temperature)
    )
    actual = pt_loss(
        teacher,
        logits,
        np.zeros(5),
        temperature=temperature,
        teacher_from_logits=False,
    )
    assert_allclose(actual, expected)
    assert_allclose(
        kd_loss(teacher, logits, temperature, teacher_from_logits=False),
        expected,
    )


def test_zero_coefficients_equal_keras_kl_divergence(batch):
    teacher, logits = batch
    keras_kl = keras.losses.KLDivergence()(teacher, np_softmax(logits))
    assert_allclose(
        PTLoss(np.zeros(3), teacher_from_logits=False)(teacher, logits),
        keras_kl,
    )
    assert_allclose(
        KDLoss(teacher_from_logits=False)(teacher, logits), keras_kl
    )


@pytest.mark.parametrize("order", [1, 3, 5])
def test_truncated_log_series_leaves_the_tail(batch, order):
    teacher, logits = batch
    temperature = 1.7
    eps = -1.0 / np.arange(1, order + 1)
    p = np_temper(teacher, temperature)
    u = 1.0 - np_softmax(logits, temperature)
    # The series tail sum_{m>M} u^m / m, summed to convergence.
    tail = sum(u**m / m for m in range(order + 1, 4000))
    with np.errstate(divide="ignore", invalid="ignore"):
        entropy_term = np.where(p > 0, p * np.log(p), 0.0)
    expected = temperature**2 * np.sum(entropy_term + p * tail, -1)
    actual = pt_loss(
        teacher, logits, eps, temperature=temperature, teacher_from_logits=False
    )
    assert_allclose(actual, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("eps", [[2.0], [1.0, 0.5, -0.05], [0.3, 0, 0, 0, 0.1]])
def test_one_hot_teacher_is_poly_loss(rng, eps):
    labels = rng.integers(0, K, size=BATCH)
    one_hot = np.eye(K)[labels]
    logits = rng.normal(size=(BATCH, K))
    q_y = np_softmax(logits)[np.arange(BATCH), labels]
    expected = -np.log(q_y) + sum(
        e * (1 - q_y) ** (m + 1) for m, e in enumerate(eps)
    )
    assert_allclose(
        pt_loss(one_hot, logits, eps, teacher_from_logits=False), expected
    )


# --- The general formula ------------------------------------------------------


@pytest.mark.parametrize("classwise", [False, True])
@pytest.mark.parametrize("temperature", [1.0, 3.0])
def test_matches_numpy_reference(batch, rng, classwise, temperature):
    teacher, logits = batch
    shape = (K, 4) if classwise else (4,)
    eps = rng.uniform(-0.05, 0.8, size=shape)
    loss = PTLoss(
        eps, temperature=temperature, reduction=None, teacher_from_logits=False
    )
    expected = np_pt_loss(teacher, logits, eps, temperature)
    assert_allclose(loss(teacher, logits), expected)


def test_teacher_logits_equal_teacher_probabilities(batch, rng):
    _, logits = batch
    teacher_logits = rng.normal(scale=3.0, size=(BATCH, K))
    eps = [0.4, 0.1]
    from_logits = PTLoss(eps, temperature=2.0, teacher_from_logits=True)
    from_probs = PTLoss(eps, temperature=2.0, teacher_from_logits=False)
    expected = np.mean(
        np_pt_loss(teacher_logits, logits, eps, 2.0, teacher_from_logits=True)
    )
    assert_allclose(from_logits(teacher_logits, logits), expected)
    assert_allclose(from_probs(np_softmax(teacher_logits), logits), expected)


def test_student_probabilities_equal_student_logits(batch):
    teacher, logits = batch
    eps = [0.5, 0.2, 0.1]
    probs_loss = PTLoss(
        eps, temperature=2.0, from_logits=False, teacher_from_logits=False
    )
    logits_loss = PTLoss(eps, temperature=2.0, teacher_from_logits=False)
    assert_allclose(
        probs_loss(teacher, np_softmax(logits)),
        logits_loss(teacher, logits),
        rtol=1e-5,
    )


def test_same_value_on_every_backend():
    """Fixed inputs against a float64 reference: each backend's run of this
    test pins the value to 1e-5, so the backends agree with each other."""
    rng = np.random.default_rng(42)
    teacher = random_probs(rng, (16, 10))
    logits = rng.normal(scale=3.0, size=(16, 10))
    eps = rng.uniform(0.0, 0.5, size=(10, 5))
    expected = np.mean(np_pt_loss(teacher, logits, eps, 4.0))
    actual = PTLoss(eps, temperature=4.0, teacher_from_logits=False)(
        teacher, logits
    )
    assert_allclose(actual, expected, rtol=1e-5, atol=0)


# --- Gradients ----------------------------------------------------------------


def np_pt_loss_grad(teacher, logits, eps, temperature):
    """Closed-form d(sum of losses)/d logits.

    With psi_k(q) = -log q + sum_m eps_km (1-q)^m and a_k = p_k psi_k'(q_k) q_k:
    dL/dz_j = T * (a_j - q_j * sum_k a_k).
    """
    t = temperature
    p, q = np_temper(teacher, t), np_softmax(logits, t)
    eps = np.broadcast_to(np.atleast_2d(eps), (K, np.shape(eps)[-1]))
    dpsi = -1.0 / q - sum(
        m * eps[:, m - 1] * (1 - q) ** (m - 1)
        for m in range(1, eps.shape[1] + 1)
    )
    a = p * dpsi * q
    return t * (a - q * a.sum(-1, keepdims=True))


@pytest.mark.parametrize("classwise", [False, True])
def test_gradient_matches_closed_form(batch, rng, classwise):
    teacher, logits = batch
    eps = rng.uniform(0.0, 0.6, size=(K, 3) if classwise else (3,))
    value, grad = value_and_grad(
        lambda z: ops.sum(
            pt_loss(teacher, z, eps, temperature=2.0, teacher_from_logits=False)
        ),
        logits,
    )
    expected = np_pt_loss_grad(teacher, logits, eps, 2.0)
    assert_allclose(grad, expected, rtol=1e-4, atol=1e-5)
    assert value == pytest.approx(
        np_pt_loss(teacher, logits, eps, 2.0).sum(), rel=1e-5
    )


def test_gradient_matches_finite_differences(batch):
    teacher, logits = batch
    eps = np.array([0.7, -0.1, 0.05])

    def total(z):
        return np_pt_loss(teacher, z, eps, 1.5).sum()

    step = 1e-6
    numeric = np.zeros_like(logits)
    for idx in np.ndindex(*logits.shape):
        bump = np.zeros_like(logits)
        bump[idx] = step
        numeric[idx] = (total(logits + bump) - total(logits - bump)) / (
            2 * step
        )
    _, grad = value_and_grad(
        lambda z: ops.sum(
            pt_loss(teacher, z, eps, temperature=1.5, teacher_from_logits=False)
        ),
        logits,
    )
    assert_allclose(grad, numeric, rtol=1e-3, atol=1e-4)


# --- Numerical robustness -----------------------------------------------------


@pytest.mark.parametrize("scale", [1e4, -1e4])
def test_extreme_logits_and_degenerate_teacher_stay_finite(scale):
    teacher = np.array(
        [[1.0, 0.0, 0.0, 0.0], [0.0, 0.5, 0.5, 0.0], [0.25, 0.25, 0.25, 0.25]]
    )
    logits = np.array(
        [[scale, 0.0, -scale, 1.0], [0.0, scale, scale, -scale], [scale] * 4]
    )
    for temperature in (1.0, 4.0):
        loss_fn = PTLoss(
            [1.0, 0.3, 0.1], temperature=temperature, teacher_from_logits=False
        )
        value, grad = value_and_grad(lambda z, f=loss_fn: f(teacher, z), logits)
        assert np.isfinite(value)
        assert np.all(np.isfinite(grad))
    # Exact identity at a degenerate teacher: the student that matches it.
    perfect = np.where(teacher > 0, 0.0, -1e4)
    assert_allclose(
        PTLoss(np.zeros(2), teacher_from_logits=False)(teacher, perfect),
        0.0,
        atol=1e-6,
    )


@pytest.mark.parametrize("gap", [4.0, 10.0, 16.0])
def test_confident_student_within_float32_rounding(rng, gap):
    # q close to 1 makes u = 1 - q tiny: its terms must stay within the
    # float32 rounding of log q itself (about 1e-7 absolute).
    teacher = np.concatenate([np.zeros((8, 1)), rng.normal(-gap, 1, (8, 5))], 1)
    logits = teacher + rng.normal(scale=0.1, size=teacher.shape)
    eps = [0.6, 0.2, 0.1]
    loss = PTLoss(eps, reduction=None)
    expected = np_pt_loss(np_softmax(teacher), logits, eps, 1.0)
    assert_allclose(loss(teacher, logits), expected, rtol=0.0, atol=1e-6)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_half_precision_inputs_are_computed_in_float32(batch, policy):
    teacher, logits = batch
    keras.config.set_dtype_policy(policy)
    half = "float16" if policy == "mixed_float16" else "bfloat16"
    eps = [0.5, 0.1]
    logits_half = ops.cast(logits * 300, half)
    loss = PTLoss(eps, teacher_from_logits=False)(
        ops.cast(teacher, half), logits_half
    )
    assert keras.backend.standardize_dtype(loss.dtype) == "float32"
    expected = np.mean(
        np_pt_loss(
            to_numpy(ops.cast(ops.cast(teacher, half), "float32")),
            to_numpy(ops.cast(logits_half, "float32")),
            eps,
        )
    )
    assert np.isfinite(to_numpy(loss))
    assert_allclose(loss, expected, rtol=1e-3)


# --- Reductions, sample weights, masks ----------------------------------------


@pytest.mark.parametrize(
    "reduction", ["sum_over_batch_size", "sum", "mean", None, "none"]
)
def test_reductions(batch, reduction):
    teacher, logits = batch
    eps = [0.5, 0.2]
    per_example = np_pt_loss(teacher, logits, eps)
    expected = {
        "sum_over_batch_size": per_example.mean(),
        "mean": per_example.mean(),
        "sum": per_example.sum(),
        None: per_example,
        "none": per_example,
    }[reduction]
    assert_allclose(
        PTLoss(eps, reduction=reduction, teacher_from_logits=False)(
            teacher, logits
        ),
        expected,
    )


def test_sample_weight_matches_kl_divergence_convention(batch):
    teacher, logits = batch
    weights = np.array([0.0, 1.0, 2.0, 0.5, 1.0])
    eps = [0.5, 0.2]
    per_example = np_pt_loss(teacher, logits, eps)
    assert_allclose(
        PTLoss(eps, teacher_from_logits=False)(
            teacher, logits, sample_weight=weights
        ),
        np.sum(per_example * weights) / BATCH,
    )
    # Same convention as Keras's own KL divergence (zero coefficients).
    assert_allclose(
        PTLoss(np.zeros(2), teacher_from_logits=False)(
            teacher, logits, sample_weight=weights
        ),
        keras.losses.KLDivergence()(
            teacher, np_softmax(logits), sample_weight=weights
        ),
    )


def test_mask_from_a_masking_layer_is_applied(rng):
    x = rng.normal(size=(4, 3, 2)).astype("float32")
    mask = np.array([[1, 1, 0], [1, 0, 0], [1, 1, 1], [0, 1, 1]], dtype=bool)
    x[~mask] = 0.0  # Masking(0.0) masks these time steps.
    teacher = random_probs(rng, (4, 3, K)).astype("float32")
    model = keras.Sequential(
        [keras.Input((3, 2)), keras.layers.Masking(0.0), keras.layers.Dense(K)]
    )
    eps = [0.4, 0.1]
    model.compile(loss=PTLoss(eps, teacher_from_logits=False))
    logits = to_numpy(model.predict(x, verbose=0))
    per_step = np_pt_loss(teacher, logits, eps)
    expected = np.sum(per_step * mask) / mask.sum()
    assert_allclose(model.evaluate(x, teacher, verbose=0), expected, rtol=1e-4)
    assert not np.isclose(expected, per_step.mean(), rtol=1e-3)


# --- Validation ---------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"coefficients": []}, "at least one coefficient"),
        ({"coefficients": np.zeros((3, 0))}, "at least one coefficient"),
        ({"coefficients": [0.1, np.nan]}, "must be finite"),
        ({"coefficients": [np.inf]}, "must be finite"),
        ({"coefficients": np.zeros((2, 2, 2))}, r"shape \(M,\)"),
        ({"coefficients": "abc"}, "coefficients"),
        ({"temperature": 0.0}, "temperature=0.0"),
        ({"temperature": -1}, "temperature=-1"),
        ({"temperature": float("nan")}, "temperature"),
        ({"temperature": "hot"}, "temperature"),
        ({"from_logits": "yes"}, "from_logits"),
        ({"teacher_from_logits": "yes"}, "teacher_from_logits='yes'"),
        ({"standardize": 1}, "standardize=1"),
        (
            {"standardize": True, "from_logits": False},
            "standardize=True.*from_logits=False",
        ),
        (
            {"standardize": True, "teacher_from_logits": False},
            "standardize=True.*teacher_from_logits=False",
        ),
        ({"coefficients": [0.0, -0.6]}, "convex"),
        ({"reduction": "avg"}, "reduction"),
    ],
)
def test_invalid_arguments_raise_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PTLoss(**kwargs)


def test_nonconvex_coefficients_need_explicit_opt_in(batch):
    teacher, logits = batch
    eps = [0.0, -0.6, 0.0]  # 2 * 1 * 0.6 > 1: phi'' < 0 near q = 1
    with pytest.raises(ValueError, match="allow_nonconvex=True"):
        PTLoss(eps, teacher_from_logits=False)
    loss = PTLoss(eps, allow_nonconvex=True, teacher_from_logits=False)
    assert_allclose(
        loss(teacher, logits), np.mean(np_pt_loss(teacher, logits, eps))
    )


def test_convexity_check_is_exact_not_only_sufficient():
    # Violates the sufficient condition sum m(m-1) max(-eps, 0) <= 1 (= 1.2)
    # but q^2 phi''(q) = 1 - 1.2 q^2 (1 - q) stays > 0 on [0, 1].
    PTLoss([0.0, 0.0, -0.2], teacher_from_logits=False)


def test_shape_mismatch_between_teacher_and_student(batch):
    teacher, logits = batch
    with pytest.raises(ValueError, match=r"y_true.shape=\(5, 6\).*\(5, 4\)"):
        PTLoss(teacher_from_logits=False)(teacher, logits[:, :4])
    with pytest.raises(ValueError, match="same shape"):
        KDLoss(teacher_from_logits=False)(teacher[:2], logits)


def test_classwise_rows_must_match_number_of_classes(batch):
    teacher, logits = batch
    with pytest.raises(ValueError, match=r"expected shape \(6, M\)"):
        PTLoss(np.zeros((4, 2)), teacher_from_logits=False)(teacher, logits)


def test_set_coefficients_validates_and_assigns(batch):
    teacher, logits = batch
    loss = PTLoss(np.zeros(2), teacher_from_logits=False)
    loss.set_coefficients([0.5, 0.1])
    assert_allclose(loss.coefficients, [0.5, 0.1])
    assert_allclose(
        loss(teacher, logits), np.mean(np_pt_loss(teacher, logits, [0.5, 0.1]))
    )
    with pytest.raises(ValueError, match="keep the loss's shape"):
        loss.set_coefficients([0.5, 0.1, 0.0])
    with pytest.raises(ValueError, match="convex"):
        loss.set_coefficients([0.0, -2.0])


def test_default_is_order_five_zeros_plain_kd(batch):
    teacher, logits = batch
    loss = PTLoss(teacher_from_logits=False)
    assert loss.order == 5 and not loss.classwise
    assert_allclose(loss.coefficients, np.zeros(5))
    assert_allclose(
        loss(teacher, logits), np.mean(np_kl(teacher, np_softmax(logits)))
    )


# --- Serialization and training -----------------------------------------------


@pytest.mark.parametrize("loss_cls", [PTLoss, KDLoss])
def test_config_round_trip(batch, loss_cls):
    teacher, logits = batch
    kwargs = {"temperature": 3.0, "teacher_from_logits": False}
    if loss_cls is PTLoss:
        kwargs["coefficients"] = np.linspace(0.1, 0.5, 2 * K).reshape(K, 2)
    loss = loss_cls(**kwargs, reduction="sum", name="distill")
    restored = keras.losses.deserialize(keras.losses.serialize(loss))
    assert type(restored) is loss_cls
    assert restored.get_config() == loss.get_config()
    assert_allclose(restored(teacher, logits), loss(teacher, logits))


def test_compiled_model_saves_and_loads_with_loss(tmp_path, rng):
    x = rng.normal(size=(32, 4)).astype("float32")
    teacher = random_probs(rng, (32, 3)).astype("float32")
    model = tiny_classifier(4, 3)
    eps = [[0.3, 0.1], [0.2, 0.0], [0.5, 0.05]]
    model.compile(
        optimizer="adam",
        loss=PTLoss(eps, temperature=2.0, teacher_from_logits=False),
    )
    model.fit(x, teacher, epochs=1, batch_size=16, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    restored = keras.saving.load_model(path)
    assert isinstance(restored.loss, PTLoss)
    assert_allclose(restored.loss.coefficients, eps)
    assert restored.loss.temperature == 2.0
    assert restored.optimizer is not None
    assert_allclose(
        restored.evaluate(x, teacher, verbose=0),
        model.evaluate(x, teacher, verbose=0),
        rtol=1e-5,
    )


@pytest.mark.parametrize("jit_compile", [True, False])
def test_compile_and_fit_reduces_the_loss(rng, jit_compile):
    x = rng.normal(size=(64, 4)).astype("float32")
    teacher = np_softmax(3.0 * x[:, :3]).astype("float32")
    model = tiny_classifier(4, 3, hidden=16)
    model.compile(
        optimizer=keras.optimizers.Adam(0.05),
        loss=PTLoss([0.5, 0.1], temperature=2.0, teacher_from_logits=False),
        jit_compile=jit_compile,
    )
    history = model.fit(x, teacher, epochs=8, batch_size=16, verbose=0)
    losses = history.history["loss"]
    assert np.all(np.isfinite(losses))
    assert losses[-1] < 0.7 * losses[0]
    # The logged loss is the loss of the model's predictions, as computed in
    # numpy (up to the running mean over the epoch's batches).
    final = np.mean(
        np_pt_loss(
            teacher, to_numpy(model.predict(x, verbose=0)), [0.5, 0.1], 2.0
        )
    )
    assert final < losses[0]


# --- The loss's state: coefficient and temperature variables ------------------


@pytest.mark.parametrize("loss_cls", [PTLoss, KDLoss])
def test_temperature_is_a_variable_read_as_a_float(batch, loss_cls):
    teacher, logits = batch
    loss = loss_cls(temperature=2.0, teacher_from_logits=False)
    assert isinstance(loss.temperature, float) and loss.temperature == 2.0
    variable = loss.temperature_variable
    assert isinstance(variable, keras.Variable) and not variable.trainable
    assert any(v is variable for v in loss.variables)
    loss.set_temperature(3.5)
    assert loss.temperature == 3.5
    assert_allclose(variable, 3.5)
    assert_allclose(
        loss(teacher, logits),
        np.mean(np_pt_loss(teacher, logits, [0.0], 3.5)),
    )
    with pytest.raises(ValueError, match="temperature=0.0"):
        loss.set_temperature(0.0)
    with pytest.raises(ValueError, match="temperature='4'"):
        loss.set_temperature("4")
    assert loss.temperature == 3.5


def test_ptloss_variables_are_its_coefficients_and_temperature():
    loss = PTLoss([0.1, 0.2], temperature=2.0, teacher_from_logits=False)
    assert [id(v) for v in loss.variables] == [
        id(loss.coefficients),
        id(loss.temperature_variable),
    ]
    assert all(not v.trainable for v in loss.variables)
    assert [len(v.shape) for v in loss.variables] == [1, 0]


@pytest.mark.parametrize("loss_cls", [PTLoss, KDLoss])
def test_get_config_writes_the_current_values(batch, loss_cls):
    teacher, logits = batch
    loss = loss_cls(temperature=2.0, teacher_from_logits=False)
    loss.set_temperature(0.75)
    if loss_cls is PTLoss:
        loss.set_coefficients([0.4, 0.0, 0.1, 0.0, 0.0])
    config = loss.get_config()
    assert config["temperature"] == 0.75
    restored = loss_cls.from_config(config)
    assert restored.temperature == 0.75
    assert_allclose(restored(teacher, logits), loss(teacher, logits))
    assert restored.temperature_variable is not loss.temperature_variable


def test_teacher_outputs_are_logits_unless_told_otherwise(batch):
    teacher, logits = batch
    assert PTLoss().teacher_from_logits is True
    assert KDLoss().teacher_from_logits is True
    assert PTLoss().get_config()["teacher_from_logits"] is True
    eps = [0.3, 0.1]
    # Teacher logits log(p) give the teacher p back.
    expected = np.mean(np_pt_loss(teacher, logits, eps, 2.0))
    assert_allclose(
        PTLoss(eps, temperature=2.0)(np.log(teacher), logits), expected
    )
    assert_allclose(
        PTLoss(eps, temperature=2.0, teacher_from_logits=False)(
            teacher, logits
        ),
        expected,
    )


def test_an_explicit_none_reads_probabilities_standalone(batch):
    # `None` leaves the kind to a Distiller (its teacher's last layer).
    teacher, logits = batch
    loss = PTLoss([0.3, 0.1], temperature=2.0, teacher_from_logits=None)
    assert loss.get_config()["teacher_from_logits"] is None
    expected = np.mean(np_pt_loss(teacher, logits, [0.3, 0.1], 2.0))
    assert_allclose(loss(teacher, logits), expected)


# --- Logit standardisation ---------------------------------------------------


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_standardize_with_zero_coefficients_equals_lskd(rng, temperature):
    teacher = rng.normal(scale=3.0, size=(BATCH, K)) + 2.0
    logits = rng.normal(scale=0.5, size=(BATCH, K))
    reference = LSKDLoss(temperature=temperature, teacher_from_logits=True)
    for loss in (
        PTLoss(
            np.zeros(3),
            temperature=temperature,
            teacher_from_logits=True,
            standardize=True,
        ),
        KDLoss(
            temperature=temperature,
            teacher_from_logits=True,
            standardize=True,
        ),
    ):
        np.testing.assert_array_equal(
            to_numpy(loss(teacher, logits)),
            to_numpy(reference(teacher, logits)),
        )
    # Independently, in float64 numpy.
    expected = temperature**2 * np_kl(
        np_softmax(np_standardize(teacher), temperature),
        np_softmax(np_standardize(logits), temperature),
    )
    assert_allclose(
        pt_loss(
            teacher,
            logits,
            [0.0],
            temperature,
            teacher_from_logits=True,
            standardize=True,
        ),
        expected,
    )


@pytest.mark.parametrize("classwise", [False, True])
def test_standardize_matches_numpy_with_coefficients(rng, classwise):
    teacher = rng.normal(scale=2.0, size=(BATCH, K))
    logits = 4.0 * rng.normal(size=(BATCH, K)) - 1.0
    shape = (K, 2) if classwise else (2,)
    eps = rng.uniform(0.0, 0.5, size=shape)
    loss = PTLoss(
        eps, temperature=1.5, teacher_from_logits=True, standardize=True
    )
    expected = np_pt_loss(
        np_standardize(teacher), np_standardize(logits), eps, 1.5, True
    )
    assert_allclose(loss(teacher, logits), np.mean(expected))
    # Invariant to shifting and positively scaling either side's logits.
    assert_allclose(
        loss(3.0 * teacher + 7.0, 0.5 * logits - 2.0),
        np.mean(expected),
        rtol=1e-4,
    )


def test_standardize_needs_logits_on_both_sides(batch):
    teacher, logits = batch
    with pytest.raises(ValueError, match="teacher_from_logits=False"):
        PTLoss(standardize=True, teacher_from_logits=False)(
            teacher, logits
        )  # not said: probabilities
    with pytest.raises(ValueError, match="teacher_from_logits=False"):
        pt_loss(
            teacher, logits, [0.0], standardize=True, teacher_from_logits=False
        )
    with pytest.raises(ValueError, match="from_logits=False"):
        kd_loss(
            teacher,
            teacher,
            from_logits=False,
            standardize=True,
            teacher_from_logits=False,
        )
