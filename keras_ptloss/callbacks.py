"""`ReestimateCoefficients`: re-selects PTLoss coefficients during `fit`.

On JAX, for a model compiled with `loss=PTLoss(...)` (whose loss variables
are not model state), the callback rebuilds the train and test functions
after a change (docs/design.md, "Keras traps").
"""

import time

import keras
import numpy as np

from keras_ptloss._checks import as_float_array
from keras_ptloss._checks import check_bool
from keras_ptloss._checks import check_choice
from keras_ptloss._checks import check_int
from keras_ptloss._checks import check_labels
from keras_ptloss._checks import check_probabilities
from keras_ptloss._checks import fingerprint
from keras_ptloss._checks import softmax
from keras_ptloss._checks import to_numpy
from keras_ptloss._checks import to_numpy_tree
from keras_ptloss._logits import teacher_emits_logits
from keras_ptloss.distiller import Distiller
from keras_ptloss.losses import PTLoss
from keras_ptloss.proxy import check_metric


class ReestimateCoefficients(keras.callbacks.Callback):
    """Re-selects PTLoss's coefficients from a validation split during `fit`.

    At the start of every `frequency`-th epoch, the teacher's probabilities
    on a labelled validation split (computed with the teacher, or given) go
    through `keras_ptloss.select_coefficients`, and the chosen coefficients
    (and, with `tune_temperature=True`, temperature) replace the current
    ones before the epoch's first step. When the teacher, the validation
    data and the settings are unchanged since the last selection (checked
    by a fingerprint of their values), nothing is recomputed.

    Works with:

    - a `keras_ptloss.Distiller` (its own teacher);
    - a model compiled with `loss=PTLoss(...)` (pass `teacher=` or
      `teacher_probs=`);
    - a `keras.distillation.Distiller` whose distillation loss is a
      `keras_ptloss.PTLossDistillation`.

    The order `M` and the mode (`"shared"` or `"classwise"`) are the loss's.

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
        teacher_from_logits: whether the teacher model outputs logits.
            Defaults to `None`: a Distiller's loss's flag, otherwise read
            from the teacher's last layer. A flag that contradicts that
            layer raises.
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
        x_val, y_val, teacher_probs = _check_validation_and_probs(
            validation_data, teacher_probs
        )
        _check_type(teacher, "teacher", keras.Model, "a keras.Model")
        if teacher_from_logits is not None:
            check_bool(teacher_from_logits, "teacher_from_logits")
        _check_type(loss, "loss", PTLoss, "a keras_ptloss.PTLoss")
        _check_type(selector_kwargs, "selector_kwargs", dict, "a dict")
        if selector is not None and not callable(selector):
            raise ValueError(
                f"`selector` must be callable. Received: selector={selector!r}"
            )
        self.x_val = x_val
        self.y_val = y_val
        self.teacher_probs = teacher_probs
        self.teacher = teacher
        self.teacher_from_logits = teacher_from_logits
        self.loss = loss
        self.frequency = check_int(frequency, "frequency", minimum=1)
        self.tune_temperature = check_bool(tune_temperature, "tune_temperature")
        self.metric = check_metric(metric)
        self.seed = seed
        self.selector = selector
        self.selector_kwargs = dict(selector_kwargs or {})
        self.batch_size = check_int(batch_size, "batch_size", minimum=1)
        self.verbose = check_choice(verbose, "verbose", (0, 1))
        self.result = None
        self.num_selections = 0
        self._fingerprint = None
        self._target = None
        self._reestimated = False

    def on_train_begin(self, logs=None):
        self._target = self._resolve_target(self.model)

    def _resolve_target(self, model):
        """`_Target` (the PTLoss, the teacher and its kind) for `model`."""
        if isinstance(model, Distiller):
            loss, teacher = model.distillation_loss, model.teacher
            if not isinstance(loss, PTLoss):
                raise ValueError(
                    "ReestimateCoefficients needs a Distiller built with a "
                    f"PTLoss; this one uses {type(loss).__name__}, which has "
                    "no coefficients."
                )
        else:
            loss, teacher = _keras_distiller_loss(model)
        teacher = teacher if self.teacher is None else self.teacher
        flag = self.teacher_from_logits
        if loss is None:  # a model compiled with a PTLoss
            loss = self.loss or _compiled_ptloss(model)
            if self.teacher_probs is None and teacher is None:
                raise ValueError(
                    "For a model compiled with PTLoss, pass the teacher "
                    "(`teacher=`) or its validation probabilities "
                    "(`teacher_probs=`) to ReestimateCoefficients. Received: "
                    "teacher=None, teacher_probs=None"
                )
        elif flag is None:
            flag = loss.teacher_from_logits
        if self.teacher_probs is None:
            flag = teacher_emits_logits(teacher, flag, "teacher_from_logits")
        # A compiled JAX step reads only variables that are model state; it
        # holds any other variable's value as a constant (retrace needed).
        model_state = {id(v) for v in model.variables}
        retrace = keras.backend.backend() == "jax" and not all(
            id(v) in model_state for v in loss.variables
        )
        return _Target(loss, teacher, flag, retrace)

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
        coefficients = to_numpy(target.loss.coefficients)
        labels = _as_labels(self.y_val)
        settings = (
            coefficients.shape,
            self.metric,
            self.seed,
            self.tune_temperature,
            None if self.tune_temperature else target.loss.temperature,
            repr(sorted(self.selector_kwargs.items())),
        )
        if self.teacher_probs is not None:
            crc = fingerprint([self.teacher_probs, labels])
        else:
            weights = [to_numpy(v) for v in target.teacher.weights]
            crc = fingerprint([weights, self.x_val, labels])
        if (crc, settings) == self._fingerprint and self.result is not None:
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
        result = self._select(probs, labels, coefficients, target)
        temperature = result.temperature if self.tune_temperature else None
        target.apply(model, np.asarray(result.coefficients), temperature)
        self.result = result
        self.num_selections += 1
        self._fingerprint = (crc, settings)
        self._reestimated = True
        self._say(
            epoch,
            f"{self.metric} teacher {result.teacher_score:.5g} -> proxy "
            f"{result.proxy_score:.5g}, selected in "
            f"{time.perf_counter() - start:.2f} s",
        )

    def _select(self, probs, labels, coefficients, target):
        selector = self.selector
        if selector is None:
            from keras_ptloss.selection import select_coefficients

            selector = select_coefficients
        return selector(
            probs,
            labels,
            order=int(coefficients.shape[-1]),
            mode="classwise" if coefficients.ndim == 2 else "shared",
            metric=self.metric,
            temperature=target.loss.temperature,
            tune_temperature=self.tune_temperature,
            seed=self.seed,
            verbose=0,
            **self.selector_kwargs,
        )

    def _teacher_probs(self, target):
        if self.teacher_probs is not None:
            return self.teacher_probs
        outputs = target.teacher.predict(
            self.x_val, batch_size=self.batch_size, verbose=0
        )
        outputs = np.asarray(outputs, dtype="float64")
        if target.teacher_from_logits:
            return softmax(outputs)
        return outputs / outputs.sum(axis=-1, keepdims=True)

    def _say(self, epoch, message):
        if not self.verbose:
            return
        values = to_numpy(self._target.loss.coefficients)
        if values.ndim == 2:
            shown = "class-wise, mean " + np.array2string(
                values.mean(axis=0), precision=4, separator=", "
            )
        else:
            shown = np.array2string(values, precision=4, separator=", ")
        print(
            f"\nEpoch {epoch + 1}: ReestimateCoefficients: eps={shown}, "
            f"T={self._target.loss.temperature:.4g}; {message}",
            flush=True,
        )

    def on_epoch_end(self, epoch, logs=None):
        if logs is None or self._target is None:
            return
        self.model  # noqa: B018 - syncs the JAX state into the variables
        logs.update(self.log_values())

    def log_values(self):
        """The floats written into `logs` at the end of an epoch."""
        if self._target is None or self.result is None:
            return {}
        loss = self._target.loss
        values = to_numpy(loss.coefficients).astype("float64")
        if values.ndim == 2:
            values = values.mean(axis=0)
        out = {f"pt_eps_{m + 1}": float(v) for m, v in enumerate(values)}
        out["pt_temperature"] = loss.temperature
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


class _Target:
    """The PTLoss a callback updates, the teacher, and its output kind."""

    def __init__(self, loss, teacher, teacher_from_logits, retrace):
        self.loss = loss
        self.teacher = teacher
        self.teacher_from_logits = teacher_from_logits
        # Whether a compiled step must be rebuilt to see a change (JAX, and
        # the loss's variables are not model state).
        self.retrace = retrace

    def apply(self, model, coefficients, temperature=None):
        """Assigns new values to the loss; returns whether any changed."""
        old = (to_numpy(self.loss.coefficients).copy(), self.loss.temperature)
        self.loss.set_coefficients(coefficients)
        if temperature is not None:
            self.loss.set_temperature(float(temperature))
        changed = self.loss.temperature != old[1] or not np.array_equal(
            old[0], to_numpy(self.loss.coefficients)
        )
        if changed and self.retrace:
            model.make_train_function(force=True)
            model.make_test_function(force=True)
        return changed


def _check_type(value, name, types, expected):
    if value is not None and not isinstance(value, types):
        raise ValueError(
            f"`{name}` must be None or {expected}. Received: {name}={value!r}"
        )


def _check_validation_and_probs(validation_data, teacher_probs):
    """Checks `(x_val, y_val)` and `teacher_probs`; returns the three."""
    # Kept by reference, so the fingerprint sees in-place edits.
    if not isinstance(validation_data, (tuple, list)) or (
        len(validation_data) != 2
    ):
        raise ValueError(
            "`validation_data` must be a tuple (x_val, y_val). Received: "
            f"validation_data of type {type(validation_data).__name__}"
        )
    x_val, y_val = validation_data
    y_val = to_numpy(y_val)
    labels = _as_labels(y_val)
    if teacher_probs is not None:
        teacher_probs = as_float_array(teacher_probs, "teacher_probs")
        if teacher_probs.ndim != 2 or teacher_probs.shape[0] != len(labels):
            raise ValueError(
                "`teacher_probs` must have shape (N, K) with one row per "
                f"validation label (N={len(labels)}). Received: shape "
                f"{teacher_probs.shape}"
            )
        check_probabilities(teacher_probs, "teacher_probs")
        check_labels(
            y_val if y_val.ndim == 1 else labels,
            len(labels),
            teacher_probs.shape[1],
            "validation_data[1]",
        )
    elif x_val is None:
        raise ValueError(
            "`validation_data[0]` (x_val) is needed to run the teacher "
            "when `teacher_probs` is not given. Received: x_val=None"
        )
    if x_val is not None:
        try:
            x_val = to_numpy_tree(x_val)
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
    return x_val, y_val, teacher_probs


def _keras_distiller_loss(model):
    """`(PTLoss, teacher)` of a keras.distillation.Distiller, else Nones."""
    distillation = getattr(keras, "distillation", None)
    if distillation is None or not isinstance(model, distillation.Distiller):
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
