"""Top-k teachers: top-k log-probabilities plus one tail bucket.

Targets are packed `(..., 2k)`: k class indices (as floats), then k
log-probabilities (docs/design.md, "Vocabulary scale").
"""

import os

import keras
import numpy as np
from keras import ops

from keras_ptloss._checks import as_float_array
from keras_ptloss._checks import check_int
from keras_ptloss._checks import fingerprint
from keras_ptloss._checks import to_numpy
from keras_ptloss._core import LOG_ZERO
from keras_ptloss._core import perturbed_terms
from keras_ptloss._core import upcast
from keras_ptloss._logits import final_activation
from keras_ptloss._logits import teacher_emits_logits
from keras_ptloss.losses import PTLoss
from keras_ptloss.proxy import proxy_teacher
from keras_ptloss.selection import select_coefficients
from keras_ptloss.teacher_outputs import load_cache
from keras_ptloss.teacher_outputs import num_examples
from keras_ptloss.teacher_outputs import save_cache
from keras_ptloss.vocabulary import apply_alignment
from keras_ptloss.vocabulary import check_alignment
from keras_ptloss.vocabulary import check_alignment_arguments
from keras_ptloss.vocabulary import check_padding_mass

# Largest class index a float32 holds exactly.
MAX_INDEX = 2**24


def top_k_log_probs(outputs, k, temperature=1.0, from_logits=True):
    """Top-k classes and log-probabilities of teacher outputs (numpy).

    Args:
        outputs: teacher logits (or probabilities), shape `(..., K)`.
        k: how many classes to keep, `1 <= k <= K`.
        temperature: `T > 0`; log-probabilities of `softmax(logits / T)`.
        from_logits: whether `outputs` are logits. Defaults to `True`.

    Returns:
        `(indices, log_probs)`: int32 and float32 arrays `(..., k)`, sorted by
        decreasing probability.

    Example:

    >>> idx, logp = top_k_log_probs([[3.0, 1.0, 2.0]], k=2)
    >>> idx.tolist()
    [[0, 2]]
    """
    values = as_float_array(outputs, "outputs")
    k = check_int(k, "k", minimum=1, maximum=values.shape[-1])
    indices, log_probs = _top_k_log_probs(values, k, temperature, from_logits)
    return (
        to_numpy(indices).astype("int32"),
        to_numpy(log_probs).astype("float32"),
    )


def _top_k_log_probs(outputs, k, temperature, from_logits):
    outputs = ops.cast(outputs, "float32")
    if not from_logits:
        outputs = ops.log(ops.maximum(outputs, 0.0))
    log_probs = ops.log_softmax(
        outputs / ops.cast(temperature, "float32"), axis=-1
    )
    values, indices = ops.top_k(log_probs, k)
    return indices, ops.maximum(values, LOG_ZERO)


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
    """Numpy packed targets: every index is one of the student's classes."""
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
            "precompute_top_k(..., vocab_size=...)` (or "
            "`id_map=...`), which keeps no padded id."
        )


def unpack_top_k(packed):
    """`(indices, log_probs)` tensors from a packed `(..., 2k)` target."""
    packed = ops.convert_to_tensor(packed)
    k = packed.shape[-1] // 2
    indices = ops.cast(ops.round(packed[..., :k]), "int32")
    return indices, upcast(packed[..., k:])


# float32 rounding can leave the student's top-k sum at or above 1.
STUDENT_TAIL_FLOOR = 1e-30
# A teacher tail below this is float32 rounding of a full support: zero.
TEACHER_TAIL_ATOL = 1e-6


def _log1m_sum_exp(log_values, floor=None):
    rest = 1.0 - ops.sum(ops.exp(log_values), axis=-1)
    if floor is not None:
        return ops.log(ops.maximum(rest, floor))
    positive = rest > TEACHER_TAIL_ATOL
    return ops.where(
        positive, ops.log(ops.where(positive, rest, 1.0)), LOG_ZERO
    )


def top_k_pt_loss(y_true, y_pred, coefficients, temperature=1.0):
    """PTLoss per example against a top-k teacher with a tail bucket.

        loss = T**2 * [sum_j phi(p_j, q_j) + phi(r, s)],
        phi(p, q) = p * [log p - log q + sum_m eps_m * (1 - q)**m]

    with the teacher's top-k `p_j` and tail `r = 1 - sum_j p_j`, and the
    student's `q = softmax(z / T)` on the same classes, tail `s`.

    Args:
        y_true: packed teacher targets `(..., 2k)` (`pack_top_k`).
        y_pred: student logits, shape `(..., K)`.
        coefficients: shared `eps`, shape `(M,)`.
        temperature: `T > 0`. Defaults to `1.0`.

    Returns:
        Per-example loss, shape `(...)`.

    Example:

    >>> import numpy as np
    >>> packed = pack_top_k([[0, 1]], np.log([[0.6, 0.3]]))
    >>> logits = np.log([[0.6, 0.3, 0.05, 0.05]])
    >>> abs(float(top_k_pt_loss(packed, logits, [0.0])[0])) < 1e-6
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
class TopKPTLoss(PTLoss):
    """PTLoss against a top-k teacher with a tail bucket.

    `y_true` is a `pack_top_k` target; see `top_k_pt_loss` for the formula.

    Args:
        coefficients: shared `eps`, shape `(M,)`. Defaults to 5 zeros.
        temperature: `T > 0`. Defaults to `1.0`.
        allow_nonconvex: accept non-convex coefficients. Defaults to `False`.
        teacher_from_logits: the teacher emits logits. Defaults to `True`.
        reduction: Keras reduction. Defaults to `"sum_over_batch_size"`.
        name: optional name. Defaults to `"top_k_pt_loss"`.
        dtype: dtype of the computation.
    """

    def __init__(
        self,
        coefficients=None,
        temperature=1.0,
        allow_nonconvex=False,
        teacher_from_logits=True,
        reduction="sum_over_batch_size",
        name="top_k_pt_loss",
        dtype=None,
    ):
        super().__init__(
            coefficients,
            temperature=temperature,
            teacher_from_logits=teacher_from_logits,
            allow_nonconvex=allow_nonconvex,
            reduction=reduction,
            name=name,
            dtype=dtype,
        )
        if self.classwise:
            raise ValueError(
                "`TopKPTLoss` takes shared `coefficients` of shape (M,). "
                f"Received: shape {tuple(self.coefficients.shape)}"
            )

    def _check_host(self, y_true, y_pred):
        check_host_indices(y_true, y_pred)

    def call(self, y_true, y_pred):
        return top_k_pt_loss(
            y_true, y_pred, self._coefficients, self.temperature_variable
        )

    def get_config(self):
        config = super().get_config()
        for key in ("from_logits", "standardize"):
            config.pop(key)
        config.pop("chunk_size")
        return config


def precompute_top_k(
    teacher,
    x,
    k,
    temperature=1.0,
    from_logits=True,
    batch_size=32,
    cache=None,
    vocab_size=None,
    id_map=None,
):
    """The teacher's packed top-k log-probabilities for array inputs.

    Args:
        teacher: the teacher `keras.Model`.
        x: numpy arrays or tensors (or a list/dict of them).
        k: classes kept per output row.
        temperature: the distillation temperature `T > 0`.
        from_logits: whether the teacher returns logits. Defaults to `True`.
        batch_size: batch size of the teacher pass. Defaults to `32`.
        cache: optional `.npz` path, read when it exists, written otherwise.
        vocab_size: the number of real ids of a padded teacher vocabulary;
        padding ids must hold at most 1e-3 of each row's mass.
        id_map: int array `(n,)`, the teacher id of each student id. Pass at
            most one of `vocab_size` and `id_map`.

    Returns:
        A float32 numpy array of shape `(num_examples, ..., 2k)`.
    """
    check_int(batch_size, "batch_size", minimum=1)
    k = check_int(k, "k", minimum=1)
    temperature = float(temperature)
    vocab_size, id_map = check_alignment_arguments(vocab_size, id_map)
    alignment = _alignment_fingerprint(vocab_size, id_map)
    if cache is not None and os.path.exists(cache):
        packed = load_cache(cache, teacher, x)
        with np.load(cache, allow_pickle=False) as archive:
            stored = {
                "k": int(archive["top_k"]) if "top_k" in archive else None,
                "temperature": float(archive["top_k_temperature"])
                if "top_k_temperature" in archive
                else None,
                # A cache without this key has no alignment.
                "alignment": int(archive["top_k_alignment"])
                if "top_k_alignment" in archive
                else _alignment_fingerprint(None, None),
            }
        wanted = {"k": k, "temperature": temperature, "alignment": alignment}
        if stored != wanted:
            same = stored["alignment"] == alignment
            raise ValueError(
                "The teacher-output cache holds other top-k outputs (k="
                f"{stored['k']}, temperature={stored['temperature']}, "
                f"{'the same' if same else 'another'} vocabulary "
                "alignment); delete it to recompute. Received: "
                f"k={k}, temperature={temperature}, vocab_size={vocab_size}, "
                f"id_map={_describe_id_map(id_map)}, cache={cache!r}"
            )
        return packed
    num = num_examples(x)
    parts = []
    num_real = None
    for start in range(0, num, batch_size):
        batch = keras.tree.map_structure(
            lambda a, start=start: a[start : start + batch_size], x
        )
        outputs = to_numpy(teacher(batch, training=False))
        if vocab_size is not None or id_map is not None:
            if num_real is None:
                num_real = check_alignment(
                    outputs.shape[-1], None, vocab_size, id_map
                )
            check_padding_mass(
                outputs, num_real, id_map, from_logits, "teacher_outputs"
            )
            outputs = apply_alignment(
                outputs, num_real, num_real, id_map, from_logits
            )
        parts.append(
            pack_top_k(*top_k_log_probs(outputs, k, temperature, from_logits))
        )
    packed = np.concatenate(parts, axis=0)
    if cache is not None:
        save_cache(
            cache,
            teacher,
            x,
            packed,
            top_k=np.int64(k),
            top_k_temperature=np.float64(temperature),
            top_k_alignment=np.uint32(alignment),
        )
    return packed


def _alignment_fingerprint(vocab_size, id_map):
    return fingerprint(
        [
            np.int64(-1 if vocab_size is None else vocab_size),
            np.zeros(0, "int64") if id_map is None else id_map,
        ]
    )


def _describe_id_map(id_map):
    return None if id_map is None else f"<{id_map.size} ids>"


def tail_buckets(log_probs):
    """Probabilities `(N, k + 1)` of the top k, then the tail (numpy)."""
    probs = np.exp(as_float_array(log_probs, "log_probs"))
    tail = np.clip(1.0 - probs.sum(axis=-1, keepdims=True), 0.0, None)
    buckets = np.concatenate([probs, tail], axis=-1)
    return buckets / buckets.sum(axis=-1, keepdims=True)


def bucket_labels(indices, labels):
    """Each label's bucket: its position in the top k, or `k` (the tail)."""
    indices = np.asarray(indices)
    labels = np.asarray(labels).reshape(-1, 1)
    hits = indices == labels
    return np.where(hits.any(axis=-1), hits.argmax(axis=-1), indices.shape[-1])


def top_k_proxy_teacher(log_probs, coefficients, **kwargs):
    """The proxy teacher of a top-k teacher, on its k + 1 buckets.

    Keyword arguments go to `keras_ptloss.proxy.proxy_teacher`.

    Returns:
        Float64 array of shape `(N, k + 1)`; the last column is the tail.

    Example:

    >>> import numpy as np
    >>> top_k_proxy_teacher(np.log([[0.6, 0.3]]), [0.5]).shape
    (1, 3)
    """
    coefficients = as_float_array(coefficients, "coefficients")
    if coefficients.ndim != 1:
        raise ValueError(
            "A top-k teacher takes shared `coefficients` of shape (M,). "
            f"Received: coefficients.shape={coefficients.shape}"
        )
    return proxy_teacher(tail_buckets(log_probs), coefficients, **kwargs)


def select_top_k_coefficients(indices, log_probs, labels, **kwargs):
    """`select_coefficients` on the k + 1 buckets of a top-k teacher.

    Keyword arguments go to `keras_ptloss.select_coefficients`.

    Returns:
        A `SelectionResult`.
    """
    if kwargs.get("mode", "shared") != "shared":
        raise ValueError(
            "A top-k teacher takes shared coefficients. Received: "
            f"mode={kwargs['mode']!r}"
        )
    return select_coefficients(
        tail_buckets(log_probs), bucket_labels(indices, labels), **kwargs
    )


_ONLINE_TOP_K_MESSAGE = (
    "A TopKPTLoss reads the teacher's top-k log-probabilities. Either "
    "give the Distiller `top_k` (the teacher then runs in each step and its "
    "top k are taken there), or train on cached targets: "
    "`packed = keras_ptloss.precompute_top_k(teacher, x, k)` "
    "and `fit({'student_inputs': x, 'teacher_outputs': packed}, ...)`. "
    "Received: top_k=None and a batch without teacher outputs"
)


def _top_k_teacher_flag(loss, teacher, student, top_k):
    kind, layer = final_activation(student)
    if kind == "softmax":
        raise ValueError(
            f"The student's last layer ({layer!r}) applies a softmax, but a "
            "TopKPTLoss reads student logits. Remove the softmax. "
            "Received: a softmax student"
        )
    if top_k is None:
        return None
    return teacher_emits_logits(
        teacher, loss.teacher_from_logits, "distillation_loss"
    )


def _check_top_k(top_k, loss, student_shape):
    if top_k is None:
        return None
    if not isinstance(loss, TopKPTLoss):
        raise ValueError(
            "`top_k` is for a TopKPTLoss (the teacher's top-k classes); "
            f"this Distiller's loss is a {type(loss).__name__}, which reads "
            f"all the teacher's outputs. Received: top_k={top_k!r}"
        )
    # Taken over the student's vocabulary (after `vocab_size`/`id_map`).
    shape = student_shape
    maximum = shape[-1] if shape and shape[-1] is not None else None
    return check_int(top_k, "top_k", minimum=1, maximum=maximum)


def _check_packed_shape(outputs, teacher_shape, num_inputs=None):
    shape = tuple(outputs.shape)
    width = shape[-1] if shape else None
    expected = (num_inputs,) + tuple(teacher_shape or shape)[1:-1] + (None,)
    if (
        len(shape) != len(expected)
        or any(
            a is not None and b is not None and a != b
            for a, b in zip(shape, expected, strict=True)
        )
        or (width is not None and (width < 2 or width % 2))
    ):
        raise ValueError(
            "A TopKPTLoss reads packed top-k targets of shape "
            f"{expected[:-1] + ('2k',)} (`precompute_top_k`: k indices, "
            "then k log-probabilities, for each teacher output row). "
            f"Received: teacher_outputs.shape={shape}"
            + ("" if num_inputs is None else f" for {num_inputs} inputs")
        )


def _packed_top_k(outputs, k, temperature, from_logits):
    indices, log_probs = _top_k_log_probs(outputs, k, temperature, from_logits)
    return ops.concatenate([ops.cast(indices, "float32"), log_probs], axis=-1)
