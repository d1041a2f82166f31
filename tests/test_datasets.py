"""Offline data loaders: splits, exact Bayes probabilities, TFDS, noise."""

import random

import numpy as np
import pytest
import scipy.stats

from keras_ptloss.datasets import GaussianMixture
from keras_ptloss.datasets import load_digits
from keras_ptloss.datasets import load_mnist1d
from keras_ptloss.datasets import load_tfds
from keras_ptloss.datasets import make_gaussian_mixture
from keras_ptloss.datasets import noisy_labels
from keras_ptloss.datasets import split_dataset

SPLITS = ("train", "transfer", "validation", "test")


def row_set(x):
    return {row.tobytes() for row in np.ascontiguousarray(x)}


# --- split_dataset ---------------------------------------------------------


def test_split_dataset_partitions_every_example_once():
    x = np.arange(53 * 2).reshape(53, 2)
    y = np.arange(53)
    fractions = {"a": 0.5, "b": 0.3, "c": 0.2}
    splits = split_dataset(x, y, fractions, seed=3)
    assert [len(splits[k][1]) for k in fractions] == [28, 15, 10]
    joined = np.sort(np.concatenate([splits[k][1] for k in fractions]))
    np.testing.assert_array_equal(joined, y)
    for xs, ys in splits.values():
        np.testing.assert_array_equal(xs[:, 0], 2 * ys)  # rows stay paired
    again = split_dataset(x, y, fractions, seed=3)
    other = split_dataset(x, y, fractions, seed=4)
    np.testing.assert_array_equal(again["a"][1], splits["a"][1])
    assert not np.array_equal(other["a"][1], splits["a"][1])


def test_split_dataset_rejects_bad_input():
    for fractions, match in [
        ({"a": 0.5, "b": 0.4}, "sum to 1"),
        ({"a": 1.2, "b": -0.2}, "fractions\\['a'\\]"),
        ([0.5, 0.5], "dict"),
        ({"a": 0.999, "b": 0.001}, "at least one example"),
    ]:
        with pytest.raises(ValueError, match=match):
            split_dataset(np.zeros((20, 1)), np.zeros(20), fractions)
    with pytest.raises(ValueError, match="same number of examples"):
        split_dataset(np.zeros((20, 1)), np.zeros(19))
    with pytest.raises(ValueError, match="seed"):
        split_dataset(np.zeros((20, 1)), np.zeros(20), seed=-1)


# --- MNIST-1D and digits ----------------------------------------------------


def test_mnist1d_splits_are_disjoint_balanced_and_reproducible():
    numpy_state, python_state = np.random.get_state(), random.getstate()
    splits = load_mnist1d(num_samples=300, seed=1)
    # The generator reseeds the global RNGs; the loader restores them.
    assert np.array_equal(np.random.get_state()[1], numpy_state[1])
    assert random.getstate() == python_state
    assert tuple(splits) == SPLITS
    assert [len(splits[k][1]) for k in SPLITS] == [120, 90, 30, 60]
    for x, y in splits.values():
        assert x.shape[1:] == (40,) and x.dtype == np.float32
        assert y.dtype == np.int32
    seen = [row_set(splits[k][0]) for k in SPLITS]
    assert sum(map(len, seen)) == len(set().union(*seen)) == 300
    all_y = np.concatenate([splits[k][1] for k in SPLITS])
    np.testing.assert_array_equal(np.bincount(all_y), np.full(10, 30))
    again = load_mnist1d(num_samples=300, seed=1)
    np.testing.assert_array_equal(again["test"][0], splits["test"][0])
    other = load_mnist1d(num_samples=300, seed=2)
    assert not np.array_equal(other["test"][0], splits["test"][0])


def test_mnist1d_size_and_fractions_are_configurable():
    splits = load_mnist1d(
        num_samples=200, fractions={"train": 0.75, "test": 0.25}, seed=0
    )
    assert {k: len(v[1]) for k, v in splits.items()} == {
        "train": 150,
        "test": 50,
    }
    with pytest.raises(ValueError, match="multiple of 10"):
        load_mnist1d(num_samples=205)
    with pytest.raises(ValueError, match="num_samples"):
        load_mnist1d(num_samples=0)


def test_digits_are_scaled_and_partitioned():
    from sklearn.datasets import load_digits as sklearn_load_digits

    reference = sklearn_load_digits()
    splits = load_digits(seed=0)
    assert tuple(splits) == SPLITS
    assert sum(len(y) for _, y in splits.values()) == 1797
    x = np.concatenate([splits[k][0] for k in SPLITS])
    assert x.shape[1] == 64 and x.min() == 0.0 and x.max() == 1.0
    assert row_set(x.astype("float64") * 16) == row_set(reference.data)
    counts = np.bincount(np.concatenate([splits[k][1] for k in SPLITS]))
    np.testing.assert_array_equal(counts, np.bincount(reference.target))


# --- Gaussian mixture --------------------------------------------------------


def scipy_bayes_probs(task, x):
    """p*(k|x) from scipy's Gaussian densities, summed directly."""
    cov = task.scale**2 * np.eye(task.num_features)
    density = np.zeros((len(x), task.num_classes))
    for k in range(task.num_classes):
        for c in range(task.components_per_class):
            density[:, k] += scipy.stats.multivariate_normal.pdf(
                x, mean=task.means[k, c], cov=cov
            )
    return density / density.sum(axis=1, keepdims=True)


def test_gaussian_mixture_bayes_probs_match_scipy_densities():
    task = GaussianMixture(
        num_classes=4, num_features=3, components_per_class=2, seed=5
    )
    x, _ = task.sample(200, seed=1)
    expected = scipy_bayes_probs(task, x.astype("float64"))
    np.testing.assert_allclose(task.bayes_probs(x), expected, atol=1e-10)
    np.testing.assert_allclose(task.bayes_probs(x).sum(1), 1.0, atol=1e-12)


def test_gaussian_mixture_labels_follow_the_bayes_probabilities():
    task = GaussianMixture(
        num_classes=3, num_features=2, separation=1.0, scale=1.0, seed=0
    )
    x, y = task.sample(20000, seed=2)
    p = task.bayes_probs(x)
    # Calibration: E[1{y = k} - p*_k(x)] = 0 for every class.
    residual = np.eye(3)[y] - p
    standard_error = residual.std(0) / np.sqrt(len(y))
    assert np.all(np.abs(residual.mean(0)) < 4 * standard_error)
    # The Bayes classifier's accuracy is E[max_k p*_k(x)].
    hits = (p.argmax(1) == y).astype(float)
    expected = p.max(1).mean()
    assert abs(hits.mean() - expected) < 4 * hits.std() / np.sqrt(len(y))
    assert 0.5 < expected < 0.99  # a non-trivial task


def test_make_gaussian_mixture_splits_and_validates():
    splits, task = make_gaussian_mixture(
        500, seed=0, num_classes=5, num_features=4
    )
    assert tuple(splits) == SPLITS
    assert [len(splits[k][1]) for k in SPLITS] == [200, 150, 50, 100]
    x, y = splits["test"]
    assert x.shape == (100, 4) and x.dtype == np.float32 and y.max() < 5
    assert task.get_config()["num_classes"] == 5
    assert GaussianMixture(**task.get_config()).means.tolist() == (
        task.means.tolist()
    )
    for kwargs, match in [
        ({"num_classes": 1}, "num_classes"),
        ({"scale": 0.0}, "scale"),
        ({"separation": float("inf")}, "separation"),
        ({"components_per_class": 0}, "components_per_class"),
    ]:
        with pytest.raises(ValueError, match=match):
            GaussianMixture(**kwargs)
    with pytest.raises(ValueError, match="x.shape"):
        task.bayes_probs(np.zeros((3, 2)))


# --- TFDS ------------------------------------------------------------------


def test_load_tfds_reads_a_mocked_dataset_through_tfds():
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=12):
        x, y = load_tfds("mnist", "train")
        x_raw, y_raw = load_tfds(
            "mnist",
            "train",
            keys=("image", "label"),
            max_examples=5,
            scale_images=False,
        )
        reference = next(
            iter(
                tfds.as_numpy(
                    tfds.load("mnist", split="train", as_supervised=True).batch(
                        12
                    )
                )
            )
        )
    assert x.shape == (12, 28, 28, 1) and x.dtype == np.float32
    assert y.shape == (12,) and y.dtype == np.int32
    assert 0.0 <= x.min() and x.max() <= 1.0
    np.testing.assert_allclose(x, reference[0] / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(y, reference[1])
    assert x_raw.dtype == np.uint8 and x_raw.shape == (5, 28, 28, 1)
    np.testing.assert_array_equal(y_raw, reference[1][:5])


def test_load_tfds_without_data_raises_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="name='mnist'"):
        load_tfds("mnist", "train", data_dir=str(tmp_path))
    with pytest.raises(ValueError, match="keys"):
        load_tfds("mnist", keys=("image",))
    with pytest.raises(ValueError, match="max_examples"):
        load_tfds("mnist", max_examples=0)


# --- Label noise -------------------------------------------------------------


def test_symmetric_noise_flips_exactly_the_requested_fraction():
    labels = np.arange(1000) % 7
    noisy, flipped = noisy_labels(labels, 0.35, num_classes=7, seed=1)
    assert noisy.dtype == np.int32 and flipped.sum() == 350
    assert np.all(noisy[flipped] != labels[flipped])
    np.testing.assert_array_equal(noisy[~flipped], labels[~flipped])
    assert noisy.min() >= 0 and noisy.max() < 7
    # New labels are spread over the other classes, not a fixed shift.
    shifts = (noisy[flipped] - labels[flipped]) % 7
    assert set(np.unique(shifts)) == set(range(1, 7))
    again, _ = noisy_labels(labels, 0.35, num_classes=7, seed=1)
    np.testing.assert_array_equal(again, noisy)


def test_pairwise_noise_and_end_points():
    labels = np.arange(100) % 4
    noisy, flipped = noisy_labels(labels, 0.2, mode="pairwise", seed=0)
    np.testing.assert_array_equal(noisy[flipped], (labels[flipped] + 1) % 4)
    clean, none = noisy_labels(labels, 0.0)
    np.testing.assert_array_equal(clean, labels)
    assert not none.any()
    _, everything = noisy_labels(labels, 1.0)
    assert everything.all()


def test_noisy_labels_rejects_bad_input():
    for args, kwargs, match in [
        ((np.arange(10), 1.5), {}, "noise_rate"),
        ((np.arange(10), 0.1), {"num_classes": 5}, "\\[0, 5\\)"),
        ((np.arange(10), 0.1), {"mode": "flip"}, "mode"),
        ((np.zeros((2, 2), int), 0.1), {}, "1-D"),
        ((np.array([0.5, 1.0]), 0.1), {}, "integer"),
    ]:
        with pytest.raises(ValueError, match=match):
            noisy_labels(*args, **kwargs)
