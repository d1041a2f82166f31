"""`ReestimateCoefficients`: re-selects PTLoss coefficients during `fit`.

Where a change reaches the compiled training step (DESIGN.md §3):

- `keras_ptloss.Distiller`: the coefficients and temperature are variables
  of the model, assigned in place.
- A model compiled with `loss=PTLoss(...)`: the loss's coefficient variable
  is not model state, so a compiled JAX step keeps the value it was traced
  with (TF and torch read the variable at each step), and the loss's
  temperature is a Python float, a constant of the compiled step on JAX and
  TF. After such a change the callback rebuilds the model's train and test
  functions (`make_train_function(force=True)`), which retraces them with
  the new values. No variable is added to the model, so saved models and
  checkpoints keep their usual layout.
- A `keras.distillation.Distiller` using `keras_ptloss.PTLossDistillation`:
  the adapter is a layer of the Distiller, so the coefficient variable is
  model state; only a temperature change needs the rebuild.
"""

import time
import zlib

import keras
import numpy as np
from keras import ops

from keras_ptloss.distiller import Distiller
from keras_ptloss.distiller import _final_activation
from keras_ptloss.losses import PTLoss
from keras_ptloss.proxy import check_metric
from keras_ptloss.proxy import validate_labels
from keras_ptloss.proxy import validate_probs


def _numpy(value):
    if isinstance(value, np.ndarray):
        return value  # a reference: in-place edits stay visible
    if isinstance(value, keras.Variable):
        # Not `.value`: a scalar MirroredVariable's value cannot be converted
        # inside a tf.distribute scope.
        return np.asarray(value.numpy())
    return np.asarray(ops.convert_to_numpy(value))


def _crc(values, crc=0):
    for value in keras.tree.flatten(values):
        array = np.ascontiguousarray(np.asarray(value))
        crc = zlib.crc32(repr((array.dtype.str, array.shape)).encode(), crc)
        crc = zlib.crc32(array.view(np.uint8).reshape(-1), crc)
    return crc


def _softmax(logits):
    z = np.asarray(logits, dtype="float64")
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


class _Target:
    """Where the coefficients live and how a change is applied."""

    def __init__(
        self, kind, owner, teacher, teacher_from_logits, tracked=False
    ):
        self.kind = kind  # "distiller", "loss"
        self.owner = owner  # the Distiller, or the PTLoss
        # Whether the loss's coefficient variable is model state (a
        # PTLossDistillation inside a keras.distillation.Distiller).
        self.tracked = tracked
        self.teacher = teacher
        self.teacher_from_logits = teacher_from_logits

    @property
    def coefficients(self):
        return self.owner.coefficients

    @property
    def temperature(self):
        if self.kind == "distiller":
            return float(_numpy(self.owner.temperature))
        return float(self.owner.temperature)

    def apply(self, model, coefficients, temperature):
        """Assigns new values; returns whether anything changed."""
        old = _numpy(self.coefficients)
        changed = not np.array_equal(old, np.asarray(coefficients, "float32"))
        changed_t = (
            temperature is not None and float(temperature) != self.temperature
        )
        if self.kind == "distiller":
            self.owner.set_coefficients(coefficients)
            if changed_t:
                self.owner.set_temperature(temperature)
            return changed or changed_t
        self.owner.set_coefficients(coefficients)
        if changed_t:
            self.owner.temperature = float(temperature)
        # A compiled step holds a Python float (the loss's temperature) as a
        # constant on JAX and TF, and, on JAX with jit, the value of a
        # variable that is not model state: retrace it. (TF and torch read
        # the variable itself at each step.)
        untracked = changed and not self.tracked
        if changed_t or (untracked and keras.backend.backend() == "jax"):
            model.make_train_function(force=True)
            model.make_test_function(force=True)
        return changed or changed_t


def _check_positive_int(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(
            f"`{name}` must be a positive int. Received: {name}={value!r}"
        )
    if value < 1:
        raise ValueError(f"`{name}` must be >= 1. Received: {name}={value}")
    return int(value)


class ReestimateCoefficients(keras.callbacks.Callback):
    """Re-selects PTLoss's coefficients from a validation split during `fit`.

    At the start of every `frequency`-th epoch, the teacher's probabilities
    on a labelled validation split (computed with the teacher, or given) go
    through `keras_ptloss.select_coefficients`, and the chosen coefficients
    (and, with `tune_temperature=True`, temperature) replace the current
    ones before the epoch's first step. The selection depends only on the
    teacher and the validation split, not on the student: when neither has
    changed since the last selection (same teacher weights, same data, same
    settings; checked by a fingerprint of their values, so in-place edits of
    numpy validation arrays count as changes), nothing is recomputed.

    Works with:

    - a `keras_ptloss.Distiller` (its own teacher; its coefficient and
      temperature variables are assigned);
    - a model compiled with `loss=PTLoss(...)` (pass `teacher=` or
      `teacher_probs=`);
    - a `keras.distillation.Distiller` whose distillation loss is a
      `keras_ptloss.PTLossDistillation`.

    The order `M` and the mode (`"shared"` for coefficients of shape `(M,)`,
    `"classwise"` for `(K, M)`) are those of the loss.

    At the end of each epoch the values in effect and the selection's
    scores are written into `logs`, so `History`, `CSVLogger` and
    `TensorBoard` record them (list those callbacks after this one):
    `pt_eps_1` ... `pt_eps_M` (the coefficients; for class-wise ones, their
    mean over classes), `pt_temperature`, `pt_teacher_<metric>` and
    `pt_proxy_<metric>` (closeness of the teacher and of the proxy teacher
    to the labels on the selection split; lower is closer), the same with
    `pt_holdout_` on the held-out part when there is one, and
    `pt_reestimated` (1.0 if a selection ran at this epoch's start).

    Args:
        validation_data: `(x_val, y_val)`: validation inputs (may be `None`
            when `teacher_probs` is given) and integer labels of shape
            `(N,)` (one-hot labels of shape `(N, K)` are accepted).
        teacher_probs: optional teacher probabilities on `x_val` at
            temperature 1, shape `(N, K)`; used instead of running the
            teacher.
        teacher: the teacher model, for a model compiled with `PTLoss`
            (a Distiller's own teacher is used otherwise).
        teacher_from_logits: whether the teacher outputs logits. Defaults
            to `None`: the Distiller's loss's `teacher_from_logits`, or, for
            `teacher=`, read from its last layer (no activation: logits;
            softmax: probabilities).
        loss: the `PTLoss` to update in a model compiled with several
            losses. Defaults to `None`: the model's only `PTLoss`.
        frequency: re-estimate at the start of every `frequency`-th epoch
            (epochs 0, `frequency`, `2 * frequency`, ...). Defaults to 1.
        tune_temperature: also choose the temperature. Defaults to `False`.
        metric: closeness metric passed to the selector (`"brier"`).
        seed: seed passed to the selector.
        selector: the selection function, called as
            `selector(teacher_probs, labels, order=, mode=, metric=,
            temperature=, tune_temperature=, seed=, verbose=0, **kwargs)`
            and returning an object with `coefficients`, `temperature`,
            `teacher_score`, `proxy_score`, `holdout_teacher_score` and
            `holdout_proxy_score`. Defaults to
            `keras_ptloss.select_coefficients`.
        selector_kwargs: extra keyword arguments for the selector (e.g.
            `num_candidates`).
        batch_size: batch size of the teacher's pass over `x_val`.
        verbose: `1` prints one line per epoch; `0` is silent.

    Attributes:
        result: the latest selection result (`None` before the first).
        num_selections: how many selections ran.

    Example:

    >>> import keras, numpy as np
    >>> from keras_ptloss import Distiller, PTLoss, ReestimateCoefficients
    >>> rng = np.random.default_rng(0)
    >>> x, x_val = rng.normal(size=(32, 4)), rng.normal(size=(64, 4))
    >>> y_val = rng.integers(0, 3, size=64)
    >>> teacher = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> student = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> distiller = Distiller(
    ...     teacher, student, PTLoss([0.0, 0.0], teacher_from_logits=True))
    >>> distiller.compile(optimizer="adam")
    >>> callback = ReestimateCoefficients(
    ...     (x_val, y_val), selector_kwargs={"num_candidates": 8}, verbose=0)
    >>> history = distiller.fit(x, epochs=2, callbacks=[callback], verbose=0)
    >>> callback.num_selections  # the teacher and data did not change
    1
    >>> "pt_eps_1" in history.history
    True
    """

    def __init__(
        self,
        validation_data,
        teacher_probs=None,
        teacher=None,
        teacher_from_logits=None,
        loss=None,
        frequency=1,
        tune_temperature=False,
        metric="brier",
        seed=0,
        selector=None,
        selector_kwargs=None,
        batch_size=256,
        verbose=1,
    ):
        super().__init__()
        if (
            not isinstance(validation_data, (tuple, list))
            or len(validation_data) != 2
        ):
            raise ValueError(
                "`validation_data` must be a tuple (x_val, y_val). Received: "
                f"validation_data of type {type(validation_data).__name__}"
            )
        x_val, y_val = validation_data
        y_val = _numpy(y_val)  # no copy for numpy: in-place edits are seen
        labels = _as_labels(y_val)
        if teacher_probs is not None:
            teacher_probs = np.asarray(_numpy(teacher_probs), "float64")
            if teacher_probs.ndim != 2 or teacher_probs.shape[0] != len(labels):
                raise ValueError(
                    "`teacher_probs` must have shape (N, K) with one row per "
                    f"validation label (N={len(labels)}). Received: shape "
                    f"{teacher_probs.shape}"
                )
            validate_probs(teacher_probs, "teacher_probs")
            validate_labels(
                y_val if y_val.ndim == 1 else labels,
                len(labels),
                teacher_probs.shape[1],
                name="validation_data[1]",
            )
        elif x_val is None:
            raise ValueError(
                "`validation_data[0]` (x_val) is needed to run the teacher "
                "when `teacher_probs` is not given. Received: x_val=None"
            )
        if x_val is not None:
            try:
                x_val = _numpy_tree(x_val)
                num = keras.tree.flatten(x_val)[0].shape[0]
            except Exception as e:
                raise ValueError(
                    "`validation_data[0]` must be arrays (numpy or backend "
                    "tensors, or a list/dict of them). Received: x_val of "
                    f"type {type(x_val).__name__}"
                ) from e
            if num != labels.shape[0]:
                raise ValueError(
                    "`validation_data` must hold as many inputs as labels. "
                    f"Received: {num} inputs and {labels.shape[0]} labels"
                )
        if teacher is not None and not isinstance(teacher, keras.Model):
            raise ValueError(
                "`teacher` must be a keras.Model. Received: "
                f"teacher of type {type(teacher).__name__}"
            )
        if teacher_from_logits is not None and not isinstance(
            teacher_from_logits, bool
        ):
            raise ValueError(
                "`teacher_from_logits` must be None or a bool. Received: "
                f"teacher_from_logits={teacher_from_logits!r}"
            )
        if loss is not None and not isinstance(loss, PTLoss):
            raise ValueError(
                f"`loss` must be a keras_ptloss.PTLoss. Received: loss={loss!r}"
            )
        if selector is not None and not callable(selector):
            raise ValueError(
                f"`selector` must be callable. Received: selector={selector!r}"
            )
        if selector_kwargs is not None and not isinstance(
            selector_kwargs, dict
        ):
            raise ValueError(
                "`selector_kwargs` must be a dict. Received: "
                f"selector_kwargs={selector_kwargs!r}"
            )
        if not isinstance(tune_temperature, bool):
            raise ValueError(
                "`tune_temperature` must be a bool. Received: "
                f"tune_temperature={tune_temperature!r}"
            )
        if verbose not in (0, 1):
            raise ValueError(
                f"`verbose` must be 0 or 1. Received: verbose={verbose!r}"
            )
        if not isinstance(metric, str):
            raise ValueError(
                f"`metric` must be a string. Received: metric={metric!r}"
            )
        check_metric(metric)
        self.x_val = x_val
        self.y_val = y_val
        self.teacher_probs = teacher_probs
        self.teacher = teacher
        self.teacher_from_logits = teacher_from_logits
        self.loss = loss
        self.frequency = _check_positive_int(frequency, "frequency")
        self.tune_temperature = tune_temperature
        self.metric = metric
        self.seed = seed
        self.selector = selector
        self.selector_kwargs = dict(selector_kwargs or {})
        self.batch_size = _check_positive_int(batch_size, "batch_size")
        self.verbose = verbose
        self.result = None
        self.num_selections = 0
        self._fingerprint = None
        self._target = None
        self._reestimated = False

    # ------------------------------------------------------------------

    def on_train_begin(self, logs=None):
        self._target = self._resolve_target(self.model)

    def _resolve_target(self, model):
        if isinstance(model, Distiller):
            if model.coefficients is None:
                raise ValueError(
                    "ReestimateCoefficients needs a Distiller built with a "
                    "PTLoss; this one uses "
                    f"{type(model.distillation_loss).__name__}, which has no "
                    "coefficients."
                )
            teacher = model.teacher if self.teacher is None else self.teacher
            from_logits = self.teacher_from_logits
            if from_logits is None:
                from_logits = model.distillation_loss.teacher_from_logits
            return _Target("distiller", model, teacher, from_logits)

        adapter_loss, teacher = self._keras_distiller_loss(model)
        if adapter_loss is not None:
            loss = adapter_loss
            teacher = teacher if self.teacher is None else self.teacher
            from_logits = self.teacher_from_logits
            if from_logits is None:
                from_logits = loss.teacher_from_logits
            return _Target("loss", loss, teacher, from_logits, tracked=True)

        loss = self.loss or self._compiled_ptloss(model)
        teacher = self.teacher
        if self.teacher_probs is None and teacher is None:
            raise ValueError(
                "For a model compiled with PTLoss, pass the teacher "
                "(`teacher=`) or its validation probabilities "
                "(`teacher_probs=`) to ReestimateCoefficients. Received: "
                "teacher=None, teacher_probs=None"
            )
        from_logits = self.teacher_from_logits
        if from_logits is None and self.teacher_probs is None:
            kind, layer = _final_activation(teacher)
            if kind is None:
                raise ValueError(
                    "Cannot tell whether the teacher outputs logits or "
                    f"probabilities (its last layer {layer!r} is neither "
                    "linear nor softmax). Pass `teacher_from_logits`. "
                    "Received: teacher_from_logits=None"
                )
            from_logits = kind == "linear"
        return _Target("loss", loss, teacher, from_logits)

    @staticmethod
    def _keras_distiller_loss(model):
        distillation = getattr(keras, "distillation", None)
        if distillation is None or not isinstance(
            model, distillation.Distiller
        ):
            return None, None
        from keras_ptloss.interop import PTLossDistillation

        found = [
            d.loss
            for d in model.distillation_losses
            if isinstance(d, PTLossDistillation) and isinstance(d.loss, PTLoss)
        ]
        if len(found) != 1:
            raise ValueError(
                "ReestimateCoefficients needs exactly one "
                "keras_ptloss.PTLossDistillation wrapping a PTLoss in the "
                "keras.distillation.Distiller's `distillation_losses`. "
                f"Received: {len(found)}"
            )
        return found[0], model.teacher

    @staticmethod
    def _compiled_ptloss(model):
        compiled = getattr(model, "loss", None)
        found = [
            loss
            for loss in keras.tree.flatten(compiled)
            if isinstance(loss, PTLoss)
        ]
        if len(found) != 1:
            raise ValueError(
                "ReestimateCoefficients needs a model compiled with exactly "
                "one keras_ptloss.PTLoss (or pass `loss=`), a "
                "keras_ptloss.Distiller, or a keras.distillation.Distiller "
                "with PTLossDistillation. Received: a model compiled with "
                f"loss={compiled!r}"
            )
        return found[0]

    # ------------------------------------------------------------------

    def on_epoch_begin(self, epoch, logs=None):
        model = self.model  # syncs the JAX state into the variables
        if self._target is None:
            self._target = self._resolve_target(model)
        self._reestimated = False
        due = epoch % self.frequency == 0 or self.result is None
        if not due:
            self._say(epoch, f"not due (frequency={self.frequency})")
            return
        start = time.perf_counter()
        target = self._target
        coefficients = _numpy(target.coefficients)
        labels = _as_labels(self.y_val)
        settings = (
            coefficients.shape,
            self.metric,
            self.seed,
            self.tune_temperature,
            None if self.tune_temperature else target.temperature,
            repr(sorted(self.selector_kwargs.items())),
        )
        if self.teacher_probs is not None:
            fingerprint = _crc([self.teacher_probs, labels])
        else:
            weights = [_numpy(v) for v in target.teacher.weights]
            fingerprint = _crc([weights, self.x_val, labels])
        fingerprint = (fingerprint, settings)
        if fingerprint == self._fingerprint and self.result is not None:
            self._say(epoch, "teacher and validation data unchanged")
            return
        probs = self._teacher_probs(target)
        num_classes = _num_classes(model, coefficients)
        if num_classes is not None and probs.shape[-1] != num_classes:
            raise ValueError(
                "`teacher_probs` (the teacher's validation probabilities) "
                "must have one column per class of the model "
                f"({num_classes}). Received: "
                f"teacher_probs with shape {probs.shape}"
            )
        selector = self.selector
        if selector is None:
            from keras_ptloss.selection import select_coefficients

            selector = select_coefficients
        result = selector(
            probs,
            labels,
            order=int(coefficients.shape[-1]),
            mode="classwise" if coefficients.ndim == 2 else "shared",
            metric=self.metric,
            temperature=target.temperature,
            tune_temperature=self.tune_temperature,
            seed=self.seed,
            verbose=0,
            **self.selector_kwargs,
        )
        temperature = (
            float(result.temperature) if self.tune_temperature else None
        )
        target.apply(model, np.asarray(result.coefficients), temperature)
        self.result = result
        self.num_selections += 1
        self._fingerprint = fingerprint
        self._reestimated = True
        self._say(
            epoch,
            f"{self.metric} teacher {result.teacher_score:.5g} -> proxy "
            f"{result.proxy_score:.5g}, selected in "
            f"{time.perf_counter() - start:.2f} s",
        )

    def _teacher_probs(self, target):
        if self.teacher_probs is not None:
            return self.teacher_probs
        outputs = target.teacher.predict(
            self.x_val, batch_size=self.batch_size, verbose=0
        )
        outputs = np.asarray(outputs, dtype="float64")
        if target.teacher_from_logits:
            return _softmax(outputs)
        return outputs / outputs.sum(axis=-1, keepdims=True)

    def _say(self, epoch, message):
        if not self.verbose:
            return
        values = _numpy(self._target.coefficients)
        if values.ndim == 2:
            shown = "class-wise, mean " + np.array2string(
                values.mean(axis=0), precision=4, separator=", "
            )
        else:
            shown = np.array2string(values, precision=4, separator=", ")
        print(
            f"\nEpoch {epoch + 1}: ReestimateCoefficients: eps={shown}, "
            f"T={self._target.temperature:.4g}; {message}",
            flush=True,
        )

    def on_epoch_end(self, epoch, logs=None):
        if logs is None or self._target is None:
            return
        self.model  # noqa: B018 - syncs the JAX state into the variables
        logs.update(self.log_values())

    def log_values(self):
        """The values written into `logs` at the end of an epoch.

        Returns:
            A dict of Python floats (empty before the first selection).
        """
        if self._target is None or self.result is None:
            return {}
        values = _numpy(self._target.coefficients).astype("float64")
        if values.ndim == 2:
            values = values.mean(axis=0)
        out = {f"pt_eps_{m + 1}": float(v) for m, v in enumerate(values)}
        out["pt_temperature"] = float(self._target.temperature)
        result, metric = self.result, self.metric
        out[f"pt_teacher_{metric}"] = float(result.teacher_score)
        out[f"pt_proxy_{metric}"] = float(result.proxy_score)
        if getattr(result, "holdout_proxy_score", None) is not None:
            out[f"pt_holdout_teacher_{metric}"] = float(
                result.holdout_teacher_score
            )
            out[f"pt_holdout_proxy_{metric}"] = float(
                result.holdout_proxy_score
            )
        out["pt_reestimated"] = 1.0 if self._reestimated else 0.0
        return out


def _as_labels(y_val):
    labels = np.asarray(y_val)
    if labels.ndim == 2:
        labels = labels.argmax(axis=-1)
    if labels.ndim != 1 or labels.shape[0] == 0:
        raise ValueError(
            "`validation_data[1]` must hold integer labels of shape (N,) "
            "or one-hot labels of shape (N, K), N > 0. Received: shape "
            f"{np.shape(y_val)}"
        )
    return labels.astype("int64")


def _num_classes(model, coefficients):
    """The model's number of classes, or `None` when it cannot be read."""
    if coefficients.ndim == 2:
        return int(coefficients.shape[0])
    student = getattr(model, "student", model)
    try:
        size = student.outputs[0].shape[-1]
    except (AttributeError, IndexError, TypeError, ValueError):
        return None
    return None if size is None else int(size)


def _numpy_tree(structure):
    return keras.tree.map_structure(_numpy, structure)
