"""Argument checks and host-side numpy helpers shared by every module."""

import math
import zlib

import keras
import numpy as np

# Float32 softmax outputs read back from disk differ from 1 by ~1e-7.
PROB_SUM_ATOL = 1e-3
# Smallest normal float32: the floor of probabilities read as logits.
FLOAT32_TINY = float(np.finfo("float32").tiny)

_NUMBER_TYPES = (int, float, np.integer, np.floating)
# How `check_probabilities` names the accepted ranks in its messages.
_PROB_SHAPES = {1: "(K,)", 2: "(N, K)"}


def to_numpy(value):
    """A numpy array (not a copy when already one) for any value."""
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, keras.Variable):
        return np.asarray(value.numpy())
    if isinstance(value, (list, tuple, float, int, np.generic)):
        return np.asarray(value)
    return np.asarray(keras.ops.convert_to_numpy(value))


def to_numpy_tree(structure):
    """`to_numpy` over a nested structure; `None` leaves stay `None`."""
    return keras.tree.map_structure(
        lambda v: None if v is None else to_numpy(v), structure
    )


def fingerprint(structure, crc=0):
    """CRC32 of the dtypes, shapes and bytes of a structure of arrays."""
    for leaf in keras.tree.flatten(structure):
        array = np.ascontiguousarray(to_numpy(leaf))
        crc = zlib.crc32(repr((array.dtype.str, array.shape)).encode(), crc)
        crc = zlib.crc32(array.view(np.uint8).reshape(-1), crc)
    return crc


def softmax(logits, axis=-1):
    """Float64 softmax; `-inf` logits give exact zeros."""
    z = np.asarray(logits, dtype="float64")
    z = z - np.max(z, axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def as_logits_array(values, from_logits):
    """Float64 logits: as given, or `log(max(p, tiny))` of probabilities."""
    values = np.asarray(values, dtype="float64")
    if from_logits:
        return values
    return np.log(np.maximum(values, FLOAT32_TINY))


def mean_nll(logits, labels, temperature=1.0):
    """Mean NLL of integer `labels` under `softmax(logits / temperature)`."""
    scaled = np.asarray(logits, dtype="float64") / temperature
    top = scaled.max(axis=-1, keepdims=True)
    log_norm = top[..., 0] + np.log(np.exp(scaled - top).sum(axis=-1))
    picked = np.take_along_axis(scaled, labels[:, None], axis=-1)[:, 0]
    return float(np.mean(log_norm - picked))


def safe_log(values):
    """`log` that returns `-inf` for zeros without a warning."""
    with np.errstate(divide="ignore"):
        return np.log(values)


def check_bool(value, name):
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"`{name}` must be a bool. Received: {name}={value!r}")
    return bool(value)


def check_int(value, name, minimum=None, maximum=None):
    """An int (not a bool) in `[minimum, maximum]`."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(
        value, (int, np.integer)
    ):
        raise ValueError(
            f"`{name}` must be an integer. Received: {name}={value!r}"
        )
    if minimum is not None and value < minimum:
        raise ValueError(
            f"`{name}` must be >= {minimum}. Received: {name}={value}"
        )
    if maximum is not None and value > maximum:
        raise ValueError(
            f"`{name}` must be <= {maximum}. Received: {name}={value}"
        )
    return int(value)


def check_number(
    value, name, low=None, high=None, low_open=False, high_open=False
):
    """A finite real number (not a bool) within the given bounds."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(
        value, _NUMBER_TYPES
    ):
        raise ValueError(
            f"`{name}` must be a number. Received: {name}={value!r}"
        )
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"`{name}` must be finite. Received: {name}={value}")
    if low is not None and (value <= low if low_open else value < low):
        relation = ">" if low_open else ">="
        raise ValueError(
            f"`{name}` must be {relation} {low}. Received: {name}={value}"
        )
    if high is not None and (value >= high if high_open else value > high):
        relation = "<" if high_open else "<="
        raise ValueError(
            f"`{name}` must be {relation} {high}. Received: {name}={value}"
        )
    return value


def check_temperature(value, name="temperature"):
    """A temperature: a finite number `> 0`."""
    return check_number(value, name, low=0.0, low_open=True)


def check_choice(value, name, choices):
    if value not in choices:
        raise ValueError(
            f"`{name}` must be one of {tuple(choices)}. Received: "
            f"{name}={value!r}"
        )
    return value


def as_float_array(value, name, expected="an array of numbers"):
    """Float64 numpy array, or a `ValueError` saying what was expected."""
    try:
        return np.asarray(to_numpy(value), dtype="float64")
    except (TypeError, ValueError) as e:
        raise ValueError(
            f"`{name}` must be {expected}. Received: {name}={value!r}"
        ) from e


def check_finite(values, name):
    """Raises if a numpy array holds NaN or infinity; returns it."""
    if not np.all(np.isfinite(values)):
        bad = np.argwhere(~np.isfinite(values))[0].tolist()
        raise ValueError(
            f"`{name}` must be finite; found {values[tuple(bad)]} at index "
            f"{bad}. Received: {name} with shape {values.shape}"
        )
    return values


def check_probabilities(values, name, allow_empty=False, ndims=None):
    """Checks rows of probabilities (last axis); returns them renormalised.

    Rows must sum to 1 within `PROB_SUM_ATOL`; `ndims` limits the rank.
    """
    array = as_float_array(values, name, "an array of probabilities")
    if ndims is not None and array.ndim not in ndims:
        shapes = " or ".join(
            _PROB_SHAPES.get(n, f"rank {n}") for n in sorted(ndims)
        )
        raise ValueError(
            f"`{name}` must have shape {shapes}. Received: {name} with shape "
            f"{array.shape}"
        )
    if array.size == 0:
        if allow_empty:
            return array
        raise ValueError(
            f"`{name}` must not be empty. Received: {name} with shape "
            f"{array.shape}"
        )
    if array.ndim == 0:
        raise ValueError(
            f"`{name}` must have a class axis (shape (..., K)). Received: "
            f"{name}={array}"
        )
    check_finite(array, name)
    if np.any(array < 0):
        bad = np.argwhere(array < 0)[0].tolist()
        raise ValueError(
            f"`{name}` must be non-negative probabilities; found "
            f"{array[tuple(bad)]:g} at index {bad}. Received: {name} with "
            f"shape {array.shape}"
        )
    sums = array.sum(axis=-1)
    off = np.abs(sums - 1.0) > PROB_SUM_ATOL
    if np.any(off):
        row = np.argwhere(np.atleast_1d(off))[0].tolist()
        raise ValueError(
            f"Each row of `{name}` must sum to 1 (within {PROB_SUM_ATOL}); "
            f"row {row} sums to {np.atleast_1d(sums)[tuple(row)]:.6g}. Pass "
            "probabilities (e.g. softmax outputs), or logits with the "
            f"matching `from_logits` flag. Received: {name} with shape "
            f"{array.shape}"
        )
    return array / sums[..., None]


def check_labels(labels, num_examples, num_classes, name="labels"):
    """Int64 class ids `(num_examples,)` in `[0, num_classes)`."""
    try:
        values = np.asarray(to_numpy(labels))
    except (TypeError, ValueError) as e:
        raise ValueError(
            f"`{name}` must be an array of integer class ids. Received: "
            f"{name}={labels!r}"
        ) from e
    if num_examples is not None and values.shape != (num_examples,):
        raise ValueError(
            f"`{name}` must be integer class ids of shape ({num_examples},), "
            f"one per example. Received: {name} with shape {values.shape}"
        )
    if values.dtype.kind == "f":
        whole = np.isfinite(values) & (values == np.round(values))
        if not np.all(whole):
            raise ValueError(
                f"`{name}` must hold integer class ids. Received non-integer "
                f"values, e.g. {values[~whole][:3].tolist()}"
            )
    elif values.dtype.kind not in "iu":
        raise ValueError(
            f"`{name}` must hold integer class ids. Received dtype "
            f"{values.dtype}"
        )
    values = values.astype("int64")
    bad = (values < 0) | (values >= num_classes)
    if np.any(bad):
        raise ValueError(
            f"`{name}` must lie in [0, {num_classes}) for {num_classes} "
            f"classes. Received out-of-range values "
            f"{np.unique(values[bad])[:5].tolist()}"
        )
    return values


def shapes_match(a, b):
    """Whether two static shapes agree (unknown `None` dims match any)."""
    a, b = tuple(a), tuple(b)
    return len(a) == len(b) and all(
        x is None or y is None or x == y for x, y in zip(a, b, strict=True)
    )


def vocabulary_hint(teacher_shape, student_shape):
    """A hint at `align_vocabulary` when only the class axes differ, or `""`."""
    a, b = tuple(teacher_shape), tuple(student_shape)
    if not a or not b or not shapes_match(a[:-1], b[:-1]):
        return ""
    if a[-1] is None or b[-1] is None or a[-1] == b[-1]:
        return ""
    return (
        f" The teacher has {a[-1]} classes and the student {b[-1]}: if "
        "their vocabularies differ only by padding (ids the tokenizer never "
        "produces) or by order, align the teacher's outputs first with "
        f"`keras_ptloss.align_vocabulary(teacher_outputs, {b[-1]}, "
        "vocab_size=...)` (or `id_map=...`), or pass `vocab_size`/`id_map` "
        "to `keras_ptloss.Distiller`."
    )


def check_standardizable(num_classes, name="logits"):
    """Refuses logit standardisation with fewer than 3 classes."""
    if num_classes is not None and num_classes < 3:
        raise ValueError(
            "Logit standardisation needs at least 3 classes: with 2, the "
            "z-scores of the two logits are +-1/sqrt(2) whatever their "
            "difference, so the standardised loss gives the student no "
            "gradient. Use plain KD/PTLoss (standardize=False) for binary "
            f"problems. Received: {name} with {num_classes} class(es)"
        )
