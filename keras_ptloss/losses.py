"""PTLoss and the plain knowledge-distillation loss, written with `keras.ops`.

Each loss has two faces: a functional form returning per-example values, and
a `keras.losses.Loss` subclass whose `call` delegates to it (reduction,
`sample_weight` and masks are left to the base class).

The loss objects own their state: `PTLoss` holds its coefficients and its
temperature, `KDLoss` its temperature, each in a non-trainable
`keras.Variable` (`loss.variables`). A `keras_ptloss.Distiller` tracks these
variables as model state and calls the loss itself, so an assignment from a
callback reaches the next compiled step (docs/design.md, "Keras traps").
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
    """Both at the student's float dtype (at least float32)."""
    y_pred = upcast(y_pred)
    return ops.cast(y_true, y_pred.dtype), y_pred


def standardize_logits(logits, delta=STANDARDIZE_DELTA):
    """Z-score standardisation of logits over the class axis.

    `z -> (z - mean(z)) / (std(z) + delta)` with the sample standard
    deviation (divisor `K - 1`), the convention of the LS-KD authors'
    reference code (`torch.std`'s default) and of torchdistill. Constant
    logits map to zeros.

    Needs `K >= 3` classes: the z-scores of two logits are `±1/sqrt(2)`
    whatever their difference, so with `K = 2` a standardised loss gives
    the student no gradient (its students stay at chance); `K < 3` raises.

    Args:
        logits: tensor of shape `(..., K)`, `K >= 3`.
        delta: small non-negative number added to the standard deviation.

    Returns:
        A float tensor of the shape of `logits`.

    Raises:
        ValueError: if the class axis is known and has fewer than 3 entries.

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
    """Checks numpy/list inputs (the Python boundary) for NaN/Inf and, for
    probabilities, negative values or rows not summing to 1.

    Backend tensors are not read back (that would cost a device sync every
    training step); their shapes are still checked by `_check_shapes`.
    """
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
    """The boundary of the functional losses: converts and checks once.

    Returns:
        `(y_true, y_pred, eps)`: teacher and student at the student's float
        dtype (at least float32), both z-scored when `standardize`, and the
        coefficients cast to it (`None` stays `None`).
    """
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
    """Hinton knowledge-distillation loss, `T**2 * KL(p || q)` per example.

    `p = softmax(t / T)` is the tempered teacher, `q = softmax(z / T)` the
    tempered student, both computed with log-softmax (no clipping). With
    `standardize=True` both logits are z-scored first
    (`standardize_logits`), which is the logit-standardisation loss of Sun
    et al. (`keras_ptloss.LSKDLoss` on logits).

    Args:
        y_true: teacher probabilities (or logits if `teacher_from_logits`),
            shape `(batch, ..., K)`.
        y_pred: student logits (or probabilities if `from_logits=False`),
            same shape.
        temperature: softmax temperature `T > 0` (a number, scalar tensor
            or `keras.Variable`).
        from_logits: whether `y_pred` holds logits.
        teacher_from_logits: whether `y_true` holds logits (default) or
            probabilities (`False`; `None` counts as `False`).
        standardize: z-score both logits over classes before tempering
            (needs logits on both sides).

    Returns:
        Per-example loss, shape `(batch, ...)`, float32 (or wider).

    Example:

    >>> import numpy as np
    >>> teacher_logits = np.log([[0.7, 0.2, 0.1]])
    >>> float(kd_loss(teacher_logits, teacher_logits)[0])  # identical -> 0
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

    For teacher `p = softmax(t / T)` and student `q = softmax(z / T)`:

        L = T**2 * sum_k p_k * [log p_k - log q_k
                                + sum_{m=1..M} eps[k, m] * (1 - q_k)**m]

    With zero coefficients this is exactly `T**2 * KL(p || q)`. With
    `standardize=True` the teacher's and the student's logits are z-scored
    over classes first (`standardize_logits`, Sun et al. 2024).

    Args:
        y_true: teacher probabilities (or logits if `teacher_from_logits`),
            shape `(batch, ..., K)`.
        y_pred: student logits (or probabilities if `from_logits=False`),
            same shape.
        coefficients: `eps`, shape `(M,)` (shared over classes) or `(K, M)`
            (class-wise); a tensor or `keras.Variable`. Not validated here
            (see `PTLoss`), so it can be traced.
        temperature: softmax temperature `T > 0` (a number, scalar tensor
            or `keras.Variable`).
        from_logits: whether `y_pred` holds logits.
        teacher_from_logits: whether `y_true` holds logits (default) or
            probabilities (`False`; `None` counts as `False`).
        standardize: z-score both logits over classes before tempering
            (needs logits on both sides).

    Returns:
        Per-example loss, shape `(batch, ...)`, float32 (or wider).

    Example:

    >>> import numpy as np
    >>> teacher_logits = np.array([[2.0, 0.5, -1.0]])
    >>> student_logits = np.zeros((1, 3))
    >>> loss = pt_loss(teacher_logits, student_logits, coefficients=[0.5, -0.1])
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
    """`_lean_rows` on `(N, K)` inputs, `chunk_size` rows at a time.

    The whole chunks run through `keras.ops.map` (one traced body, executed
    in sequence: a `lax.map` on JAX, a `tf.map_fn` on TensorFlow, a loop on
    PyTorch), so only one chunk's temporaries are alive at a time and the
    results are written into stacked outputs; a remainder of fewer rows is
    computed apart. One chunk when `N` is unknown at trace time.
    """
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
    """Per-row loss and its gradient, in one pass (the memory-lean path).

    `t`, `z`: `(rows, K)` teacher and student logits; `eps`: `(M,)` or
    `(K, M)` coefficients or `None` (KD); `temperature`: a scalar tensor.
    The gradient is the closed form of docs/design.md, "Vocabulary scale":

        dL/dz = T * (q - p - w + q * sum_k w_k),  w = p * q * g,
        g_k = sum_m m * eps[k, m] * (1 - q_k)**(m - 1)

    computed with the loss from the same `p`, `q` and `1 - q` (one pass of
    the softmaxes, the series and its derivative by one Horner loop).

    Returns:
        `(loss, grad)`: shapes `(rows,)` and `(rows, K)`.
    """
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
    """PTLoss (or KD) per example with a closed-form gradient, in chunks.

    The same values as `pt_loss` (`coefficients=None`: `kd_loss`), computed
    `chunk_size` rows (tokens) at a time on the flattened `(N, K)` outputs,
    one chunk after another (`keras.ops.map`). Each chunk yields its loss
    and, from the same softmaxes, its closed-form gradient; the gradient
    (one `(N, K)` tensor) is the only thing kept for the backward pass,
    which scales it by the upstream gradient. Peak memory of loss plus
    gradient: about two `(N, K)` tensors beyond the inputs, for
    vocabularies of 32k-256k classes (docs/design.md, "Vocabulary scale").
    Chunks of about `2**18 / K` rows (1 MiB temporaries) were the fastest
    on CPU. A call without a gradient (evaluation) computes the gradient
    too. The gradient flows to the student only: the teacher, the
    coefficients and the temperature are constants. `standardize` and
    student probabilities are mapped to logits first by ordinary autodiff.

    Args:
        y_true: teacher probabilities (or logits if `teacher_from_logits`),
            shape `(batch, ..., K)`.
        y_pred: student logits (or probabilities if `from_logits=False`),
            same shape.
        coefficients: `eps`, shape `(M,)` or `(K, M)`, or `None` for KD.
        temperature: softmax temperature `T > 0`.
        from_logits: whether `y_pred` holds logits.
        teacher_from_logits: whether `y_true` holds logits (default) or
            probabilities (`False`).
        standardize: z-score both logits over classes first.
        chunk_size: rows (tokens) per chunk, or `None` for one chunk. The
            number of rows must be known when the function is traced;
            otherwise one chunk is used. Rows beyond a multiple of
            `chunk_size` form a last, smaller chunk.

    Returns:
        Per-example loss, shape `(batch, ...)`, float32 (or wider).

    Example:

    >>> import numpy as np
    >>> teacher = np.zeros((2, 3, 4))  # uniform logits: p = 0.25
    >>> student = np.zeros((2, 3, 4))
    >>> loss = lean_loss(teacher, student, [0.5], chunk_size=2)
    >>> # KL is 0 (same distributions); the series adds 0.5 * (1 - 0.25).
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
    """The state and flags `KDLoss` and `PTLoss` share.

    The temperature is a non-trainable scalar `keras.Variable`; `temperature`
    reads it as a Python float and `set_temperature` validates and assigns.
    """

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
        """The temperature `T` as a Python float (read from its variable)."""
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
    """Hinton knowledge-distillation loss: `T**2 * KL(p || q)`.

    `p = softmax(t / T)` is the tempered teacher (given as logits by
    default; probabilities are re-tempered as `p ** (1/T)`), `q =
    softmax(z / T)` the tempered student. Both come from log-softmax, so
    exact zeros and extreme logits stay finite. At `T = 1` with
    probabilities on both sides this equals `keras.losses.KLDivergence`
    (which clips instead).

    The temperature lives in a non-trainable `keras.Variable`
    (`loss.variables`); change it with `set_temperature`.

    Args:
        temperature: softmax temperature `T > 0`. Defaults to `1.0`.
        from_logits: whether `y_pred` holds student logits (default) or
            probabilities.
        teacher_from_logits: whether `y_true` holds teacher logits.
            Defaults to `True`; pass `False` for teacher probabilities. A
            `keras_ptloss.Distiller` (or an adapter of
            `keras_ptloss.interop`) checks it against the teacher's last
            layer; `None` lets it read the kind from that layer instead (a
            loss called on its own reads `None` as probabilities).
        standardize: z-score the teacher's and the student's logits over
            classes before tempering (the logit standardisation of Sun et
            al.; needs logits on both sides and at least 3 classes: with
            2 the student gets no gradient, and a call raises).
            Defaults to `False`.
        reduction: Keras reduction. Defaults to `"sum_over_batch_size"`.
        name: optional name. Defaults to `"kd_loss"`.
        dtype: dtype of the computation; half-precision inputs are always
            computed in float32.
        chunk_size: `None` (default) computes the loss in one pass with
            autodiff; an integer computes it `chunk_size` tokens (rows of
            the flattened `(N, K)` outputs) at a time together with its
            closed-form gradient, which is all that is kept for the
            backward pass (`lean_loss`; for vocabularies of 32k+ classes,
            e.g. `2**18 // K` rows). Same values; the gradient reaches the
            student only.

    Example:

    >>> import numpy as np
    >>> loss = KDLoss(temperature=4.0)
    >>> teacher_logits = np.array([[3.0, 0.0, 0.0]])
    >>> float(loss(teacher_logits, np.zeros((1, 3)))) > 0
    True

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
    """Perturbed distillation loss (PTLoss) of Zhang et al.

    Writes the distillation cross-entropy `-log q` as its Maclaurin series in
    `(1 - q)` and perturbs the first `M` coefficients. For teacher
    `p = softmax(t / T)` and student `q = softmax(z / T)`, per example:

        L = T**2 * sum_k p_k * [log p_k - log q_k
                                + sum_{m=1..M} eps[k, m] * (1 - q_k)**m]

    With `eps = 0` it is exactly Hinton's KD loss `T**2 * KL(p || q)`. Its
    minimiser over the student is a *proxy teacher* shifted away from the
    teacher: `eps > 0` sharpens it, `eps < 0` smooths it. Choose `eps` with
    `keras_ptloss.select_coefficients` on a labelled validation split.

    The coefficients and the temperature live in non-trainable
    `keras.Variable`s (`loss.coefficients`, `loss.variables`); change them
    with `set_coefficients` and `set_temperature`, which validate the new
    values. A `keras_ptloss.Distiller` tracks these variables as model
    state, so a change made during `fit` reaches the next step on every
    backend; for a model compiled with `loss=PTLoss(...)` use
    `keras_ptloss.ReestimateCoefficients`, which handles the JAX case.

    Args:
        coefficients: `eps`, array-like of shape `(M,)` (shared over classes)
            or `(K, M)` (class-wise); the order `M` is the last dimension.
            Defaults to `M = 5` zeros: plain KD until coefficients are
            selected.
        temperature: softmax temperature `T > 0`. Defaults to `1.0`.
        from_logits: whether `y_pred` holds student logits (default) or
            probabilities.
        teacher_from_logits: whether `y_true` holds teacher logits.
            Defaults to `True`; pass `False` for teacher probabilities. A
            `keras_ptloss.Distiller` (or an adapter of
            `keras_ptloss.interop`) checks it against the teacher's last
            layer; `None` lets it read the kind from that layer instead (a
            loss called on its own reads `None` as probabilities).
        allow_nonconvex: by default, coefficients for which
            `-log q + sum_m eps_m (1 - q)**m` is not convex in `q` (so the
            proxy teacher may be non-unique) raise `ValueError`; `True`
            accepts them.
        standardize: z-score the teacher's and the student's logits over
            classes before tempering (the logit standardisation of Sun et
            al.; needs logits on both sides). With zero coefficients this
            is `keras_ptloss.LSKDLoss`. Needs at least 3 classes (with 2
            the student gets no gradient, and a call raises). Defaults
            to `False`.
        reduction: Keras reduction. Defaults to `"sum_over_batch_size"`.
        name: optional name. Defaults to `"pt_loss"`.
        dtype: dtype of the computation; half-precision inputs are always
            computed in float32.
        chunk_size: `None` (default) computes the loss in one pass with
            autodiff; an integer computes it `chunk_size` tokens (rows of
            the flattened `(N, K)` outputs) at a time together with its
            closed-form gradient, which is all that is kept for the
            backward pass (`lean_loss`; for vocabularies of 32k+ classes,
            e.g. `2**18 // K` rows). Same values; the gradient reaches the
            student only.

    Example:

    >>> import numpy as np
    >>> loss = PTLoss(coefficients=[0.5, 0.0, -0.05], temperature=2.0)
    >>> teacher_logits = np.array([[2.0, 0.5, -1.0]])
    >>> student_logits = np.array([[1.0, 0.0, -1.0]])
    >>> value = loss(teacher_logits, student_logits)
    >>> loss.order
    3
    >>> loss.set_temperature(4.0)
    >>> loss.temperature
    4.0

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
        """The loss's non-trainable variables: coefficients, temperature."""
        return [self._coefficients, self.temperature_variable]

    @property
    def order(self):
        """The order `M`: how many series coefficients are perturbed."""
        return int(self._coefficients.shape[-1])

    @property
    def classwise(self):
        """Whether the coefficients have one row per class."""
        return len(self._coefficients.shape) == 2

    def set_coefficients(self, coefficients):
        """Validates and assigns new coefficients of the same shape.

        Args:
            coefficients: array-like with the shape of `self.coefficients`.
        """
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
