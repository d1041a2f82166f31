"""Accuracy benchmark: the data sets it shares with `cross_backend.py`.

One definition of the splits of the `digits` and `gaussian` settings, used
by both the accuracy benchmark (`accuracy_settings.py`) and the
cross-backend check, so the two always train on the same data. No Keras
import at module level: `cross_backend.py` chooses each worker's backend.
"""

DIGITS_FRACTIONS = {"train": 0.5, "validation": 0.2, "test": 0.3}
GAUSSIAN_FRACTIONS = {
    "train": 0.2,
    "transfer": 0.4,
    "validation": 0.1,
    "test": 0.3,
}
# The mixture: 10 classes, 16 features, 2 components per class.
GAUSSIAN_TASK = {
    "num_classes": 10,
    "num_features": 16,
    "components_per_class": 2,
    "separation": 1.0,
    "scale": 1.3,
}


def digits_splits():
    """scikit-learn digits: `{"train", "validation", "test"}` -> `(x, y)`."""
    from keras_ptloss.datasets import load_digits

    return load_digits(DIGITS_FRACTIONS, seed=0)


def gaussian_splits(num_samples):
    """`(splits, task)` of the Gaussian-mixture setting (seed 0): splits
    `{"train", "transfer", "validation", "test"}` -> `(x, y)` and the
    mixture, whose `bayes_probs` gives the exact p*."""
    from keras_ptloss.datasets import make_gaussian_mixture

    return make_gaussian_mixture(
        num_samples, fractions=GAUSSIAN_FRACTIONS, seed=0, **GAUSSIAN_TASK
    )
