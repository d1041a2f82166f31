"""Teacher and student vocabularies that differ by padding or by order.

Models sharing a tokenizer may pad their output layers to different sizes;
different tokenizers (cross-tokenizer distillation) are refused.
"""

import keras
import numpy as np
from keras import ops

from keras_ptloss._checks import as_float_array
from keras_ptloss._checks import check_int
from keras_ptloss._checks import softmax
from keras_ptloss._checks import to_numpy
from keras_ptloss._core import LOG_ZERO

# More mass on dropped ids means real tokens (a wrong `vocab_size`/`id_map`).
_PADDING_MASS_ATOL = 1e-3
_CHECK_BLOCK = 2**22

_CROSS_TOKENIZER = (
    "Models with different tokenizers need cross-tokenizer distillation "
    "(e.g. Universal Logit Distillation, TRL's GOLD trainer), which this "
    "alignment does not do."
)


def check_alignment_arguments(vocab_size=None, id_map=None):
    """`(vocab_size, id_map)` checked; `id_map` as int64 numpy or `None`."""
    if vocab_size is not None and id_map is not None:
        raise ValueError(
            "Pass either `vocab_size` or `id_map`, not both: an `id_map` of "
            "length n gives teacher mass to the student's ids 0..n-1 (its "
            "real vocabulary) and none to the rest. Received: "
            f"vocab_size={vocab_size!r}, id_map of length "
            f"{np.size(id_map)}"
        )
    if vocab_size is not None:
        vocab_size = check_int(vocab_size, "vocab_size", minimum=1)
    if id_map is None:
        return vocab_size, None
    values = np.asarray(to_numpy(id_map))
    if values.ndim != 1 or values.size == 0 or values.dtype.kind not in "iu":
        raise ValueError(
            "`id_map` must be a non-empty 1-D array of integer teacher ids "
            "(the teacher id of each student id). Received: id_map with "
            f"shape {values.shape} and dtype {values.dtype}"
        )
    values = values.astype("int64")
    if values.min() < 0:
        raise ValueError(
            "`id_map` must hold teacher ids >= 0. Received: id_map with "
            f"minimum {values.min()} at student id {int(values.argmin())}"
        )
    unique, counts = np.unique(values, return_counts=True)
    if np.any(counts > 1):
        repeated = int(unique[counts > 1][0])
        raise ValueError(
            "`id_map` must map distinct student ids to distinct teacher ids "
            "(a teacher id used twice would count its probability twice). "
            f"Received: teacher id {repeated} at student ids "
            f"{np.flatnonzero(values == repeated)[:5].tolist()}"
        )
    return vocab_size, values


def check_alignment(teacher_size, student_size, vocab_size=None, id_map=None):
    """How many leading student ids receive teacher mass, checked.

    `student_size` may be `None` (unknown).
    """
    received = (
        f"Received: teacher vocabulary size {teacher_size}, "
        f"student_vocab_size={student_size}"
    )
    if id_map is not None:
        if id_map.max() >= teacher_size:
            raise ValueError(
                f"`id_map` must hold teacher ids in [0, {teacher_size}) for "
                f"a teacher with {teacher_size} logits. Received: teacher id "
                f"{id_map.max()} at student id {int(id_map.argmax())}"
            )
        if student_size is not None and id_map.size > student_size:
            raise ValueError(
                f"`id_map` maps {id_map.size} student ids, more than the "
                f"student's {student_size} logits. {_CROSS_TOKENIZER} "
                f"{received}, id_map of length {id_map.size}"
            )
        return int(id_map.size)
    if vocab_size is not None:
        smallest = teacher_size if student_size is None else student_size
        smallest = min(teacher_size, smallest)
        if vocab_size > smallest:
            raise ValueError(
                "`vocab_size` (the number of real token ids, shared by both "
                "models) must be at most the teacher's and the student's "
                "number of logits: a model with fewer logits than "
                "`vocab_size` cannot produce every token id, so the two "
                f"models do not share a tokenizer. {_CROSS_TOKENIZER} "
                f"{received}, vocab_size={vocab_size}"
            )
        return vocab_size
    if student_size is not None and student_size != teacher_size:
        raise ValueError(
            f"The teacher has {teacher_size} logits and the student "
            f"{student_size}. If their vocabularies differ only by padding "
            "(ids the tokenizer never produces, e.g. Qwen2.5 1.5B's 151,936 "
            "logits and 7B's 152,064), pass `vocab_size`, the number of "
            "real token ids (`len(tokenizer)`); if the same tokens have "
            "other ids, pass `id_map` (the teacher id of each student id). "
            f"{_CROSS_TOKENIZER} {received}, vocab_size=None, id_map=None"
        )
    return teacher_size


def _is_identity(teacher_size, student_size, num_real, id_map):
    return id_map is None and teacher_size == student_size == num_real


def _mask_value(dtype, from_logits=True):
    if not from_logits:
        return 0.0
    if keras.backend.standardize_dtype(dtype) == "float16":
        return float(np.finfo("float16").min)
    return LOG_ZERO


def check_padding_mass(
    teacher_outputs,
    num_real,
    id_map=None,
    from_logits=True,
    name="teacher_outputs",
):
    """Raises if a numpy row puts more than 1e-3 on ids an alignment drops."""
    values = as_float_array(teacher_outputs, name)
    size = values.shape[-1]
    if id_map is None:
        if num_real >= size:
            return
        kept = slice(0, num_real)
    else:
        kept = id_map
    rows = values.reshape(-1, size)
    block = max(1, _CHECK_BLOCK // size)
    for start in range(0, rows.shape[0], block):
        chunk = rows[start : start + block]
        if from_logits:
            probs = softmax(chunk)
        else:
            probs = chunk / chunk.sum(axis=-1, keepdims=True)
        dropped = 1.0 - probs[:, kept].sum(axis=-1)
        worst = int(np.argmax(dropped))
        if dropped[worst] > _PADDING_MASS_ATOL:
            probs[worst, kept] = -1.0
            example = int(np.argmax(probs[worst]))
            index = np.unravel_index(start + worst, values.shape[:-1])
            raise ValueError(
                f"`{name}` puts probability {dropped[worst]:.3g} on teacher "
                f"ids that the alignment drops (e.g. id {example}, "
                f"probability {probs[worst, example]:.3g}) in row "
                f"{[int(i) for i in index]}; padding ids carry at most "
                f"{_PADDING_MASS_ATOL} (softmax at T = 1). These ids are real "
                "tokens: check `vocab_size` or `id_map`; if the models do "
                f"not share a tokenizer, this alignment does not apply. "
                f"Received: {name} with shape {values.shape}, "
                f"{_describe(num_real, id_map)}"
            )


def _describe(num_real, id_map):
    if id_map is None:
        return f"vocab_size={num_real}"
    return f"id_map of length {id_map.size}"


def apply_alignment(
    teacher_outputs, student_size, num_real, id_map=None, from_logits=True
):
    """The aligned outputs, from checked arguments; numpy or tensors."""
    pad = student_size - num_real
    if isinstance(teacher_outputs, (np.ndarray, list, tuple)):
        values = np.asarray(teacher_outputs)
        if values.dtype.kind != "f":
            values = values.astype("float32")
        if id_map is None:
            columns = values[..., :num_real]
        else:
            columns = np.take(values, id_map, axis=-1)
        if pad == 0:
            return columns
        widths = [(0, 0)] * (values.ndim - 1) + [(0, pad)]
        return np.pad(
            columns,
            widths,
            constant_values=_mask_value(values.dtype, from_logits),
        )
    values = ops.convert_to_tensor(teacher_outputs)
    if not keras.backend.standardize_dtype(values.dtype).startswith("float"):
        values = ops.cast(values, "float32")
    if id_map is None:
        columns = values[..., :num_real]
    else:
        columns = ops.take(values, ops.convert_to_tensor(id_map), axis=-1)
    if pad == 0:
        return columns
    widths = [(0, 0)] * (len(values.shape) - 1) + [(0, pad)]
    return ops.pad(
        columns,
        widths,
        constant_values=_mask_value(values.dtype, from_logits),
    )


def align_vocabulary(
    teacher_outputs,
    student_vocab_size,
    vocab_size=None,
    id_map=None,
    from_logits=True,
):
    """The teacher's outputs on the student's vocabulary.

    For teacher outputs `t` of shape `(..., V_t)` and a student with `V_s`
    logits, the result `a` has shape `(..., V_s)`:

        vocab_size=V:  a[..., i] = t[..., i]       for i < V
        id_map=m:      a[..., i] = t[..., m[i]]    for i < n = len(m)
        the rest:      a[..., i] = -1e30 (logits) or 0 (probabilities)

    With neither argument the sizes must be equal and `t` is returned.
    `standardize=True` needs `vocab_size == student_vocab_size`. Numpy
    inputs are checked to put at most 1e-3 (softmax at T = 1) on dropped
    ids; tensors are not read back.

    Args:
        teacher_outputs: teacher logits (or probabilities), shape
            `(..., V_t)`; numpy or a backend tensor.
        student_vocab_size: the student's number of logits `V_s`.
        vocab_size: the number of real token ids (`len(tokenizer)`),
            `<= V_t` and `<= V_s`. Defaults to `None`.
        id_map: distinct teacher ids, shape `(n,)`, `n <= V_s`: the teacher
            id of each student id. Defaults to `None`; not with
            `vocab_size`.
        from_logits: whether `teacher_outputs` are logits (default) or
            probabilities; sets the masked value.

    Returns:
        The aligned outputs, shape `(..., V_s)`, of the input's kind (numpy
        or tensor) and float dtype.

    Raises:
        ValueError: for sizes that padding cannot explain, a malformed
            `id_map`, or numpy outputs with real mass on a dropped id.

    Example:

    >>> import numpy as np
    >>> teacher = np.array([[2.0, 1.0, 0.0, -40.0, -40.0]])  # 3 ids, 2 pads
    >>> aligned = align_vocabulary(teacher, 4, vocab_size=3)
    >>> aligned[0, :3].tolist(), bool(aligned[0, 3] <= -1e30)
    ([2.0, 1.0, 0.0], True)
    >>> align_vocabulary(teacher[:, :3], 3, id_map=[2, 0, 1]).tolist()
    [[0.0, 2.0, 1.0]]

    Reference:
        For what this does not do: Boizard et al., "Towards Cross-Tokenizer
        Distillation: the Universal Logit Distillation Loss for LLMs",
        arXiv:2402.12030, 2024.
    """
    student_size = check_int(student_vocab_size, "student_vocab_size", 1)
    vocab_size, id_map = check_alignment_arguments(vocab_size, id_map)
    teacher_size = _last_dim(teacher_outputs)
    num_real = check_alignment(teacher_size, student_size, vocab_size, id_map)
    if _is_identity(teacher_size, student_size, num_real, id_map):
        return teacher_outputs
    if isinstance(teacher_outputs, (np.ndarray, list, tuple)):
        check_padding_mass(teacher_outputs, num_real, id_map, from_logits)
    return apply_alignment(
        teacher_outputs, student_size, num_real, id_map, from_logits
    )


def _last_dim(values):
    shape = np.shape(values) if isinstance(values, (list, tuple)) else None
    shape = shape if shape is not None else tuple(values.shape)
    if not shape or shape[-1] is None:
        raise ValueError(
            "`teacher_outputs` must have a known class (vocabulary) axis, "
            f"shape (..., V). Received: shape {shape}"
        )
    return int(shape[-1])
