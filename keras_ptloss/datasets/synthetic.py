"""Synthetic classification data with exactly known Bayes probabilities."""

import numpy as np
import scipy.special

from keras_ptloss._checks import check_choice
from keras_ptloss._checks import check_int
from keras_ptloss._checks import check_labels
from keras_ptloss._checks import check_number
from keras_ptloss.datasets.loaders import as_float_int
from keras_ptloss.datasets.loaders import split_dataset


class GaussianMixture:
    """A classification task with exactly known Bayes probabilities.

    Class `k` draws `x` from an equal-weight mixture of isotropic Gaussians
    `N(mu_kc, scale**2 I)`, means drawn from `N(0, separation**2 I)`:

        p*(k | x) = softmax_k(logsumexp_c(-|x - mu_kc|**2 / (2 scale**2))).

    Args:
        num_classes: number of classes `K >= 2`.
        num_features: input dimension `d >= 1`.
        components_per_class: Gaussians per class `>= 1`.
        separation: standard deviation of the component means, `> 0`.
        scale: standard deviation of each component, `> 0`.
        seed: seed of the means.

    Example:

    >>> task = GaussianMixture(num_classes=3, num_features=2, seed=0)
    >>> x, y = task.sample(5, seed=1)
    >>> task.bayes_probs(x).shape
    (5, 3)
    """

    def __init__(
        self,
        num_classes=10,
        num_features=16,
        components_per_class=2,
        separation=1.0,
        scale=1.0,
        seed=0,
    ):
        self.num_classes = check_int(num_classes, "num_classes", minimum=2)
        self.num_features = check_int(num_features, "num_features", minimum=1)
        self.components_per_class = check_int(
            components_per_class, "components_per_class", minimum=1
        )
        self.separation = check_number(
            separation, "separation", low=0, low_open=True
        )
        self.scale = check_number(scale, "scale", low=0, low_open=True)
        self.seed = check_int(seed, "seed", minimum=0)
        rng = np.random.default_rng(self.seed)
        self.means = rng.normal(
            scale=self.separation,
            size=(num_classes, components_per_class, num_features),
        )

    def sample(self, num_samples, seed=0):
        """Draws `(x, y)`: float32 `(num_samples, d)` and int32 labels."""
        num_samples = check_int(num_samples, "num_samples", minimum=1)
        rng = np.random.default_rng(check_int(seed, "seed", minimum=0))
        y = rng.integers(0, self.num_classes, size=num_samples)
        c = rng.integers(0, self.components_per_class, size=num_samples)
        noise = rng.normal(
            scale=self.scale, size=(num_samples, self.num_features)
        )
        x = self.means[y, c] + noise
        return x.astype("float32"), y.astype("int32")

    def bayes_log_probs(self, x):
        """Exact `log p*(k | x)`, float64 of shape `(n, K)`."""
        x = np.asarray(x, dtype="float64")
        if x.ndim != 2 or x.shape[1] != self.num_features:
            raise ValueError(
                f"`x` must have shape (n, {self.num_features}). Received: "
                f"x.shape={x.shape}"
            )
        # (n, K, C) squared distances to every component mean.
        diff = x[:, None, None, :] - self.means[None]
        logits = -0.5 * np.sum(diff**2, axis=-1) / self.scale**2
        return scipy.special.log_softmax(
            scipy.special.logsumexp(logits, axis=-1), axis=-1
        )

    def bayes_probs(self, x):
        """Exact Bayes posterior `p*(k | x)`, float64 of shape `(n, K)`."""
        return np.exp(self.bayes_log_probs(x))

    def get_config(self):
        return {
            "num_classes": self.num_classes,
            "num_features": self.num_features,
            "components_per_class": self.components_per_class,
            "separation": self.separation,
            "scale": self.scale,
            "seed": self.seed,
        }


def make_gaussian_mixture(
    num_samples=10000, fractions=None, seed=0, **task_kwargs
):
    """Samples a `GaussianMixture` task and cuts it into splits.

    Args:
        num_samples: total number of examples.
        fractions: dict `{name: fraction}` summing to 1. Defaults to train
            0.4, transfer 0.3, validation 0.1, test 0.2.
        seed: seed of the means, the draw and the split.
        **task_kwargs: `GaussianMixture` arguments.

    Returns:
        `(splits, task)`: `splits` a dict `{name: (x, y)}`.

    Example:

    >>> splits, task = make_gaussian_mixture(200, num_classes=3, seed=0)
    >>> x, y = splits["validation"]
    >>> task.bayes_probs(x).shape
    (20, 3)
    """
    task = GaussianMixture(seed=seed, **task_kwargs)
    x, y = task.sample(num_samples, seed=seed + 1)
    return as_float_int(split_dataset(x, y, fractions, seed)), task


def noisy_labels(
    labels, noise_rate, num_classes=None, mode="symmetric", seed=0
):
    """Corrupts exactly `round(noise_rate * n)` labels, chosen at random.

    Args:
        labels: integer labels, shape `(n,)`.
        noise_rate: fraction of labels to corrupt, in `[0, 1]`.
        num_classes: number of classes; defaults to `max(labels) + 1`.
        mode: `"symmetric"` (a uniformly drawn different class) or
            `"pairwise"` (`k` becomes `k + 1` mod K; Han et al. 2018).
        seed: seed of the choice and of the new labels.

    Returns:
        `(noisy, flipped)`: int32 labels `(n,)` and the corrupted mask.

    Example:

    >>> import numpy as np
    >>> labels = np.arange(10) % 3
    >>> noisy, flipped = noisy_labels(labels, 0.3, seed=0)
    >>> int(flipped.sum()), bool(np.all(noisy[flipped] != labels[flipped]))
    (3, True)
    """
    values = np.asarray(labels)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(
            "`labels` must be a non-empty 1-D array of class indices. "
            f"Received: labels.shape={values.shape}"
        )
    if num_classes is None:
        # Any integer-valued array; `check_labels` rejects the rest.
        top = np.max(values) if values.dtype.kind in "iuf" else 1
        num_classes = int(top) + 1 if np.isfinite(top) else 2
    num_classes = check_int(num_classes, "num_classes", minimum=2)
    labels = check_labels(values, values.size, num_classes)
    noise_rate = check_number(noise_rate, "noise_rate", 0, 1)
    mode = check_choice(mode, "mode", ("symmetric", "pairwise"))
    rng = np.random.default_rng(check_int(seed, "seed", minimum=0))
    n = labels.size
    chosen = rng.choice(n, size=int(round(noise_rate * n)), replace=False)
    flipped = np.zeros(n, dtype=bool)
    flipped[chosen] = True
    noisy = labels.copy()
    if mode == "pairwise":
        noisy[chosen] = (labels[chosen] + 1) % num_classes
    else:
        offset = rng.integers(1, num_classes, size=chosen.size)
        noisy[chosen] = (labels[chosen] + offset) % num_classes
    return noisy.astype("int32"), flipped
