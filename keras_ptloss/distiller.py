"""`Distiller`: a teacher-student `keras.Model` trained with PTLoss or KD."""

import math

import keras
import numpy as np
from keras import ops

from keras_ptloss import teacher_outputs as offline
from keras_ptloss._checks import check_number
from keras_ptloss._checks import shapes_match
from keras_ptloss._checks import vocabulary_hint
from keras_ptloss._fit_state import UntrackedFitState
from keras_ptloss._logits import resolve_teacher_flag
from keras_ptloss.baselines import TARGET_KEYS
from keras_ptloss.baselines import DKDLoss
from keras_ptloss.baselines import KDCELoss
from keras_ptloss.baselines import LSKDLoss
from keras_ptloss.baselines import Poly1Loss
from keras_ptloss.losses import KDLoss
from keras_ptloss.losses import PTLoss
from keras_ptloss.top_k import _ONLINE_TOP_K_MESSAGE
from keras_ptloss.top_k import TopKPTLoss
from keras_ptloss.top_k import _check_packed_shape
from keras_ptloss.top_k import _check_top_k
from keras_ptloss.top_k import _packed_top_k
from keras_ptloss.top_k import _top_k_teacher_flag
from keras_ptloss.top_k import check_host_indices
from keras_ptloss.vocabulary import apply_alignment
from keras_ptloss.vocabulary import check_alignment
from keras_ptloss.vocabulary import check_alignment_arguments
from keras_ptloss.vocabulary import check_padding_mass

STUDENT_INPUTS = offline.STUDENT_INPUTS
TEACHER_OUTPUTS = offline.TEACHER_OUTPUTS
DISTILLATION_LOSSES = (PTLoss, KDLoss, KDCELoss, DKDLoss, LSKDLoss, Poly1Loss)

LABEL_FREE_LOGS = ("loss", "distillation_loss", "student_loss")


def copy_loss(loss, **changes):
    """A copy of `loss` with its own variables, with `changes` applied."""
    config = loss.get_config()
    config.update(changes)
    return type(loss).from_config(config)


def needs_labels(loss):
    """Whether a distillation loss reads the labels besides the teacher."""
    return bool(getattr(loss, "needs_labels", False))


def _require_labels(y):
    if y is None:
        raise ValueError(
            "The distillation loss needs labels (it has needs_labels=True: "
            "KDCELoss, DKDLoss and Poly1Loss read the hard label as well as "
            "the teacher): pass `y` to fit/evaluate, e.g. the teacher's "
            "argmax on an unlabelled transfer set. Received: y=None"
        )


def _check_weights_without_labels(x, y, sample_weight, where=None):
    """Raises for array `sample_weight` without `y`, which Keras drops."""
    if sample_weight is None or y is not None or not _is_arrays(x):
        return
    shape = getattr(sample_weight, "shape", None)
    received = (
        f"sample_weight with shape {tuple(shape)}"
        if shape is not None
        else f"sample_weight={sample_weight!r}"
    )
    place = "" if where is None else f" in `{where}` (x, None, sample_weight)"
    raise ValueError(
        f"`sample_weight` was given without `y`{place}: Keras drops the "
        "sample weights of arrays when `y` is None, so they (a padding "
        "mask, say) would silently not reach the distillation loss. Pass "
        "`y` too (labels, or the teacher's argmax on an unlabelled transfer "
        "set; after `compile(loss=None)` they feed no loss, only the "
        "compiled metrics), or pass a `tf.data.Dataset` yielding "
        "`(x, None, sample_weight)` batches, which keeps the weights. "
        f"Received: y=None, {received}"
    )


def _check_weight(value):
    return check_number(value, "student_loss_weight", 0.0, 1.0)


def _static_shape(model, attr):
    tensors = getattr(model, attr, None)
    if not tensors or len(tensors) != 1:
        return None
    return tuple(tensors[0].shape)


@keras.saving.register_keras_serializable(package="keras_ptloss")
class Distiller(UntrackedFitState, keras.Model):
    """Teacher-student model trained with PTLoss (or plain KD) and `fit()`.

    The recommended way to get one is
    `keras_ptloss.search_coefficients(...).build_distiller(teacher,
    student)`: a Distiller compiled as the search's winner was trained
    (its `PTLoss`, student-loss weight and optimizer). The student is
    trained on

        loss = w * student_loss(y, z) + (1 - w) * distillation_loss(t, z)

    where `t` are the frozen teacher's outputs, `z` the student's, `w` the
    student-loss weight and `student_loss` the hard-label loss passed to
    `compile()`. Without labels (`fit(x)`) or without a compiled loss, the
    loss is the distillation term alone; the student's regularization
    losses are added on top. Logs hold `loss`, `distillation_loss`,
    `student_loss` and the compiled metrics (which need labels).

    The Distiller trains its own copy of the loss passed in
    (`distiller.distillation_loss`). Its variables (coefficients,
    temperature) and the student-loss weight are model variables, so
    changing them from a callback (`set_coefficients`, `set_temperature`,
    e.g. by `keras_ptloss.ReestimateCoefficients`) changes the next step,
    and they are saved with the model. A flag (`teacher_from_logits`,
    `from_logits`) that contradicts a model's last layer raises;
    `teacher_from_logits=None` is read from the teacher's last layer.

    `precompute_teacher(x)` caches the teacher's outputs (offline
    distillation). With a `keras_ptloss.TopKPTLoss`, batches carry packed
    top-k targets `(..., 2k)` from `keras_ptloss.precompute_top_k`, or,
    with `top_k=k`, the teacher's top k are taken in each step. With
    `vocab_size` or `id_map`, the teacher's outputs are put on the
    student's vocabulary as by `keras_ptloss.align_vocabulary`.

    Args:
        teacher: a trained `keras.Model` with one output of shape
            `(batch, ..., K)`; frozen, run in inference mode.
        student: the `keras.Model` to train; same output shape.
        distillation_loss: a `keras_ptloss.PTLoss` or `keras_ptloss.KDLoss`
            (or `KDCELoss`, `DKDLoss`, `LSKDLoss`, `Poly1Loss`, or a
            `TopKPTLoss`). A loss with `needs_labels = True` receives
            `{"teacher": t, "label": y}`, so `fit` needs `y`.
        student_loss_weight: weight `w` in [0, 1] of the compiled hard-label
            loss. Defaults to `0.5` (as `keras.distillation.Distiller`).
        temperature: optional temperature `T > 0` for the Distiller's copy
            of the loss. Defaults to `None`: the loss's own temperature.
        vocab_size: the number of real token ids when the teacher's and
            the student's outputs are padded beyond it to different sizes.
            Defaults to `None`.
        id_map: integer array of shape `(n,)`: the teacher id of each of
            the student's ids `0..n-1`, for a re-ordered vocabulary.
            Defaults to `None`. Pass at most one of `vocab_size` and
            `id_map`.
        top_k: for a `TopKPTLoss` only: the number `k` of the teacher's
            most probable classes kept in each step. Defaults to `None`:
            batches must carry cached top-k targets.
        name: model name. Defaults to `"distiller"`.
        **kwargs: passed to `keras.Model`.

    Example:

    >>> import keras, numpy as np
    >>> from keras_ptloss import Distiller, PTLoss
    >>> teacher = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> student = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> distiller = Distiller(teacher, student, PTLoss([0.5, 0.0]))
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
        top_k=None,
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
        self.top_k = _check_top_k(
            top_k, distillation_loss, _static_shape(student, "outputs")
        )
        is_top_k = isinstance(distillation_loss, TopKPTLoss)
        if is_top_k:
            flag = _top_k_teacher_flag(
                distillation_loss, teacher, student, self.top_k
            )
        else:
            flag = resolve_teacher_flag(
                distillation_loss, teacher, student, "distillation_loss"
            )
        weight = _check_weight(student_loss_weight)
        # A TopKPTLoss's targets are log-probabilities; the flag serves top_k.
        self._teacher_logits = flag
        changes = (
            {} if flag is None or is_top_k else {"teacher_from_logits": flag}
        )
        loss = copy_loss(distillation_loss, **changes)
        if temperature is not None:
            loss.set_temperature(temperature)

        self.teacher = teacher
        self.teacher.trainable = False
        self.student = student
        self.distillation_loss = loss
        weight = keras.Variable(
            np.float32(weight),
            dtype="float32",
            trainable=False,
            name="student_loss_weight",
        )
        # A Loss is not a layer: this list makes its variables model state
        # (read by JAX's stateless step, saved); its order is the saved layout.
        self.schedulable_variables = _saved_layout(loss, weight)
        self._student_loss_weight = weight
        self.student_loss = None
        self.distillation_loss_tracker = keras.metrics.Mean(
            name="distillation_loss"
        )
        self.student_loss_tracker = keras.metrics.Mean(name="student_loss")
        if teacher.built and student.built:
            self.built = True

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
        """Validates and assigns coefficients of `self.coefficients`' shape."""
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

    def compile(
        self,
        optimizer="rmsprop",
        loss=None,
        loss_weights=None,
        metrics=None,
        **kwargs,
    ):
        """Configures training: optimizer, student loss and metrics.

        `loss` is kept by the Distiller and weighed against the
        distillation loss by `student_loss_weight` in `compute_loss`.

        Args:
            optimizer: as for `keras.Model.compile`.
            loss: the student's hard-label loss: a `keras.losses` name,
                function or `keras.losses.Loss`, or `None` (default) to
                train on the distillation loss alone.
            loss_weights: must be `None`: the Distiller's one output is
                weighed by `student_loss_weight`.
            metrics: metrics of the student's outputs against the labels,
                as for `keras.Model.compile`.
            **kwargs: the other arguments of `keras.Model.compile`.
        """
        if loss_weights is not None:
            raise ValueError(
                "`loss_weights` is not supported: the Distiller weighs the "
                "student loss by `student_loss_weight` (set it with "
                "`set_student_loss_weight`). Received: "
                f"loss_weights={loss_weights!r}"
            )
        self.student_loss = None if loss is None else _as_loss(loss)
        self._student_loss_identifier = loss
        super().compile(optimizer=optimizer, metrics=metrics, **kwargs)

    def get_compile_config(self):
        """Keras's compile config, with the student loss given to `compile`."""
        config = super().get_compile_config()
        if config:
            config["loss"] = keras.saving.serialize_keras_object(
                self._student_loss_identifier
            )
        return config

    def compile_from_config(self, config):
        """Compiles again from `get_compile_config()` (when loading)."""
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.built and self.optimizer is not None:
            # The optimizer's variables exist before the saved ones load.
            self.optimizer.build(self.trainable_variables)

    def call(self, inputs, training=None):
        if offline.is_offline_batch(inputs):
            inputs = inputs[STUDENT_INPUTS]
        return self.student(inputs, training=training)

    def teacher_outputs(self, x):
        """The teacher's outputs for a batch (cached ones for offline data)."""
        if offline.is_offline_batch(x):
            outputs = x[TEACHER_OUTPUTS]
            # `fit` checks arrays up front; data sets are checked here.
            teacher_shape = _static_shape(self.teacher, "outputs")
            if isinstance(self.distillation_loss, TopKPTLoss):
                _check_packed_shape(outputs, teacher_shape)
            else:
                offline.check_output_shape(outputs, teacher_shape)
            return ops.stop_gradient(outputs)
        return ops.stop_gradient(self.teacher(x, training=False))

    def _aligned_teacher_outputs(self, teacher_outputs, y_pred):
        """Teacher outputs on the student's vocabulary, if aligned."""
        if self.vocab_size is None and self.id_map is None:
            return teacher_outputs
        return apply_alignment(
            teacher_outputs,
            int(y_pred.shape[-1]),
            self._num_real_ids(),
            self.id_map,
            self._reads_teacher_logits(),
        )

    def _reads_teacher_logits(self):
        if isinstance(self.distillation_loss, TopKPTLoss):
            return bool(self._teacher_logits)
        return _teacher_from_logits(self.distillation_loss)

    def _distillation_targets(self, x, y_pred):
        """The distillation loss's `y_true`: aligned or packed top-k outputs."""
        if not isinstance(self.distillation_loss, TopKPTLoss):
            return self._aligned_teacher_outputs(
                self.teacher_outputs(x), y_pred
            )
        if offline.is_offline_batch(x):
            return self.teacher_outputs(x)
        if self.top_k is None:
            raise ValueError(_ONLINE_TOP_K_MESSAGE)
        outputs = self._aligned_teacher_outputs(self.teacher_outputs(x), y_pred)
        return ops.stop_gradient(
            _packed_top_k(
                outputs,
                self.top_k,
                self.distillation_loss.temperature_variable,
                self._teacher_logits,
            )
        )

    def _num_real_ids(self):
        if self.vocab_size is not None:
            return self.vocab_size
        return int(self.id_map.size)

    def compute_loss(
        self, x=None, y=None, y_pred=None, sample_weight=None, training=True
    ):
        if y_pred is None:
            y_pred = self(x, training=training)
        targets = self._distillation_targets(x, y_pred)
        if needs_labels(self.distillation_loss):
            _require_labels(y)
            targets = {TARGET_KEYS[0]: targets, TARGET_KEYS[1]: y}
        distillation = self.distillation_loss(
            targets, y_pred, sample_weight=sample_weight
        )
        if y is None or self.student_loss is None:
            total = distillation
            student = ops.zeros_like(distillation)
        else:
            student = self.student_loss(y, y_pred, sample_weight)
            student = ops.cast(student, "float32")
            weight = ops.cast(self._student_loss_weight, "float32")
            total = weight * student + (1.0 - weight) * distillation
        for extra in self.losses:
            total = total + ops.cast(ops.sum(extra), total.dtype)
        batch_size = ops.shape(keras.tree.flatten(y_pred)[0])[0]
        # Loss objects divide by the replica count under tf.distribute; the
        # trackers hold per-replica means, as Keras's own loss tracker.
        self.distillation_loss_tracker.update_state(
            _unscale_for_distribution(distillation), sample_weight=batch_size
        )
        self.student_loss_tracker.update_state(
            _unscale_for_distribution(student), sample_weight=batch_size
        )
        return total

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        if y is not None:
            return super().compute_metrics(x, y, y_pred, sample_weight)
        # Without labels only the losses are reported.
        return {
            metric.name: metric.result()
            for metric in self.metrics
            if metric.name in LABEL_FREE_LOGS
        }

    def get_metrics_result(self):
        # Compiled metrics that never saw labels are unbuilt: left out.
        return {
            name: value
            for metric in self.metrics
            if getattr(metric, "built", True)
            for name, value in _named_results(metric)
        }

    def fit(
        self,
        x=None,
        y=None,
        batch_size=None,
        epochs=1,
        verbose="auto",
        callbacks=None,
        validation_split=0.0,
        validation_data=None,
        shuffle=True,
        class_weight=None,
        sample_weight=None,
        initial_epoch=0,
        steps_per_epoch=None,
        validation_steps=None,
        validation_batch_size=None,
        validation_freq=1,
    ):
        """`keras.Model.fit`, with array data checked before it starts.

        The checks run before Keras's loop because a step sees one traced
        batch, and on JAX an error raised while tracing empties the
        model's variables. For arrays: a loss with `needs_labels` needs
        `y`; integer labels must be class indices of the student; offline
        teacher outputs must have the teacher's output shape; under a
        `keras.distribution` layout on JAX or a multi-replica
        `tf.distribute` strategy, every batch (the last and validation
        ones too) must divide by the number of devices.

        Args:
            x, y, batch_size, epochs, verbose, callbacks, validation_split,
            validation_data, shuffle, class_weight, sample_weight,
            initial_epoch, steps_per_epoch, validation_steps,
            validation_batch_size, validation_freq: as for
                `keras.Model.fit` (same order and defaults; positional or
                by keyword).

        Returns:
            The `keras.callbacks.History` of `keras.Model.fit`.

        Example:

        >>> import keras, numpy as np
        >>> from keras_ptloss import Distiller, PTLoss
        >>> teacher = keras.Sequential(
        ...     [keras.Input((4,)), keras.layers.Dense(3)])
        >>> student = keras.Sequential(
        ...     [keras.Input((4,)), keras.layers.Dense(3)])
        >>> distiller = Distiller(teacher, student, PTLoss([0.5, 0.0]))
        >>> distiller.compile(
        ...     optimizer="adam", loss="sparse_categorical_crossentropy")
        >>> x, y = np.ones((32, 4)), np.zeros((32,), "int32")
        >>> history = distiller.fit(x, y, 16, 2, verbose=0)
        >>> len(history.history["loss"])
        2
        """
        _check_weights_without_labels(x, y, sample_weight)
        if (
            isinstance(validation_data, (tuple, list))
            and len(validation_data) == 3
        ):
            _check_weights_without_labels(*validation_data, "validation_data")
        if _is_arrays(x):
            if needs_labels(self.distillation_loss):
                _require_labels(y)
            _check_labels(self.student, y)
            self._check_array_targets(x)
            _check_divisible(
                self,
                x,
                batch_size,
                {
                    "steps_per_epoch": steps_per_epoch,
                    "validation_split": validation_split,
                    "validation_data": validation_data,
                    "validation_batch_size": validation_batch_size,
                },
            )
        return super().fit(
            x=x,
            y=y,
            batch_size=batch_size,
            epochs=epochs,
            verbose=verbose,
            callbacks=callbacks,
            validation_split=validation_split,
            validation_data=validation_data,
            shuffle=shuffle,
            class_weight=class_weight,
            sample_weight=sample_weight,
            initial_epoch=initial_epoch,
            steps_per_epoch=steps_per_epoch,
            validation_steps=validation_steps,
            validation_batch_size=validation_batch_size,
            validation_freq=validation_freq,
        )

    def evaluate(
        self,
        x=None,
        y=None,
        batch_size=None,
        verbose="auto",
        sample_weight=None,
        steps=None,
        callbacks=None,
        return_dict=False,
        **kwargs,
    ):
        """`keras.Model.evaluate`, with array data checked before it starts.

        Arrays with `sample_weight` but no `y` raise, as in `fit`.

        Args:
            x, y, batch_size, verbose, sample_weight, steps, callbacks,
            return_dict: as for `keras.Model.evaluate` (same order and
                defaults; positional or by keyword).
            **kwargs: passed on to `keras.Model.evaluate`.

        Returns:
            What `keras.Model.evaluate` returns.
        """
        _check_weights_without_labels(x, y, sample_weight)
        if _is_arrays(x):
            self._check_array_targets(x)
        return super().evaluate(
            x=x,
            y=y,
            batch_size=batch_size,
            verbose=verbose,
            sample_weight=sample_weight,
            steps=steps,
            callbacks=callbacks,
            return_dict=return_dict,
            **kwargs,
        )

    def _check_array_targets(self, x):
        """Checks that array data's cached teacher outputs fit the loss."""
        teacher_shape = _static_shape(self.teacher, "outputs")
        is_top_k = isinstance(self.distillation_loss, TopKPTLoss)
        if not offline.is_offline_batch(x):
            if is_top_k and self.top_k is None:
                raise ValueError(_ONLINE_TOP_K_MESSAGE)
            return
        outputs = x[TEACHER_OUTPUTS]
        num_inputs = offline.num_examples(x[STUDENT_INPUTS])
        if not is_top_k:
            offline.check_output_shape(outputs, teacher_shape, num_inputs)
            return
        _check_packed_shape(outputs, teacher_shape, num_inputs)
        student_shape = _static_shape(self.student, "outputs")
        if not isinstance(outputs, np.ndarray):
            return
        k = outputs.shape[-1] // 2
        indices, log_probs = outputs[..., :k], outputs[..., k:]
        if outputs.size and (
            np.any(indices < 0)
            or np.any(indices != np.round(indices))
            or np.any(log_probs > 1e-6)
        ):
            raise ValueError(
                "A TopKPTLoss reads packed top-k targets (`precompute_top_k`"
                ": k class ids >= 0, then k log-probabilities <= 0), but "
                "`teacher_outputs` holds other values (the teacher's full "
                "outputs?). Build them with `keras_ptloss."
                "precompute_top_k`. Received: ids in "
                f"[{indices.min()}, {indices.max()}], log-probabilities up "
                f"to {log_probs.max()}"
            )
        if student_shape is not None:
            check_host_indices(outputs, keras.KerasTensor(student_shape))

    def precompute_teacher(
        self, x, y=None, sample_weight=None, batch_size=32, cache=None
    ):
        """Runs the teacher once and returns data that carries its outputs.

        Each input batch `x` becomes
        `{"student_inputs": x, "teacher_outputs": t}`; `fit`/`evaluate` on
        it run no teacher forward pass and give the same losses.

        - Arrays: returns `(x_offline, y, sample_weight)`.
        - A batched `tf.data.Dataset`: iterated once and returned as an
          in-memory dataset of the same batches (augmentation and
          shuffling are frozen to that pass).
        - A `keras.utils.PyDataset`: returns a `PyDataset` pairing the
          source's batches with the cached outputs; a batch that changed
          since the teacher pass raises.

        With `cache="teacher.npz"` (arrays only), the outputs are saved with
        fingerprints of the teacher's weights, of `x` and of the outputs; a
        later call with the same path loads them after checking all three.
        Array outputs must be finite and, with `vocab_size` or `id_map`,
        put no real probability on the teacher ids the alignment drops.

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
        if isinstance(self.distillation_loss, TopKPTLoss):
            raise ValueError(
                "`precompute_teacher` caches the teacher's full outputs, "
                "but this Distiller's TopKPTLoss reads top-k targets: "
                "build them with `keras_ptloss."
                "precompute_top_k(teacher, x, k, temperature=..., "
                "vocab_size=... or id_map=...)` and pass "
                "`{'student_inputs': x, 'teacher_outputs': packed}`. "
                "Received: distillation_loss="
                f"{type(self.distillation_loss).__name__}"
            )
        data = offline.precompute(
            self.teacher, x, y, sample_weight, batch_size, cache
        )
        if isinstance(data, tuple) and (
            self.vocab_size is not None or self.id_map is not None
        ):
            # The alignment drops the teacher's padding: it must carry no mass.
            outputs = data[0][TEACHER_OUTPUTS]
            check_padding_mass(
                outputs,
                check_alignment(
                    outputs.shape[-1], None, self.vocab_size, self.id_map
                ),
                self.id_map,
                self._reads_teacher_logits(),
                "teacher_outputs",
            )
        return data

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
            top_k=self.top_k,
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("teacher", "student", "distillation_loss"):
            config[key] = keras.saving.deserialize_keras_object(config[key])
        # __init__ freezes the teacher again after deserialization.
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
    if not isinstance(keras.tree.flatten(x)[0], np.ndarray):
        return
    num = offline.num_examples(x)
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


def _is_arrays(x):
    """Arrays or a structure of them (not a data set or a generator)."""
    leaves = keras.tree.flatten(x)
    return bool(leaves) and all(hasattr(leaf, "shape") for leaf in leaves)


def _teacher_from_logits(loss):
    """How the loss reads the teacher (`True` for losses that do not say)."""
    return bool(getattr(loss, "teacher_from_logits", True))


def _as_loss(identifier):
    """`compile`'s student loss as a `keras.losses.Loss`."""
    loss = keras.losses.get(identifier)
    if isinstance(loss, keras.losses.Loss):
        return loss
    if not callable(loss):
        raise ValueError(
            "`loss` must be a keras.losses name, function or Loss, or None. "
            f"Received: loss={identifier!r}"
        )
    return _FunctionLoss(loss)


class _FunctionLoss(keras.losses.Loss):
    """A loss function `fn(y_true, y_pred)` as a `keras.losses.Loss`."""

    def __init__(self, fn):
        super().__init__(name=getattr(fn, "__name__", "student_loss"))
        self.fn = fn

    def call(self, y_true, y_pred):
        return self.fn(y_true, y_pred)


def _saved_layout(loss, weight):
    """The loss's variables and the weight, in the saved order."""
    coefficients = getattr(loss, "coefficients", None)
    temperature = loss.temperature_variable
    first = [v for v in (coefficients, weight, temperature) if v is not None]
    return first + [v for v in loss.variables if not any(v is u for u in first)]


def _named_results(metric):
    """`(name, value)` pairs of a metric's result (a dict for several)."""
    value = metric.result()
    if isinstance(value, dict):
        return list(value.items())
    return [(metric.name, value)]
