"""Loss hyper-parameters held in non-trainable variables (private).

A value a compiled step reads must be a variable the model tracks: a Python
float is frozen into the step on JAX (docs/design.md, "Keras traps"). Every
loss of the package with schedulable hyper-parameters (`PTLoss`, `KDLoss`,
the baselines) keeps them in float32 `keras.Variable`s made here, exposed
as `loss.variables`, which a `keras_ptloss.Distiller` tracks as state.
"""

import keras
import numpy as np


def hyperparameter_variable(value, name):
    """A non-trainable float32 `keras.Variable` holding `value`."""
    return keras.Variable(
        np.asarray(value, dtype="float32"),
        trainable=False,
        dtype="float32",
        name=name,
    )


def read_scalar(variable):
    """A scalar variable's value as a Python float."""
    # `.numpy()`, not `.value`: a scalar MirroredVariable's value cannot be
    # converted inside a tf.distribute scope.
    return float(np.asarray(variable.numpy()))


class HyperparameterLoss(keras.losses.Loss):
    """A `keras.losses.Loss` whose scalar hyper-parameters are variables.

    A subclass lists them in `HYPERPARAMETERS` as `(name, check)` pairs and
    calls `_create_variables` from its `__init__`: each becomes a
    non-trainable float32 scalar `keras.Variable` named
    `f"{loss.name}_{name}"`, read as a Python float by `_get(name)` and
    assigned, after `check(value, name)`, by `_set(name, value)`.
    `get_config` holds their current values.

    `__call__` runs the `_check_host` hook on the inputs as given (numpy
    arrays can be checked on the host; `keras.losses.Loss.__call__` turns
    them into tensors, which are not read back) before the Keras call.
    """

    HYPERPARAMETERS = ()
    # Whether a Distiller must pass `{"teacher": ..., "label": ...}` (the
    # targets convention of `keras_ptloss.baselines`) instead of the
    # teacher outputs.
    needs_labels = False

    def _create_variables(self, values):
        self._variables = {
            name: hyperparameter_variable(
                check(values[name], name), f"{self.name}_{name}"
            )
            for name, check in self.HYPERPARAMETERS
        }

    def _get(self, name):
        return read_scalar(self._variables[name])

    def _set(self, name, value):
        check = dict(self.HYPERPARAMETERS)[name]
        self._variables[name].assign(np.float32(check(value, name)))

    def _check_host(self, y_true, y_pred):
        """Checks inputs before they become tensors (default: none)."""

    def __call__(self, y_true, y_pred, sample_weight=None):
        self._check_host(y_true, y_pred)
        return super().__call__(y_true, y_pred, sample_weight=sample_weight)

    @property
    def variables(self):
        """The loss's non-trainable hyper-parameter variables."""
        return list(self._variables.values())

    @property
    def temperature_variable(self):
        """The non-trainable scalar variable holding `T` (`None` if none)."""
        return self._variables.get("temperature")

    def set_temperature(self, temperature):
        """Validates and assigns a new temperature `T > 0`."""
        if "temperature" not in self._variables:
            raise ValueError(
                f"{type(self).__name__} has no temperature. Received: "
                f"temperature={temperature!r}"
            )
        self._set("temperature", temperature)

    def get_config(self):
        config = super().get_config()
        config.update(
            {name: self._get(name) for name, _ in self.HYPERPARAMETERS}
        )
        return config
