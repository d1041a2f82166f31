"""Logit-distillation baselines (docs/design.md, "Baselines").

`KDCELoss` and `DKDLoss` take `y_true` as `{"teacher": ..., "label": ...}`
or, for `model.fit`, as the `(batch, K + 1)` array of `pack_targets`.
"""

import keras
import numpy as np
from keras import ops

from keras_ptloss._checks import check_bool
from keras_ptloss._checks import check_number
from keras_ptloss._checks import check_standardizable
from keras_ptloss._checks import check_temperature
from keras_ptloss._checks import vocabulary_hint
from keras_ptloss._core import LOG_ZERO
from keras_ptloss._core import distillation_loss
from keras_ptloss._core import perturbed_terms
from keras_ptloss._core import scale_by_t_squared
from keras_ptloss._core import tempered_log_probs
from keras_ptloss._core import upcast
from keras_ptloss._core import z_score
from keras_ptloss._hyperparameters import HyperparameterLoss

# Log-probabilities at or below this are treated as exact zeros.
_LOG_ZERO_THRESHOLD = 0.5 * LOG_ZERO
# log(p) of an exact zero probability in `lskd_loss`: smallest normal f32.
_LOG_TINY = float(np.log(np.finfo("float32").tiny))
TARGET_KEYS = ("teacher", "label")


def pack_targets(teacher, labels):
    """Packs teacher outputs and integer labels into one `y_true` array.

    Args:
        teacher: teacher logits or probabilities, shape `(batch, K)`.
        labels: integer class indices, shape `(batch,)` or `(batch, 1)`.

    Returns:
        A float32 numpy array of shape `(batch, K + 1)`.

    Example:

    >>> import numpy as np
    >>> pack_targets(np.array([[0.75, 0.25]]), np.array([1])).tolist()
    [[0.75, 0.25, 1.0]]
    """
    teacher = np.asarray(keras.ops.convert_to_numpy(teacher), "float32")
    labels = np.asarray(keras.ops.convert_to_numpy(labels))
    if teacher.ndim != 2:
        raise ValueError(
            "`teacher` must have shape (batch, num_classes). Received: "
            f"teacher.shape={teacher.shape}"
        )
    if labels.ndim == 2 and labels.shape[-1] == 1:
        labels = labels[:, 0]
    if labels.shape != teacher.shape[:1]:
        raise ValueError(
            "`labels` must hold one integer class index per example, shape "
            f"({teacher.shape[0]},). Received: labels.shape={labels.shape}"
        )
    _check_label_values(labels, teacher.shape[-1])
    return np.concatenate([teacher, labels.astype("float32")[:, None]], axis=-1)


def unpack_targets(y_true, num_classes):
    """Splits `y_true` into `(teacher, labels)`.

    Args:
        y_true: a dict `{"teacher": ..., "label": ...}` or a packed
            `(batch, num_classes + 1)` array from `pack_targets`.
        num_classes: the number of classes `K`.

    Returns:
        A tuple `(teacher, labels)` of tensors; `teacher` has shape
        `(batch, K)`.

    Example:

    >>> import numpy as np
    >>> teacher, labels = unpack_targets(
    ...     {"teacher": np.array([[0.7, 0.3]]), "label": np.array([0])}, 2)
    >>> tuple(teacher.shape), tuple(labels.shape)
    ((1, 2), (1,))
    """
    if isinstance(y_true, dict):
        if set(y_true) != set(TARGET_KEYS):
            raise ValueError(
                "A dict `y_true` must have exactly the keys "
                f"{list(TARGET_KEYS)}. Received keys: {sorted(y_true)}"
            )
        return (
            ops.convert_to_tensor(y_true["teacher"]),
            ops.convert_to_tensor(y_true["label"]),
        )
    if isinstance(y_true, (list, tuple)):
        raise ValueError(
            "`y_true` must be a dict {'teacher': ..., 'label': ...} or a "
            "packed array from `pack_targets`. Received a "
            f"{type(y_true).__name__} of length {len(y_true)}"
        )
    y_true = ops.convert_to_tensor(y_true)
    width = y_true.shape[-1]
    if len(y_true.shape) < 2 or (
        width is not None and width != num_classes + 1
    ):
        raise ValueError(
            "A packed `y_true` must have shape (batch, num_classes + 1) = "
            f"(batch, {num_classes + 1}): the teacher's outputs then the "
            "label (see `pack_targets`). Received: y_true.shape="
            f"{tuple(y_true.shape)}"
        )
    return y_true[..., :num_classes], y_true[..., num_classes]


def _concrete(x):
    if isinstance(x, (np.ndarray, list, tuple, int, float, np.number)):
        return np.asarray(x)
    try:
        return np.asarray(ops.convert_to_numpy(x))
    except Exception:  # a traced / symbolic tensor: cannot be checked here
        return None


def _check_label_values(values, num_classes, name="labels"):
    values = np.asarray(values)
    if values.size == 0:
        return
    if not np.all(np.isfinite(values)) or np.any(values != np.round(values)):
        raise ValueError(
            f"`{name}` must be integer class indices. Received: "
            f"{name}={values.ravel()[:10].tolist()}..."
        )
    low, high = values.min(), values.max()
    if low < 0 or high >= num_classes:
        raise ValueError(
            f"`{name}` must lie in [0, {num_classes - 1}] for "
            f"{num_classes} classes. Received values in [{low:g}, {high:g}]"
        )


def _label_targets(labels, y_pred, allow_soft=False):
    num_classes = y_pred.shape[-1]
    labels = ops.convert_to_tensor(labels)
    rank, pred_rank = len(labels.shape), len(y_pred.shape)
    if rank == pred_rank and labels.shape[-1] == 1 and num_classes != 1:
        labels = ops.squeeze(labels, axis=-1)
        rank -= 1
    if rank == pred_rank and allow_soft:
        if labels.shape[-1] is not None and labels.shape[-1] != num_classes:
            raise ValueError(
                "One-hot / soft `labels` must have the shape of the logits "
                f"(batch, {num_classes}). Received: labels.shape="
                f"{tuple(labels.shape)}"
            )
        return ops.cast(labels, y_pred.dtype)
    if rank != pred_rank - 1:
        raise ValueError(
            "`labels` must be integer class indices of shape "
            f"{tuple(y_pred.shape[:-1])} (or with a trailing 1)"
            + (
                f" or one-hot of shape {tuple(y_pred.shape)}"
                if allow_soft
                else ""
            )
            + f". Received: labels.shape={tuple(labels.shape)}"
        )
    concrete = _concrete(labels)
    if concrete is not None:
        _check_label_values(concrete, num_classes)
    return ops.one_hot(
        ops.cast(labels, "int32"), num_classes, dtype=y_pred.dtype
    )


def _check_teacher_shape(teacher, y_pred):
    true_shape, pred_shape = tuple(teacher.shape), tuple(y_pred.shape)
    if len(true_shape) != len(pred_shape) or any(
        a is not None and b is not None and a != b
        for a, b in zip(true_shape, pred_shape, strict=True)
    ):
        raise ValueError(
            "The teacher outputs and `y_pred` (student outputs) must have "
            "the same shape (batch, ..., num_classes). Received: "
            f"teacher.shape={true_shape}, y_pred.shape={pred_shape}."
            + vocabulary_hint(true_shape, pred_shape)
        )


def _cross_entropy(one_hot, log_q):
    return -ops.sum(ops.where(one_hot > 0, one_hot * log_q, 0.0), axis=-1)


def kd_ce_loss(
    y_true,
    y_pred,
    label_weight=0.5,
    temperature=1.0,
    from_logits=True,
    teacher_from_logits=True,
):
    """KD mixed with the hard-label cross-entropy, per example.

        loss = label_weight * CE(y, softmax(z))
               + (1 - label_weight) * T**2 * KL(softmax(t/T) || softmax(z/T))

    Args:
        y_true: `{"teacher": ..., "label": ...}` or a `pack_targets` array.
        y_pred: student logits (or probabilities), shape `(batch, K)`.
        label_weight: cross-entropy weight in `[0, 1]`. Defaults to `0.5`.
        temperature: softmax temperature `T > 0`. Defaults to `1.0`.
        from_logits: whether `y_pred` holds logits. Defaults to `True`.
        teacher_from_logits: teacher outputs are logits. Defaults to `True`.

    Returns:
        Per-example loss, shape `(batch,)`.

    Example:

    >>> import numpy as np
    >>> y_true = {"teacher": np.log([[0.7, 0.2, 0.1]]), "label": np.array([0])}
    >>> loss = kd_ce_loss(y_true, np.log([[0.7, 0.2, 0.1]]), label_weight=1.0)
    >>> round(float(loss[0]), 4)
    0.3567
    """
    y_pred = upcast(y_pred)
    teacher, labels = unpack_targets(y_true, y_pred.shape[-1])
    teacher = ops.cast(upcast(teacher), y_pred.dtype)
    _check_teacher_shape(teacher, y_pred)
    one_hot = _label_targets(labels, y_pred)
    ce = _cross_entropy(one_hot, tempered_log_probs(y_pred, 1.0, from_logits))
    kd = distillation_loss(
        teacher,
        y_pred,
        None,
        temperature,
        from_logits,
        bool(teacher_from_logits),
    )
    weight = ops.cast(label_weight, ce.dtype)
    return weight * ce + (1.0 - weight) * kd


def dkd_terms(
    y_true,
    y_pred,
    temperature=1.0,
    from_logits=True,
    teacher_from_logits=True,
):
    """The parts of decoupled KD: TCKD, NCKD and the teacher's `p_y`.

    TCKD is the KL divergence of the binary split `(p_y, 1 - p_y)`, NCKD that
    of the distributions over the non-target classes (not scaled by `T**2`).

    Args:
        y_true: `{"teacher": ..., "label": ...}` or a `pack_targets` array.
        y_pred: student logits (or probabilities), shape `(batch, K)`.
        temperature: softmax temperature `T > 0`. Defaults to `1.0`.
        from_logits: whether `y_pred` holds logits. Defaults to `True`.
        teacher_from_logits: teacher outputs are logits. Defaults to `True`.

    Returns:
        A tuple `(tckd, nckd, teacher_target_prob)`, each of shape `(batch,)`.

    Example:

    >>> import numpy as np
    >>> y_true = {"teacher": np.log([[0.7, 0.2, 0.1]]), "label": np.array([0])}
    >>> tckd, nckd, p_y = dkd_terms(y_true, np.zeros((1, 3)))
    >>> round(float(p_y[0]), 4)
    0.7
    """
    y_pred = upcast(y_pred)
    teacher, labels = unpack_targets(y_true, y_pred.shape[-1])
    teacher = ops.cast(upcast(teacher), y_pred.dtype)
    _check_teacher_shape(teacher, y_pred)
    target = _label_targets(labels, y_pred) > 0
    log_p = tempered_log_probs(teacher, temperature, teacher_from_logits)
    log_q = tempered_log_probs(y_pred, temperature, from_logits)

    def split(log_probs):
        log_target = ops.sum(ops.where(target, log_probs, 0.0), axis=-1)
        others = ops.where(target, LOG_ZERO, log_probs)
        log_rest = ops.logsumexp(others, axis=-1)
        return log_target, others, log_rest

    log_p_y, others_p, log_rest_p = split(log_p)
    log_q_y, others_q, log_rest_q = split(log_q)
    # A teacher with no non-target mass gives zero rest and NCKD terms.
    has_rest = log_rest_p > _LOG_ZERO_THRESHOLD
    p_y, target_term = perturbed_terms(log_p_y, log_q_y)
    _, rest_term = perturbed_terms(log_rest_p, log_rest_q, support=has_rest)
    tckd = target_term + rest_term
    log_p_hat = others_p - ops.expand_dims(log_rest_p, -1)
    log_q_hat = others_q - ops.expand_dims(log_rest_q, -1)
    _, kl_hat = perturbed_terms(log_p_hat, log_q_hat)
    nckd = ops.where(has_rest, ops.sum(kl_hat, axis=-1), 0.0)
    return tckd, nckd, p_y


def dkd_loss(
    y_true,
    y_pred,
    alpha=1.0,
    beta=8.0,
    temperature=1.0,
    from_logits=True,
    teacher_from_logits=True,
):
    """Decoupled knowledge distillation (DKD), per example.

        loss = T**2 * (alpha * TCKD + beta * NCKD)

    with TCKD and NCKD as in `dkd_terms`.

    Args:
        y_true: `{"teacher": ..., "label": ...}` or a `pack_targets` array.
        y_pred: student logits (or probabilities), shape `(batch, K)`.
        alpha: weight of TCKD. Defaults to `1.0`.
        beta: weight of NCKD. Defaults to `8.0`.
        temperature: softmax temperature `T > 0`. Defaults to `1.0`.
        from_logits: whether `y_pred` holds logits. Defaults to `True`.
        teacher_from_logits: teacher outputs are logits. Defaults to `True`.

    Returns:
        Per-example loss, shape `(batch,)`.

    Example:

    >>> import numpy as np
    >>> y_true = {"teacher": np.log([[0.7, 0.2, 0.1]]), "label": np.array([0])}
    >>> float(dkd_loss(y_true, np.log([[0.7, 0.2, 0.1]]))[0])
    0.0
    """
    tckd, nckd, _ = dkd_terms(
        y_true,
        y_pred,
        temperature=temperature,
        from_logits=from_logits,
        teacher_from_logits=teacher_from_logits,
    )
    alpha = ops.cast(alpha, tckd.dtype)
    beta = ops.cast(beta, tckd.dtype)
    return scale_by_t_squared(alpha * tckd + beta * nckd, temperature)


def lskd_loss(
    y_true,
    y_pred,
    temperature=1.0,
    delta=1e-7,
    teacher_from_logits=True,
):
    """KD on z-score standardised logits, per example.

        loss = T**2 * KL(softmax(s(t) / T) || softmax(s(z) / T)),
        s(z) = (z - mean z) / (std z + delta)

    Args:
        y_true: teacher outputs, shape `(batch, K)`, `K >= 3`.
        y_pred: student logits, shape `(batch, K)`.
        temperature: softmax temperature `T > 0`. Defaults to `1.0`.
        delta: non-negative number added to the standard deviation.
        teacher_from_logits: whether `y_true` holds logits. Defaults to `True`.

    Returns:
        Per-example loss, shape `(batch,)`.

    Example:

    >>> import numpy as np
    >>> teacher_logits = np.array([[2.0, 0.0, -1.0]])
    >>> student_logits = 3.0 * teacher_logits + 5.0
    >>> round(float(lskd_loss(teacher_logits, student_logits)[0]), 6)
    0.0
    """
    y_pred = upcast(y_pred)
    y_true = ops.cast(upcast(y_true), y_pred.dtype)
    _check_teacher_shape(y_true, y_pred)
    if not teacher_from_logits:
        positive = y_true > 0
        y_true = ops.where(
            positive,
            ops.maximum(ops.log(ops.where(positive, y_true, 1.0)), _LOG_TINY),
            _LOG_TINY,
        )
    check_standardizable(y_true.shape[-1])
    check_standardizable(y_pred.shape[-1])
    return distillation_loss(
        z_score(y_true, delta),
        z_score(y_pred, delta),
        None,
        temperature,
        True,
        True,
    )


def poly1_loss(y_true, y_pred, epsilon=1.0, from_logits=True):
    """Poly-1 loss on hard labels, per example.

        loss = -log q_y + epsilon * (1 - q_y),   q = softmax(z)

    Args:
        y_true: integer labels `(batch,)`, or one-hot/soft labels `(batch, K)`.
        y_pred: student logits (or probabilities), shape `(batch, K)`.
        epsilon: the Poly-1 coefficient. Defaults to `1.0`.
        from_logits: whether `y_pred` holds logits. Defaults to `True`.

    Returns:
        Per-example loss, shape `(batch,)`.

    Example:

    >>> import numpy as np
    >>> logits = np.log([[0.5, 0.25, 0.25]])
    >>> round(float(poly1_loss(np.array([0]), logits, epsilon=2.0)[0]), 4)
    1.6931
    """
    y_pred = upcast(y_pred)
    targets = _label_targets(y_true, y_pred, allow_soft=True)
    log_q = tempered_log_probs(y_pred, 1.0, from_logits)
    one_minus_q = 1.0 - ops.exp(log_q)
    poly = ops.sum(targets * one_minus_q, axis=-1)
    epsilon = ops.cast(epsilon, log_q.dtype)
    return _cross_entropy(targets, log_q) + epsilon * poly


def _check_label_weight(value, name="label_weight"):
    return check_number(value, name, 0.0, 1.0)


def _check_nonnegative(value, name):
    return check_number(value, name, 0.0)


def _check_epsilon(value, name="epsilon"):
    return check_number(value, name, -1.0)


@keras.saving.register_keras_serializable(package="keras_ptloss")
class KDCELoss(HyperparameterLoss):
    """Hinton KD mixed with the hard-label cross-entropy.

        loss = label_weight * CE(y, softmax(z))
               + (1 - label_weight) * T**2 * KL(softmax(t/T) || softmax(z/T))

    `y_true` is `{"teacher": ..., "label": ...}` or a `pack_targets` array.

    Args:
        label_weight: cross-entropy weight in `[0, 1]`. Defaults to `0.5`.
        temperature: softmax temperature `T > 0`. Defaults to `1.0`.
        from_logits: whether `y_pred` holds logits. Defaults to `True`.
        teacher_from_logits: teacher outputs are logits. Defaults to `True`.
        reduction: Keras reduction. Defaults to `"sum_over_batch_size"`.
        name: optional name. Defaults to `"kd_ce_loss"`.
        dtype: dtype of the computation (at least float32).

    Reference:
        Hinton, Vinyals and Dean, "Distilling the Knowledge in a Neural
        Network", 2015.
    """

    HYPERPARAMETERS = (
        ("label_weight", _check_label_weight),
        ("temperature", check_temperature),
    )
    needs_labels = True

    def __init__(
        self,
        label_weight=0.5,
        temperature=1.0,
        from_logits=True,
        teacher_from_logits=True,
        reduction="sum_over_batch_size",
        name="kd_ce_loss",
        dtype=None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self._create_variables(
            {"label_weight": label_weight, "temperature": temperature}
        )
        self.from_logits = check_bool(from_logits, "from_logits")
        self.teacher_from_logits = check_bool(
            teacher_from_logits, "teacher_from_logits"
        )

    @property
    def label_weight(self):
        return self._get("label_weight")

    @property
    def temperature(self):
        return self._get("temperature")

    def set_label_weight(self, label_weight):
        """Validates and assigns `label_weight` in `[0, 1]`."""
        self._set("label_weight", label_weight)

    def call(self, y_true, y_pred):
        return kd_ce_loss(
            y_true,
            y_pred,
            label_weight=self._variables["label_weight"],
            temperature=self._variables["temperature"],
            from_logits=self.from_logits,
            teacher_from_logits=self.teacher_from_logits,
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            from_logits=self.from_logits,
            teacher_from_logits=self.teacher_from_logits,
        )
        return config


@keras.saving.register_keras_serializable(package="keras_ptloss")
class DKDLoss(HyperparameterLoss):
    """Decoupled knowledge distillation (DKD).

        loss = T**2 * (alpha * TCKD + beta * NCKD)

    TCKD: KL of the binary target / non-target split; NCKD: KL among the
    non-target classes (`dkd_terms`). `y_true` as in `KDCELoss`.

    Args:
        alpha: weight of TCKD, `>= 0`. Defaults to `1.0`.
        beta: weight of NCKD, `>= 0`. Defaults to `8.0`.
        temperature: softmax temperature `T > 0`. Defaults to `1.0`.
        from_logits: whether `y_pred` holds logits. Defaults to `True`.
        teacher_from_logits: teacher outputs are logits. Defaults to `True`.
        reduction: Keras reduction. Defaults to `"sum_over_batch_size"`.
        name: optional name. Defaults to `"dkd_loss"`.
        dtype: dtype of the computation (at least float32).

    Reference:
        Zhao, Cui, Song, Qiu and Liang, "Decoupled Knowledge Distillation",
        CVPR 2022.
    """

    HYPERPARAMETERS = (
        ("alpha", _check_nonnegative),
        ("beta", _check_nonnegative),
        ("temperature", check_temperature),
    )
    needs_labels = True

    def __init__(
        self,
        alpha=1.0,
        beta=8.0,
        temperature=1.0,
        from_logits=True,
        teacher_from_logits=True,
        reduction="sum_over_batch_size",
        name="dkd_loss",
        dtype=None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self._create_variables(
            {"alpha": alpha, "beta": beta, "temperature": temperature}
        )
        self.from_logits = check_bool(from_logits, "from_logits")
        self.teacher_from_logits = check_bool(
            teacher_from_logits, "teacher_from_logits"
        )

    @property
    def alpha(self):
        return self._get("alpha")

    @property
    def beta(self):
        return self._get("beta")

    @property
    def temperature(self):
        return self._get("temperature")

    def set_alpha(self, alpha):
        """Validates and assigns `alpha >= 0`."""
        self._set("alpha", alpha)

    def set_beta(self, beta):
        """Validates and assigns `beta >= 0`."""
        self._set("beta", beta)

    def call(self, y_true, y_pred):
        return dkd_loss(
            y_true,
            y_pred,
            alpha=self._variables["alpha"],
            beta=self._variables["beta"],
            temperature=self._variables["temperature"],
            from_logits=self.from_logits,
            teacher_from_logits=self.teacher_from_logits,
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            from_logits=self.from_logits,
            teacher_from_logits=self.teacher_from_logits,
        )
        return config


@keras.saving.register_keras_serializable(package="keras_ptloss")
class LSKDLoss(HyperparameterLoss):
    """KD with logit standardisation.

        loss = T**2 * KL(softmax(s(t) / T) || softmax(s(z) / T)),
        s(z) = (z - mean z) / (std z + delta)

    `y_pred` must be student logits, with `K >= 3` classes.

    Args:
        temperature: softmax temperature `T > 0`. Defaults to `1.0`.
        delta: added to the standard deviation. Defaults to `1e-7`.
        teacher_from_logits: whether `y_true` holds logits. Defaults to `True`.
        reduction: Keras reduction. Defaults to `"sum_over_batch_size"`.
        name: optional name. Defaults to `"lskd_loss"`.
        dtype: dtype of the computation (at least float32).

    Reference:
        Sun, Ren, Li, Wang and Cao, "Logit Standardization in Knowledge
        Distillation", CVPR 2024.
    """

    HYPERPARAMETERS = (("temperature", check_temperature),)
    # The student's outputs are always logits (standardisation needs them).
    from_logits = True

    def __init__(
        self,
        temperature=1.0,
        delta=1e-7,
        teacher_from_logits=True,
        reduction="sum_over_batch_size",
        name="lskd_loss",
        dtype=None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self._create_variables({"temperature": temperature})
        self.delta = _check_nonnegative(delta, "delta")
        self.teacher_from_logits = check_bool(
            teacher_from_logits, "teacher_from_logits"
        )

    @property
    def temperature(self):
        return self._get("temperature")

    def call(self, y_true, y_pred):
        return lskd_loss(
            y_true,
            y_pred,
            temperature=self._variables["temperature"],
            delta=self.delta,
            teacher_from_logits=self.teacher_from_logits,
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            delta=self.delta, teacher_from_logits=self.teacher_from_logits
        )
        return config


@keras.saving.register_keras_serializable(package="keras_ptloss")
class Poly1Loss(HyperparameterLoss):
    """Poly-1 loss on hard labels.

        loss = -log q_y + epsilon * (1 - q_y),   q = softmax(z)

    Args:
        epsilon: the coefficient, `>= -1`. Defaults to `1.0`.
        from_logits: whether `y_pred` holds logits. Defaults to `True`.
        reduction: Keras reduction. Defaults to `"sum_over_batch_size"`.
        name: optional name. Defaults to `"poly1_loss"`.
        dtype: dtype of the computation (at least float32).

    Reference:
        Leng et al., "PolyLoss: A Polynomial Expansion Perspective of
        Classification Loss Functions", ICLR 2022.
    """

    HYPERPARAMETERS = (("epsilon", _check_epsilon),)
    needs_labels = True

    def __init__(
        self,
        epsilon=1.0,
        from_logits=True,
        reduction="sum_over_batch_size",
        name="poly1_loss",
        dtype=None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self._create_variables({"epsilon": epsilon})
        self.from_logits = check_bool(from_logits, "from_logits")

    @property
    def epsilon(self):
        return self._get("epsilon")

    def set_epsilon(self, epsilon):
        """Validates and assigns `epsilon >= -1`."""
        self._set("epsilon", epsilon)

    def call(self, y_true, y_pred):
        if isinstance(y_true, dict):
            _, y_true = unpack_targets(y_true, y_pred.shape[-1])
        return poly1_loss(
            y_true,
            y_pred,
            epsilon=self._variables["epsilon"],
            from_logits=self.from_logits,
        )

    def get_config(self):
        config = super().get_config()
        config.update(from_logits=self.from_logits)
        return config
