"""MNIST-1D distillation demo: where distillation matters, five students.

Runs offline, end to end, on the backend named by `KERAS_BACKEND` (Keras's
default, tensorflow, when it is unset), in the regime of the accuracy
benchmark's `mnist1d_unlabelled` setting:

1. generates MNIST-1D locally (`keras_ptloss.datasets.load_mnist1d`;
   nothing is downloaded) and cuts it into a small labelled split, a
   larger unlabelled transfer split, a labelled validation split and a
   test split;
2. trains a 1-D CNN teacher on the labelled split, once;
3. for each student seed, trains the same MLP student five ways: alone
   on the labelled split; with KD on the transfer split, its temperature
   tuned on the validation split; with PTLoss coefficients chosen without
   training (`select_coefficients`); with PTLoss chosen by the
   student-aware search (`search_coefficients`, the budget of KD's
   tuning), on the logits (the README's choice for likelihood) and on
   standardised logits (`standardize=True`, its choice for accuracy);
4. prints the searches' summaries, a table of test accuracy, NLL, ECE and
   Brier score (mean ± std over the seeds) with what each method chose
   and spent, and a verdict computed from it (the best method on accuracy
   and on NLL, its difference from KD seed by seed and whether it exceeds
   the spread over seeds), and writes three plots and the numbers
   (`results.json`) to the output directory.

Usage: `python -m keras_ptloss demo [--quick] [--output-dir DIR] ...` (or
`python -m keras_ptloss.demo ...`). The demo is not part of the library's
import path: `import keras_ptloss` does not load it (nor matplotlib), and
`keras_ptloss.demo.options` (the command line) loads no backend.
"""

import importlib

from keras_ptloss.demo.options import DEFAULTS
from keras_ptloss.demo.options import QUICK
from keras_ptloss.demo.options import add_arguments
from keras_ptloss.demo.options import check_options

# Names loaded on first use (PEP 562): they import Keras and the backend.
_LAZY_NAMES = {
    "backend_description": "keras_ptloss.demo.pipeline",
    "load_data": "keras_ptloss.demo.pipeline",
    "make_student": "keras_ptloss.demo.pipeline",
    "make_teacher": "keras_ptloss.demo.pipeline",
    "options_from_args": "keras_ptloss.demo.pipeline",
    "run": "keras_ptloss.demo.pipeline",
    "run_from_args": "keras_ptloss.demo.pipeline",
    "scores": "keras_ptloss.demo.pipeline",
    "summarize": "keras_ptloss.demo.pipeline",
    "METHODS": "keras_ptloss.demo.report",
    "expected_calibration_error": "keras_ptloss.demo.report",
    "format_table": "keras_ptloss.demo.report",
    "reliability": "keras_ptloss.demo.report",
    "paired_difference": "keras_ptloss.demo.report",
    "verdict": "keras_ptloss.demo.report",
    "write_plot": "keras_ptloss.demo.report",
}

__all__ = [
    "DEFAULTS",
    "METHODS",
    "QUICK",
    "add_arguments",
    "backend_description",
    "check_options",
    "expected_calibration_error",
    "format_table",
    "load_data",
    "make_student",
    "make_teacher",
    "options_from_args",
    "paired_difference",
    "reliability",
    "run",
    "run_from_args",
    "scores",
    "summarize",
    "verdict",
    "write_plot",
]


def __getattr__(name):
    module = _LAZY_NAMES.get(name)
    if module is None:
        raise AttributeError(
            f"module 'keras_ptloss.demo' has no attribute {name!r}"
        )
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
