"""PTLoss as a distillation loss of `keras.distillation.Distiller`.

Keras's own `Distiller` (Keras >= 3.12) takes `DistillationLoss` objects
whose `compute_loss(teacher_outputs, student_outputs)` returns a scalar.
`PTLossDistillation` wraps a `PTLoss` (or `KDLoss`) in that interface, and
`KDDistillation` is Hinton's KD in it (the fix for the default of
`keras.distillation.LogitsDistillation`, which is not KD). Both are
`keras.layers.Layer`s that hold a copy of the loss and track its variables
(coefficients, temperature), so the `Distiller` holds them as model state:
changing them (`adapter.loss.set_coefficients(...)`,
`adapter.loss.set_temperature(...)`) during `fit` reaches the compiled step
on every backend, and they are saved with the model's weights.
"""

import keras

from keras_ptloss._logits import resolve_teacher_flag
from keras_ptloss.distiller import copy_loss
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
    describe the two models' outputs (teacher logits unless the loss has
    `teacher_from_logits=False`); when the Distiller is built, a model
    whose last layer visibly contradicts a flag (no activation vs.
    softmax) raises, and a `teacher_from_logits=None` is read from the
    teacher's last layer (into the adapter's copy of the loss).
    Note that `keras.distillation.Distiller` computes its total as
    `w * student_loss + (1 - w) * distillation_loss` and that its losses
    never see labels or sample weights.

    The adapter wraps its own copy of `loss` (`adapter.loss`; the object
    passed in is left as it was). The copy's variables are tracked by the
    Distiller (this adapter is a layer of it), so
    `adapter.loss.set_coefficients(...)` and
    `adapter.loss.set_temperature(...)` during `fit` take effect at the next
    step on every backend.

    Args:
        loss: a `keras_ptloss.PTLoss` or `keras_ptloss.KDLoss`, copied.
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
        self.loss = copy_loss(loss)
        # A keras.losses.Loss is not a layer: this layer holds the loss's
        # variables (tracked as its own, hence by the Distiller).
        self.schedulable_variables = list(self.loss.variables)
        self.built = True

    @property
    def coefficients(self):
        """The wrapped PTLoss's coefficient variable (`None` for KDLoss)."""
        return getattr(self.loss, "coefficients", None)

    def validate_model_compatibility(self, teacher, student):
        # The adapter's own copy takes the flag read from the teacher.
        self.loss.teacher_from_logits = resolve_teacher_flag(
            self.loss, teacher, student, "loss"
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


@keras.saving.register_keras_serializable(package="keras_ptloss")
class KDDistillation(PTLossDistillation):
    """Hinton's knowledge distillation as a `keras.distillation` loss.

    From the teacher's logits `t` and the student's logits `s`:

        L = T**2 * mean_batch KL(softmax(t / T) || softmax(s / T))

    computed by `keras_ptloss.KDLoss` with log-softmax (no clipping). A
    drop-in for `keras.distillation.LogitsDistillation(temperature=T)` in
    `keras.distillation.Distiller`, which it fixes: in Keras 3.15.1 that
    loss's default `loss="kl_divergence"` resolves to the function
    `keras.losses.kl_divergence`, not a `keras.losses.KLDivergence`
    instance, so its softmax-and-`T**2` branch is skipped and it computes

        mean_batch sum_k c(t_k / T) * log(c(t_k / T) / c(s_k / T))

    on the tempered logits themselves, `c` clipping to `[1e-7, 1]`: not a
    divergence between distributions, not invariant to a shift of the
    logits, and without the `T**2` factor. On 8 x 10 random logits (scale
    3, T = 3) it gives 28.53 where KD is 5.54; after adding 10 to every
    logit, 0.012. `KDDistillation(temperature=T)` computes KD. (Keras's
    `LogitsDistillation(T, loss=keras.losses.KLDivergence())` takes the
    softmax branch too, with probabilities clipped at 1e-7.)

    The temperature lives in the `KDLoss`'s non-trainable variable, tracked
    by the Distiller (`kd.loss.set_temperature(...)` during `fit` takes
    effect at the next step) and saved with its weights.

    Args:
        temperature: softmax temperature `T > 0`. Defaults to `3.0` (as
            `LogitsDistillation`).
        teacher_from_logits: whether the teacher outputs logits. Defaults
            to `True` (as `LogitsDistillation`, which reads logits); checked
            against the teacher's last layer when the Distiller is built
            (`None`: read from it; `False` for a softmax teacher).
        from_logits: whether the student outputs logits. Defaults to
            `True`.
        chunk_size: `None` (default), or rows (tokens) per chunk of the
            memory-lean path for large vocabularies (see `KDLoss`).
        name: optional layer name.

    Returns:
        `compute_loss(teacher_outputs, student_outputs)` returns the loss
        above as a scalar: the mean over the batch (and any sequence axes)
        of `T**2 * KL` per example.

    Example:

    >>> import keras, numpy as np
    >>> from keras_ptloss import KDDistillation
    >>> rng = np.random.default_rng(0)
    >>> t = (3 * rng.normal(size=(8, 10))).astype("float32")
    >>> s = (3 * rng.normal(size=(8, 10))).astype("float32")
    >>> kd = KDDistillation(temperature=3.0)
    >>> round(float(kd.compute_loss(t, s)), 4)
    5.5407
    >>> round(float(kd.compute_loss(t + 10, s + 10)), 4)  # shift-invariant
    5.5407
    >>> keras_default = keras.distillation.LogitsDistillation(temperature=3.0)
    >>> round(float(keras_default.compute_loss(t, s)), 2)  # not KD
    28.53
    >>> teacher = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> student = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> distiller = keras.distillation.Distiller(
    ...     teacher, student, KDDistillation(temperature=3.0))
    >>> distiller.compile(
    ...     optimizer="adam", loss="sparse_categorical_crossentropy")
    >>> x, y = np.ones((8, 4)), np.zeros((8,), "int32")
    >>> _ = distiller.fit(x, y, epochs=1, verbose=0)

    Reference:
        Hinton, Vinyals and Dean, "Distilling the Knowledge in a Neural
        Network", 2015.
    """

    def __init__(
        self,
        temperature=3.0,
        teacher_from_logits=True,
        from_logits=True,
        chunk_size=None,
        name=None,
        **kwargs,
    ):
        super().__init__(
            KDLoss(
                temperature=temperature,
                from_logits=from_logits,
                teacher_from_logits=teacher_from_logits,
                chunk_size=chunk_size,
            ),
            name=name,
            **kwargs,
        )

    @property
    def temperature(self):
        """The temperature `T` as a Python float (the loss's variable)."""
        return self.loss.temperature

    def get_config(self):
        return {
            "name": self.name,
            "temperature": self.loss.temperature,
            "teacher_from_logits": self.loss.teacher_from_logits,
            "from_logits": self.loss.from_logits,
            "chunk_size": self.loss.chunk_size,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)
