"""PTLoss as a distillation loss of `keras.distillation.Distiller`.

Keras's own `Distiller` (Keras >= 3.12) takes `DistillationLoss` objects
whose `compute_loss(teacher_outputs, student_outputs)` returns a scalar.
`PTLossDistillation` wraps a `PTLoss` (or `KDLoss`) in that interface. It is
also a `keras.layers.Layer`, so the `Distiller` tracks the loss's coefficient
variable as model state: assigning it (`loss.set_coefficients(...)`) during
`fit` reaches the compiled step on every backend, and it is saved with the
model's weights.
"""

import keras

from keras_ptloss.distiller import check_output_kind
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
    describe the two models' outputs; a model whose last layer visibly
    contradicts them (no activation vs. softmax) raises when the Distiller
    is built. Note that `keras.distillation.Distiller` computes its total as
    `w * student_loss + (1 - w) * distillation_loss` and that its losses
    never see labels or sample weights.

    The wrapped `PTLoss`'s coefficient variable is tracked by the Distiller
    (this adapter is a layer of it), so `loss.set_coefficients(...)` during
    `fit` takes effect at the next step on every backend. Its temperature is
    a Python float; `keras_ptloss.ReestimateCoefficients` rebuilds the
    train function when it changes it.

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
    ...     PTLossDistillation(PTLoss([0.5], teacher_from_logits=True)),
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
        if isinstance(loss, PTLoss):
            # Tracked by this layer, hence by the Distiller that holds it.
            self.coefficients = loss.coefficients
        else:
            self.coefficients = None
        self.built = True

    def validate_model_compatibility(self, teacher, student):
        check_output_kind(
            teacher,
            self.loss.teacher_from_logits,
            "teacher",
            "teacher_from_logits",
            "loss",
        )
        check_output_kind(
            student, self.loss.from_logits, "student", "from_logits", "loss"
        )

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
