"""Loss hyper-parameters held in non-trainable variables (private)."""

import keras
import numpy as np


def hyperparameter_variable(value, name):
    return keras.Variable(
        np.asarray(value, dtype="float32"),
        trainable=False,
        dtype="float32",
        name=name,
    )


def read_scalar(variable):
    # `.value` of a MirroredVariable fails inside a tf.distribute scope.
    return float(np.asarray(variable.numpy()))


class HyperparameterLoss(keras.losses.Loss):
    """A loss whose `HYPERPARAMETERS` are float32 scalar variables."""

    HYPERPARAMETERS = ()
    # Whether a Distiller passes `{"teacher": ..., "label": ...}` as y_true.
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
        """The variable holding `T` (`None` if none)."""
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
