"""Offline teacher outputs: run the teacher once, train on the results.

Each batch `x` becomes `{"student_inputs": x, "teacher_outputs": t}`.
"""

import os

import keras
import numpy as np

from keras_ptloss._checks import check_finite
from keras_ptloss._checks import check_int
from keras_ptloss._checks import fingerprint
from keras_ptloss._checks import to_numpy
from keras_ptloss._checks import to_numpy_tree

STUDENT_INPUTS = "student_inputs"
TEACHER_OUTPUTS = "teacher_outputs"
_OFFLINE_KEYS = frozenset((STUDENT_INPUTS, TEACHER_OUTPUTS))
_CACHE_KEYS = (
    "teacher_outputs",
    "teacher_fingerprint",
    "data_fingerprint",
    "outputs_fingerprint",
)


def is_offline_batch(x):
    """Whether `x` is a batch carrying its teacher outputs."""
    return isinstance(x, dict) and set(x.keys()) == _OFFLINE_KEYS


def offline_batch(x, teacher_outputs):
    """`{"student_inputs": x, "teacher_outputs": teacher_outputs}`."""
    return {STUDENT_INPUTS: x, TEACHER_OUTPUTS: teacher_outputs}


def is_tf_dataset(x):
    """Whether `x` is a `tf.data.Dataset` (without importing TF otherwise)."""
    if not type(x).__module__.startswith("tensorflow"):
        return False
    import tensorflow as tf

    return isinstance(x, tf.data.Dataset)


def num_examples(structure):
    """The leading dimension of the first array of a structure."""
    return int(keras.tree.flatten(structure)[0].shape[0])


def teacher_fingerprint(teacher):
    """Fingerprint of a model's weights."""
    return fingerprint([to_numpy(w) for w in teacher.weights])


def precompute(
    teacher, x, y=None, sample_weight=None, batch_size=32, cache=None
):
    """Runs `teacher` once; see `Distiller.precompute_teacher`.

    Returns `(x_offline, y, sample_weight)` for arrays, otherwise a data set
    of the input's kind.
    """
    if isinstance(x, keras.utils.PyDataset):
        kind, run = "keras.utils.PyDataset", precompute_pydataset
    elif is_tf_dataset(x):
        kind, run = "tf.data.Dataset", precompute_tf_dataset
    else:
        kind = run = None
    if run is not None:
        if cache is not None:
            raise ValueError(
                "`cache` is supported for array inputs only. Received: "
                f"cache={cache!r} with x of type {type(x).__name__}"
            )
        _check_no_arrays(y, sample_weight, kind)
        return run(teacher, x)
    outputs = precompute_arrays(teacher, x, batch_size, cache)
    return offline_batch(x, outputs), y, sample_weight


def precompute_arrays(teacher, x, batch_size=32, cache=None):
    """The teacher's outputs for arrays, through an optional `.npz` cache."""
    check_int(batch_size, "batch_size", minimum=1)
    try:
        num = num_examples(x)
    except (AttributeError, IndexError, TypeError) as e:
        raise ValueError(
            "`x` must be arrays (numpy or backend tensors, or a list/"
            "dict of them), a tf.data.Dataset or a keras.utils.PyDataset."
            f" Received: x of type {type(x).__name__}"
        ) from e
    if cache is not None and os.path.exists(cache):
        return load_cache(cache, teacher, x)
    outputs = np.asarray(teacher.predict(x, batch_size=batch_size, verbose=0))
    if outputs.shape[0] != num:
        raise ValueError(
            "The teacher must return one output per example. Received: "
            f"{outputs.shape[0]} outputs for {num} examples"
        )
    check_finite(outputs, "teacher_outputs")
    if cache is not None:
        save_cache(cache, teacher, x, outputs)
    return outputs


def save_cache(path, teacher, x, outputs, **extra):
    """Writes teacher outputs, their fingerprints and `extra` to `path`."""
    np.savez(
        path,
        teacher_outputs=outputs,
        teacher_fingerprint=np.uint32(teacher_fingerprint(teacher)),
        data_fingerprint=np.uint32(fingerprint(to_numpy_tree(x))),
        outputs_fingerprint=np.uint32(fingerprint(outputs)),
        **extra,
    )


def load_cache(path, teacher, x):
    """Reads teacher outputs from `path` after checking every fingerprint."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            stored = {key: np.asarray(archive[key]) for key in _CACHE_KEYS}
    except Exception as e:  # truncated zip, missing key, not an npz
        raise ValueError(
            "The teacher-output cache is unreadable or incomplete "
            f"({type(e).__name__}: {e}); delete it to recompute. "
            f"Received: cache={path!r}"
        ) from e
    outputs = stored["teacher_outputs"]
    checks = (
        (
            "outputs_fingerprint",
            fingerprint(outputs),
            "The teacher outputs in the cache do not match their checksum "
            "(the file is corrupted); delete it to recompute",
        ),
        (
            "teacher_fingerprint",
            teacher_fingerprint(teacher),
            "The teacher-output cache was written by a teacher with other "
            "weights than this Distiller's teacher; delete it to recompute",
        ),
        (
            "data_fingerprint",
            fingerprint(to_numpy_tree(x)),
            "The teacher-output cache was written for other inputs than "
            f"`x` ({num_examples(x)} examples); delete it or pass the same "
            "`x`",
        ),
    )
    for key, expected, message in checks:
        if int(stored[key]) != expected:
            raise ValueError(f"{message}. Received: cache={path!r}")
    return outputs


def check_output_shape(outputs, output_shape, num_inputs=None):
    """Checks cached outputs: the teacher's output shape, one per input.

    `output_shape=None` or `num_inputs=None` skips that part of the check.
    """
    shape = tuple(outputs.shape)
    expected = (num_inputs,) + tuple(output_shape or shape)[1:]
    if len(shape) != len(expected) or any(
        a is not None and b is not None and a != b
        for a, b in zip(shape, expected, strict=True)
    ):
        raise ValueError(
            "The cached teacher outputs must hold one teacher output per "
            f"input example: expected shape {expected}. Received: "
            f"teacher_outputs.shape={shape}"
            + ("" if num_inputs is None else f" for {num_inputs} inputs")
        )


def _check_no_arrays(y, sample_weight, kind):
    if y is not None or sample_weight is not None:
        raise ValueError(
            f"With a {kind}, labels and sample weights come from the data "
            "set: `y` and `sample_weight` must be None. Received: "
            f"y={type(y).__name__}, "
            f"sample_weight={type(sample_weight).__name__}"
        )


def _teacher_numpy(teacher, x):
    return to_numpy(teacher(x, training=False))


def precompute_tf_dataset(teacher, dataset):
    """A batched `tf.data.Dataset` with the teacher outputs, in memory."""
    import tensorflow as tf

    batches = []
    for element in dataset.as_numpy_iterator():
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(element)
        batches.append(
            keras.utils.pack_x_y_sample_weight(
                offline_batch(x, _teacher_numpy(teacher, x)), y, sample_weight
            )
        )
    if not batches:
        raise ValueError(
            "`x` is an empty tf.data.Dataset. Received: a dataset with "
            "no batches"
        )
    sizes = [num_examples(b) for b in batches]
    if any(s != sizes[0] for s in sizes[:-1]) or sizes[-1] > sizes[0]:
        raise ValueError(
            "precompute_teacher needs a tf.data.Dataset whose batches all "
            "have the same size except a smaller last one. Received "
            f"batch sizes {sizes[:20]}"
        )
    if not isinstance(batches[0], tuple):
        batches = [(b,) for b in batches]
    merged = keras.tree.map_structure(
        lambda *parts: np.concatenate(parts, axis=0), *batches
    )
    if len(merged) == 1:
        merged = merged[0]
    return tf.data.Dataset.from_tensor_slices(merged).batch(sizes[0])


def precompute_pydataset(teacher, dataset):
    """An `OfflinePyDataset` pairing `dataset`'s batches with the outputs."""
    outputs, fingerprints = [], []
    for index in range(len(dataset)):
        x, _, _ = keras.utils.unpack_x_y_sample_weight(dataset[index])
        x = to_numpy_tree(x)
        fingerprints.append(fingerprint(x))
        outputs.append(_teacher_numpy(teacher, x))
    return OfflinePyDataset(dataset, outputs, fingerprints)


class OfflinePyDataset(keras.utils.PyDataset):
    """Replays a `PyDataset` with the teacher outputs of its first pass.

    Inputs are fetched again and checked against per-batch fingerprints, so
    a source whose batches change raises instead of mispairing outputs.

    Args:
        source: the `keras.utils.PyDataset` the outputs were computed on.
        teacher_outputs: one array of teacher outputs per batch.
        fingerprints: one fingerprint of the inputs per batch.
    """

    def __init__(self, source, teacher_outputs, fingerprints):
        super().__init__(
            workers=source.workers,
            use_multiprocessing=source.use_multiprocessing,
            max_queue_size=source.max_queue_size,
        )
        self.source = source
        self.teacher_outputs = teacher_outputs
        self.fingerprints = fingerprints

    def __len__(self):
        return len(self.teacher_outputs)

    def __getitem__(self, index):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(
            self.source[index]
        )
        if fingerprint(to_numpy_tree(x)) != self.fingerprints[index]:
            raise ValueError(
                f"Batch {index} of the source PyDataset changed since its "
                "teacher outputs were precomputed: offline distillation needs "
                "a source whose `__getitem__` returns the same inputs for the "
                "same index (no random augmentation or reshuffling). Received "
                f"a different batch {index} from {type(self.source).__name__}"
            )
        x = offline_batch(x, self.teacher_outputs[index])
        return keras.utils.pack_x_y_sample_weight(x, y, sample_weight)
