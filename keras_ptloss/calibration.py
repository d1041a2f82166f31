"""Post-hoc temperature scaling of a trained classifier (Guo et al., 2017).

One scalar `T > 0` is fitted on a labelled validation split, in float64
numpy, to minimise the NLL of `softmax(z / T)`; the argmax is unchanged.
"""

import math
import warnings

import keras
import numpy as np
import scipy.optimize
import scipy.special
from keras import ops

from keras_ptloss._checks import FLOAT32_TINY
from keras_ptloss._checks import as_float_array
from keras_ptloss._checks import as_logits_array
from keras_ptloss._checks import check_bool
from keras_ptloss._checks import check_finite
from keras_ptloss._checks import check_int
from keras_ptloss._checks import check_labels
from keras_ptloss._checks import check_number
from keras_ptloss._checks import check_probabilities
from keras_ptloss._checks import check_temperature
from keras_ptloss._checks import mean_nll
from keras_ptloss._checks import softmax
from keras_ptloss._checks import to_numpy
from keras_ptloss._logits import check_output_kind

__all__ = [
    "CalibratedModel",
    "TemperatureScaling",
    "calibrate",
    "confidence_bins",
    "expected_calibration_error",
    "fit_temperature",
]

DEFAULT_BOUNDS = (0.05, 20.0)
ECE_BINS = 15
# Probabilities are read as logits `log(max(p, TINY))`, finite in float32.
TINY = FLOAT32_TINY
LOG_T_TOLERANCE = 1e-7
BOUND_RTOL = 1e-3


@keras.saving.register_keras_serializable(package="keras_ptloss")
class TemperatureScaling(keras.layers.Layer):
    """Divides logits by a fixed temperature: `outputs = logits / T`.

    `T` is a non-trainable scalar weight. With `from_logits=False` the
    inputs are probabilities and their clipped log is divided instead.
    Computes in float32 unless given another `dtype`.

    Args:
        temperature: `T > 0`. Defaults to `1.0` (the identity on logits).
        from_logits: whether the inputs are logits (default) or
            probabilities.
        **kwargs: passed to `keras.layers.Layer` (`name`, `dtype`).

    Example:

    >>> import keras, numpy as np
    >>> layer = TemperatureScaling(2.0)
    >>> keras.ops.convert_to_numpy(layer(np.array([[2.0, -4.0]]))).tolist()
    [[1.0, -2.0]]
    >>> layer.temperature
    2.0
    >>> TemperatureScaling.from_config(layer.get_config()).temperature
    2.0

    Reference:
        Guo et al., "On Calibration of Modern Neural Networks", ICML 2017.
    """

    def __init__(self, temperature=1.0, from_logits=True, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        value = check_temperature(temperature)
        self.from_logits = check_bool(from_logits, "from_logits")
        self.temperature_variable = self.add_weight(
            shape=(),
            initializer=keras.initializers.Constant(value),
            dtype="float32",
            trainable=False,
            name="temperature",
        )
        self.built = True

    @property
    def temperature(self):
        """The temperature `T`, a Python float."""
        return float(to_numpy(self.temperature_variable))

    def call(self, inputs):
        values = inputs
        if not self.from_logits:
            values = ops.log(ops.maximum(values, ops.cast(TINY, values.dtype)))
        return values / ops.cast(self.temperature_variable, values.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            temperature=self.temperature, from_logits=self.from_logits
        )
        return config


@keras.saving.register_keras_serializable(package="keras_ptloss")
class CalibratedModel(keras.Model):
    """A model followed by temperature scaling: outputs `model(x) / T`.

    Outputs are calibrated logits. The wrapped model is shared, not copied;
    training it further makes `T` stale. `calibration` holds what the fit
    measured (empty for a model built by hand); both are saved with it.

    Args:
        model: a `keras.Model` with one output of shape `(batch, ..., K)`:
            logits, or probabilities with `from_logits=False`.
        temperature: `T > 0`. Defaults to `1.0`.
        from_logits: whether `model` outputs logits (default) or
            probabilities (whose log is divided by `T`).
        calibration: optional dict of numbers describing the fit (see
            `calibrate`). Defaults to `None` (an empty dict).
        name: model name. Defaults to `None`: `"<model.name>_calibrated"`.
        **kwargs: passed to `keras.Model`.

    Example:

    >>> import keras, numpy as np
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3)])
    >>> calibrated = CalibratedModel(model, temperature=2.0)
    >>> x = np.ones((4, 2), "float32")
    >>> np.allclose(calibrated.predict(x, verbose=0),
    ...             model.predict(x, verbose=0) / 2.0)
    True
    >>> calibrated.temperature, calibrated.calibration
    (2.0, {})

    Reference:
        Guo et al., "On Calibration of Modern Neural Networks", ICML 2017.
    """

    def __init__(
        self,
        model,
        temperature=1.0,
        from_logits=True,
        calibration=None,
        name=None,
        **kwargs,
    ):
        _check_model(model)
        if name is None:
            name = f"{model.name}_calibrated"
        super().__init__(name=name, **kwargs)
        self._calibration = _check_calibration(calibration)
        self.model = model
        self.scaling = TemperatureScaling(
            temperature, from_logits=from_logits, name="temperature_scaling"
        )
        if model.built:
            self.built = True

    @property
    def temperature(self):
        """The temperature `T`, a Python float."""
        return self.scaling.temperature

    @property
    def from_logits(self):
        """Whether the wrapped model outputs logits (else probabilities)."""
        return self.scaling.from_logits

    @property
    def calibration(self):
        """What the fit measured (a new dict of numbers; see `calibrate`)."""
        return dict(self._calibration)

    def call(self, inputs, training=None):
        return self.scaling(self.model(inputs, training=training))

    def get_config(self):
        config = super().get_config()
        config.update(
            model=keras.saving.serialize_keras_object(self.model),
            temperature=self.temperature,
            from_logits=self.from_logits,
            calibration=self.calibration,
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["model"] = keras.saving.deserialize_keras_object(config["model"])
        return cls(**config)


def calibrate(
    model,
    validation_data,
    *,
    from_logits=True,
    mask=None,
    batch_size=256,
    bounds=DEFAULT_BOUNDS,
    verbose=0,
):
    """Fits a temperature on a validation split; returns the scaled model.

    Runs `model.predict` once, fits `T` with `fit_temperature` and returns
    `CalibratedModel(model, T)`. Use a split the model was not trained on.
    `calibrated.calibration` holds `"temperature"`, `"nll_before"`,
    `"nll_after"`, `"ece_before"`, `"ece_after"` (15 bins), `"accuracy"`
    and `"num_examples"` (unmasked positions), measured on the split.

    Args:
        model: a `keras.Model` with one output `(batch, ..., K)`, `K >= 2`:
            logits, or probabilities with `from_logits=False`. Not modified.
        validation_data: `(x, y)` or `(x, y, mask)` of arrays; `y` integer
            class ids of the outputs' shape without the class axis.
        from_logits: whether `model` outputs logits (default) or
            probabilities. A last layer that says otherwise raises.
        mask: optional 0/1 array of `y`'s shape; 0 positions are ignored.
            Pass it here or as `validation_data[2]`, not both.
        batch_size: batch size of `model.predict`. Defaults to `256`.
        bounds: `(low, high)`, `0 < low < high`, the range searched for
            `T`. Defaults to `(0.05, 20.0)`; a `T` at a bound warns.
        verbose: verbosity of `model.predict`. Defaults to `0`.

    Returns:
        A `CalibratedModel` wrapping `model`.

    Raises:
        ValueError: on a model with several outputs, or bad arguments.

    Example:

    >>> import keras, numpy as np
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(500, 4)).astype("float32")
    >>> y = (x[:, 0] + rng.normal(size=500) > 0).astype("int32")
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    >>> kernel = np.zeros((4, 2), "float32")
    >>> kernel[0] = [-4.0, 4.0]  # the right direction, over-confident
    >>> model.set_weights([kernel, np.zeros(2, "float32")])
    >>> calibrated = calibrate(model, (x, y))
    >>> calibrated.temperature > 1.0
    True
    >>> result = calibrated.calibration
    >>> result["nll_after"] < result["nll_before"]
    True
    >>> result["ece_after"] < result["ece_before"]
    True

    Reference:
        Guo et al., "On Calibration of Modern Neural Networks", ICML 2017.
    """
    _check_model(model)
    from_logits = check_bool(from_logits, "from_logits")
    check_output_kind(model, from_logits, "model", "from_logits")
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    bounds = _check_bounds(bounds)
    x, y, mask, mask_name = _unpack(validation_data, mask)
    labels = _labels_array(y, "y")
    _check_lengths(x, labels)
    outputs = model.predict(x, batch_size=batch_size, verbose=verbose)
    if isinstance(outputs, (list, tuple, dict)):
        raise ValueError(
            "`model` must have one output. Received: a model with outputs "
            f"{keras.tree.map_structure(np.shape, outputs)}"
        )
    return _scaled(model, outputs, labels, mask, mask_name, from_logits, bounds)


def calibrate_outputs(model, outputs, labels, from_logits=True):
    """`calibrate` on outputs the caller already computed with `model`."""
    _check_model(model)
    from_logits = check_bool(from_logits, "from_logits")
    check_output_kind(model, from_logits, "model", "from_logits")
    labels = _labels_array(labels, "y")
    return _scaled(
        model, outputs, labels, None, "mask", from_logits, DEFAULT_BOUNDS
    )


def _scaled(model, outputs, labels, mask, mask_name, from_logits, bounds):
    values, labels = _valid_positions(
        outputs,
        labels,
        mask,
        from_logits,
        names=("model(x)", "y", mask_name),
    )
    logits = as_logits_array(values, from_logits)
    # The warning of a bound points at the caller of `calibrate`.
    temperature = _fit(logits, labels, bounds, stacklevel=4)
    # The layer stores float32: measure what the model computes.
    temperature = float(np.float32(temperature))
    probs_before = softmax(logits)
    probs_after = softmax(logits / temperature)
    calibration = {
        "temperature": temperature,
        "nll_before": mean_nll(logits, labels, 1.0),
        "nll_after": mean_nll(logits, labels, temperature),
        "ece_before": _ece(probs_before, labels, ECE_BINS),
        "ece_after": _ece(probs_after, labels, ECE_BINS),
        "accuracy": float(np.mean(probs_before.argmax(-1) == labels)),
        "num_examples": int(labels.size),
    }
    return CalibratedModel(
        model,
        temperature=temperature,
        from_logits=from_logits,
        calibration=calibration,
    )


def fit_temperature(logits, labels, mask=None, bounds=DEFAULT_BOUNDS):
    """The temperature that minimises the NLL of `softmax(logits / T)`.

    Minimises `mean(logsumexp(z / T) - z_y / T)` in float64 over `log T`
    with scipy's bounded Brent search; the NLL is convex in `1 / T`, so the
    minimum is global in `bounds`. A `T` at a bound warns.

    Args:
        logits: array-like of shape `(..., K)`, `K >= 2`, finite.
        labels: integer class ids of shape `logits.shape[:-1]`.
        mask: optional 0/1 array of `labels`' shape; 0 positions are
            ignored. Defaults to `None`.
        bounds: `(low, high)`, `0 < low < high`, the range searched for
            `T`. Defaults to `(0.05, 20.0)`.

    Returns:
        `T`, a Python float.

    Example:

    >>> import numpy as np
    >>> logits = np.array([[4.0, 0.0], [0.0, 4.0], [4.0, 0.0], [0.0, 4.0]])
    >>> labels = np.array([0, 1, 0, 0])  # 3 of 4 right: softmax should be 0.75
    >>> round(fit_temperature(logits, labels), 4)  # 4 / log(3)
    3.641

    Reference:
        Guo et al., "On Calibration of Modern Neural Networks", ICML 2017.
    """
    bounds = _check_bounds(bounds)
    values, labels = _valid_positions(
        logits, labels, mask, True, names=("logits", "labels", "mask")
    )
    return _fit(values, labels, bounds)


def expected_calibration_error(probs, labels, num_bins=ECE_BINS, mask=None):
    """Top-label expected calibration error (ECE) in equal-width bins.

    `ECE = sum_b (n_b / n) |accuracy_b - confidence_b|`; bin `b` holds the
    rows whose top probability is in `(b / num_bins, (b + 1) / num_bins]`.

    Args:
        probs: probabilities of shape `(..., K)`; rows must sum to 1.
        labels: integer class ids of shape `probs.shape[:-1]`.
        num_bins: number of bins. Defaults to `15`.
        mask: optional 0/1 array of `labels`' shape. Defaults to `None`.

    Returns:
        The ECE, a Python float in `[0, 1]`.

    Example:

    >>> round(expected_calibration_error([[0.9, 0.1], [0.3, 0.7]], [0, 0]), 4)
    0.4

    Reference:
        Guo et al., "On Calibration of Modern Neural Networks", ICML 2017.
    """
    num_bins = check_int(num_bins, "num_bins", minimum=1)
    values, labels = _valid_positions(
        probs, labels, mask, False, names=("probs", "labels", "mask")
    )
    return _ece(values, labels, num_bins)


def confidence_bins(confidence, num_bins):
    """Bin `b` of `(b / num_bins, (b + 1) / num_bins]` for each confidence."""
    edges = np.linspace(0.0, 1.0, num_bins + 1)
    index = np.searchsorted(edges, confidence, side="left") - 1
    return np.clip(index, 0, num_bins - 1)


def _fit(logits, labels, bounds, stacklevel=3):
    low, high = bounds
    result = scipy.optimize.minimize_scalar(
        lambda log_t: mean_nll(logits, labels, math.exp(log_t)),
        bounds=(math.log(low), math.log(high)),
        method="bounded",
        options={"xatol": LOG_T_TOLERANCE},
    )
    temperature = math.exp(result.x)
    for side, bound in (("lower", low), ("upper", high)):
        if abs(temperature - bound) <= BOUND_RTOL * bound:
            warnings.warn(
                f"The fitted temperature {temperature:.4g} is at the {side} "
                f"bound of `bounds`={bounds}: the validation NLL may "
                "decrease further beyond it. Widen `bounds`, or check the "
                "labels (e.g. a split the model fits perfectly, or labels "
                "unrelated to its outputs).",
                stacklevel=stacklevel,
            )
    return temperature


def _ece(probs, labels, num_bins):
    confidence = probs.max(axis=-1)
    correct = (probs.argmax(axis=-1) == labels).astype("float64")
    index = confidence_bins(confidence, num_bins)
    gaps = np.bincount(index, weights=correct - confidence, minlength=num_bins)
    return float(np.sum(np.abs(gaps)) / len(labels))


def _check_model(model):
    if not isinstance(model, keras.Model):
        raise ValueError(
            "`model` must be a keras.Model. Received: "
            f"model={model!r} of type {type(model).__name__}"
        )


def _check_bounds(bounds):
    if not isinstance(bounds, (tuple, list)) or len(bounds) != 2:
        raise ValueError(
            "`bounds` must be a pair (low, high) with 0 < low < high. "
            f"Received: bounds={bounds!r}"
        )
    low = check_number(bounds[0], "bounds[0]", low=0.0, low_open=True)
    high = check_number(bounds[1], "bounds[1]", low=0.0, low_open=True)
    if not low < high:
        raise ValueError(
            "`bounds` must be a pair (low, high) with 0 < low < high. "
            f"Received: bounds={tuple(bounds)!r}"
        )
    return (low, high)


def _check_calibration(calibration):
    if calibration is None:
        return {}
    if not isinstance(calibration, dict):
        raise ValueError(
            "`calibration` must be a dict of numbers or None. Received: "
            f"calibration={calibration!r}"
        )
    return dict(calibration)


def _unpack(validation_data, mask):
    if not isinstance(validation_data, (tuple, list)) or len(
        validation_data
    ) not in (2, 3):
        received = type(validation_data).__name__
        if isinstance(validation_data, (tuple, list)):
            received += f" of length {len(validation_data)}"
        raise ValueError(
            "`validation_data` must be a tuple (x, y) or (x, y, mask) of "
            "arrays (not a dataset or a generator). Received: "
            f"validation_data of type {received}"
        )
    x, y = validation_data[0], validation_data[1]
    if y is None:
        raise ValueError(
            "`validation_data` must hold labels: (x, y) with integer class "
            "ids y. Received: y=None"
        )
    mask_name = "mask"
    if len(validation_data) == 3 and validation_data[2] is not None:
        if mask is not None:
            raise ValueError(
                "Pass the mask either as `mask` or as the third item of "
                "`validation_data`, not both. Received: both"
            )
        mask, mask_name = validation_data[2], "validation_data[2]"
    return x, y, mask, mask_name


def _labels_array(labels, name):
    try:
        return np.asarray(to_numpy(labels))
    except (TypeError, ValueError) as e:
        raise ValueError(
            f"`{name}` must be an array of integer class ids. Received: "
            f"{name}={labels!r}"
        ) from e


def _check_lengths(x, labels):
    if labels.ndim == 0:
        raise ValueError(
            "`y` must hold one label per example. Received: "
            f"y={labels.tolist()!r}"
        )
    if labels.shape[0] == 0:
        raise ValueError(
            "`validation_data` must not be empty. Received: y with shape "
            f"{labels.shape}"
        )
    for leaf in keras.tree.flatten(x):
        shape = tuple(getattr(leaf, "shape", ()))
        if shape and shape[0] != labels.shape[0]:
            raise ValueError(
                "`validation_data` must hold as many examples in `x` as in "
                f"`y`. Received: x with shape {shape}, y with shape "
                f"{labels.shape}"
            )


def _valid_positions(values, labels, mask, from_logits, names):
    """Validated float64 `(n, K)` values and int64 `(n,)` labels, unmasked."""
    values_name, labels_name, mask_name = names
    values = as_float_array(values, values_name)
    if values.ndim < 2 or values.shape[-1] < 2:
        raise ValueError(
            f"`{values_name}` must have shape (batch, ..., K) with K >= 2 "
            f"classes. Received: {values_name} with shape {values.shape}"
        )
    if values.size == 0:
        raise ValueError(
            f"`{values_name}` must not be empty. Received: {values_name} "
            f"with shape {values.shape}"
        )
    labels = _fit_shape(
        _labels_array(labels, labels_name),
        values.shape,
        labels_name,
        values_name,
    )
    keep = np.ones(values.shape[:-1], dtype=bool)
    if mask is not None:
        keep = _check_mask(mask, values.shape, mask_name, values_name)
    # Padding is replaced by neutral values so that it is never read.
    num_classes = values.shape[-1]
    if from_logits:
        check_finite(np.where(keep[..., None], values, 0.0), values_name)
    else:
        values = check_probabilities(
            np.where(keep[..., None], values, 1.0 / num_classes), values_name
        )
    kept_labels = check_labels(
        labels[keep], int(keep.sum()), num_classes, name=labels_name
    )
    return values[keep], kept_labels


def _fit_shape(array, values_shape, name, values_name):
    positions = values_shape[:-1]
    if array.shape == positions + (1,):
        array = array[..., 0]
    if array.shape != positions:
        raise ValueError(
            f"`{name}` must have shape {positions}, the shape of "
            f"`{values_name}` without its class axis. Received: {name} with "
            f"shape {array.shape}, {values_name} with shape {values_shape}"
        )
    return array


def _check_mask(mask, values_shape, name, values_name):
    try:
        array = np.asarray(to_numpy(mask))
    except (TypeError, ValueError) as e:
        raise ValueError(
            f"`{name}` must be an array of 0/1 or booleans. Received: "
            f"{name}={mask!r}"
        ) from e
    array = _fit_shape(array, values_shape, name, values_name)
    if array.dtype.kind not in "biuf":
        raise ValueError(
            f"`{name}` must hold 0/1 or booleans (0: position ignored). "
            f"Received dtype {array.dtype}"
        )
    binary = (array == 0) | (array == 1)
    if not np.all(binary):
        raise ValueError(
            f"`{name}` must hold 0/1 or booleans (0: position ignored). "
            f"Received values {array[~binary][:3].tolist()}"
        )
    keep = array.astype(bool)
    if not keep.any():
        raise ValueError(
            f"`{name}` must keep at least one position; it masks all of "
            f"them. Received: {name} of shape {array.shape} with no 1"
        )
    return keep
