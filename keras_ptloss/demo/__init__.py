"""MNIST-1D distillation demo: PTLoss's default pipeline and an unreliable
teacher.

Runs offline on the backend of `KERAS_BACKEND`: generates MNIST-1D, trains
a CNN teacher on labels with `--noise-rate` flipped (`--teachers
clean,noisy` adds a clean one), then per teacher and student seed trains
an MLP student alone, with tuned KD, tuned LS-KD and with PTLoss chosen by
`search_coefficients` under KD's budget of student-epochs, on the same
initial weights and batch order. Every student is calibrated
(`keras_ptloss.calibrate`). It prints tables of test accuracy, NLL and ECE
over the seeds and a verdict computed from them, and writes plots and
`results.json`. `--quick` runs tiny sizes (for tests).

Usage: `python -m keras_ptloss demo [--quick] [--output-dir DIR] ...`.
`import keras_ptloss` does not load the demo.
"""

import importlib

from keras_ptloss.demo.options import DEFAULTS
from keras_ptloss.demo.options import QUICK
from keras_ptloss.demo.options import TEACHER_NAMES
from keras_ptloss.demo.options import TUNE_BUDGET
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
    "BASELINES": "keras_ptloss.demo.report",
    "METHODS": "keras_ptloss.demo.report",
    "SCORES": "keras_ptloss.demo.report",
    "TEACHERS": "keras_ptloss.demo.report",
    "format_table": "keras_ptloss.demo.report",
    "outcome": "keras_ptloss.demo.report",
    "paired_difference": "keras_ptloss.demo.report",
    "reliability": "keras_ptloss.demo.report",
    "resolution": "keras_ptloss.demo.report",
    "teacher_outcome": "keras_ptloss.demo.report",
    "verdict": "keras_ptloss.demo.report",
    "write_plot": "keras_ptloss.demo.report",
}

__all__ = [
    "BASELINES",
    "DEFAULTS",
    "METHODS",
    "QUICK",
    "SCORES",
    "TEACHERS",
    "TEACHER_NAMES",
    "TUNE_BUDGET",
    "add_arguments",
    "backend_description",
    "check_options",
    "format_table",
    "load_data",
    "make_student",
    "make_teacher",
    "options_from_args",
    "outcome",
    "paired_difference",
    "reliability",
    "resolution",
    "run",
    "run_from_args",
    "scores",
    "summarize",
    "teacher_outcome",
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
