"""Data for distillation experiments, as numpy arrays; offline by default.

Not loaded by `import keras_ptloss`: import it on its own, e.g.
`from keras_ptloss.datasets import load_mnist1d`.
"""

from keras_ptloss.datasets.language import HiddenMarkovLanguage
from keras_ptloss.datasets.language import make_language
from keras_ptloss.datasets.loaders import load_digits
from keras_ptloss.datasets.loaders import load_mnist1d
from keras_ptloss.datasets.loaders import load_tfds
from keras_ptloss.datasets.loaders import split_dataset
from keras_ptloss.datasets.synthetic import GaussianMixture
from keras_ptloss.datasets.synthetic import make_gaussian_mixture
from keras_ptloss.datasets.synthetic import noisy_labels

__all__ = [
    "GaussianMixture",
    "HiddenMarkovLanguage",
    "load_digits",
    "load_mnist1d",
    "load_tfds",
    "make_gaussian_mixture",
    "make_language",
    "noisy_labels",
    "split_dataset",
]
