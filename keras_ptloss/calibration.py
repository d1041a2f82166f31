"""Post-hoc temperature scaling of a trained classifier (Guo et al., 2017).

One scalar temperature `T > 0` is fitted on a labelled validation split so
that `softmax(z / T)` has the lowest mean negative log-likelihood; the
model's argmax, hence its accuracy, is unchanged. Everything is computed
once, on the host, in float64 numpy:

- `fit_temperature(logits, labels)`: the temperature, for arrays;
- `expected_calibration_error(probs, labels)`: top-label ECE;
- `calibrate(model, (x, y))`: runs `model.predict` once, fits `T` and
  returns a `CalibratedModel` (the model followed by a `TemperatureScaling`
  layer) that records the validation NLL and ECE before and after.

Outputs may carry extra axes (`(batch, S, K)` with labels `(batch, S)`);
an optional 0/1 mask of the labels' shape leaves out padded positions.
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
# Probability outputs are read as logits `log(max(p, TINY))`: float32's
# smallest normal number, so that the clipped log is finite in float32.
TINY = FLOAT32_TINY
# Tolerance of the bounded search on log T (relative precision of T).
LOG_T_TOLERANCE = 1e-7
# A fitted T this close (relatively) to a bound is reported as "at" it.
BOUND_RTOL = 1e-3


@keras.saving.register_keras_serializable(package="keras_ptloss")
class TemperatureScaling(keras.layers.Layer):
    """Divides logits by a fixed temperature: `outputs = logits / T`.

    The layer of temperature scaling: `softmax(outputs)` are the calibrated
    probabilities. The temperature is a non-trainable scalar weight (saved
    with the model, untouched by `fit`); `temperature` reads it as a Python
    float. With `from_logits=False` the inputs are probabilities and their
    log (zeros clipped to float32's smallest normal number) is divided
    instead, so the outputs are still logits.

    The layer computes in float32 unless given another `dtype` (under a
    mixed-precision policy, the output layer is best kept in float32).

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

    What `calibrate` returns. Its outputs are calibrated *logits* (apply a
    softmax for probabilities) of the shape of the wrapped model's; their
    argmax is the wrapped model's. The wrapped model is shared, not copied
    (its weights are the calibrated model's) and not modified; training it
    further makes the fitted temperature stale.

    `temperature` reads the fitted `T`; `calibration` holds what the fit
    measured on the validation split (empty for a model built by hand).
    Both are saved with the model (`.keras`) and restored by
    `keras.saving.load_model` in safe mode.

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

    Temperature scaling (Guo et al.): runs `model.predict` on the
    validation inputs once, fits one scalar `T > 0` that minimises the mean
    negative log-likelihood of `softmax(z / T)` at the labels
    (`fit_temperature`), and returns `CalibratedModel(model, T)`, whose
    outputs are the calibrated logits `z / T`. Dividing by `T > 0` keeps the
    argmax, so accuracy is unchanged. The split must not be the one the
    model was trained on (there it is over-confident).

    The fit's measurements are in `calibrated.calibration`, a dict (saved
    with the model):

    - `"temperature"`: `T` (also `calibrated.temperature`);
    - `"nll_before"`, `"nll_after"`: mean NLL (nats) on the validation
      split at `T = 1` and at the fitted `T`;
    - `"ece_before"`, `"ece_after"`: top-label expected calibration error
      (`expected_calibration_error`, 15 equal-width bins) there;
    - `"accuracy"`: top-1 accuracy there (the same before and after);
    - `"num_examples"`: the number of positions counted (unmasked).

    Sequence models: outputs `(batch, S, K)` with labels `(batch, S)`; a
    mask of the labels' shape (`mask=`, or the third item of
    `validation_data`) leaves out the positions where it is 0 (padding):
    their outputs and labels are not read, so they may hold anything.

    Args:
        model: a `keras.Model` with one output of shape `(batch, ..., K)`,
            `K >= 2`: logits, or probabilities with `from_logits=False`.
            It is not modified.
        validation_data: a tuple `(x, y)` or `(x, y, mask)` of arrays: `x`
            any input `model.predict` accepts (arrays or a structure of
            arrays), `y` integer class ids of the outputs' shape without
            the class axis (`(batch,)`, or `(batch, S)` for sequences).
        from_logits: whether `model` outputs logits (default) or
            probabilities; with probabilities `log(p)` (zeros clipped to
            float32's smallest normal number) is read as logits. A last
            layer that says otherwise (a softmax, or no activation) raises.
        mask: optional 0/1 (or boolean) array of `y`'s shape; positions
            with 0 are ignored. Pass it here or as `validation_data[2]`, not
            both. Defaults to `None` (every position counts).
        batch_size: batch size of `model.predict`. Defaults to `256`.
        bounds: `(low, high)`, `0 < low < high`, the range searched for
            `T`. Defaults to `(0.05, 20.0)`. A fitted `T` at a bound
            warns: the NLL may still decrease beyond it.
        verbose: verbosity of `model.predict`. Defaults to `0`.

    Returns:
        A `CalibratedModel` wrapping `model`.

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
    >>> sorted(result)  # doctest: +NORMALIZE_WHITESPACE
    ['accuracy', 'ece_after', 'ece_before', 'nll_after', 'nll_before',
     'num_examples', 'temperature']

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
    """`calibrate` for a caller that already holds the model's outputs.

    The same checks of `model` and the same fit as
    `calibrate(model, (x, labels))` with `outputs = model.predict(x)`,
    without running the model again (`search_coefficients` scored its
    winner on the validation split already).

    Args:
        model: the `keras.Model` to wrap.
        outputs: its outputs on the validation inputs, `(batch, ..., K)`.
        labels: integer class ids of shape `outputs.shape[:-1]`.
        from_logits: whether `outputs` are logits (default) or
            probabilities.

    Returns:
        A `CalibratedModel` wrapping `model`.
    """
    _check_model(model)
    from_logits = check_bool(from_logits, "from_logits")
    check_output_kind(model, from_logits, "model", "from_logits")
    labels = _labels_array(labels, "y")
    return _scaled(
        model, outputs, labels, None, "mask", from_logits, DEFAULT_BOUNDS
    )


def _scaled(model, outputs, labels, mask, mask_name, from_logits, bounds):
    """Fits the temperature on `model`'s validation `outputs`; returns the
    `CalibratedModel` with what the fit measured."""
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
    # Stored in float32 by the layer: measure what the model computes.
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

    Minimises the mean negative log-likelihood of the labels,
    `mean(logsumexp(z / T) - z_y / T)`, computed in float64 numpy, over
    `log T` in `log(bounds)` with scipy's bounded Brent search
    (`scipy.optimize.minimize_scalar(method="bounded")`). The NLL is convex
    in `1 / T`, so the minimum found is the global one in `bounds`. A `T`
    at a bound warns.

    Args:
        logits: array-like of shape `(..., K)`, `K >= 2`, finite.
        labels: integer class ids of shape `logits.shape[:-1]`, in
            `[0, K)` (float arrays of whole numbers are accepted).
        mask: optional 0/1 (or boolean) array of `labels`' shape; positions
            with 0 are ignored (their logits and labels are not read).
            Defaults to `None`.
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

    `ECE = sum_b (n_b / n) |accuracy_b - confidence_b|`, where the
    confidence is the largest probability of a row and bin `b` of
    `num_bins` holds the rows whose confidence lies in
    `(b / num_bins, (b + 1) / num_bins]` (the first bin closed on the left
    too), as in Guo et al.

    Args:
        probs: probabilities of shape `(..., K)`; rows must sum to 1.
        labels: integer class ids of shape `probs.shape[:-1]`.
        num_bins: number of bins. Defaults to `15`.
        mask: optional 0/1 (or boolean) array of `labels`' shape; positions
            with 0 are ignored. Defaults to `None`.

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
    """Bin index in `[0, num_bins)` of each confidence in `[0, 1]`.

    Bin `b` holds `(b / num_bins, (b + 1) / num_bins]`; 0 goes to bin 0.
    """
    edges = np.linspace(0.0, 1.0, num_bins + 1)
    index = np.searchsorted(edges, confidence, side="left") - 1
    return np.clip(index, 0, num_bins - 1)


# --- computations on validated float64 arrays -----------------------------


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


# --- checks at the public boundary -----------------------------------------


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
    """`(x, y, mask, the mask's name)` from `validation_data` and `mask`."""
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
    """Every input array holds as many examples as `y`, and some."""
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
    """The unmasked rows of `values` and their labels, validated.

    Args:
        values: logits (`from_logits`) or probabilities, shape `(..., K)`.
        labels: class ids of shape `values.shape[:-1]` (or with a trailing
            axis of size 1).
        mask: `None` or a 0/1 array of the labels' shape.
        names: how messages name `values`, `labels` and `mask`.

    Returns:
        `(values, labels)` of the kept positions: float64 `(n, K)` (rows of
        probabilities renormalised) and int64 `(n,)`, `n >= 1`.
    """
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
    # Masked positions are replaced by neutral values before the checks, so
    # that what padding holds is never read.
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
    """`array` of shape `values_shape[:-1]` (a trailing 1 dropped)."""
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
