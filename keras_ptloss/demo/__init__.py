"""MNIST-1D distillation demo: PTLoss's default pipeline and an unreliable
teacher.

Runs offline, end to end, on the backend named by `KERAS_BACKEND` (Keras's
default, tensorflow, when it is unset), in the regime of the accuracy
benchmark's `mnist1d_noisy` setting with a smaller transfer split:

1. generates MNIST-1D locally (`keras_ptloss.datasets.load_mnist1d`;
   nothing is downloaded) and cuts it into a small labelled split, a
   larger unlabelled transfer split, a labelled validation split and a
   test split;
2. trains a 1-D CNN teacher on the labelled split with a fraction of its
   labels flipped (`--noise-rate`, by default 40 %, the benchmark's;
   symmetric noise by `keras_ptloss.datasets.noisy_labels`): an
   unreliable teacher. `--teachers clean,noisy` also trains the same CNN
   on the labels as they are and repeats steps 3-4 for it;
3. for each teacher and each student seed, trains the same MLP student
   four ways on the same initial weights and batch order: alone on the
   teacher's labelled split; with KD and with LS-KD (KD on z-scored
   logits) on the transfer split, each with its temperature tuned on the
   validation split; and with PTLoss as the library recommends:
   `search_coefficients` with its defaults, given KD's tuning budget of
   student-epochs. Every student is calibrated the same way (temperature
   scaling fitted on the validation split: `keras_ptloss.calibrate`, which
   the search applies to its winner itself);
4. prints the first seed's search summary per teacher, one table per
   teacher of test accuracy and of NLL and ECE before and after
   calibration (mean ± std over the seeds) with what each method chose and
   spent, and a verdict computed from them: PTLoss minus KD and minus
   LS-KD, seed by seed, and whether each difference exceeds its spread over
   the seeds; per teacher, whether PTLoss helps, ties or falls behind in
   this run; and the spread below which the run cannot tell a difference
   from the variation between seeds. It writes the plots and the numbers
   (`results.json`) to the output directory.

The defaults (40 teacher and student epochs, 3 seeds, one teacher) take
about 5 to 6 minutes on 2 CPU cores; `--quick` runs tiny sizes in seconds (for
tests: its numbers mean nothing).

Usage: `python -m keras_ptloss demo [--quick] [--teachers clean,noisy]
[--output-dir DIR] ...` (or `python -m keras_ptloss.demo ...`). The demo
is not part of the library's import path: `import keras_ptloss` does not
load it (nor matplotlib), and `keras_ptloss.demo.options` (the command
line) loads no backend.
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
