"""`Distiller`: a teacher-student `keras.Model` trained with PTLoss or KD.

The distillation loss owns its state (PTLoss's coefficients, the
temperature) in non-trainable variables; the Distiller tracks them as model
state and calls the loss itself, so a callback that changes the loss
(`loss.set_coefficients`, `loss.set_temperature`) changes the next step on
every backend, with or without jit (docs/design.md, "Keras traps"). Offline
teacher outputs live in `keras_ptloss.teacher_outputs`.
"""

import inspect
import math

import keras
import numpy as np
from keras import ops

from keras_ptloss import teacher_outputs as offline
from keras_ptloss._checks import check_number
from keras_ptloss._checks import shapes_match
from keras_ptloss._checks import vocabulary_hint
from keras_ptloss.baselines import TARGET_KEYS
from keras_ptloss.baselines import DKDLoss
from keras_ptloss.baselines import KDCELoss
from keras_ptloss.baselines import LSKDLoss
from keras_ptloss.baselines import Poly1Loss
from keras_ptloss.losses import KDLoss
from keras_ptloss.losses import PTLoss
from keras_ptloss.vocabulary import apply_alignment
from keras_ptloss.vocabulary import check_alignment
from keras_ptloss.vocabulary import check_alignment_arguments
from keras_ptloss.vocabulary import check_padding_mass

# Re-exported for users of the batch format.
STUDENT_INPUTS = offline.STUDENT_INPUTS
TEACHER_OUTPUTS = offline.TEACHER_OUTPUTS
# The losses a Distiller trains with: PTLoss, KD and the baselines.
DISTILLATION_LOSSES = (PTLoss, KDLoss, KDCELoss, DKDLoss, LSKDLoss, Poly1Loss)

# `keras.Model.fit`'s parameters after `x, y, batch_size`, in order: extra
# positional arguments of `Distiller.fit` map onto these.
FIT_POSITIONAL = tuple(list(inspect.signature(keras.Model.fit).parameters)[4:])


def final_activation(model):
    """What a model's last layer emits, and that layer's name.

    Returns:
        `(kind, layer_name)`: `kind` is `"softmax"` (probabilities),
        `"linear"` (logits) or `None` (unknown, or no layers).
    """
    layers = getattr(model, "layers", None)
    if not layers:
        return None, None
    layer = layers[-1]
    if isinstance(layer, keras.layers.Softmax):
        return "softmax", layer.name
    activation = getattr(layer, "activation", None)
    if activation is keras.activations.softmax:
        return "softmax", layer.name
    if activation is keras.activations.linear:
        return "linear", layer.name
    return None, layer.name


def check_output_kind(model, outputs_logits, role, flag, loss_arg=None):
    """Raises if a model's last layer contradicts a logits flag.

    A last layer without activation outputs logits; a softmax last layer
    outputs probabilities. Reading one as the other silently computes a wrong
    loss (or calibration), so the contradiction is reported where the model
    meets the flag.

    Args:
        model: the teacher, student or calibrated `keras.Model`.
        outputs_logits: what the flag assumes about `model`'s outputs.
        role: `"teacher"`, `"student"` or `"model"`, for the message.
        flag: the argument holding the assumption (`"from_logits"` or
            `"teacher_from_logits"`).
        loss_arg: the name of the argument that received the loss whose
            flag it is, or `None` when `flag` was passed directly.
    """
    kind, layer_name = final_activation(model)
    if kind is None:
        return
    if kind == "linear" and not outputs_logits:
        given, fix = _flag_phrases(flag, False, loss_arg)
        raise ValueError(
            f"The {role}'s last layer ({layer_name!r}) has no activation, so "
            f"the {role} outputs logits, but {given} (it expects "
            f"probabilities). {fix}. Received: {flag}=False"
        )
    if kind == "softmax" and outputs_logits:
        given, fix = _flag_phrases(flag, True, loss_arg)
        raise ValueError(
            f"The {role}'s last layer ({layer_name!r}) applies a softmax, so "
            f"the {role} outputs probabilities, but {given} (it expects "
            f"logits). {fix}, or remove the softmax. Received: {flag}=True"
        )


def _flag_phrases(flag, value, loss_arg):
    """What was given and how to fix it, for `check_output_kind`."""
    if loss_arg is None:
        return f"{flag}={value} was passed", f"Pass `{flag}={not value}`"
    return (
        f"`{loss_arg}` was built with {flag}={value}",
        f"Build the loss with {flag}={not value}, e.g. "
        f"`PTLoss(..., {flag}={not value})`",
    )


def teacher_emits_logits(teacher, teacher_from_logits=None, loss_arg="loss"):
    """Whether `teacher` emits logits: the flag, checked, or its last layer.

    Args:
        teacher: the teacher `keras.Model`.
        teacher_from_logits: `True`/`False` (checked against the teacher's
            last layer) or `None` (not said: read from the last layer).
        loss_arg: the argument that received the loss, for messages.

    Returns:
        A bool.

    Raises:
        ValueError: if the flag contradicts the last layer, or if the flag
            is `None` and the last layer is neither linear nor softmax.
    """
    if teacher_from_logits is not None:
        check_output_kind(
            teacher,
            teacher_from_logits,
            "teacher",
            "teacher_from_logits",
            loss_arg,
        )
        return bool(teacher_from_logits)
    kind, layer = final_activation(teacher)
    if kind is None:
        raise ValueError(
            "Cannot tell whether the teacher outputs logits or probabilities "
            f"(its last layer {layer!r} is neither linear nor softmax). "
            f"Build `{loss_arg}` with teacher_from_logits=True or False. "
            "Received: teacher_from_logits=None"
        )
    return kind == "linear"


def resolve_loss_flags(loss, teacher, student, loss_arg="loss"):
    """Fixes a PTLoss/KDLoss's logits flags for a teacher-student pair.

    A loss whose `teacher_from_logits` is `None` gets the teacher's kind
    (`teacher_emits_logits`); an explicit flag, and the student's
    `from_logits`, are checked against the models' last layers. The loss's
    `standardize` then needs logits on both sides.
    """
    if hasattr(loss, "teacher_from_logits"):  # Poly1Loss reads no teacher
        loss.teacher_from_logits = teacher_emits_logits(
            teacher, loss.teacher_from_logits, loss_arg
        )
    check_output_kind(
        student,
        getattr(loss, "from_logits", True),
        "student",
        "from_logits",
        loss_arg,
    )
    if getattr(loss, "standardize", False) and not loss.teacher_from_logits:
        raise ValueError(
            f"`{loss_arg}` has standardize=True, which needs teacher logits, "
            "but the teacher outputs probabilities (its last layer applies "
            "a softmax). Remove the softmax or use standardize=False. "
            "Received: teacher_from_logits=False"
        )


def needs_labels(loss):
    """Whether a distillation loss reads the labels besides the teacher.

    Such a loss (`needs_labels = True`: `KDCELoss`, `DKDLoss`, `Poly1Loss`)
    gets `{"teacher": teacher_outputs, "label": y}` from the Distiller (the
    targets convention of `keras_ptloss.baselines`).
    """
    return bool(getattr(loss, "needs_labels", False))


def _require_labels(y):
    if y is None:
        raise ValueError(
            "The distillation loss needs labels (it has needs_labels=True: "
            "KDCELoss, DKDLoss and Poly1Loss read the hard label as well as "
            "the teacher): pass `y` to fit/evaluate, e.g. the teacher's "
            "argmax on an unlabelled transfer set. Received: y=None"
        )


def _check_weight(value):
    return check_number(value, "student_loss_weight", 0.0, 1.0)


def _static_shape(model, attr):
    tensors = getattr(model, attr, None)
    if not tensors or len(tensors) != 1:
        return None
    return tuple(tensors[0].shape)


@keras.saving.register_keras_serializable(package="keras_ptloss")
class Distiller(keras.Model):
    """Teacher-student model trained with PTLoss (or plain KD) and `fit()`.

    The student is trained on

        loss = w * student_loss(y, z) + (1 - w) * distillation_loss(t, z)

    where `t` are the frozen teacher's outputs, `z` the student's, `w` the
    student-loss weight, and the student loss is the hard-label loss passed
    to `compile()`. Without labels (`fit(x)`, the paper's unlabelled transfer
    set) or without a compiled loss, the loss is the distillation term alone.
    Regularization losses of the student are added on top.

    The distillation term is the loss object itself,
    `distillation_loss(t, z, sample_weight)` (its reduction, sample weights
    and masks). The loss's variables (PTLoss's coefficients, the
    temperature) are tracked as state of this model and the student-loss
    weight is a variable of it: changing them from a callback
    (`distillation_loss.set_coefficients`, `distiller.set_temperature`, e.g.
    by `keras_ptloss.ReestimateCoefficients`) changes the next training
    step on every backend, with or without jit, and they are saved with the
    model.

    The teacher's outputs are read with the loss's `teacher_from_logits`
    flag; when the loss does not say (`None`, the default), it is read from
    the teacher's last layer (no activation: logits; softmax:
    probabilities) and stored in the loss. An explicit flag, or the
    student's `from_logits`, that visibly contradicts a model's last layer
    raises.

    `call`, `predict` and the compiled metrics use the student. Logs hold
    `loss` (the total), `distillation_loss`, `student_loss` and the compiled
    metrics (which need labels and are left out of `fit(x)` logs).

    Offline distillation: `precompute_teacher(x)` runs the teacher once and
    returns data in which each batch carries its teacher outputs; `fit` on
    that data runs no teacher forward pass.

    Vocabularies that differ by padding or order (language models): with
    `vocab_size` or `id_map`, the teacher's outputs (online or cached) are
    put on the student's vocabulary before the loss, as by
    `keras_ptloss.align_vocabulary`: the teacher's padding is dropped and
    the student's padding gets no teacher mass. Sizes that padding cannot
    explain raise when the Distiller is built; cached numpy teacher outputs
    are checked for real probability on the dropped ids when `fit` starts.

    Args:
        teacher: a trained `keras.Model` with one output of shape
            `(batch, ..., K)`. It is frozen (`trainable = False`) here and
            stays frozen after a reload; it runs in inference mode.
        student: the `keras.Model` to train; same output shape.
        distillation_loss: a `keras_ptloss.PTLoss` or `keras_ptloss.KDLoss`
            (or a baseline: `KDCELoss`, `DKDLoss`, `LSKDLoss`, `Poly1Loss`),
            owned by this model from now on (its variables are tracked as
            model state). A loss with `needs_labels = True` (`KDCELoss`,
            `DKDLoss`, `Poly1Loss`) receives `{"teacher": t, "label": y}`,
            so `fit` needs `y`.
        student_loss_weight: weight `w` in [0, 1] of the compiled hard-label
            loss. Defaults to `0.5` (as `keras.distillation.Distiller`).
        temperature: optional new temperature `T > 0`, assigned to the
            loss. Defaults to `None`: the loss's own temperature.
        vocab_size: the number of real token ids (`len(tokenizer)`) when
            the teacher's and the student's output layers are padded beyond
            it to different sizes; both must have at least `vocab_size`
            logits. Defaults to `None`.
        id_map: integer array of shape `(n,)`: the teacher id of each of
            the student's ids `0..n-1`, for a re-ordered vocabulary.
            Defaults to `None`. Pass at most one of `vocab_size` and
            `id_map`; with a padded student (more logits than the ids that
            get teacher mass), the loss cannot use `standardize=True`
            (`LSKDLoss`), which would z-score the masked logits.
        name: model name. Defaults to `"distiller"`.
        **kwargs: passed to `keras.Model`.

    Example:

    >>> import keras, numpy as np
    >>> from keras_ptloss import Distiller, PTLoss
    >>> teacher = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> student = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> distiller = Distiller(teacher, student, PTLoss([0.5, 0.0]))
    >>> distiller.distillation_loss.teacher_from_logits  # read from teacher
    True
    >>> distiller.compile(optimizer="adam")
    >>> history = distiller.fit(np.ones((8, 4)), epochs=1, verbose=0)
    >>> sorted(history.history)
    ['distillation_loss', 'loss', 'student_loss']
    >>> tuple(distiller.coefficients.shape)
    (2,)
    """

    def __init__(
        self,
        teacher,
        student,
        distillation_loss,
        student_loss_weight=0.5,
        temperature=None,
        vocab_size=None,
        id_map=None,
        name="distiller",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        self.vocab_size, self.id_map = check_alignment_arguments(
            vocab_size, id_map
        )
        _check_models(
            teacher, student, distillation_loss, self.vocab_size, self.id_map
        )
        resolve_loss_flags(
            distillation_loss, teacher, student, "distillation_loss"
        )
        weight = _check_weight(student_loss_weight)
        if temperature is not None:
            distillation_loss.set_temperature(temperature)

        self.teacher = teacher
        self.teacher.trainable = False
        self.student = student
        self.distillation_loss = distillation_loss
        # The loss's variables, assigned to attributes, are tracked as model
        # state, so JAX's stateless step reads their current values. Own
        # variables in the saved order of earlier versions: coefficients,
        # student-loss weight, temperature.
        self._loss_coefficients = self.coefficients
        self._student_loss_weight = self.add_weight(
            shape=(),
            initializer=keras.initializers.Constant(weight),
            dtype="float32",
            trainable=False,
            name="student_loss_weight",
        )
        self._loss_temperature = distillation_loss.temperature_variable
        # Any other variable of the loss (the baselines' weights).
        self._loss_variables = [
            v
            for v in distillation_loss.variables
            if v is not self._loss_coefficients
            and v is not self._loss_temperature
        ]
        self.distillation_loss_tracker = keras.metrics.Mean(
            name="distillation_loss"
        )
        self.student_loss_tracker = keras.metrics.Mean(name="student_loss")
        if teacher.built and student.built:
            self.built = True

    # ------------------------------------------------------------------
    # Schedulable state (the loss's variables and the student weight).

    @property
    def coefficients(self):
        """The loss's coefficient variable (`None` for a `KDLoss`)."""
        return getattr(self.distillation_loss, "coefficients", None)

    @property
    def temperature(self):
        """The loss's non-trainable scalar temperature variable."""
        return self.distillation_loss.temperature_variable

    @property
    def student_loss_weight(self):
        """The non-trainable scalar variable holding the student weight."""
        return self._student_loss_weight

    def set_coefficients(self, coefficients):
        """Validates and assigns new PTLoss coefficients (to the loss).

        Args:
            coefficients: array-like with the shape of `self.coefficients`.
        """
        if self.coefficients is None:
            raise ValueError(
                "This Distiller uses a KDLoss, which has no coefficients. "
                "Build it with a PTLoss to set coefficients. Received: "
                f"coefficients={coefficients!r}"
            )
        self.distillation_loss.set_coefficients(coefficients)

    def set_temperature(self, temperature):
        """Validates and assigns a new temperature `T > 0` (to the loss)."""
        self.distillation_loss.set_temperature(temperature)

    def set_student_loss_weight(self, student_loss_weight):
        """Validates and assigns a new student-loss weight in [0, 1]."""
        self._student_loss_weight.assign(_check_weight(student_loss_weight))

    # ------------------------------------------------------------------
    # Forward pass, loss and metrics.

    def call(self, inputs, training=None):
        if offline.is_offline_batch(inputs):
            inputs = inputs[STUDENT_INPUTS]
        return self.student(inputs, training=training)

    def teacher_outputs(self, x):
        """The teacher's outputs for a batch (cached ones for offline data)."""
        if offline.is_offline_batch(x):
            return ops.stop_gradient(x[TEACHER_OUTPUTS])
        return ops.stop_gradient(self.teacher(x, training=False))

    def _aligned_teacher_outputs(self, teacher_outputs, y_pred):
        """Teacher outputs on the student's vocabulary (`vocab_size`/`id_map`).

        Unchanged when the Distiller has no alignment. Not checked here (the
        sizes were checked when the Distiller was built).
        """
        if self.vocab_size is None and self.id_map is None:
            return teacher_outputs
        num_real = self.vocab_size
        if num_real is None:
            num_real = int(self.id_map.size)
        return apply_alignment(
            teacher_outputs,
            int(y_pred.shape[-1]),
            num_real,
            self.id_map,
            _teacher_from_logits(self.distillation_loss),
        )

    def compute_loss(
        self, x=None, y=None, y_pred=None, sample_weight=None, training=True
    ):
        if y_pred is None:
            y_pred = self(x, training=training)
        # The Loss applies the reduction, the sample weights, masks and the
        # tf.distribute scaling like the compiled loss does.
        targets = self._aligned_teacher_outputs(self.teacher_outputs(x), y_pred)
        if needs_labels(self.distillation_loss):
            _require_labels(y)
            targets = {TARGET_KEYS[0]: targets, TARGET_KEYS[1]: y}
        distillation = self.distillation_loss(
            targets, y_pred, sample_weight=sample_weight
        )
        student = None
        if y is not None and self._compile_loss is not None:
            student = self._compile_loss(y, y_pred, sample_weight)
        if student is None:
            total = distillation
            student = ops.zeros_like(distillation)
        else:
            student = ops.cast(student, "float32")
            weight = ops.cast(self._student_loss_weight, "float32")
            total = weight * student + (1.0 - weight) * distillation
        for extra in self.losses:
            total = total + ops.cast(ops.sum(extra), total.dtype)
        batch_size = ops.shape(keras.tree.flatten(y_pred)[0])[0]
        # Under tf.distribute the Loss objects divided each term by the
        # replica count (their sum over replicas is the batch mean); the
        # trackers hold per-replica means, like Keras's own loss tracker.
        self.distillation_loss_tracker.update_state(
            _unscale_for_distribution(distillation), sample_weight=batch_size
        )
        self.student_loss_tracker.update_state(
            _unscale_for_distribution(student), sample_weight=batch_size
        )
        return total

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        if y is None:
            # Compiled metrics compare with labels: without labels only the
            # loss trackers are reported (not a stale or zero metric).
            return self._metric_results(skip_compiled=True)
        return super().compute_metrics(x, y, y_pred, sample_weight)

    def get_metrics_result(self):
        return self._metric_results(skip_compiled=False)

    def _metric_results(self, skip_compiled):
        results = {}
        for metric in self.metrics:
            compiled = metric is self._compile_metrics
            if compiled and (skip_compiled or not metric.built):
                continue
            value = metric.result()
            if isinstance(value, dict):
                results.update(value)
            else:
                results[metric.name] = value
        return results

    # ------------------------------------------------------------------
    # Training.

    def fit(self, x=None, y=None, batch_size=None, *args, **kwargs):
        """`keras.Model.fit`, with array inputs checked first.

        For numpy inputs: integer labels must be class indices of the
        student (a label out of range would give a NaN or a silently wrong
        one-hot loss), and, under a `keras.distribution` layout on JAX
        (e.g. `keras.distribution.DataParallel`), every batch, the last one
        and the validation batches too, must divide by the number of devices
        on the batch axis: an indivisible one raises here, naming the batch
        size, the example count and the device count, instead of an
        `IndivisibleError` from JAX at the end of the first epoch. The same
        holds under a `tf.distribute` strategy with several replicas: it
        would run an uneven batch, but each replica's loss is the mean over
        its own share, so that batch's examples would be weighed unequally
        (and the result would differ from one device's). Offline array
        data (from `precompute_teacher`) must hold one finite teacher output
        of the teacher's output shape per input example.

        Args:
            x, y, batch_size, *args, **kwargs: as for `keras.Model.fit`
                (positional arguments after `batch_size` in its order).

        Returns:
            The `keras.callbacks.History` of `keras.Model.fit`.
        """
        kwargs = _fit_kwargs(args, kwargs)
        if needs_labels(self.distillation_loss) and not _is_data_set(x):
            _require_labels(y)
        _check_labels(self.student, y)
        offline.check_offline_arrays(x, _static_shape(self.teacher, "outputs"))
        self._check_offline_padding(x)
        _check_divisible(self, x, batch_size, kwargs)
        return super().fit(x, y, batch_size, **kwargs)

    def _check_offline_padding(self, x):
        """Cached numpy teacher outputs put no real mass on dropped ids."""
        if self.vocab_size is None and self.id_map is None:
            return
        if not offline.is_offline_batch(x):
            return
        outputs = x[TEACHER_OUTPUTS]
        if not isinstance(outputs, np.ndarray):
            return
        num_real = check_alignment(
            outputs.shape[-1], None, self.vocab_size, self.id_map
        )
        check_padding_mass(
            outputs,
            num_real,
            self.id_map,
            _teacher_from_logits(self.distillation_loss),
            "teacher_outputs",
        )

    # ------------------------------------------------------------------
    # Offline distillation and saving.

    def precompute_teacher(
        self, x, y=None, sample_weight=None, batch_size=32, cache=None
    ):
        """Runs the teacher once and returns data that carries its outputs.

        `fit`/`evaluate` on the returned data run no teacher forward pass and
        give the same losses as on the source data. Each input batch `x`
        becomes `{"student_inputs": x, "teacher_outputs": t}`; `call` and
        `predict` accept both forms. (The functions behind this method are
        in `keras_ptloss.teacher_outputs`.)

        - Arrays (numpy or backend tensors, or structures of them): returns
          `(x_offline, y, sample_weight)`; pass them to `fit` as usual
          (Keras's per-epoch shuffling keeps inputs and teacher outputs
          together).
        - A batched `tf.data.Dataset`: iterated once and returned as a
          dataset of the same batches, held in memory. Random augmentation
          or reshuffling in the source is frozen to that first pass (call
          `.unbatch().shuffle(...).batch(...)` on the result to reshuffle).
        - A `keras.utils.PyDataset`: returns a `PyDataset` that fetches each
          batch's inputs from the source again and pairs them with the
          cached teacher outputs; the source's `on_epoch_end` is not called,
          and a batch that changed since the teacher pass raises.

        With `cache="teacher.npz"` (arrays only), the teacher outputs are
        saved to that file with fingerprints of the teacher's weights, of
        `x` and of the outputs themselves; a later call with the same path
        loads them instead of running the teacher, after checking all three.
        A cache written for another teacher or other data, a truncated or
        corrupted file, or outputs of the wrong shape raise `ValueError`
        (delete the file to recompute); it is never used silently.

        Args:
            x: arrays, a `tf.data.Dataset` or a `keras.utils.PyDataset`.
            y: labels for arrays (`None` for datasets or unlabelled data).
            sample_weight: sample weights for arrays.
            batch_size: batch size of the teacher pass for arrays.
            cache: optional path of a `.npz` file holding the teacher
                outputs for array inputs (written if absent, checked and
                read if present). Defaults to `None` (no file).

        Returns:
            `(x_offline, y, sample_weight)` for arrays, otherwise a data set
            of the input's kind.

        Example:

        >>> import keras, numpy as np
        >>> from keras_ptloss import Distiller, PTLoss
        >>> teacher = keras.Sequential(
        ...     [keras.Input((4,)), keras.layers.Dense(3)])
        >>> student = keras.Sequential(
        ...     [keras.Input((4,)), keras.layers.Dense(3)])
        >>> distiller = Distiller(teacher, student, PTLoss())
        >>> distiller.compile(optimizer="adam")
        >>> x_off, y_off, _ = distiller.precompute_teacher(np.ones((8, 4)))
        >>> sorted(x_off)
        ['student_inputs', 'teacher_outputs']
        >>> _ = distiller.fit(x_off, y_off, epochs=1, verbose=0)
        """
        return offline.precompute(
            self.teacher, x, y, sample_weight, batch_size, cache
        )

    def export_student(self, filepath):
        """Saves the student alone as a `.keras` file.

        Args:
            filepath: path ending in `.keras`.
        """
        if not str(filepath).endswith(".keras"):
            raise ValueError(
                "`filepath` must end in `.keras` (the student is saved with "
                "`student.save`). Received: "
                f"filepath={filepath!r}"
            )
        self.student.save(filepath)

    def get_config(self):
        config = super().get_config()
        config.update(
            teacher=keras.saving.serialize_keras_object(self.teacher),
            student=keras.saving.serialize_keras_object(self.student),
            distillation_loss=keras.saving.serialize_keras_object(
                self.distillation_loss
            ),
            student_loss_weight=float(self._student_loss_weight.numpy()),
            vocab_size=self.vocab_size,
            id_map=None if self.id_map is None else self.id_map.tolist(),
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("teacher", "student", "distillation_loss"):
            config[key] = keras.saving.deserialize_keras_object(config[key])
        # __init__ freezes the teacher again (Sequential.from_config does not
        # keep trainable=False).
        return cls(**config)


def _check_models(teacher, student, distillation_loss, vocab_size, id_map):
    for role, model in (("teacher", teacher), ("student", student)):
        if not isinstance(model, keras.Model):
            raise ValueError(
                f"`{role}` must be a keras.Model. Received: "
                f"{role}={model!r} of type {type(model).__name__}"
            )
    if not isinstance(distillation_loss, DISTILLATION_LOSSES):
        raise ValueError(
            "`distillation_loss` must be a keras_ptloss.PTLoss, KDLoss, "
            "KDCELoss, DKDLoss, LSKDLoss or Poly1Loss. Received: "
            f"distillation_loss={distillation_loss!r}"
        )
    teacher_shape = _static_shape(teacher, "outputs")
    student_shape = _static_shape(student, "outputs")
    if teacher_shape is None or student_shape is None:
        return
    aligned = vocab_size is not None or id_map is not None
    if not shapes_match(teacher_shape, student_shape) and (
        not aligned or not shapes_match(teacher_shape[:-1], student_shape[:-1])
    ):
        raise ValueError(
            "`teacher` and `student` must have outputs of the same "
            "shape (batch, ..., num_classes)"
            + (", up to the vocabulary axis" if aligned else "")
            + f". Received: teacher output shape {teacher_shape}, student "
            f"output shape {student_shape}."
            + ("" if aligned else vocabulary_hint(teacher_shape, student_shape))
        )
    teacher_size, student_size = teacher_shape[-1], student_shape[-1]
    if not aligned or teacher_size is None or student_size is None:
        return
    num_real = check_alignment(teacher_size, student_size, vocab_size, id_map)
    masked = student_size > num_real
    standardizes = isinstance(distillation_loss, LSKDLoss) or getattr(
        distillation_loss, "standardize", False
    )
    if masked and standardizes:
        raise ValueError(
            "`distillation_loss` z-scores the logits (standardize=True), "
            "which would include the -1e30 logits that give the student's "
            f"padding (its ids {num_real}..{student_size - 1}) no teacher "
            "mass. Use a loss without standardize, or a student without "
            "padding. Received: standardize=True, "
            f"student vocabulary size {student_size}, ids with teacher mass "
            f"{num_real}"
        )


def _fit_kwargs(args, kwargs):
    """Keyword arguments of `keras.Model.fit` for extra positional ones."""
    if len(args) > len(FIT_POSITIONAL):
        raise ValueError(
            f"`fit` takes at most {3 + len(FIT_POSITIONAL)} positional "
            f"arguments. Received: {3 + len(args)}"
        )
    kwargs = dict(kwargs)
    for name, value in zip(FIT_POSITIONAL, args, strict=False):
        if name in kwargs:
            raise ValueError(
                f"`fit` got `{name}` both positionally and by keyword. "
                f"Received: {name}={kwargs[name]!r} and {value!r}"
            )
        kwargs[name] = value
    return kwargs


def _check_labels(student, y):
    shape = _static_shape(student, "outputs")
    if not isinstance(y, np.ndarray) or shape is None or shape[-1] is None:
        return
    if y.dtype.kind not in "iu" or y.size == 0:
        return
    if not (
        y.ndim == len(shape) - 1 or (y.ndim == len(shape) and y.shape[-1] == 1)
    ):
        return
    num_classes = shape[-1]
    low, high = int(y.min()), int(y.max())
    if low < 0 or high >= num_classes:
        raise ValueError(
            f"Integer labels `y` must be class indices in "
            f"[0, {num_classes - 1}] for the student's {num_classes} "
            f"classes. Received: y with values in [{low}, {high}]"
        )


def _num_replicas(model):
    """(layout name, number of devices the batch is split over)."""
    if keras.backend.backend() == "tensorflow":
        strategy = model.distribute_strategy
        return type(strategy).__name__, strategy.num_replicas_in_sync
    if keras.backend.backend() != "jax":
        return None, 1
    distribution = keras.distribution.distribution()
    name = getattr(distribution, "batch_dim_name", None)
    if name is None:
        return None, 1
    mesh = distribution.device_mesh
    axis = list(mesh.axis_names).index(name)
    return type(distribution).__name__, int(mesh.shape[axis])


def _check_divisible(model, x, batch_size, kwargs):
    layout, devices = _num_replicas(model)
    if devices <= 1 or kwargs.get("steps_per_epoch") is not None:
        return
    try:
        num = offline.num_examples(x)
    except (AttributeError, IndexError, TypeError):
        return  # a data set: its batches are the user's to size
    if not isinstance(keras.tree.flatten(x)[0], np.ndarray):
        return
    batch = 32 if batch_size is None else batch_size
    split = kwargs.get("validation_split") or 0.0
    num_train = int(math.ceil(num * (1.0 - split))) if split else num
    checks = [("training", num_train, batch)]
    if split:
        checks.append(("validation", num - num_train, batch))
    validation = kwargs.get("validation_data")
    if validation is not None and not offline.is_tf_dataset(validation):
        try:
            checks.append(
                (
                    "validation",
                    offline.num_examples(validation[0]),
                    kwargs.get("validation_batch_size") or batch,
                )
            )
        except (AttributeError, IndexError, TypeError, KeyError):
            pass
    for part, count, size in checks:
        sizes = {min(size, count)}
        if count % size:
            sizes.add(count % size)
        for b in sorted(sizes):
            if b % devices:
                raise ValueError(
                    f"Under {layout} every batch must divide by the "
                    f"{devices} devices of the batch axis (on JAX an "
                    "indivisible batch fails; under tf.distribute it "
                    "would weigh its examples unequally), but "
                    f"{part} on {count} examples with "
                    f"batch_size={size} gives a batch of {b}. "
                    + (
                        f"Choose a batch size that divides by {devices}"
                        if size % devices
                        else f"Drop the last {count % devices} examples"
                    )
                    + f". Received: batch_size={size}, "
                    f"num_examples={count}, num_devices={devices}"
                )


def _unscale_for_distribution(value):
    """Undoes a Loss's `1 / num_replicas` scaling under `tf.distribute`."""
    if keras.backend.backend() != "tensorflow":
        return value
    import tensorflow as tf

    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    if replicas > 1:
        value = value * ops.cast(replicas, value.dtype)
    return value


def _is_data_set(x):
    """A tf.data.Dataset, PyDataset or generator: labels come inside it."""
    return (
        offline.is_tf_dataset(x)
        or isinstance(x, keras.utils.PyDataset)
        or inspect.isgenerator(x)
    )


def _teacher_from_logits(loss):
    """How the loss reads the teacher (`True` for losses that do not say)."""
    return bool(getattr(loss, "teacher_from_logits", True))
