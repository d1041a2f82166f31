"""PTLoss and KD as distillation losses of `keras.distillation.Distiller`.

Both adapters are layers holding a copy of the loss, so the `Distiller`
tracks and saves its variables (coefficients, temperature).
"""

import keras
from keras import ops
from keras import tree

from keras_ptloss._core import tempered_log_probs
from keras_ptloss._logits import resolve_teacher_flag
from keras_ptloss.distiller import copy_loss
from keras_ptloss.losses import KDLoss
from keras_ptloss.losses import PTLoss

KL = "kl_divergence"
CROSS_ENTROPY = "categorical_crossentropy"
# A "sum" reduction sums over the examples; these average them.
MEAN_REDUCTIONS = (
    None,
    "sum_over_batch_size",
    "mean",
    "mean_with_sample_weight",
)
ACCEPTED_LOSSES = (
    "'kl_divergence' (also 'kld', keras.losses.kl_divergence or a "
    "keras.losses.KLDivergence), 'categorical_crossentropy' (also "
    "keras.losses.categorical_crossentropy or a "
    "keras.losses.CategoricalCrossentropy), None to skip an output, or a "
    "list, tuple or dict of these with one entry per model output"
)


def _not_accepted(entry, why=""):
    return ValueError(
        f"`loss` must be {ACCEPTED_LOSSES}.{why} Received: loss={entry!r}"
    )


def _divergence(entry):
    """`(kind, summed)` for one leaf of `loss`, or `None` to skip it."""
    if entry is None:
        return None
    resolved = entry
    if isinstance(entry, str):
        try:
            resolved = keras.losses.get(entry)
        except ValueError:
            raise _not_accepted(entry) from None
    if resolved is keras.losses.kl_divergence or isinstance(
        resolved, keras.losses.KLDivergence
    ):
        kind = KL
    elif resolved is keras.losses.categorical_crossentropy or isinstance(
        resolved, keras.losses.CategoricalCrossentropy
    ):
        kind = CROSS_ENTROPY
    else:
        raise _not_accepted(
            entry,
            " Another loss on the tempered logits is"
            " keras.distillation.LogitsDistillation's; a keras_ptloss loss"
            " goes in PTLossDistillation.",
        )
    if not isinstance(resolved, keras.losses.Loss):
        return kind, False
    config = resolved.get_config()
    if config.get("label_smoothing", 0.0) != 0.0:
        raise _not_accepted(entry, " Label smoothing is not supported.")
    if config.get("axis", -1) != -1:
        raise _not_accepted(entry, " The class axis must be -1.")
    if resolved.reduction not in MEAN_REDUCTIONS + ("sum",):
        raise _not_accepted(
            entry, f" Reduction {resolved.reduction!r} is not supported."
        )
    return kind, resolved.reduction == "sum"


def _canonical(entry):
    """A leaf of `loss` as stored: a string, a loss instance or `None`."""
    if entry is keras.losses.kl_divergence:
        return KL
    if entry is keras.losses.categorical_crossentropy:
        return CROSS_ENTROPY
    return entry


def _deserialize_losses(structure):
    """Inverse of `serialize_keras_object` on a structure of losses."""
    if isinstance(structure, dict) and "class_name" in structure:
        return keras.losses.deserialize(structure)
    if isinstance(structure, dict):
        return {k: _deserialize_losses(v) for k, v in structure.items()}
    if isinstance(structure, (list, tuple)):
        return type(structure)(_deserialize_losses(v) for v in structure)
    return structure


def _describe(outputs):
    return tree.map_structure(lambda x: tuple(getattr(x, "shape", ())), outputs)


@keras.saving.register_keras_serializable(package="keras_ptloss")
class PTLossDistillation(
    keras.distillation.DistillationLoss, keras.layers.Layer
):
    """Adapter: a `PTLoss` or `KDLoss` as a `keras.distillation` loss.

    `compute_loss(teacher_outputs, student_outputs)` returns
    `loss(teacher_outputs, student_outputs)` reduced by the loss's
    `reduction`. The adapter wraps its own copy of `loss` (`adapter.loss`);
    its variables are tracked by the Distiller, so
    `adapter.loss.set_coefficients(...)` during `fit` takes effect at the
    next step. When the Distiller is built, a model whose last layer
    contradicts the loss's `teacher_from_logits` or `from_logits` raises,
    and `teacher_from_logits=None` is read from the teacher's last layer.

    Args:
        loss: a `keras_ptloss.PTLoss` or `keras_ptloss.KDLoss`, copied.
        temperature: `None` (default) keeps the loss's temperature; a
            number `T > 0` sets the copy's (as the `temperature` of
            `keras.distillation.LogitsDistillation`).
        name: optional layer name.

    Raises:
        ValueError: for a `loss` of another kind, a `temperature` that is
            not a number `> 0`, or (when the Distiller is built or the loss
            computed) models with several outputs.

    Example:

    >>> import keras, numpy as np
    >>> from keras_ptloss import PTLoss, PTLossDistillation
    >>> teacher = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> student = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> distiller = keras.distillation.Distiller(
    ...     teacher,
    ...     student,
    ...     PTLossDistillation(PTLoss([0.5]), temperature=2.0),
    ...     student_loss_weight=0.1,
    ... )
    >>> distiller.compile(
    ...     optimizer="adam", loss="sparse_categorical_crossentropy")
    >>> x, y = np.ones((8, 4)), np.zeros((8,), "int32")
    >>> _ = distiller.fit(x, y, epochs=1, verbose=0)
    """

    def __init__(self, loss, temperature=None, name=None, **kwargs):
        keras.layers.Layer.__init__(self, name=name, **kwargs)
        if not isinstance(loss, (PTLoss, KDLoss)):
            raise ValueError(
                "`loss` must be a keras_ptloss.PTLoss or keras_ptloss.KDLoss."
                f" Received: loss={loss!r}"
            )
        changes = {} if temperature is None else {"temperature": temperature}
        self.loss = copy_loss(loss, **changes)
        # A Loss is not a layer: this list makes the Distiller track its vars.
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

    def validate_outputs(self, teacher_outputs, student_outputs):
        super().validate_outputs(teacher_outputs, student_outputs)
        if len(tree.flatten(teacher_outputs)) != 1:
            raise ValueError(
                "PTLossDistillation distils one output; the models have "
                f"several: {_describe(teacher_outputs)}. Use one adapter "
                "per output in a custom DistillationLoss, or "
                "KDDistillation(loss=[...]) for KD on several outputs."
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

    Takes the arguments of `keras.distillation.LogitsDistillation`. With
    `p = softmax(t / T)` and `q = softmax(s / T)` for teacher and student
    logits `t` and `s`:

        loss="kl_divergence":            L = T**2 * KL(p || q)
        loss="categorical_crossentropy": L = T**2 * (KL(p || q) + H(p))

    averaged over the examples, computed by `keras_ptloss.KDLoss`. A
    structure of such losses distils a multi-output model (one entry per
    output, `None` skips one; summed). The temperature is the `KDLoss`'s
    variable (`kd.loss.set_temperature(...)`), tracked by the Distiller.

    Args:
        temperature: softmax temperature `T > 0`. Defaults to `3.0`.
        loss: which divergence, as in `LogitsDistillation`:
            `"kl_divergence"` (default; also `"kld"`,
            `keras.losses.kl_divergence`, `keras.losses.KLDivergence()`) or
            `"categorical_crossentropy"` (also its function and class; the
            class's `from_logits` is not read); or a list, tuple or dict of
            these (and `None`) with the structure of the models' outputs.
            A loss instance with `reduction="sum"` sums over the examples.
        teacher_from_logits: whether the teacher outputs logits (`None`:
            read from its last layer). Defaults to `True`.
        from_logits: whether the student outputs logits. Defaults to `True`.
        chunk_size: `None` (default), or rows (tokens) per chunk of the
            memory-lean path for large vocabularies (see `KDLoss`).
        name: optional layer name.

    Returns:
        `compute_loss(teacher_outputs, student_outputs)` returns `L` above
        as a scalar (the sum over the outputs of a multi-output model).

    Raises:
        ValueError: for a `temperature` that is not a number `> 0`, a
            `loss` other than those above (naming the accepted values),
            a `loss` of only `None`, or (when the Distiller is built or the
            loss computed) outputs whose structure is not that of `loss`.

    Example:

    >>> import keras, numpy as np
    >>> from keras_ptloss import KDDistillation
    >>> rng = np.random.default_rng(0)
    >>> t = (3 * rng.normal(size=(8, 10))).astype("float32")
    >>> s = (3 * rng.normal(size=(8, 10))).astype("float32")
    >>> kd = KDDistillation(temperature=3.0, loss="kl_divergence")
    >>> round(float(kd.compute_loss(t, s)), 4)
    5.5407
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
        loss=KL,
        teacher_from_logits=True,
        from_logits=True,
        chunk_size=None,
        name=None,
        **kwargs,
    ):
        structure = tree.map_structure(_canonical, loss)
        divergences = [_divergence(e) for e in tree.flatten(structure)]
        if all(d is None for d in divergences):
            raise ValueError(
                "`loss` must name a divergence for at least one output "
                f"(not only None). Received: loss={loss!r}"
            )
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
        # Bypasses layer tracking, which would wrap lists/dicts for keras.tree.
        object.__setattr__(self, "_loss_structure", structure)
        object.__setattr__(self, "_divergences", divergences)

    @property
    def temperature(self):
        """The temperature `T` as a float; assigning sets the variable."""
        return self.loss.temperature

    @temperature.setter
    def temperature(self, value):
        self.loss.set_temperature(value)

    def validate_outputs(self, teacher_outputs, student_outputs):
        keras.distillation.DistillationLoss.validate_outputs(
            self, teacher_outputs, student_outputs
        )
        self._check_structure(teacher_outputs)

    def _check_structure(self, outputs):
        try:
            tree.assert_same_structure(
                tree.lists_to_tuples(self._loss_structure),
                tree.lists_to_tuples(outputs),
            )
        except (ValueError, TypeError):
            raise ValueError(
                "`loss` must have the structure of the models' outputs: one "
                "entry per output (None to skip one). Received: "
                f"loss={self._loss_structure!r} for outputs "
                f"{_describe(outputs)}"
            ) from None

    def _divergence_value(self, divergence, teacher, student):
        kind, summed = divergence
        value = self.loss(teacher, student)
        if kind == CROSS_ENTROPY:
            # CE = KL + H(p): the teacher's entropy, a constant to the student.
            temperature = self.loss.temperature_variable
            log_p = tempered_log_probs(
                ops.stop_gradient(ops.cast(teacher, "float32")),
                temperature,
                bool(self.loss.teacher_from_logits),
            )
            entropy = -ops.sum(ops.exp(log_p) * log_p, axis=-1)
            scale = ops.square(ops.cast(temperature, "float32"))
            value = value + ops.cast(scale * ops.mean(entropy), value.dtype)
        if summed:
            rows = ops.size(student) // ops.shape(student)[-1]
            value = value * ops.cast(rows, value.dtype)
        return value

    def compute_loss(self, teacher_outputs, student_outputs, **kwargs):
        self.validate_outputs(teacher_outputs, student_outputs)
        total = None
        for divergence, teacher, student in zip(
            self._divergences,
            tree.flatten(teacher_outputs),
            tree.flatten(student_outputs),
            strict=True,
        ):
            if divergence is None:
                continue
            value = self._divergence_value(divergence, teacher, student)
            total = value if total is None else total + value
        return total

    def get_config(self):
        return {
            "name": self.name,
            "temperature": self.loss.temperature,
            "loss": keras.saving.serialize_keras_object(self._loss_structure),
            "teacher_from_logits": self.loss.teacher_from_logits,
            "from_logits": self.loss.from_logits,
            "chunk_size": self.loss.chunk_size,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if "loss" in config:
            config["loss"] = _deserialize_losses(config["loss"])
        return cls(**config)
