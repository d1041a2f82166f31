"""Temperature scaling: the fitted temperature against an independent grid
search, what the calibrated model computes and keeps, masks, saving, and
the errors at the boundary.

The references are written here in float64 numpy (`scipy.special.
log_softmax`, a brute-force grid over `T`, ECE by a loop over examples);
the models' logits are recomputed from their weights (`np_mlp_logits`).
"""

import zipfile

import keras
import numpy as np
import pytest
import scipy.special

from keras_ptloss import CalibratedModel
from keras_ptloss import Distiller
from keras_ptloss import KDLoss
from keras_ptloss import calibrate
from keras_ptloss.calibration import TemperatureScaling
from keras_ptloss.calibration import expected_calibration_error
from keras_ptloss.calibration import fit_temperature
from tests.utils import assert_allclose
from tests.utils import np_mlp_logits
from tests.utils import tiny_classifier
from tests.utils import to_numpy

N, F, K = 400, 5, 4
S = 6  # sequence length
# The labels are drawn from softmax(logits / TRUE_T): the model is
# over-confident by about this factor.
TRUE_T = 2.5


def np_nll(logits, labels, temperature):
    log_q = scipy.special.log_softmax(
        np.asarray(logits, "float64") / temperature, axis=-1
    )
    labels = np.asarray(labels)
    return -np.mean(np.take_along_axis(log_q, labels[..., None], -1))


def grid_temperature(logits, labels, low=0.05, high=20.0):
    """Brute force: the best of a log-spaced grid, refined on a finer grid
    between its neighbours (the NLL is unimodal in log T)."""

    def best(grid):
        return int(np.argmin([np_nll(logits, labels, t) for t in grid]))

    coarse = np.geomspace(low, high, 401)
    i = best(coarse)
    fine = np.geomspace(coarse[max(i - 1, 0)], coarse[min(i + 1, 400)], 401)
    return float(fine[best(fine)])


def np_ece(probs, labels, bins=15):
    """ECE by a loop over examples; bin b holds (b / bins, (b + 1) / bins]."""
    gaps, counts = np.zeros(bins), np.zeros(bins)
    for p, label in zip(np.asarray(probs, "float64"), labels, strict=True):
        b = max(int(np.ceil(p.max() * bins)) - 1, 0)
        gaps[b] += float(np.argmax(p) == label) - p.max()
        counts[b] += 1
    return float(np.sum(np.abs(gaps)) / counts.sum())


def np_softmax(logits):
    return scipy.special.softmax(np.asarray(logits, "float64"), axis=-1)


def over_confident_mlp(seed=0, scale=4.0):
    """`tiny_classifier` with its output layer scaled up by `scale`."""
    model = tiny_classifier(F, K, hidden=8, seed=seed)
    w1, b1, w2, b2 = model.get_weights()
    model.set_weights([w1, b1, scale * w2, scale * b2])
    return model


def sample_labels(rng, logits, temperature=TRUE_T):
    probs = np_softmax(np.asarray(logits) / temperature)
    cumulative = probs.cumsum(-1)
    draws = rng.random(probs.shape[:-1] + (1,))
    return np.minimum((draws > cumulative).sum(-1), probs.shape[-1] - 1)


@pytest.fixture
def split(rng):
    """An over-confident MLP, a validation split, its float64 logits."""
    model = over_confident_mlp()
    x = rng.normal(size=(N, F)).astype("float32")
    logits = np_mlp_logits(model, x)
    y = sample_labels(rng, logits).astype("int32")
    return model, x, y, logits


def sequence_model(seed=0):
    """Dense over the last axis: `(batch, S, F)` -> `(batch, S, K)` logits."""
    return keras.Sequential(
        [
            keras.Input((S, F)),
            keras.layers.Dense(
                K, kernel_initializer=keras.initializers.GlorotUniform(seed)
            ),
        ]
    )


def np_dense_logits(model, x):
    kernel, bias = (np.asarray(w, "float64") for w in model.get_weights())
    return np.asarray(x, "float64") @ kernel + bias


@pytest.fixture
def sequences(rng):
    """A sequence split whose last two positions are padding holding
    garbage labels: the class the model finds least likely, which, if
    counted, would push the temperature far up."""
    model = sequence_model()
    w, b = model.get_weights()
    model.set_weights([4.0 * w, 4.0 * b])
    x = rng.normal(size=(120, S, F)).astype("float32")
    logits = np_dense_logits(model, x)
    y = sample_labels(rng, logits)
    mask = np.ones((120, S), dtype=bool)
    mask[:, -2:] = False
    y[~mask] = np.argmin(logits, axis=-1)[~mask]
    return model, x, y, mask, logits


# --- the fitted temperature -------------------------------------------------


def test_fit_temperature_matches_a_grid_search(split):
    _, _, y, logits = split
    temperature = fit_temperature(logits, y)
    assert temperature == pytest.approx(grid_temperature(logits, y), rel=1e-3)
    # The labels were drawn at TRUE_T: the fit recovers it roughly.
    assert 0.7 * TRUE_T < temperature < 1.4 * TRUE_T


def test_fit_temperature_has_the_closed_form_optimum_of_a_binary_toy():
    # Margin 4 on every example, 3 of 4 right: the best confidence is 3/4,
    # sigmoid(4 / T) = 3/4, so T = 4 / log(3).
    logits = np.array([[4.0, 0.0], [0.0, 4.0], [4.0, 0.0], [0.0, 4.0]])
    labels = np.array([0, 1, 0, 0])
    assert fit_temperature(logits, labels) == pytest.approx(
        4.0 / np.log(3.0), rel=1e-5
    )


def test_calibrate_fits_the_grid_temperature_of_the_model_outputs(split):
    model, x, y, logits = split
    calibrated = calibrate(model, (x, y))
    assert isinstance(calibrated, CalibratedModel)
    assert isinstance(calibrated.temperature, float)
    assert calibrated.temperature == pytest.approx(
        grid_temperature(logits, y), rel=1e-3
    )
    assert calibrated.scaling.temperature == calibrated.temperature
    assert calibrated.calibration["temperature"] == calibrated.temperature


def test_calibrated_outputs_are_the_logits_divided_by_the_temperature(split):
    model, x, y, logits = split
    calibrated = calibrate(model, (x, y))
    assert_allclose(
        calibrated.predict(x, verbose=0),
        logits / calibrated.temperature,
        rtol=1e-4,
        atol=1e-5,
    )


def test_calibration_lowers_the_validation_nll_and_reports_it(split):
    model, x, y, logits = split
    calibrated = calibrate(model, (x, y))
    result = calibrated.calibration
    t = calibrated.temperature
    assert result["nll_before"] == pytest.approx(np_nll(logits, y, 1.0), 1e-5)
    assert result["nll_after"] == pytest.approx(np_nll(logits, y, t), 1e-5)
    assert result["nll_after"] < result["nll_before"]
    assert result["ece_before"] == pytest.approx(
        np_ece(np_softmax(logits), y), abs=1e-6
    )
    assert result["ece_after"] == pytest.approx(
        np_ece(np_softmax(logits / t), y), abs=1e-6
    )
    assert result["ece_after"] < result["ece_before"]
    assert result["num_examples"] == N


def test_calibration_keeps_the_argmax_and_the_accuracy(split):
    model, x, y, logits = split
    calibrated = calibrate(model, (x, y))
    raw = to_numpy(model.predict(x, verbose=0))
    scaled = to_numpy(calibrated.predict(x, verbose=0))
    np.testing.assert_array_equal(scaled.argmax(-1), raw.argmax(-1))
    assert calibrated.calibration["accuracy"] == pytest.approx(
        np.mean(logits.argmax(-1) == y)
    )


def test_the_wrapped_model_is_not_modified(split):
    model, x, y, _ = split
    weights = [np.array(w) for w in model.get_weights()]
    outputs = to_numpy(model.predict(x, verbose=0))
    names = [layer.name for layer in model.layers]
    calibrated = calibrate(model, (x, y))
    assert calibrated.model is model
    assert model.trainable and all(w.trainable for w in model.weights)
    assert [layer.name for layer in model.layers] == names
    for before, after in zip(weights, model.get_weights(), strict=True):
        np.testing.assert_array_equal(before, after)
    np.testing.assert_array_equal(
        to_numpy(model.predict(x, verbose=0)), outputs
    )


def test_the_temperature_is_a_non_trainable_weight(split):
    model, x, y, _ = split
    calibrated = calibrate(model, (x, y))
    assert calibrated.scaling.trainable_weights == []
    assert len(calibrated.scaling.non_trainable_weights) == 1
    assert len(calibrated.trainable_weights) == len(model.trainable_weights)


def test_probability_outputs_are_calibrated_through_their_log(split):
    model, x, y, logits = split
    probs_model = keras.Sequential([model, keras.layers.Softmax()])
    calibrated = calibrate(probs_model, (x, y), from_logits=False)
    assert calibrated.from_logits is False
    assert calibrated.temperature == pytest.approx(
        grid_temperature(logits, y), rel=1e-3
    )
    # The outputs are logits: log-probabilities divided by T.
    expected = scipy.special.log_softmax(logits, -1) / calibrated.temperature
    assert_allclose(calibrated.predict(x, verbose=0), expected, 1e-4, 1e-5)


def test_fit_temperature_at_a_bound_warns():
    # Every example right with a margin: the NLL falls as T -> 0.
    logits = np.array([[3.0, 0.0], [0.0, 3.0]])
    with pytest.warns(UserWarning, match="at the lower bound"):
        temperature = fit_temperature(logits, [0, 1], bounds=(0.5, 2.0))
    assert temperature == pytest.approx(0.5, rel=1e-3)


# --- sequences and masks ---------------------------------------------------


@pytest.mark.parametrize("style", ["keyword", "third_item", "zeros_and_ones"])
def test_masked_positions_of_a_sequence_model_are_ignored(sequences, style):
    model, x, y, mask, logits = sequences
    if style == "keyword":
        calibrated = calibrate(model, (x, y), mask=mask)
    elif style == "third_item":
        calibrated = calibrate(model, (x, y, mask))
    else:
        calibrated = calibrate(model, (x, y), mask=mask.astype("float32"))
    kept = grid_temperature(logits[mask], y[mask])
    assert calibrated.temperature == pytest.approx(kept, rel=1e-3)
    # Had the padding been counted, the temperature would be far higher.
    assert grid_temperature(logits, y) > 1.5 * kept
    assert calibrated.calibration["num_examples"] == int(mask.sum())
    assert calibrated.calibration["nll_before"] == pytest.approx(
        np_nll(logits[mask], y[mask], 1.0), 1e-5
    )
    assert calibrated.calibration["ece_after"] == pytest.approx(
        np_ece(np_softmax(logits[mask] / calibrated.temperature), y[mask]),
        abs=1e-6,
    )
    outputs = to_numpy(calibrated.predict(x, verbose=0))
    assert outputs.shape == (120, S, K)
    assert_allclose(outputs, logits / calibrated.temperature, 1e-4, 1e-5)


def test_masked_positions_may_hold_invalid_labels_and_non_finite_logits(
    sequences,
):
    _, _, y, mask, logits = sequences
    garbage_logits, garbage_labels = logits.copy(), y.copy()
    garbage_logits[~mask] = np.nan
    garbage_labels[~mask] = -100  # PyTorch's ignore_index
    assert fit_temperature(
        garbage_logits, garbage_labels, mask=mask
    ) == pytest.approx(fit_temperature(logits[mask], y[mask]), rel=1e-9)


def test_expected_calibration_error_matches_a_loop_over_examples(rng):
    probs = rng.dirichlet(np.full(K, 0.3), size=300)
    labels = rng.integers(0, K, size=300)
    for bins in (1, 10, 15):
        assert expected_calibration_error(
            probs, labels, num_bins=bins
        ) == pytest.approx(np_ece(probs, labels, bins), abs=1e-12)
    # Bins at a known edge: 0.6 lies in (8/15, 9/15] = (0.533, 0.6].
    assert expected_calibration_error([[0.6, 0.4]], [1]) == pytest.approx(0.6)


def test_expected_calibration_error_of_masked_sequences_counts_kept_rows(rng):
    probs = rng.dirichlet(np.ones(K), size=(20, S))
    labels = rng.integers(0, K, size=(20, S))
    mask = rng.random((20, S)) < 0.6
    assert expected_calibration_error(
        probs, labels, mask=mask
    ) == pytest.approx(np_ece(probs[mask], labels[mask]), abs=1e-12)


# --- saving ------------------------------------------------------------------


@pytest.mark.parametrize("from_logits", [True, False])
def test_saved_calibrated_model_loads_in_safe_mode(
    split, tmp_path, from_logits
):
    model, x, y, _ = split
    if not from_logits:
        model = keras.Sequential([model, keras.layers.Softmax()])
    calibrated = calibrate(model, (x, y), from_logits=from_logits)
    path = tmp_path / "calibrated.keras"
    calibrated.save(path)
    with zipfile.ZipFile(path) as archive:
        assert "__lambda__" not in archive.read("config.json").decode()
    restored = keras.saving.load_model(path)  # safe_mode=True by default
    assert isinstance(restored, CalibratedModel)
    assert restored.temperature == calibrated.temperature
    assert restored.from_logits is from_logits
    assert restored.calibration == calibrated.calibration
    np.testing.assert_array_equal(
        to_numpy(restored.predict(x, verbose=0)),
        to_numpy(calibrated.predict(x, verbose=0)),
    )


def test_temperature_scaling_config_round_trips():
    layer = TemperatureScaling(3.5, from_logits=False, name="scale")
    config = layer.get_config()
    assert config["temperature"] == 3.5 and config["from_logits"] is False
    clone = TemperatureScaling.from_config(config)
    assert clone.temperature == 3.5 and clone.name == "scale"
    probs = np.array([[0.5, 0.5, 0.0]], "float32")
    # log(0) is clipped to float32's smallest normal number: finite outputs.
    outputs = to_numpy(clone(probs))
    expected = np.log(np.maximum(probs, np.finfo("float32").tiny)) / 3.5
    assert_allclose(outputs, expected, rtol=1e-6)
    assert np.all(np.isfinite(outputs))


# --- a distilled student -----------------------------------------------------


def test_a_kd_student_is_calibrated_on_a_held_out_split(rng):
    teacher = over_confident_mlp(seed=3)
    x = rng.normal(size=(2 * N, F)).astype("float32")
    y = sample_labels(rng, np_mlp_logits(teacher, x)).astype("int32")
    x_train, y_train, x_val, y_val = x[:N], y[:N], x[N:], y[N:]
    student = tiny_classifier(F, K, hidden=6, seed=10)
    distiller = Distiller(
        teacher, student, KDLoss(temperature=2.0), student_loss_weight=0.5
    )
    distiller.compile(
        optimizer=keras.optimizers.Adam(0.05),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    distiller.fit(x_train, y_train, epochs=3, batch_size=64, verbose=0)
    calibrated = calibrate(distiller.student, (x_val, y_val))
    logits = np_mlp_logits(student, x_val)
    assert calibrated.temperature == pytest.approx(
        grid_temperature(logits, y_val), rel=1e-3
    )
    result = calibrated.calibration
    assert result["nll_after"] <= result["nll_before"]
    assert result["nll_after"] == pytest.approx(
        np_nll(logits, y_val, calibrated.temperature), 1e-5
    )
    np.testing.assert_array_equal(
        to_numpy(calibrated.predict(x_val, verbose=0)).argmax(-1),
        logits.argmax(-1),
    )


# --- errors at the boundary -------------------------------------------------


def _inf_model():
    model = tiny_classifier(F, K)
    w1, b1, w2, b2 = model.get_weights()
    model.set_weights([w1, b1, w2, np.full_like(b2, np.inf)])
    return model


def _relu_model():
    """Outputs neither logits nor probabilities (its kind is unknown)."""
    return keras.Sequential(
        [keras.Input((F,)), keras.layers.Dense(K, activation="relu")]
    )


def _calibrate_case(model=None, validation_data=None, **kwargs):
    """A call of `calibrate` on a small valid split, with one thing changed."""

    def call():
        rng = np.random.default_rng(0)
        x = rng.normal(size=(32, F)).astype("float32")
        y = rng.integers(0, K, size=32)
        data = (x, y) if validation_data is None else validation_data(x, y)
        net = tiny_classifier(F, K) if model is None else model()
        return calibrate(net, data, **kwargs)

    return call


@pytest.mark.parametrize(
    "call, match",
    [
        (_calibrate_case(lambda: lambda x: x), r"`model` must be a keras"),
        (
            _calibrate_case(validation_data=lambda x, y: x),
            r"`validation_data` must be a tuple \(x, y\)",
        ),
        (
            _calibrate_case(validation_data=lambda x, y: (x, None)),
            r"must hold labels.*y=None",
        ),
        (
            _calibrate_case(validation_data=lambda x, y: (x, y + K)),
            r"`y` must lie in \[0, 4\).*\[4",
        ),
        (
            _calibrate_case(validation_data=lambda x, y: (x, y + 0.5)),
            r"`y` must hold integer class ids.*\d\.5",
        ),
        (
            _calibrate_case(validation_data=lambda x, y: (x, np.c_[y, y])),
            r"`y` must have shape \(32,\).*\(32, 2\)",
        ),
        (
            _calibrate_case(validation_data=lambda x, y: (x, y[:20])),
            r"as many examples in `x` as in `y`.*\(32, 5\).*\(20,\)",
        ),
        (
            _calibrate_case(validation_data=lambda x, y: (x[:0], y[:0])),
            r"`validation_data` must not be empty.*\(0,\)",
        ),
        (
            _calibrate_case(mask=np.ones((32, 2))),
            r"`mask` must have shape \(32,\).*\(32, 2\)",
        ),
        (
            _calibrate_case(mask=np.full(32, 0.5)),
            r"`mask` must hold 0/1.*0\.5",
        ),
        (
            _calibrate_case(mask=np.zeros(32)),
            r"`mask` must keep at least one position",
        ),
        (
            _calibrate_case(
                validation_data=lambda x, y: (x, y, np.ones(31)),
            ),
            r"`validation_data\[2\]` must have shape \(32,\).*\(31,\)",
        ),
        (
            _calibrate_case(
                validation_data=lambda x, y: (x, y, np.ones(32)),
                mask=np.ones(32),
            ),
            r"either as `mask` or as the third item.*not both",
        ),
        (_calibrate_case(_inf_model), r"`model\(x\)` must be finite"),
        (
            _calibrate_case(from_logits=False),
            r"no activation.*outputs logits.*from_logits=False",
        ),
        (
            _calibrate_case(
                lambda: keras.Sequential(
                    [tiny_classifier(F, K), keras.layers.Softmax()]
                )
            ),
            r"applies a softmax.*`from_logits=False`.*from_logits=True",
        ),
        (
            _calibrate_case(_relu_model, from_logits=False),
            r"Each row of `model\(x\)` must sum to 1",
        ),
        (_calibrate_case(bounds=(0.0, 10.0)), r"`bounds\[0\]` must be > 0"),
        (_calibrate_case(bounds=(5.0, 1.0)), r"`bounds` must be a pair.*5\.0"),
        (_calibrate_case(bounds=(1.0,)), r"`bounds` must be a pair.*\(1\.0,\)"),
        (
            _calibrate_case(bounds=(1.0, float("inf"))),
            r"`bounds\[1\]` must be finite",
        ),
        (_calibrate_case(batch_size=0), r"`batch_size` must be >= 1"),
        (_calibrate_case(from_logits="yes"), r"`from_logits` must be a bool"),
    ],
)
def test_bad_calibrate_arguments_raise_clear_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


GOOD_LOGITS = np.array([[1.0, 0.0, -1.0], [0.0, 2.0, 1.0]])


@pytest.mark.parametrize(
    "call, match",
    [
        (
            lambda: fit_temperature([[1.0, np.nan, 0.0]], [0]),
            r"`logits` must be finite; found nan at index \[0, 1\]",
        ),
        (
            lambda: fit_temperature([1.0, 2.0], [0]),
            r"`logits` must have shape \(batch, \.\.\., K\).*\(2,\)",
        ),
        (
            lambda: fit_temperature([[1.0], [2.0]], [0, 0]),
            r"K >= 2 classes.*\(2, 1\)",
        ),
        (
            lambda: fit_temperature(np.zeros((0, 3)), []),
            r"`logits` must not be empty.*\(0, 3\)",
        ),
        (
            lambda: fit_temperature(GOOD_LOGITS, [0, 3]),
            r"`labels` must lie in \[0, 3\).*\[3\]",
        ),
        (
            lambda: fit_temperature(GOOD_LOGITS, [0, 1, 2]),
            r"`labels` must have shape \(2,\).*\(3,\)",
        ),
        (
            lambda: fit_temperature(GOOD_LOGITS, [0, 1], mask=[0, 0]),
            r"`mask` must keep at least one position",
        ),
        (
            lambda: fit_temperature(GOOD_LOGITS, [0, 1], bounds="wide"),
            r"`bounds` must be a pair.*'wide'",
        ),
        (
            lambda: expected_calibration_error(GOOD_LOGITS, [0, 1]),
            r"`probs` must be non-negative|sum to 1",
        ),
        (
            lambda: expected_calibration_error([[0.5, 0.5]], [0], num_bins=0),
            r"`num_bins` must be >= 1",
        ),
        (
            lambda: TemperatureScaling(temperature=0.0),
            r"`temperature` must be > 0.*temperature=0\.0",
        ),
        (
            lambda: CalibratedModel("model"),
            r"`model` must be a keras\.Model.*'model'",
        ),
    ],
)
def test_bad_array_arguments_raise_clear_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()
