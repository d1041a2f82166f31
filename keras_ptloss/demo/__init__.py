"""MNIST-1D distillation demo: teacher, coefficient selection, PTLoss vs KD.

Runs offline, end to end, on the backend named by `KERAS_BACKEND` (Keras's
default, tensorflow, when it is unset):

1. generates MNIST-1D locally (`keras_ptloss.datasets.load_mnist1d`;
   nothing is downloaded) and cuts it into a training set, a labelled
   validation split the teacher never trains on, and a test split;
2. trains a 1-D CNN teacher;
3. selects PTLoss coefficients on the validation split from the teacher's
   probabilities alone (no student is trained) and prints the summary;
4. trains the same small MLP student three ways: alone on the labels, with
   KD, and with PTLoss (`Distiller.fit` with the `ReestimateCoefficients`
   callback, which checks at each epoch's start and re-selects when the
   teacher or the validation split changed);
5. prints a table of test accuracy and Brier score (teacher, student alone,
   KD, PTLoss) and writes a plot (learning curves and reliability diagram)
   and the numbers (`results.json`) to the output directory.

Usage: `python -m keras_ptloss demo [--quick] [--output-dir DIR] ...` (or
`python -m keras_ptloss.demo ...`). The demo is not part of the library's
import path: `import keras_ptloss` does not load it (nor matplotlib).
"""

from keras_ptloss.demo.options import DEFAULTS
from keras_ptloss.demo.options import QUICK
from keras_ptloss.demo.options import add_arguments
from keras_ptloss.demo.options import check_options
from keras_ptloss.demo.pipeline import backend_description
from keras_ptloss.demo.pipeline import load_data
from keras_ptloss.demo.pipeline import make_student
from keras_ptloss.demo.pipeline import make_teacher
from keras_ptloss.demo.pipeline import options_from_args
from keras_ptloss.demo.pipeline import run
from keras_ptloss.demo.pipeline import run_from_args
from keras_ptloss.demo.report import METHODS
from keras_ptloss.demo.report import format_table
from keras_ptloss.demo.report import reliability
from keras_ptloss.demo.report import write_plot

__all__ = [
    "DEFAULTS",
    "METHODS",
    "QUICK",
    "add_arguments",
    "backend_description",
    "check_options",
    "format_table",
    "load_data",
    "make_student",
    "make_teacher",
    "options_from_args",
    "reliability",
    "run",
    "run_from_args",
    "write_plot",
]
