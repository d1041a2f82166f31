"""Loaders of real data sets, as `{name: (x, y)}` float32/int32 splits."""

import math
import random

import numpy as np

from keras_ptloss._checks import check_int
from keras_ptloss._checks import check_number

DEFAULT_FRACTIONS = {
    "train": 0.4,
    "transfer": 0.3,
    "validation": 0.1,
    "test": 0.2,
}
_MNIST1D_CLASSES = 10


def check_fractions(fractions):
    if not isinstance(fractions, dict) or not fractions:
        raise ValueError(
            "`fractions` must be a non-empty dict {split_name: fraction}. "
            f"Received: fractions={fractions!r}"
        )
    values = [
        check_number(value, f"fractions[{name!r}]", 0, 1, low_open=True)
        for name, value in fractions.items()
    ]
    if abs(sum(values) - 1.0) > 1e-6:
        raise ValueError(
            "`fractions` must sum to 1. Received: fractions="
            f"{fractions} (sum {sum(values):.6g})"
        )
    return dict(zip(fractions, values, strict=True))


def split_dataset(x, y, fractions=None, seed=0):
    """Shuffles `(x, y)` and cuts it into named, disjoint splits.

    Rounding leftovers go to the first split.

    Args:
        x: inputs, array of shape `(n, ...)`.
        y: labels, array of shape `(n,)`.
        fractions: dict `{name: fraction}` summing to 1. Defaults to train
            0.4, transfer 0.3, validation 0.1, test 0.2.
        seed: seed of the shuffle.

    Returns:
        A dict `{name: (x_split, y_split)}`.

    Example:

    >>> import numpy as np
    >>> splits = split_dataset(np.zeros((10, 2)), np.arange(10),
    ...                        {"a": 0.5, "b": 0.5}, seed=0)
    >>> [len(splits[name][1]) for name in ("a", "b")]
    [5, 5]
    """
    fractions = check_fractions(
        DEFAULT_FRACTIONS if fractions is None else fractions
    )
    seed = check_int(seed, "seed", minimum=0)
    x, y = np.asarray(x), np.asarray(y)
    if x.shape[:1] != y.shape[:1] or y.ndim != 1:
        raise ValueError(
            "`x` and `y` must hold the same number of examples and `y` "
            f"must be 1-D. Received: x.shape={x.shape}, y.shape={y.shape}"
        )
    n = len(y)
    counts = [int(math.floor(n * f)) for f in fractions.values()]
    counts[0] += n - sum(counts)
    if min(counts) < 1:
        raise ValueError(
            f"Every split needs at least one example: {n} examples cut by "
            f"fractions={fractions} gives counts {counts}"
        )
    order = np.random.default_rng(seed).permutation(n)
    splits, start = {}, 0
    for name, count in zip(fractions, counts, strict=True):
        index = order[start : start + count]
        splits[name] = (x[index], y[index])
        start += count
    return splits


def as_float_int(splits):
    return {
        name: (x.astype("float32"), y.astype("int32"))
        for name, (x, y) in splits.items()
    }


def load_mnist1d(num_samples=10000, fractions=None, seed=0):
    """Generates MNIST-1D (Greydanus 2020) and cuts it into splits.

    Uses `mnist1d.data.make_dataset` with `num_samples` examples; the global
    `numpy` and `random` states are restored afterwards.

    Args:
        num_samples: total number of examples, a multiple of 10 (>= 10).
        fractions: dict `{name: fraction}` summing to 1. Defaults to train
            0.4, transfer 0.3, validation 0.1, test 0.2.
        seed: seed of the generator and of the split.

    Returns:
        A dict `{name: (x, y)}`, `x` float32 of shape `(n, 40)`, `y` int32.

    Example:

    >>> splits = load_mnist1d(num_samples=100, seed=0)
    >>> splits["train"][0].shape
    (40, 40)
    """
    num_samples = check_int(num_samples, "num_samples", minimum=10)
    if num_samples % _MNIST1D_CLASSES:
        raise ValueError(
            "`num_samples` must be a multiple of 10 (MNIST-1D draws the "
            f"same number per class). Received: num_samples={num_samples}"
        )
    seed = check_int(seed, "seed", minimum=0)
    from mnist1d.data import get_dataset_args
    from mnist1d.data import make_dataset

    args = get_dataset_args()
    args.num_samples = num_samples
    args.train_split = 1.0
    args.seed = seed
    numpy_state, python_state = np.random.get_state(), random.getstate()
    try:
        data = make_dataset(args)
    finally:
        np.random.set_state(numpy_state)
        random.setstate(python_state)
    return as_float_int(split_dataset(data["x"], data["y"], fractions, seed))


def load_digits(fractions=None, seed=0):
    """scikit-learn's 8x8 digits, scaled to [0, 1], cut into splits.

    Args:
        fractions: dict `{name: fraction}` summing to 1. Defaults to train
            0.4, transfer 0.3, validation 0.1, test 0.2.
        seed: seed of the split.

    Returns:
        A dict `{name: (x, y)}`, `x` float32 of shape `(n, 64)`, `y` int32.

    Example:

    >>> splits = load_digits({"train": 0.5, "test": 0.5}, seed=0)
    >>> splits["test"][0].shape
    (898, 64)
    """
    from sklearn.datasets import load_digits as sklearn_load_digits

    data = sklearn_load_digits()
    return as_float_int(
        split_dataset(data.data / 16.0, data.target, fractions, seed)
    )


def load_tfds(
    name,
    split="train",
    data_dir=None,
    download=False,
    keys=None,
    max_examples=None,
    scale_images=True,
):
    """Loads a prepared TensorFlow Datasets split into numpy `(x, y)`.

    Args:
        name: TFDS name, e.g. `"mnist"`.
        split: split spec, e.g. `"test[:10%]"`.
        data_dir: TFDS data directory (TFDS's default if `None`).
        download: whether TFDS may download and prepare the data.
        keys: `(input_key, label_key)`; defaults to the supervised keys.
        max_examples: optional int `>= 1`, keep only the first examples.
        scale_images: map `uint8` inputs to float32 in `[0, 1]`.

    Returns:
        `(x, y)` numpy arrays; `y` int32.

    Example:

    >>> import tensorflow_datasets as tfds
    >>> with tfds.testing.mock_data(num_examples=4):
    ...     x, y = load_tfds("mnist", "train")
    >>> x.shape, y.shape
    ((4, 28, 28, 1), (4,))
    """
    if not isinstance(name, str) or not name:
        raise ValueError(
            f"`name` must be a TFDS dataset name. Received: name={name!r}"
        )
    if keys is not None and (
        not isinstance(keys, (tuple, list))
        or len(keys) != 2
        or not all(isinstance(k, str) for k in keys)
    ):
        raise ValueError(
            "`keys` must be a pair (input_key, label_key) of feature names. "
            f"Received: keys={keys!r}"
        )
    if max_examples is not None:
        max_examples = check_int(max_examples, "max_examples", minimum=1)
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:  # pragma: no cover - an optional dependency
        raise ImportError(
            "`load_tfds` needs tensorflow-datasets: pip install "
            "'keras-ptloss[tfds]'"
        ) from e
    try:
        ds = tfds.load(
            name,
            split=split,
            data_dir=data_dir,
            download=download,
            as_supervised=keys is None,
        )
    except Exception as e:
        raise ValueError(
            f"Could not load TFDS dataset name={name!r} split={split!r} "
            f"(data_dir={data_dir!r}, download={download}): {e}"
        ) from e
    if keys is not None:
        input_key, label_key = keys
        ds = ds.map(lambda features: (features[input_key], features[label_key]))
    if max_examples is not None:
        ds = ds.take(max_examples)
    count = int(ds.cardinality())
    if count < 0:  # unknown cardinality: count by reading
        count = sum(1 for _ in ds)
    if count == 0:
        raise ValueError(
            f"TFDS split name={name!r} split={split!r} holds no examples"
        )
    x, y = next(iter(tfds.as_numpy(ds.batch(count))))
    x, y = np.asarray(x), np.asarray(y)
    if scale_images and x.dtype == np.uint8:
        x = x.astype("float32") / 255.0
    elif scale_images:
        x = x.astype("float32")
    return x, y.astype("int32")
