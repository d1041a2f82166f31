"""PTLoss and Hinton's KD loss, functional and as `keras.losses.Loss`.

Hyper-parameters live in non-trainable `keras.Variable`s (`loss.variables`)
that a `keras_ptloss.Distiller` tracks (docs/design.md, "Keras traps").
"""

import keras
import numpy as np
from keras import ops

from keras_ptloss._checks import check_bool
from keras_ptloss._checks import check_finite
from keras_ptloss._checks import check_int
from keras_ptloss._checks import check_probabilities
from keras_ptloss._checks import check_standardizable
from keras_ptloss._checks import check_temperature
from keras_ptloss._checks import shapes_match
from keras_ptloss._checks import vocabulary_hint
from keras_ptloss._core import as_logits
from keras_ptloss._core import distillation_loss
from keras_ptloss._core import perturbed_terms
from keras_ptloss._core import upcast
from keras_ptloss._core import z_score
from keras_ptloss._hyperparameters import HyperparameterLoss
from keras_ptloss._hyperparameters import hyperparameter_variable
from keras_ptloss.coefficients import as_coefficient_array
from keras_ptloss.coefficients import check_convex

# Added to the standard deviation by `standardize_logits`.
STANDARDIZE_DELTA = 1e-7


def _common_float(y_true, y_pred):
    y_pred = upcast(y_pred)
    return ops.cast(y_true, y_pred.dtype), y_pred


def standardize_logits(logits, delta=STANDARDIZE_DELTA):
    """Z-scores logits over the class axis: `(z - mean) / (std + delta)`.

    Uses the sample standard deviation (divisor `K - 1`); constant logits map
    to zeros.

    Args:
        logits: tensor of shape `(..., K)`, `K >= 3`.
        delta: non-negative number added to the standard deviation.

    Returns:
        A float tensor of the shape of `logits`.

    Raises:
        ValueError: if the class axis has fewer than 3 entries.

    Example:

    >>> import numpy as np
    >>> z = standardize_logits(np.array([[1.0, 2.0, 3.0]]), delta=0.0)
    >>> np.round(np.asarray(z, dtype="float64"), 4).tolist()
    [[-1.0, 0.0, 1.0]]
    """
    logits = upcast(logits)
    check_standardizable(logits.shape[-1])
    return z_score(logits, delta)


def _check_shapes(y_true, y_pred, coefficients=None):
    true_shape, pred_shape = tuple(y_true.shape), tuple(y_pred.shape)
    if not shapes_match(true_shape, pred_shape):
        raise ValueError(
            "`y_true` (teacher outputs) and `y_pred` (student outputs) must "
            "have the same shape (batch, ..., num_classes). Received: "
            f"y_true.shape={true_shape}, y_pred.shape={pred_shape}."
            + vocabulary_hint(true_shape, pred_shape)
        )
    if coefficients is not None and len(coefficients.shape) == 2:
        rows, num_classes = coefficients.shape[0], pred_shape[-1]
        if num_classes is not None and rows != num_classes:
            raise ValueError(
                "Class-wise `coefficients` must have one row per class: "
                f"expected shape ({num_classes}, M) for outputs with "
                f"{num_classes} classes. Received: coefficients.shape="
                f"{tuple(coefficients.shape)}"
            )


def _check_host_values(values, from_logits, name):
    # Tensors are not read back: that would sync the device every step.
    if not isinstance(values, (np.ndarray, list, tuple)):
        return
    if from_logits:
        try:
            array = np.asarray(values, dtype="float64")
        except (TypeError, ValueError) as e:
            raise ValueError(
                f"`{name}` must be an array of numbers. Received: "
                f"{name}={values!r}"
            ) from e
        check_finite(array, name)
    else:
        check_probabilities(values, name, allow_empty=True)


def _check_host_inputs(y_true, y_pred, from_logits, teacher_from_logits):
    if np.shape(y_true) != np.shape(y_pred):
        return  # `_check_shapes` reports the mismatch
    _check_host_values(y_true, teacher_from_logits, "y_true")
    _check_host_values(y_pred, from_logits, "y_pred")


def _check_standardize(standardize, from_logits, teacher_from_logits):
    if standardize and not (from_logits and teacher_from_logits):
        raise ValueError(
            "`standardize=True` z-scores the teacher's and the student's "
            "logits, so both must be logits: pass from_logits=True and "
            "teacher_from_logits=True. Received: "
            f"from_logits={from_logits}, "
            f"teacher_from_logits={teacher_from_logits}"
        )


def _validated(
    y_true, y_pred, coefficients, from_logits, teacher_from_logits, standardize
):
    _check_standardize(standardize, from_logits, teacher_from_logits)
    host_inputs = (y_true, y_pred)
    y_true, y_pred = _common_float(y_true, y_pred)
    eps = None
    if coefficients is not None:
        eps = ops.cast(coefficients, y_pred.dtype)
    _check_shapes(y_true, y_pred, eps)
    _check_host_inputs(*host_inputs, from_logits, teacher_from_logits)
    if standardize:
        check_standardizable(y_true.shape[-1])
        check_standardizable(y_pred.shape[-1])
        y_true = z_score(y_true, STANDARDIZE_DELTA)
        y_pred = z_score(y_pred, STANDARDIZE_DELTA)
    return y_true, y_pred, eps


def kd_loss(
    y_true,
    y_pred,
    temperature=1.0,
    from_logits=True,
    teacher_from_logits=True,
    standardize=False,
):
    """Hinton knowledge-distillation loss per example.

    `loss = T**2 * sum_k p_k * (log p_k - log q_k)` with teacher
    `p = softmax(t / T)` and student `q = softmax(z / T)`.

    Args:
        y_true: teacher outputs, shape `(batch, ..., K)`.
        y_pred: student outputs, same shape.
        temperature: softmax temperature `T > 0`. Defaults to `1.0`.
        from_logits: whether `y_pred` holds logits. Defaults to `True`.
        teacher_from_logits: whether `y_true` holds logits. Defaults to `True`.
        standardize: z-score both logits over classes first
            (`standardize_logits`). Defaults to `False`.

    Returns:
        Per-example loss, shape `(batch, ...)`.

    Example:

    >>> import numpy as np
    >>> teacher_logits = np.log([[0.7, 0.2, 0.1]])
    >>> float(kd_loss(teacher_logits, teacher_logits)[0])
    0.0
    """
    teacher_from_logits = bool(teacher_from_logits)
    y_true, y_pred, _ = _validated(
        y_true, y_pred, None, from_logits, teacher_from_logits, standardize
    )
    return distillation_loss(
        y_true, y_pred, None, temperature, from_logits, teacher_from_logits
    )


def pt_loss(
    y_true,
    y_pred,
    coefficients,
    temperature=1.0,
    from_logits=True,
    teacher_from_logits=True,
    standardize=False,
):
    """Perturbed distillation loss (PTLoss) per example.

        loss = T**2 * sum_k p_k * (log p_k - log q_k
                                   + sum_{m=1..M} eps[k, m] * (1 - q_k)**m)

    with teacher `p = softmax(t / T)` and student `q = softmax(z / T)`.

    Args:
        y_true: teacher outputs, shape `(batch, ..., K)`.
        y_pred: student outputs, same shape.
        coefficients: `eps`, shape `(M,)` (shared) or `(K, M)` (class-wise).
        temperature: softmax temperature `T > 0`. Defaults to `1.0`.
        from_logits: whether `y_pred` holds logits. Defaults to `True`.
        teacher_from_logits: whether `y_true` holds logits. Defaults to `True`.
        standardize: z-score both logits over classes first
            (`standardize_logits`). Defaults to `False`.

    Returns:
        Per-example loss, shape `(batch, ...)`.

    Example:

    >>> import numpy as np
    >>> teacher_logits = np.array([[2.0, 0.5, -1.0]])
    >>> loss = pt_loss(teacher_logits, np.zeros((1, 3)), [0.5, -0.1])
    >>> tuple(loss.shape)
    (1,)
    """
    teacher_from_logits = bool(teacher_from_logits)
    y_true, y_pred, eps = _validated(
        y_true,
        y_pred,
        coefficients,
        from_logits,
        teacher_from_logits,
        standardize,
    )
    return distillation_loss(
        y_true, y_pred, eps, temperature, from_logits, teacher_from_logits
    )


def _flat_rows(values):
    """`values` reshaped to `(N, K)` and the leading shape to restore."""
    lead = ops.shape(values)[:-1]
    return ops.reshape(values, (-1, ops.shape(values)[-1])), lead


def _chunked_rows(t, z, eps, temperature, chunk_size):
    num_rows = z.shape[0]
    if num_rows is None or chunk_size is None or chunk_size >= num_rows:
        return _lean_rows(t, z, eps, temperature)
    count = num_rows // chunk_size
    full = count * chunk_size
    head_t, head_z = t, z
    if full < num_rows:
        head_t, head_z = t[:full], z[:full]
    shape = (count, chunk_size, -1)
    losses, grads = ops.map(
        lambda pair: _lean_rows(pair[0], pair[1], eps, temperature),
        (ops.reshape(head_t, shape), ops.reshape(head_z, shape)),
    )
    loss = ops.reshape(losses, (full,))
    grad = ops.reshape(grads, (full, -1))
    if full < num_rows:
        rest_loss, rest_grad = _lean_rows(t[full:], z[full:], eps, temperature)
        loss = ops.concatenate([loss, rest_loss], 0)
        grad = ops.concatenate([grad, rest_grad], 0)
    return loss, grad


def _lean_rows(t, z, eps, temperature):
    """Per-row loss and its closed-form gradient (see `lean_loss`)."""
    log_p = ops.log_softmax(t / temperature, axis=-1)
    log_q = ops.log_softmax(z / temperature, axis=-1)
    p, terms, g = perturbed_terms(log_p, log_q, eps, derivative=True)
    q = ops.exp(log_q)
    grad = q - p
    if g is not None:
        w = p * q * g
        grad = grad - w + q * ops.sum(w, axis=-1, keepdims=True)
    loss = ops.sum(terms, axis=-1) * ops.square(temperature)
    return loss, grad * temperature


def lean_loss(
    y_true,
    y_pred,
    coefficients=None,
    temperature=1.0,
    from_logits=True,
    teacher_from_logits=True,
    standardize=False,
    chunk_size=None,
):
    """`pt_loss` (or `kd_loss`) computed in chunks with a closed-form gradient.

    Same values as `pt_loss`, `chunk_size` rows of the flattened `(N, K)`
    outputs at a time; only the gradient, which reaches the student only, is
    kept for the backward pass (docs/design.md, "Vocabulary scale").

    Args:
        y_true: teacher outputs, shape `(batch, ..., K)`.
        y_pred: student outputs, same shape.
        coefficients: `eps`, shape `(M,)` or `(K, M)`, or `None` for KD.
        temperature: softmax temperature `T > 0`. Defaults to `1.0`.
        from_logits: whether `y_pred` holds logits. Defaults to `True`.
        teacher_from_logits: whether `y_true` holds logits. Defaults to `True`.
        standardize: z-score both logits over classes first.
        chunk_size: rows per chunk, or `None` (default) for one chunk.

    Returns:
        Per-example loss, shape `(batch, ...)`.

    Example:

    >>> import numpy as np
    >>> teacher = np.zeros((2, 3, 4))
    >>> loss = lean_loss(teacher, np.zeros((2, 3, 4)), [0.5], chunk_size=2)
    >>> np.asarray(loss).round(6).tolist()
    [[0.375, 0.375, 0.375], [0.375, 0.375, 0.375]]
    """
    teacher_from_logits = bool(teacher_from_logits)
    y_true, y_pred, eps = _validated(
        y_true,
        y_pred,
        coefficients,
        from_logits,
        teacher_from_logits,
        standardize,
    )
    if eps is not None:
        eps = ops.convert_to_tensor(eps)
    t = ops.stop_gradient(as_logits(y_true, teacher_from_logits))
    z = as_logits(y_pred, from_logits)
    temperature = ops.convert_to_tensor(ops.cast(temperature, z.dtype))
    t, lead = _flat_rows(t)
    z, _ = _flat_rows(z)

    @ops.custom_gradient
    def rows_loss(z):
        value, rows_grad = _chunked_rows(t, z, eps, temperature, chunk_size)

        def grad(*args, upstream=None):
            if upstream is None:
                (upstream,) = args
            return rows_grad * ops.expand_dims(upstream, -1)

        return value, grad

    return ops.reshape(rows_loss(z), lead)


def _check_teacher_flag(value):
    if value is None:
        return None
    return check_bool(value, "teacher_from_logits")


def _check_chunk_size(value):
    if value is None:
        return None
    return check_int(value, "chunk_size", minimum=1)


class _TemperedLoss(HyperparameterLoss):
    HYPERPARAMETERS = (("temperature", check_temperature),)

    def __init__(
        self,
        temperature,
        from_logits,
        teacher_from_logits,
        standardize,
        reduction,
        name,
        dtype,
        chunk_size,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.chunk_size = _check_chunk_size(chunk_size)
        self.from_logits = check_bool(from_logits, "from_logits")
        self.teacher_from_logits = _check_teacher_flag(teacher_from_logits)
        self.standardize = check_bool(standardize, "standardize")
        # `None` (read from the teacher) is resolved by a Distiller.
        _check_standardize(
            self.standardize,
            self.from_logits,
            self.teacher_from_logits is not False,
        )
        self._create_variables({"temperature": temperature})

    @property
    def temperature(self):
        """The temperature `T` as a Python float."""
        return self._get("temperature")

    @temperature.setter
    def temperature(self, value):
        self.set_temperature(value)

    def _check_host(self, y_true, y_pred):
        _check_host_inputs(
            y_true, y_pred, self.from_logits, bool(self.teacher_from_logits)
        )

    def _flags(self):
        return {
            "from_logits": self.from_logits,
            "teacher_from_logits": bool(self.teacher_from_logits),
            "standardize": self.standardize,
        }

    def get_config(self):
        config = super().get_config()
        config.update(
            from_logits=self.from_logits,
            teacher_from_logits=self.teacher_from_logits,
            standardize=self.standardize,
            chunk_size=self.chunk_size,
        )
        return config


@keras.saving.register_keras_serializable(package="keras_ptloss")
class KDLoss(_TemperedLoss):
    """Hinton knowledge-distillation loss.

    `loss = T**2 * sum_k p_k * (log p_k - log q_k)`, `p = softmax(t / T)`,
    `q = softmax(z / T)`; `set_temperature` changes `T`.

    Args:
        temperature: softmax temperature `T > 0`. Defaults to `1.0`.
        from_logits: whether `y_pred` holds logits. Defaults to `True`.
        teacher_from_logits: whether `y_true` holds logits. Defaults to `True`;
            `None`: a `keras_ptloss.Distiller` reads it from the teacher.
        standardize: z-score both logits over classes first (`K >= 3`).
            Defaults to `False`.
        reduction: Keras reduction. Defaults to `"sum_over_batch_size"`.
        name: optional name. Defaults to `"kd_loss"`.
        dtype: dtype of the computation (at least float32).
        chunk_size: `None` (default), or rows per chunk for `lean_loss`.

    Reference:
        Hinton, Vinyals and Dean, "Distilling the Knowledge in a Neural
        Network", 2015.
    """

    def __init__(
        self,
        temperature=1.0,
        from_logits=True,
        teacher_from_logits=True,
        standardize=False,
        reduction="sum_over_batch_size",
        name="kd_loss",
        dtype=None,
        chunk_size=None,
    ):
        super().__init__(
            temperature,
            from_logits,
            teacher_from_logits,
            standardize,
            reduction,
            name,
            dtype,
            chunk_size,
        )

    def call(self, y_true, y_pred):
        if self.chunk_size is not None:
            return lean_loss(
                y_true,
                y_pred,
                temperature=self.temperature_variable,
                chunk_size=self.chunk_size,
                **self._flags(),
            )
        return kd_loss(
            y_true,
            y_pred,
            temperature=self.temperature_variable,
            **self._flags(),
        )


DEFAULT_ORDER = 5


@keras.saving.register_keras_serializable(package="keras_ptloss")
class PTLoss(_TemperedLoss):
    """Perturbed distillation loss (PTLoss).

        loss = T**2 * sum_k p_k * (log p_k - log q_k
                                   + sum_{m=1..M} eps[k, m] * (1 - q_k)**m)

    with teacher `p = softmax(t / T)` and student `q = softmax(z / T)`.
    `eps = 0` is KD. The recommended way to choose `eps` and `T` is
    `keras_ptloss.search_coefficients`, whose result's `loss` is a ready
    `PTLoss`; change them with `set_coefficients` and `set_temperature`.

    Args:
        coefficients: `eps`, shape `(M,)` (shared) or `(K, M)` (class-wise).
            Defaults to 5 zeros.
        temperature: softmax temperature `T > 0`. Defaults to `1.0`.
        from_logits: whether `y_pred` holds logits. Defaults to `True`.
        teacher_from_logits: whether `y_true` holds logits. Defaults to `True`;
            `None`: a `keras_ptloss.Distiller` reads it from the teacher.
        allow_nonconvex: accept coefficients whose loss is not convex in `q`.
            Defaults to `False`.
        standardize: z-score both logits over classes first (`K >= 3`).
            Defaults to `False`.
        reduction: Keras reduction. Defaults to `"sum_over_batch_size"`.
        name: optional name. Defaults to `"pt_loss"`.
        dtype: dtype of the computation (at least float32).
        chunk_size: `None` (default), or rows per chunk for `lean_loss`.

    Example:

    >>> import numpy as np
    >>> from keras_ptloss import PTLoss
    >>> teacher_logits = np.array([[2.0, 0.0, -1.0]])
    >>> student_logits = np.array([[0.5, 0.5, 0.0]])
    >>> loss = PTLoss(coefficients=[0.5, 0.0], temperature=2.0)
    >>> round(float(loss(teacher_logits, student_logits)), 4)
    1.9071
    >>> kd = PTLoss(coefficients=[0.0, 0.0], temperature=2.0)  # T**2 * KL
    >>> round(float(kd(teacher_logits, student_logits)), 4)
    0.6045

    With a Keras model, the teacher's logits are the targets:
    `student.compile(optimizer="adam", loss=loss)`, then
    `student.fit(x, teacher.predict(x))`.

    Reference:
        Zhang et al., "Do Not Blindly Imitate the Teacher: Using Perturbed
        Loss for Knowledge Distillation", arXiv:2305.05010, 2023.
    """

    def __init__(
        self,
        coefficients=None,
        temperature=1.0,
        from_logits=True,
        teacher_from_logits=True,
        allow_nonconvex=False,
        standardize=False,
        reduction="sum_over_batch_size",
        name="pt_loss",
        dtype=None,
        chunk_size=None,
    ):
        super().__init__(
            temperature,
            from_logits,
            teacher_from_logits,
            standardize,
            reduction,
            name,
            dtype,
            chunk_size,
        )
        if coefficients is None:
            coefficients = np.zeros((DEFAULT_ORDER,))
        self.allow_nonconvex = check_bool(allow_nonconvex, "allow_nonconvex")
        values = self._validate(coefficients)
        self._coefficients = hyperparameter_variable(
            values, f"{self.name}_coefficients"
        )

    def _validate(self, coefficients, num_classes=None):
        values = as_coefficient_array(coefficients, num_classes)
        if not self.allow_nonconvex:
            check_convex(values)
        return values

    @property
    def coefficients(self):
        """The non-trainable variable holding `eps`."""
        return self._coefficients

    @property
    def variables(self):
        """The coefficient and temperature variables."""
        return [self._coefficients, self.temperature_variable]

    @property
    def order(self):
        """The order `M`."""
        return int(self._coefficients.shape[-1])

    @property
    def classwise(self):
        """Whether the coefficients have one row per class."""
        return len(self._coefficients.shape) == 2

    def set_coefficients(self, coefficients):
        """Validates and assigns coefficients of the same shape."""
        num_classes = self._coefficients.shape[0] if self.classwise else None
        values = self._validate(coefficients, num_classes)
        if values.shape != tuple(self._coefficients.shape):
            raise ValueError(
                "New `coefficients` must keep the loss's shape "
                f"{tuple(self._coefficients.shape)}. Received: shape "
                f"{values.shape}"
            )
        self._coefficients.assign(np.asarray(values, dtype="float32"))

    def call(self, y_true, y_pred):
        if self.chunk_size is not None:
            return lean_loss(
                y_true,
                y_pred,
                coefficients=self._coefficients,
                temperature=self.temperature_variable,
                chunk_size=self.chunk_size,
                **self._flags(),
            )
        return pt_loss(
            y_true,
            y_pred,
            coefficients=self._coefficients,
            temperature=self.temperature_variable,
            **self._flags(),
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            coefficients=np.asarray(self._coefficients.numpy()).tolist(),
            allow_nonconvex=self.allow_nonconvex,
        )
        return config
