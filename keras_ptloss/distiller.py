"""`Distiller`: a teacher-student `keras.Model` trained with PTLoss or KD.

The distillation coefficients, the student-loss weight and the temperature are
non-trainable variables owned by the model, so a callback that assigns them
changes the next step on every backend, with or without jit (DESIGN.md §3).
"""

import math
import os
import zlib

import keras
import numpy as np
from keras import ops

from keras_ptloss.losses import KDLoss
from keras_ptloss.losses import PTLoss
from keras_ptloss.losses import _check_temperature
from keras_ptloss.losses import kd_loss
from keras_ptloss.losses import pt_loss

STUDENT_INPUTS = "student_inputs"
TEACHER_OUTPUTS = "teacher_outputs"
_OFFLINE_KEYS = frozenset((STUDENT_INPUTS, TEACHER_OUTPUTS))


def _is_offline_batch(x):
    return isinstance(x, dict) and set(x.keys()) == _OFFLINE_KEYS


def _final_activation(model):
    """`"softmax"`, `"linear"` or `None` (unknown) for a model's last layer."""
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


def check_output_kind(model, outputs_logits, role, flag, loss_arg):
    """Raises if a model's last layer contradicts a loss's logits flag.

    A last layer without activation outputs logits; a softmax last layer
    outputs probabilities. Reading one as the other silently computes a wrong
    loss, so the contradiction is reported where the models meet the loss.

    Args:
        model: the teacher or student `keras.Model`.
        outputs_logits: what the loss assumes about `model`'s outputs.
        role: `"teacher"` or `"student"`, for the message.
        flag: the loss argument holding the assumption (`"from_logits"` or
            `"teacher_from_logits"`).
        loss_arg: the name of the argument that received the loss.
    """
    kind, layer_name = _final_activation(model)
    if kind is None:
        return
    if kind == "linear" and not outputs_logits:
        raise ValueError(
            f"The {role}'s last layer ({layer_name!r}) has no activation, so "
            f"the {role} outputs logits, but `{loss_arg}` was built with "
            f"{flag}=False (it expects probabilities). Build the loss with "
            f"{flag}=True, e.g. `PTLoss(..., {flag}=True)`. Received: "
            f"{flag}=False"
        )
    if kind == "softmax" and outputs_logits:
        raise ValueError(
            f"The {role}'s last layer ({layer_name!r}) applies a softmax, so "
            f"the {role} outputs probabilities, but `{loss_arg}` was built "
            f"with {flag}=True (it expects logits). Build the loss with "
            f"{flag}=False, or remove the softmax. Received: {flag}=True"
        )


def _check_weight(value):
    if isinstance(value, bool) or not isinstance(
        value, (int, float, np.floating, np.integer)
    ):
        raise ValueError(
            "`student_loss_weight` must be a number in [0, 1]. Received: "
            f"student_loss_weight={value!r}"
        )
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise ValueError(
            "`student_loss_weight` must be in [0, 1]. Received: "
            f"student_loss_weight={value}"
        )
    return float(value)


def _static_shape(model, attr):
    tensors = getattr(model, attr, None)
    if not tensors or len(tensors) != 1:
        return None
    return tuple(tensors[0].shape)


def _to_numpy_tree(structure):
    return keras.tree.map_structure(
        lambda v: None if v is None else np.asarray(ops.convert_to_numpy(v)),
        structure,
    )


def _batch_size(structure):
    return int(keras.tree.flatten(structure)[0].shape[0])


def _fingerprint(structure):
    crc = 0
    for leaf in keras.tree.flatten(structure):
        array = np.ascontiguousarray(np.asarray(leaf))
        crc = zlib.crc32(str((array.dtype, array.shape)).encode(), crc)
        crc = zlib.crc32(array.view(np.uint8).reshape(-1), crc)
    return crc


class _PerExampleLoss(keras.losses.Loss):
    """Reduces a per-example function like a Loss (never serialized)."""

    def __init__(self, fn, reduction, name):
        super().__init__(name=name, reduction=reduction, dtype="float32")
        self.fn = fn

    def call(self, y_true, y_pred):
        return self.fn(y_true, y_pred)


class _OfflinePyDataset(keras.utils.PyDataset):
    """Replays a `PyDataset` with the teacher outputs of its first pass.

    Each batch's inputs are fetched from the source again (so large inputs
    are not held in memory) and checked against a fingerprint taken when the
    teacher outputs were computed: a source whose batches change (random
    augmentation, reshuffling in `__getitem__`) raises instead of pairing
    inputs with another batch's teacher outputs.
    """

    def __init__(self, source, teacher_outputs, fingerprints):
        super().__init__(
            workers=source.workers,
            use_multiprocessing=source.use_multiprocessing,
            max_queue_size=source.max_queue_size,
        )
        self.source = source
        self.teacher_outputs = teacher_outputs
        self.fingerprints = fingerprints

    def __len__(self):
        return len(self.teacher_outputs)

    def __getitem__(self, index):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(
            self.source[index]
        )
        if _fingerprint(_to_numpy_tree(x)) != self.fingerprints[index]:
            raise ValueError(
                f"Batch {index} of the source PyDataset changed since its "
                "teacher outputs were precomputed: offline distillation needs "
                "a source whose `__getitem__` returns the same inputs for the "
                "same index (no random augmentation or reshuffling). Received "
                f"a different batch {index} from {type(self.source).__name__}"
            )
        x = {STUDENT_INPUTS: x, TEACHER_OUTPUTS: self.teacher_outputs[index]}
        return keras.utils.pack_x_y_sample_weight(x, y, sample_weight)


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

    The PTLoss coefficients (`distiller.coefficients`), the student-loss
    weight and the temperature are non-trainable variables of this model:
    assigning them from a callback (e.g.
    `keras_ptloss.ReestimateCoefficients`) changes the next training step on
    every backend, with or without jit. The distillation term is
    `pt_loss(t, z, coefficients=distiller.coefficients,
    temperature=distiller.temperature)` (or `kd_loss` for a `KDLoss`),
    reduced with the loss's `reduction` and the batch's `sample_weight`.

    The teacher's outputs are read with the loss's `teacher_from_logits`
    flag and the student's with its `from_logits` flag; a model whose last
    layer visibly contradicts the flag (no activation vs. softmax) raises.

    `call`, `predict` and the compiled metrics use the student. Logs hold
    `loss` (the total), `distillation_loss`, `student_loss` and the compiled
    metrics (which need labels and are left out of `fit(x)` logs).

    Offline distillation: `precompute_teacher(x)` runs the teacher once and
    returns data in which each batch carries its teacher outputs; `fit` on
    that data runs no teacher forward pass.

    Args:
        teacher: a trained `keras.Model` with one output of shape
            `(batch, ..., K)`. It is frozen (`trainable = False`) here and
            stays frozen after a reload; it runs in inference mode.
        student: the `keras.Model` to train; same output shape.
        distillation_loss: a `keras_ptloss.PTLoss` or `keras_ptloss.KDLoss`.
            Its coefficients initialise `distiller.coefficients`; its
            `reduction`, `from_logits` and `teacher_from_logits` are used.
        student_loss_weight: weight `w` in [0, 1] of the compiled hard-label
            loss. Defaults to `0.5` (as `keras.distillation.Distiller`).
        temperature: softmax temperature `T > 0` of the distillation term.
            Defaults to `None`: the loss's own temperature.
        name: model name. Defaults to `"distiller"`.
        **kwargs: passed to `keras.Model`.

    Example:

    >>> import keras, numpy as np
    >>> from keras_ptloss import Distiller, PTLoss
    >>> teacher = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> student = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> distiller = Distiller(
    ...     teacher,
    ...     student,
    ...     PTLoss([0.5, 0.0], temperature=2.0, teacher_from_logits=True),
    ... )
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
        name="distiller",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        for role, model in (("teacher", teacher), ("student", student)):
            if not isinstance(model, keras.Model):
                raise ValueError(
                    f"`{role}` must be a keras.Model. Received: "
                    f"{role}={model!r} of type {type(model).__name__}"
                )
        if not isinstance(distillation_loss, (PTLoss, KDLoss)):
            raise ValueError(
                "`distillation_loss` must be a keras_ptloss.PTLoss or "
                "keras_ptloss.KDLoss. Received: distillation_loss="
                f"{distillation_loss!r}"
            )
        teacher_shape = _static_shape(teacher, "outputs")
        student_shape = _static_shape(student, "outputs")
        if teacher_shape is not None and student_shape is not None:
            if len(teacher_shape) != len(student_shape) or any(
                a is not None and b is not None and a != b
                for a, b in zip(teacher_shape, student_shape, strict=True)
            ):
                raise ValueError(
                    "`teacher` and `student` must have outputs of the same "
                    "shape (batch, ..., num_classes). Received: teacher "
                    f"output shape {teacher_shape}, student output shape "
                    f"{student_shape}"
                )
        check_output_kind(
            teacher,
            distillation_loss.teacher_from_logits,
            "teacher",
            "teacher_from_logits",
            "distillation_loss",
        )
        check_output_kind(
            student,
            distillation_loss.from_logits,
            "student",
            "from_logits",
            "distillation_loss",
        )
        weight = _check_weight(student_loss_weight)
        if temperature is None:
            temperature = distillation_loss.temperature
        temperature = _check_temperature(temperature)

        self.teacher = teacher
        self.teacher.trainable = False
        self.student = student
        self.distillation_loss = distillation_loss

        if isinstance(distillation_loss, PTLoss):
            values = ops.convert_to_numpy(distillation_loss.coefficients.value)
            self._coefficients = self.add_weight(
                shape=tuple(values.shape),
                initializer=keras.initializers.Constant(values),
                dtype="float32",
                trainable=False,
                name="coefficients",
            )
        else:
            self._coefficients = None
        self._student_loss_weight = self.add_weight(
            shape=(),
            initializer=keras.initializers.Constant(weight),
            dtype="float32",
            trainable=False,
            name="student_loss_weight",
        )
        self._temperature = self.add_weight(
            shape=(),
            initializer=keras.initializers.Constant(temperature),
            dtype="float32",
            trainable=False,
            name="temperature",
        )
        self.distillation_loss_tracker = keras.metrics.Mean(
            name="distillation_loss"
        )
        self.student_loss_tracker = keras.metrics.Mean(name="student_loss")
        if teacher.built and student.built:
            self.built = True

    # ------------------------------------------------------------------
    # Schedulable state.

    @property
    def coefficients(self):
        """The non-trainable variable holding PTLoss's `eps` (None for KD)."""
        return self._coefficients

    @property
    def temperature(self):
        """The non-trainable scalar variable holding the temperature."""
        return self._temperature

    @property
    def student_loss_weight(self):
        """The non-trainable scalar variable holding the student weight."""
        return self._student_loss_weight

    def set_coefficients(self, coefficients):
        """Validates and assigns new PTLoss coefficients.

        The values are checked by the `PTLoss` (shape, finiteness, convexity
        unless it allows non-convex coefficients), which is kept in sync.

        Args:
            coefficients: array-like with the shape of `self.coefficients`.
        """
        if self._coefficients is None:
            raise ValueError(
                "This Distiller uses a KDLoss, which has no coefficients. "
                "Build it with a PTLoss to set coefficients. Received: "
                f"coefficients={coefficients!r}"
            )
        self.distillation_loss.set_coefficients(coefficients)
        self._coefficients.assign(self.distillation_loss.coefficients)

    def set_temperature(self, temperature):
        """Validates and assigns a new temperature `T > 0`."""
        self._temperature.assign(_check_temperature(temperature))

    def set_student_loss_weight(self, student_loss_weight):
        """Validates and assigns a new student-loss weight in [0, 1]."""
        self._student_loss_weight.assign(_check_weight(student_loss_weight))

    # ------------------------------------------------------------------
    # Forward pass, loss and metrics.

    def call(self, inputs, training=None):
        if _is_offline_batch(inputs):
            inputs = inputs[STUDENT_INPUTS]
        return self.student(inputs, training=training)

    def teacher_outputs(self, x):
        """The teacher's outputs for a batch (cached ones for offline data)."""
        if _is_offline_batch(x):
            return ops.stop_gradient(x[TEACHER_OUTPUTS])
        return ops.stop_gradient(self.teacher(x, training=False))

    def _distillation_term(self, teacher_outputs, y_pred, sample_weight):
        loss = self.distillation_loss
        if self._coefficients is not None:

            def per_example(t, z):
                return pt_loss(
                    t,
                    z,
                    coefficients=self._coefficients,
                    temperature=self._temperature,
                    from_logits=loss.from_logits,
                    teacher_from_logits=loss.teacher_from_logits,
                )

        else:

            def per_example(t, z):
                return kd_loss(
                    t,
                    z,
                    temperature=self._temperature,
                    from_logits=loss.from_logits,
                    teacher_from_logits=loss.teacher_from_logits,
                )

        # A Loss object applies the reduction, the sample weights, masks and
        # the tf.distribute scaling like the compiled loss does.
        wrapper = _PerExampleLoss(per_example, loss.reduction, loss.name)
        return wrapper(teacher_outputs, y_pred, sample_weight=sample_weight)

    def compute_loss(
        self, x=None, y=None, y_pred=None, sample_weight=None, training=True
    ):
        if y_pred is None:
            y_pred = self(x, training=training)
        distillation = self._distillation_term(
            self.teacher_outputs(x), y_pred, sample_weight
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
            x, y, batch_size, *args, **kwargs: as for `keras.Model.fit`.

        Returns:
            The `keras.callbacks.History` of `keras.Model.fit`.
        """
        if args:
            # Positional arguments after `batch_size` follow Model.fit's order.
            names = ("epochs", "verbose", "callbacks", "validation_split")
            names += ("validation_data", "shuffle", "class_weight")
            names += ("sample_weight", "initial_epoch", "steps_per_epoch")
            kwargs.update(zip(names, args, strict=False))
        self._check_labels(y)
        self._check_offline_arrays(x)
        self._check_divisible(x, batch_size, kwargs)
        return super().fit(x, y, batch_size, **kwargs)

    def _check_offline_arrays(self, x):
        """Offline array data: one finite teacher output per example."""
        if not _is_offline_batch(x):
            return
        outputs = x[TEACHER_OUTPUTS]
        if not isinstance(outputs, np.ndarray):
            return
        try:
            num = _batch_size(x[STUDENT_INPUTS])
        except (AttributeError, IndexError, TypeError):
            return
        expected = _static_shape(self.teacher, "outputs")
        if outputs.shape[0] != num or (
            expected is not None
            and tuple(outputs.shape[1:]) != tuple(expected[1:])
        ):
            shape = None if expected is None else (num,) + tuple(expected[1:])
            raise ValueError(
                "The cached teacher outputs must hold one teacher output per "
                f"input example: expected shape {shape}. Received: "
                f"teacher_outputs.shape={outputs.shape} for {num} inputs"
            )
        if not np.all(np.isfinite(outputs)):
            raise ValueError(
                "The cached teacher outputs must be finite (a corrupted "
                "cache?). Received: teacher_outputs with "
                f"{int(np.sum(~np.isfinite(outputs)))} non-finite values"
            )

    def _num_classes(self):
        shape = _static_shape(self.student, "outputs")
        return None if shape is None else shape[-1]

    def _check_labels(self, y):
        num_classes = self._num_classes()
        if not isinstance(y, np.ndarray) or num_classes is None:
            return
        if y.dtype.kind not in "iu" or y.size == 0:
            return
        shape = _static_shape(self.student, "outputs")
        if y.ndim == len(shape) and y.shape[-1] == 1:
            pass
        elif y.ndim != len(shape) - 1:
            return
        low, high = int(y.min()), int(y.max())
        if low < 0 or high >= num_classes:
            raise ValueError(
                f"Integer labels `y` must be class indices in "
                f"[0, {num_classes - 1}] for the student's {num_classes} "
                f"classes. Received: y with values in [{low}, {high}]"
            )

    def _num_replicas(self):
        """(layout name, number of devices the batch is split over)."""
        if keras.backend.backend() == "tensorflow":
            strategy = self.distribute_strategy
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

    def _check_divisible(self, x, batch_size, kwargs):
        layout, devices = self._num_replicas()
        if devices <= 1 or kwargs.get("steps_per_epoch") is not None:
            return
        try:
            num = _batch_size(x)
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
        if validation is not None and not _is_tf_dataset(validation):
            try:
                checks.append(
                    (
                        "validation",
                        _batch_size(validation[0]),
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

    # ------------------------------------------------------------------
    # Offline distillation.

    def precompute_teacher(
        self, x, y=None, sample_weight=None, batch_size=32, cache=None
    ):
        """Runs the teacher once and returns data that carries its outputs.

        `fit`/`evaluate` on the returned data run no teacher forward pass and
        give the same losses as on the source data. Each input batch `x`
        becomes `{"student_inputs": x, "teacher_outputs": t}`; `call` and
        `predict` accept both forms.

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
        >>> distiller = Distiller(
        ...     teacher, student, PTLoss(teacher_from_logits=True))
        >>> distiller.compile(optimizer="adam")
        >>> x_off, y_off, _ = distiller.precompute_teacher(np.ones((8, 4)))
        >>> sorted(x_off)
        ['student_inputs', 'teacher_outputs']
        >>> _ = distiller.fit(x_off, y_off, epochs=1, verbose=0)
        """
        if cache is not None and (
            isinstance(x, keras.utils.PyDataset) or _is_tf_dataset(x)
        ):
            raise ValueError(
                "`cache` is supported for array inputs only. Received: "
                f"cache={cache!r} with x of type {type(x).__name__}"
            )
        if isinstance(x, keras.utils.PyDataset):
            self._check_no_arrays(y, sample_weight, "keras.utils.PyDataset")
            return self._precompute_pydataset(x)
        if _is_tf_dataset(x):
            self._check_no_arrays(y, sample_weight, "tf.data.Dataset")
            return self._precompute_tf_dataset(x)
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(
                "`batch_size` must be a positive int. Received: "
                f"batch_size={batch_size!r}"
            )
        try:
            num = _batch_size(x)
        except (AttributeError, IndexError, TypeError) as e:
            raise ValueError(
                "`x` must be arrays (numpy or backend tensors, or a list/"
                "dict of them), a tf.data.Dataset or a keras.utils.PyDataset."
                f" Received: x of type {type(x).__name__}"
            ) from e
        if cache is not None and os.path.exists(cache):
            outputs = self._load_teacher_cache(cache, x, num)
            return (
                {STUDENT_INPUTS: x, TEACHER_OUTPUTS: outputs},
                y,
                sample_weight,
            )
        outputs = self.teacher.predict(x, batch_size=batch_size, verbose=0)
        outputs = np.asarray(outputs)
        if outputs.shape[0] != num:
            raise ValueError(
                "The teacher must return one output per example. Received: "
                f"{outputs.shape[0]} outputs for {num} examples"
            )
        if cache is not None:
            np.savez(
                cache,
                teacher_outputs=outputs,
                teacher_fingerprint=np.uint32(self._teacher_fingerprint()),
                data_fingerprint=np.uint32(_fingerprint(_to_numpy_tree(x))),
                outputs_fingerprint=np.uint32(_fingerprint(outputs)),
            )
        return {STUDENT_INPUTS: x, TEACHER_OUTPUTS: outputs}, y, sample_weight

    def _teacher_fingerprint(self):
        return _fingerprint([np.asarray(w) for w in self.teacher.get_weights()])

    def _load_teacher_cache(self, path, x, num):
        keys = (
            "teacher_outputs",
            "teacher_fingerprint",
            "data_fingerprint",
            "outputs_fingerprint",
        )
        try:
            with np.load(path, allow_pickle=False) as archive:
                stored = {key: np.asarray(archive[key]) for key in keys}
        except Exception as e:  # truncated zip, missing key, not an npz
            raise ValueError(
                "The teacher-output cache is unreadable or incomplete "
                f"({type(e).__name__}: {e}); delete it to recompute. "
                f"Received: cache={path!r}"
            ) from e
        outputs = stored["teacher_outputs"]
        if int(stored["outputs_fingerprint"]) != _fingerprint(outputs):
            raise ValueError(
                "The teacher outputs in the cache do not match their "
                "checksum (the file is corrupted); delete it to recompute. "
                f"Received: cache={path!r}"
            )
        if int(stored["teacher_fingerprint"]) != self._teacher_fingerprint():
            raise ValueError(
                "The teacher-output cache was written by a teacher with other "
                "weights than this Distiller's teacher; delete it to "
                f"recompute. Received: cache={path!r}"
            )
        if int(stored["data_fingerprint"]) != _fingerprint(_to_numpy_tree(x)):
            raise ValueError(
                "The teacher-output cache was written for other inputs than "
                f"`x` ({num} examples); delete it or pass the same `x`. "
                f"Received: cache={path!r}"
            )
        return outputs

    @staticmethod
    def _check_no_arrays(y, sample_weight, kind):
        if y is not None or sample_weight is not None:
            raise ValueError(
                f"With a {kind}, labels and sample weights come from the data "
                "set: `y` and `sample_weight` must be None. Received: "
                f"y={type(y).__name__}, "
                f"sample_weight={type(sample_weight).__name__}"
            )

    def _teacher_numpy(self, x):
        return np.asarray(ops.convert_to_numpy(self.teacher(x, training=False)))

    def _precompute_tf_dataset(self, dataset):
        import tensorflow as tf

        batches = []
        for element in dataset.as_numpy_iterator():
            x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(element)
            teacher = self._teacher_numpy(x)
            batches.append(
                keras.utils.pack_x_y_sample_weight(
                    {STUDENT_INPUTS: x, TEACHER_OUTPUTS: teacher},
                    y,
                    sample_weight,
                )
            )
        if not batches:
            raise ValueError(
                "`x` is an empty tf.data.Dataset. Received: a dataset with "
                "no batches"
            )
        sizes = [_batch_size(b) for b in batches]
        if any(s != sizes[0] for s in sizes[:-1]) or sizes[-1] > sizes[0]:
            raise ValueError(
                "precompute_teacher needs a tf.data.Dataset whose batches all "
                "have the same size except a smaller last one. Received "
                f"batch sizes {sizes[:20]}"
            )
        if not isinstance(batches[0], tuple):
            batches = [(b,) for b in batches]
        merged = keras.tree.map_structure(
            lambda *parts: np.concatenate(parts, axis=0), *batches
        )
        if len(merged) == 1:
            merged = merged[0]
        return tf.data.Dataset.from_tensor_slices(merged).batch(sizes[0])

    def _precompute_pydataset(self, dataset):
        outputs, fingerprints = [], []
        for index in range(len(dataset)):
            x, _, _ = keras.utils.unpack_x_y_sample_weight(dataset[index])
            x = _to_numpy_tree(x)
            fingerprints.append(_fingerprint(x))
            outputs.append(self._teacher_numpy(x))
        return _OfflinePyDataset(dataset, outputs, fingerprints)

    # ------------------------------------------------------------------
    # Saving.

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
        if self._coefficients is not None:
            # Keep the loss's config in sync with direct assignments.
            self.distillation_loss.coefficients.assign(self._coefficients)
        config = super().get_config()
        config.update(
            teacher=keras.saving.serialize_keras_object(self.teacher),
            student=keras.saving.serialize_keras_object(self.student),
            distillation_loss=keras.saving.serialize_keras_object(
                self.distillation_loss
            ),
            student_loss_weight=float(self._student_loss_weight.numpy()),
            temperature=float(self._temperature.numpy()),
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


def _unscale_for_distribution(value):
    """Undoes a Loss's `1 / num_replicas` scaling under `tf.distribute`."""
    if keras.backend.backend() != "tensorflow":
        return value
    import tensorflow as tf

    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    if replicas > 1:
        value = value * ops.cast(replicas, value.dtype)
    return value


def _is_tf_dataset(x):
    module = type(x).__module__
    if not module.startswith("tensorflow"):
        return False
    import tensorflow as tf

    return isinstance(x, tf.data.Dataset)
