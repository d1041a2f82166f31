"""PTLoss as a distillation loss of `keras.distillation.Distiller`.

Keras's own `Distiller` (Keras >= 3.12) takes `DistillationLoss` objects
whose `compute_loss(teacher_outputs, student_outputs)` returns a scalar.
`PTLossDistillation` wraps a `PTLoss` (or `KDLoss`) in that interface. It is
also a `keras.layers.Layer` that tracks the loss's variables (coefficients,
temperature), so the `Distiller` holds them as model state: changing them
(`loss.set_coefficients(...)`, `loss.set_temperature(...)`) during `fit`
reaches the compiled step on every backend, and they are saved with the
model's weights.
"""

import keras

from keras_ptloss.distiller import resolve_loss_flags
from keras_ptloss.losses import KDLoss
from keras_ptloss.losses import PTLoss


@keras.saving.register_keras_serializable(package="keras_ptloss")
class PTLossDistillation(
    keras.distillation.DistillationLoss, keras.layers.Layer
):
    """Adapter: a `PTLoss` or `KDLoss` as a `keras.distillation` loss.

    `keras.distillation.Distiller` passes the teacher's and the student's
    final outputs (usually logits) to `compute_loss`, which returns
    `loss(teacher_outputs, student_outputs)` reduced to a scalar by the
    loss's `reduction`. The loss's `teacher_from_logits` and `from_logits`
    describe the two models' outputs; when the Distiller is built, a
    `teacher_from_logits=None` (not said) is read from the teacher's last
    layer, and a model whose last layer visibly contradicts a flag (no
    activation vs. softmax) raises. Note that `keras.distillation.Distiller`
    computes its total as `w * student_loss + (1 - w) * distillation_loss`
    and that its losses never see labels or sample weights.

    The wrapped loss's variables are tracked by the Distiller (this adapter
    is a layer of it), so `loss.set_coefficients(...)` and
    `loss.set_temperature(...)` during `fit` take effect at the next step on
    every backend.

    Args:
        loss: a `keras_ptloss.PTLoss` or `keras_ptloss.KDLoss`.
        name: optional layer name.

    Example:

    >>> import keras, numpy as np
    >>> from keras_ptloss import PTLoss, PTLossDistillation
    >>> teacher = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> student = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> distiller = keras.distillation.Distiller(
    ...     teacher,
    ...     student,
    ...     PTLossDistillation(PTLoss([0.5])),
    ...     student_loss_weight=0.1,
    ... )
    >>> distiller.compile(
    ...     optimizer="adam", loss="sparse_categorical_crossentropy")
    >>> x, y = np.ones((8, 4)), np.zeros((8,), "int32")
    >>> _ = distiller.fit(x, y, epochs=1, verbose=0)
    """

    def __init__(self, loss, name=None, **kwargs):
        keras.layers.Layer.__init__(self, name=name, **kwargs)
        if not isinstance(loss, (PTLoss, KDLoss)):
            raise ValueError(
                "`loss` must be a keras_ptloss.PTLoss or keras_ptloss.KDLoss."
                f" Received: loss={loss!r}"
            )
        self.loss = loss
        # Tracked by this layer, hence by the Distiller that holds it.
        self._loss_variables = list(loss.variables)
        self.built = True

    @property
    def coefficients(self):
        """The wrapped PTLoss's coefficient variable (`None` for KDLoss)."""
        return getattr(self.loss, "coefficients", None)

    def validate_model_compatibility(self, teacher, student):
        resolve_loss_flags(self.loss, teacher, student, "loss")

    def compute_loss(self, teacher_outputs, student_outputs, **kwargs):
        return self.loss(teacher_outputs, student_outputs)

    def get_config(self):
        return {
            "name": self.name,
            "loss": keras.saving.serialize_keras_object(self.loss),
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["loss"] = keras.saving.deserialize_keras_object(config["loss"])
        return cls(**config)
