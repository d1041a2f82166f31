"""Sparse teachers: top-k log-probabilities plus one tail bucket.

At vocabulary scale (32k-256k classes) a teacher's outputs are stored as the
top-k classes and their log-probabilities. The mass outside the top k,
`r = 1 - sum_j p_j`, is kept as one *tail bucket* (not renormalised away):
the teacher stays a proper distribution with its own confidence, which is
what PTLoss reshapes, and the student is compared on the same k + 1 buckets
(its tail is `1 - sum_j q_j`). Renormalising would sharpen the teacher by
`1 / (1 - r)` and teach the student to put no mass outside the top k
(docs/design.md, "Vocabulary scale").

Targets reach a Keras loss as one packed tensor of shape `(..., 2k)`: the k
class indices (stored as floats, exact below 2**24 classes) followed by the
k log-probabilities (`pack_top_k`), so `model.fit(x, packed)` works.
"""

import keras
import numpy as np
from keras import ops

from keras_ptloss._checks import as_float_array
from keras_ptloss._checks import check_int
from keras_ptloss._checks import softmax
from keras_ptloss._core import LOG_ZERO
from keras_ptloss._core import perturbed_terms
from keras_ptloss._core import upcast
from keras_ptloss.losses import PTLoss

# Largest class index a float32 holds exactly.
MAX_INDEX = 2**24


def top_k_log_probs(outputs, k, temperature=1.0, from_logits=True):
    """Top-k classes and log-probabilities of teacher outputs (numpy).

    Args:
        outputs: teacher logits (or probabilities if `from_logits=False`),
            shape `(..., K)`.
        k: how many classes to keep, `1 <= k <= K`.
        temperature: `T > 0`; the kept log-probabilities are those of
            `softmax(logits / T)` (probabilities: `p ** (1/T)`,
            renormalised), the distillation temperature.
        from_logits: whether `outputs` are logits.

    Returns:
        `(indices, log_probs)`: int32 and float32 arrays of shape
        `(..., k)`, sorted by decreasing probability.

    Example:

    >>> idx, logp = top_k_log_probs([[3.0, 1.0, 2.0]], k=2)
    >>> idx.tolist()
    [[0, 2]]
    """
    values = as_float_array(outputs, "outputs")
    num_classes = values.shape[-1]
    k = check_int(k, "k", minimum=1, maximum=num_classes)
    if not from_logits:
        with np.errstate(divide="ignore"):
            values = np.log(values)
    probs = softmax(values / float(temperature))
    indices = np.argsort(-probs, axis=-1, kind="stable")[..., :k]
    kept = np.take_along_axis(probs, indices, axis=-1)
    with np.errstate(divide="ignore"):
        log_probs = np.maximum(np.log(kept), -1e30)
    return indices.astype("int32"), log_probs.astype("float32")


def pack_top_k(indices, log_probs):
    """One `(..., 2k)` float32 target from top-k indices and log-probs.

    Example:

    >>> pack_top_k([[2, 0]], [[-0.1, -2.5]]).tolist()
    [[2.0, 0.0, -0.10000000149011612, -2.5]]
    """
    indices = np.asarray(indices)
    log_probs = as_float_array(log_probs, "log_probs")
    if indices.shape != log_probs.shape:
        raise ValueError(
            "`indices` and `log_probs` must have the same shape (..., k). "
            f"Received: indices.shape={indices.shape}, "
            f"log_probs.shape={log_probs.shape}"
        )
    if indices.size and (indices.min() < 0 or indices.max() >= MAX_INDEX):
        raise ValueError(
            f"`indices` must be in [0, {MAX_INDEX}). Received: "
            f"indices in [{indices.min()}, {indices.max()}]"
        )
    if np.any(log_probs > 1e-6) or np.any(np.isnan(log_probs)):
        raise ValueError(
            "`log_probs` must be log-probabilities (<= 0). Received: "
            f"max={np.nanmax(log_probs)}"
        )
    mass = np.exp(log_probs).sum(axis=-1)
    if np.any(mass > 1.0 + 1e-3):
        raise ValueError(
            "The top-k probabilities must sum to at most 1. Received: "
            f"sums up to {mass.max()}"
        )
    return np.concatenate([indices, log_probs], axis=-1).astype("float32")


def check_host_indices(y_true, y_pred):
    """Numpy packed targets: every top-k index is one of the student's ids.

    Backend tensors are not read back (a device sync every training step).
    """
    if not isinstance(y_true, (np.ndarray, list, tuple)):
        return
    if isinstance(y_pred, (np.ndarray, list, tuple)):
        shape = np.shape(y_pred)
    else:
        shape = tuple(y_pred.shape)
    num_classes = shape[-1] if shape else None
    packed = as_float_array(y_true, "y_true")
    indices = np.round(packed[..., : packed.shape[-1] // 2])
    if num_classes is None or indices.size == 0:
        return
    if indices.max() >= num_classes:
        raise ValueError(
            "The top-k teacher's class ids (`y_true`, packed by "
            "`pack_top_k`) must be ids of the student's "
            f"{num_classes} classes. Received: id {int(indices.max())} for "
            f"y_pred with {num_classes} classes. For a teacher whose "
            "vocabulary is padded beyond the student's or ordered "
            "differently, build the targets with `keras_ptloss."
            "teacher_outputs.precompute_top_k(..., vocab_size=...)` (or "
            "`id_map=...`), which keeps no padded id."
        )


def unpack_top_k(packed):
    """`(indices, log_probs)` tensors from a packed `(..., 2k)` target."""
    packed = ops.convert_to_tensor(packed)
    k = packed.shape[-1] // 2
    indices = ops.cast(ops.round(packed[..., :k]), "int32")
    return indices, upcast(packed[..., k:])


# Smallest tail mass of the student: float32 rounding can leave the sum of
# its top-k probabilities at or above 1 while the teacher's tail is ~1e-7.
STUDENT_TAIL_FLOOR = 1e-30
# A teacher tail below this is float32 rounding of a full support: zero.
TEACHER_TAIL_ATOL = 1e-6


def _log1m_sum_exp(log_values, floor=None):
    """`log(1 - sum(exp(log_values)))` over the last axis, kept finite.

    A rest `<= TEACHER_TAIL_ATOL` gives `-1e30` (an exact zero), or
    `log(floor)` when a floor is given.
    """
    rest = 1.0 - ops.sum(ops.exp(log_values), axis=-1)
    if floor is not None:
        return ops.log(ops.maximum(rest, floor))
    positive = rest > TEACHER_TAIL_ATOL
    return ops.where(
        positive, ops.log(ops.where(positive, rest, 1.0)), LOG_ZERO
    )


def sparse_pt_loss(y_true, y_pred, coefficients, temperature=1.0):
    """PTLoss per example against a top-k teacher with a tail bucket.

    With teacher top-k probabilities `p_j` (already at temperature `T`),
    tail `r = 1 - sum_j p_j`, student `q = softmax(z / T)` gathered on the
    same k classes and its tail `s = 1 - sum_j q_j`:

        L = T**2 * [sum_j phi(p_j, q_j) + phi(r, s)],
        phi(p, q) = p * [log p - log q + sum_m eps_m * (1 - q)**m]

    With a full support (k = K) this is `pt_loss` exactly.

    Args:
        y_true: packed teacher targets `(..., 2k)` (`pack_top_k`).
        y_pred: student logits, shape `(..., K)`.
        coefficients: shared `eps`, shape `(M,)`.
        temperature: the student's temperature `T > 0`.

    Returns:
        Per-example loss, shape `(...)`.

    Example:

    >>> import numpy as np
    >>> packed = pack_top_k([[0, 1]], np.log([[0.6, 0.3]]))
    >>> logits = np.log([[0.6, 0.3, 0.05, 0.05]])
    >>> abs(float(sparse_pt_loss(packed, logits, [0.0])[0])) < 1e-6
    True
    """
    check_host_indices(y_true, y_pred)
    y_pred = upcast(y_pred)
    indices, log_p = unpack_top_k(y_true)
    log_p = ops.cast(log_p, y_pred.dtype)
    eps = ops.cast(coefficients, y_pred.dtype)
    if len(eps.shape) != 1:
        raise ValueError(
            "A top-k teacher takes shared `coefficients` of shape (M,) (the "
            "tail bucket has no class of its own). Received: "
            f"coefficients.shape={tuple(eps.shape)}"
        )
    temperature = ops.cast(temperature, y_pred.dtype)
    log_q = ops.log_softmax(y_pred / temperature, axis=-1)
    log_q_top = ops.take_along_axis(log_q, indices, axis=-1)
    log_p = ops.concatenate(
        [log_p, ops.expand_dims(_log1m_sum_exp(log_p), -1)], axis=-1
    )
    log_q = ops.concatenate(
        [
            log_q_top,
            ops.expand_dims(_log1m_sum_exp(log_q_top, STUDENT_TAIL_FLOOR), -1),
        ],
        axis=-1,
    )
    _, terms = perturbed_terms(log_p, log_q, eps)
    return ops.sum(terms, axis=-1) * ops.square(temperature)


@keras.saving.register_keras_serializable(package="keras_ptloss")
class SparsePTLoss(PTLoss):
    """PTLoss against a top-k teacher (indices and log-probs, tail bucket).

    `y_true` is the packed `(..., 2k)` target of `pack_top_k` (the teacher's
    top-k log-probabilities at the distillation temperature), `y_pred` the
    student's logits `(..., K)`; see `sparse_pt_loss` for the formula.
    Coefficients are shared (shape `(M,)`) and live, with the temperature,
    in the same non-trainable variables as `PTLoss`'s.

    Args:
        coefficients: shared `eps`, shape `(M,)`. Defaults to `M = 5`
            zeros (KD on the k + 1 buckets).
        temperature: the student's temperature `T > 0`. Defaults to `1.0`.
        allow_nonconvex: accept coefficients outside the convex region.
        reduction: Keras reduction. Defaults to `"sum_over_batch_size"`.
        name: optional name. Defaults to `"sparse_pt_loss"`.
        dtype: dtype of the computation.

    Example:

    >>> import numpy as np
    >>> loss = SparsePTLoss([0.5, -0.1], temperature=2.0)
    >>> packed = pack_top_k([[0, 1]], np.log([[0.6, 0.3]]))
    >>> float(loss(packed, np.zeros((1, 4)))) > 0
    True
    """

    def __init__(
        self,
        coefficients=None,
        temperature=1.0,
        allow_nonconvex=False,
        reduction="sum_over_batch_size",
        name="sparse_pt_loss",
        dtype=None,
    ):
        super().__init__(
            coefficients,
            temperature=temperature,
            allow_nonconvex=allow_nonconvex,
            reduction=reduction,
            name=name,
            dtype=dtype,
        )
        if self.classwise:
            raise ValueError(
                "`SparsePTLoss` takes shared `coefficients` of shape (M,). "
                f"Received: shape {tuple(self.coefficients.shape)}"
            )

    def _check_host(self, y_true, y_pred):
        check_host_indices(y_true, y_pred)

    def call(self, y_true, y_pred):
        return sparse_pt_loss(
            y_true, y_pred, self._coefficients, self.temperature_variable
        )

    def get_config(self):
        config = super().get_config()
        for key in ("from_logits", "teacher_from_logits", "standardize"):
            config.pop(key)
        config.pop("chunk_size")
        return config
