"""keras-ptloss: PTLoss knowledge distillation for Keras 3.

`__all__` lists the public API. Each name is loaded from the module that
defines it on first use (PEP 562), e.g. `keras_ptloss.PTLoss` or
`from keras_ptloss import PTLoss`.

`import keras_ptloss` imports the modules whose classes Keras deserializes
by their registered names (`keras_ptloss>PTLoss`, ...): a registration
happens when its module is imported, and `keras.saving.load_model` finds
no other way to them. It does not import the command line
(`keras_ptloss.cli`), the demo (`keras_ptloss.demo`) or the data helpers
(`keras_ptloss.datasets`, a subpackage imported on its own), and beyond
what importing Keras does it changes no logging setting, environment
variable or file descriptor.

The command's own process (`python -m keras_ptloss`, the `keras-ptloss`
script) runs this file before its own code; there these modules are left
to `keras_ptloss.cli`, which imports Keras first, without TensorFlow's
start-up notices, and then them.
"""

from importlib import import_module as _import_module

from keras_ptloss._command import started_as_command as _started_as_command
from keras_ptloss.version import __version__

# The public names, by the module that defines them. Everything else is
# imported from its module (docs/api.md, "Advanced"), e.g.
# `keras_ptloss.baselines.dkd_loss` or `keras_ptloss.proxy.proxy_teacher`.
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
