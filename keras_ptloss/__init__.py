"""keras-ptloss: PTLoss knowledge distillation for Keras 3.

`__all__` lists the public API. The data helpers (`load_mnist1d`,
`GaussianMixture`, ...) live in `keras_ptloss.datasets`, outside the
library's import path: they are loaded on first use, so `import
keras_ptloss` loads neither them nor the demo (`keras_ptloss.demo`).
"""

import importlib

# First: in the command line's own process only, Keras is imported without
# TensorFlow's start-up notices (`keras_ptloss.cli.started_as_command`).
from keras_ptloss import cli
from keras_ptloss.baselines import DKDLoss
from keras_ptloss.baselines import KDCELoss
from keras_ptloss.baselines import LSKDLoss
from keras_ptloss.baselines import Poly1Loss
from keras_ptloss.baselines import dkd_loss
from keras_ptloss.baselines import dkd_terms
from keras_ptloss.baselines import kd_ce_loss
from keras_ptloss.baselines import lskd_loss
from keras_ptloss.baselines import pack_targets
from keras_ptloss.baselines import poly1_loss
from keras_ptloss.baselines import unpack_targets
from keras_ptloss.calibration import CalibratedModel
from keras_ptloss.calibration import TemperatureScaling
from keras_ptloss.calibration import calibrate
from keras_ptloss.calibration import expected_calibration_error
from keras_ptloss.calibration import fit_temperature
from keras_ptloss.callbacks import ReestimateCoefficients
from keras_ptloss.coefficients import convexity_margin
from keras_ptloss.distiller import Distiller
from keras_ptloss.interop import KDDistillation
from keras_ptloss.interop import PTLossDistillation
from keras_ptloss.losses import KDLoss
from keras_ptloss.losses import PTLoss
from keras_ptloss.losses import kd_loss
from keras_ptloss.losses import lean_loss
from keras_ptloss.losses import pt_loss
from keras_ptloss.losses import standardize_logits
from keras_ptloss.population import StudentPopulation
from keras_ptloss.proxy import ProxyTeacherConvergenceError
from keras_ptloss.proxy import closeness
from keras_ptloss.proxy import proxy_teacher
from keras_ptloss.search import Candidate
from keras_ptloss.search import SearchResult
from keras_ptloss.search import propose_candidates
from keras_ptloss.search import search_coefficients
from keras_ptloss.selection import SelectionResult
from keras_ptloss.selection import select_coefficients
from keras_ptloss.sparse import SparsePTLoss
from keras_ptloss.sparse import pack_top_k
from keras_ptloss.sparse import sparse_pt_loss
from keras_ptloss.sparse import unpack_top_k
from keras_ptloss.sparse_selection import select_sparse_coefficients
from keras_ptloss.sparse_selection import sparse_proxy_teacher
from keras_ptloss.version import __version__
from keras_ptloss.vocabulary import align_vocabulary

# Public names loaded on first use (PEP 562), by the module that holds them.
_LAZY_NAMES = {
    "GaussianMixture": "keras_ptloss.datasets",
    "HiddenMarkovLanguage": "keras_ptloss.datasets",
    "load_digits": "keras_ptloss.datasets",
    "load_mnist1d": "keras_ptloss.datasets",
    "load_tfds": "keras_ptloss.datasets",
    "make_gaussian_mixture": "keras_ptloss.datasets",
    "make_language": "keras_ptloss.datasets",
    "noisy_labels": "keras_ptloss.datasets",
    "split_dataset": "keras_ptloss.datasets",
}

__all__ = [
    # losses
    "KDLoss",
    "PTLoss",
    "kd_loss",
    "lean_loss",
    "pt_loss",
    # baselines
    "DKDLoss",
    "KDCELoss",
    "LSKDLoss",
    "Poly1Loss",
    "dkd_loss",
    "dkd_terms",
    "kd_ce_loss",
    "lskd_loss",
    "pack_targets",
    "poly1_loss",
    "standardize_logits",
    "unpack_targets",
    # training
    "Distiller",
    "KDDistillation",
    "PTLossDistillation",
    "ReestimateCoefficients",
    # proxy teacher and coefficient selection
    "ProxyTeacherConvergenceError",
    "SelectionResult",
    "closeness",
    "convexity_margin",
    "proxy_teacher",
    "select_coefficients",
    # student-aware search
    "Candidate",
    "SearchResult",
    "StudentPopulation",
    "propose_candidates",
    "search_coefficients",
    # top-k (sparse) teachers
    "SparsePTLoss",
    "pack_top_k",
    "select_sparse_coefficients",
    "sparse_proxy_teacher",
    "sparse_pt_loss",
    "unpack_top_k",
    # calibration (temperature scaling)
    "CalibratedModel",
    "TemperatureScaling",
    "calibrate",
    "expected_calibration_error",
    "fit_temperature",
    # teacher and student vocabularies
    "align_vocabulary",
    # data (loaded on first use)
    *_LAZY_NAMES,
]


def __getattr__(name):
    module = _LAZY_NAMES.get(name)
    if module is None:
        raise AttributeError(f"module 'keras_ptloss' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY_NAMES))
