"""keras-ptloss: PTLoss knowledge distillation for Keras 3.

Public names load lazily (PEP 562). The modules registering serializable
classes are imported eagerly, since `keras.saving.load_model` finds them
no other way; in the command's own process `keras_ptloss.cli` imports them.
"""

from importlib import import_module as _import_module

from keras_ptloss._command import started_as_command as _started_as_command
from keras_ptloss.version import __version__

# Everything else is imported from its module (docs/api.md, "Advanced").
_EXPORTS = {
    "keras_ptloss.losses": ("PTLoss", "KDLoss", "pt_loss", "kd_loss"),
    "keras_ptloss.baselines": ("DKDLoss", "LSKDLoss", "KDCELoss", "Poly1Loss"),
    "keras_ptloss.top_k": ("TopKPTLoss", "precompute_top_k"),
    "keras_ptloss.distiller": ("Distiller",),
    "keras_ptloss.callbacks": ("ReestimateCoefficients",),
    "keras_ptloss.search": ("search_coefficients", "SearchResult"),
    "keras_ptloss.selection": ("select_coefficients", "SelectionResult"),
    "keras_ptloss.calibration": ("calibrate", "CalibratedModel"),
    "keras_ptloss.interop": ("KDDistillation", "PTLossDistillation"),
    "keras_ptloss.vocabulary": ("align_vocabulary",),
}
_MODULE_OF = {
    name: module for module, names in _EXPORTS.items() for name in names
}

__all__ = list(_MODULE_OF)

# The modules that register classes with `keras.saving` when imported.
_SERIALIZABLE = (
    "keras_ptloss.baselines",
    "keras_ptloss.calibration",
    "keras_ptloss.distiller",
    "keras_ptloss.interop",
    "keras_ptloss.losses",
    "keras_ptloss.population",
    "keras_ptloss.top_k",
)


def _register_serializable():
    """Imports `_SERIALIZABLE`, registering their classes with Keras."""
    for module in _SERIALIZABLE:
        _import_module(module)


def __getattr__(name):
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(_import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))


if not _started_as_command():
    _register_serializable()
