"""Students trained together in one compiled step.

See docs/design.md, "The student-aware search".
"""

import keras
import numpy as np
from keras import ops

from keras_ptloss._checks import check_number
from keras_ptloss._checks import check_standardizable
from keras_ptloss._core import perturbed_terms
from keras_ptloss._core import z_score
from keras_ptloss._fit_state import UntrackedFitState


def _member_signature(model):
    return [tuple(w.shape) for w in model.weights]


# Optimizers whose update of a variable depends on all of its entries (a
# norm or a factorisation): on the stacked weights they would couple the
# members.
_COUPLING_OPTIMIZERS = ("Adafactor", "Lamb", "Muon")


def _check_member_optimizer(optimizer):
    """Refuses an optimizer whose update would mix the members' weights."""
    name = type(optimizer).__name__
    if name in _COUPLING_OPTIMIZERS:
        raise ValueError(
            f"`optimizer` must update every weight on its own: {name} scales "
            "a variable's update by a norm or factorisation over the whole "
            "variable, which on the population's stacked weights would mix "
            f"the members. Received: {name}"
        )
    for option in ("global_clipnorm", "clipnorm"):
        if getattr(optimizer, option, None):
            raise ValueError(
                f"`optimizer` must not clip by norm: `{option}` would clip "
                "the members' stacked gradients together and couple them "
                "(clip with `clipvalue`). Received: "
                f"{option}={getattr(optimizer, option)}"
            )


def _constant(values):
    """An initializer returning `values` (no compiled fill on JAX)."""
    values = np.asarray(values)

    def initializer(shape, dtype=None):
        return values.reshape(shape)

    return initializer


def _check_member_axis(member_axis):
    """Checks `member_axis`; with a name, also the backend and the mesh."""
    if member_axis is None:
        return None
    if not isinstance(member_axis, str):
        raise ValueError(
            "`member_axis` must be the name of a device-mesh axis or None. "
            f"Received: member_axis={member_axis!r}"
        )
    _member_distribution(member_axis)
    return member_axis


def _member_distribution(member_axis):
    """The current distribution, checked to have `member_axis`."""
    backend = keras.backend.backend()
    if backend != "jax":
        raise ValueError(
            "`member_axis` lays the members out with `keras.distribution`, "
            "which Keras implements for the JAX backend only. Received: "
            f"member_axis={member_axis!r} on the {backend} backend"
        )
    distribution = keras.distribution.distribution()
    if distribution is None:
        raise ValueError(
            "`member_axis` needs a distribution: call `keras.distribution."
            "set_distribution(...)` with a device mesh holding that axis "
            "first. Received: member_axis="
            f"{member_axis!r} with no distribution set"
        )
    names = tuple(distribution.device_mesh.axis_names)
    if member_axis not in names or member_axis == distribution.batch_dim_name:
        raise ValueError(
            "`member_axis` must name an axis of the distribution's device "
            f"mesh other than its batch axis {distribution.batch_dim_name!r}"
            f". Received: member_axis={member_axis!r}, mesh axes {names}"
        )
    return distribution


@keras.saving.register_keras_serializable(package="keras_ptloss")
class StudentPopulation(UntrackedFitState, keras.Model):
    """`N` students trained together, each on its own PTLoss.

        loss = sum_n mean_batch[(1 - w) * PTLoss_n(t, z_n) + w * CE(y, z_n)]

    `y` is the teacher logits, or `concatenate([teacher_logits,
    one_hot(labels)], -1)` when `w > 0`. Sequence outputs are averaged over
    positions.

    The population holds the members' weights stacked, `(N, ...)` per
    weight of a member, and runs the first member's computation on each
    slice with `keras.ops.vectorized_map`: one compiled step whose size
    does not grow with `N`. `fit` writes the trained weights back into the
    members; `members` returns them with the population's current weights.
    Every weight is updated on its own by the optimizer, so a member trains
    as it would alone; optimizers that couple the entries of a variable
    (norm clipping, Adafactor, Lamb, Muon) are refused by `fit`.

    Args:
        members: `N >= 1` built students with identical weight shapes.
        coefficients: array `(N, K, M)` or `(N, M)`.
        temperatures: array `(N,)` of positive temperatures.
        standardize: array `(N,)` of bools. Defaults to all `False`.
        student_loss_weight: hard-label weight `w` in `[0, 1]`.
        delta: the `delta` of the standardisation.
        member_axis: name of an axis of the device mesh of the current
            `keras.distribution` (JAX backend only) to shard the member
            axis of the stacked outputs over in the training step: the
            loss of each member is computed on its share of the devices,
            the batch axis stays on the distribution's `batch_dim_name`.
            The distribution must be set before the population is built.
            Defaults to `None` (outputs laid out as Keras lays them out).

    Example:

    >>> import keras, numpy as np
    >>> def build():
    ...     return keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> population = StudentPopulation(
    ...     [build(), build()], np.zeros((2, 2)), [1.0, 4.0]
    ... )
    >>> tuple(population(np.zeros((5, 4))).shape)
    (5, 2, 3)
    """

    def __init__(
        self,
        members,
        coefficients,
        temperatures,
        standardize=None,
        student_loss_weight=0.0,
        delta=1e-7,
        member_axis=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.member_axis = _check_member_axis(member_axis)
        members = list(members)
        if not members:
            raise ValueError(
                "`members` must hold at least one student. Received: members=[]"
            )
        signature = _member_signature(members[0])
        for i, member in enumerate(members[1:], start=1):
            if _member_signature(member) != signature:
                raise ValueError(
                    "Every member must have the same weight shapes. Member 0 "
                    f"has {signature}, member {i} has "
                    f"{_member_signature(member)}"
                )
        size = len(members)
        values = np.asarray(coefficients, dtype="float32")
        if values.ndim == 2:
            values = values[:, None, :]
        if values.ndim != 3 or values.shape[0] != size:
            raise ValueError(
                f"`coefficients` must have shape ({size}, M) or ({size}, K, "
                f"M). Received: coefficients with shape {values.shape}"
            )
        temps = np.asarray(temperatures, dtype="float32").reshape(-1)
        if temps.shape != (size,) or not np.all(temps > 0):
            raise ValueError(
                f"`temperatures` must be {size} positive numbers. Received: "
                f"temperatures={np.asarray(temperatures).tolist()}"
            )
        flags = np.zeros(size) if standardize is None else standardize
        flags = np.asarray(flags, dtype="float32").reshape(-1)
        if flags.shape != (size,):
            raise ValueError(
                f"`standardize` must hold {size} flags. Received: "
                f"standardize={np.asarray(standardize).tolist()}"
            )
        weight = check_number(
            student_loss_weight, "student_loss_weight", 0.0, 1.0
        )
        # Not tracked: the stacked copies below are the population's weights.
        object.__setattr__(self, "_members", tuple(members))
        self._stacked_trainable = self._stack(
            members, lambda m: m.trainable_variables, True
        )
        self._stacked_non_trainable = self._stack(
            members, lambda m: m.non_trainable_variables, False
        )
        # Cleared on torch when torch.vmap cannot run the members (see `call`).
        self._vectorize = True
        self.delta = check_number(delta, "delta", low=0.0)
        # Static: which terms to build; the values are variables.
        self.any_standardize = bool(np.any(flags > 0))
        self.with_labels = weight > 0
        self.coefficients = self.add_weight(
            shape=values.shape,
            initializer=_constant(values),
            trainable=False,
            name="coefficients",
        )
        self.temperatures = self.add_weight(
            shape=(size,),
            initializer=_constant(temps),
            trainable=False,
            name="temperatures",
        )
        self.standardize = self.add_weight(
            shape=(size,),
            initializer=_constant(flags),
            trainable=False,
            name="standardize",
        )
        self.student_loss_weight = self.add_weight(
            shape=(),
            initializer=_constant(weight),
            trainable=False,
            name="student_loss_weight",
        )

    def _stack(self, members, variables, trainable):
        stacked = []
        for j, variable in enumerate(variables(members[0])):
            values = np.stack(
                [ops.convert_to_numpy(variables(m)[j]) for m in members]
            )
            stacked.append(
                self.add_weight(
                    shape=values.shape,
                    dtype=variable.dtype,
                    initializer=_constant(values),
                    trainable=trainable,
                    name="stacked_" + variable.path.replace("/", "_"),
                )
            )
        return stacked

    @property
    def size(self):
        return len(self._members)

    @property
    def members(self):
        """The members, holding the population's current weights."""
        self._write_members()
        return list(self._members)

    def _write_members(self):
        for stacked, variables in (
            (self._stacked_trainable, "trainable_variables"),
            (self._stacked_non_trainable, "non_trainable_variables"),
        ):
            values = [ops.convert_to_numpy(v) for v in stacked]
            for i, member in enumerate(self._members):
                for variable, value in zip(
                    getattr(member, variables), values, strict=True
                ):
                    variable.assign(value[i])

    def fit(self, *args, **kwargs):
        if self.optimizer is not None:
            _check_member_optimizer(self.optimizer)
        history = super().fit(*args, **kwargs)
        self._write_members()
        return history

    def call(self, x, training=False):
        template = self._members[0]
        regularized = []

        def member(weights):
            outputs, updates, losses = template.stateless_call(
                *weights, x, training=training, return_losses=True
            )
            regularized.append(bool(losses))
            penalty = ops.sum(ops.stack(losses)) if losses else 0.0
            return outputs, updates, ops.convert_to_tensor(penalty)

        weights = (
            [v.value for v in self._stacked_trainable],
            [v.value for v in self._stacked_non_trainable],
        )
        if self._vectorize:
            try:
                outputs, updates, penalties = ops.vectorized_map(
                    member, weights
                )
            except Exception:
                # torch.vmap lacks some kernels (Conv2D's memory formats)
                # and cannot batch random seeds: there the members run one
                # after the other; an error of the model itself comes again
                # from that path.
                if keras.backend.backend() != "torch":
                    raise
                self._vectorize = False
                regularized.clear()
        if not self._vectorize:
            results = [
                member(keras.tree.map_structure(lambda v, i=i: v[i], weights))
                for i in range(self.size)
            ]
            outputs, updates, penalties = (
                keras.tree.map_structure(lambda *v: ops.stack(v), *parts)
                for parts in zip(*results, strict=True)
            )
        if training:
            for variable, value in zip(
                self._stacked_non_trainable, updates, strict=True
            ):
                variable.assign(value)
        if any(regularized):
            self.add_loss(ops.sum(penalties))
        return ops.moveaxis(outputs, 0, 1)

    def member_losses(self, y, y_pred):
        """Per-example, per-member loss, shape `(batch, N)`."""
        z = ops.cast(y_pred, "float32")
        num_classes = z.shape[-1]
        # Singleton axes for the positions between members and classes.
        positions = (1,) * (len(z.shape) - 3)
        y = ops.cast(y, "float32")
        teacher = y[..., :num_classes] if self.with_labels else y
        teacher = ops.expand_dims(teacher, 1)
        if self.any_standardize:
            check_standardizable(teacher.shape[-1])
            check_standardizable(z.shape[-1])
            flags = (
                ops.reshape(
                    ops.convert_to_tensor(self.standardize),
                    (1, -1, *positions, 1),
                )
                > 0
            )
            teacher = ops.where(flags, z_score(teacher, self.delta), teacher)
            z = ops.where(flags, z_score(z, self.delta), z)
        temps = ops.reshape(
            ops.convert_to_tensor(self.temperatures), (1, -1, *positions, 1)
        )
        log_p = ops.log_softmax(teacher / temps, axis=-1)
        log_q = ops.log_softmax(z / temps, axis=-1)
        # (N, K, M) -> (N, 1..., K, M): members are one more batch axis.
        coefficients = ops.convert_to_tensor(self.coefficients)
        coefficients = ops.reshape(
            coefficients, (-1, *positions, *coefficients.shape[1:])
        )
        _, terms = perturbed_terms(log_p, log_q, coefficients)
        losses = ops.sum(terms, axis=-1) * ops.square(temps[..., 0])
        if self.with_labels:
            weight = ops.convert_to_tensor(self.student_loss_weight)
            one_hot = ops.expand_dims(y[..., num_classes:], 1)
            # The hard-label term never sees the standardisation.
            log_q1 = ops.log_softmax(ops.cast(y_pred, "float32"), axis=-1)
            ce = -ops.sum(one_hot * log_q1, axis=-1)
            losses = (1.0 - weight) * losses + weight * ce
        if positions:
            losses = ops.mean(losses, axis=tuple(range(2, len(z.shape) - 1)))
        return losses

    def compute_loss(
        self, x=None, y=None, y_pred=None, sample_weight=None, training=True
    ):
        if self.member_axis is not None:
            y_pred = self.shard_members(y_pred)
        losses = self.member_losses(y, y_pred)
        if sample_weight is not None:
            weights = ops.reshape(ops.cast(sample_weight, "float32"), (-1, 1))
            losses = losses * weights
        total = ops.sum(ops.mean(losses, axis=0))
        if self.losses:
            total = total + ops.sum(ops.stack(self.losses))
        return total

    def shard_members(self, y_pred):
        """`y_pred` `(batch, N, ...)` laid out with members on `member_axis`.

        Args:
            y_pred: the stacked outputs of `call`.

        Returns:
            `y_pred` under the layout `(batch_dim_name, member_axis, None,
            ...)` of the current distribution's device mesh. Inside a
            compiled function any `N` works; an eager call needs `N`
            (and the batch) to divide by the axes' sizes.
        """
        distribution = _member_distribution(self.member_axis)
        axes = [distribution.batch_dim_name, self.member_axis]
        axes += [None] * (len(y_pred.shape) - 2)
        layout = keras.distribution.TensorLayout(axes, distribution.device_mesh)
        return keras.distribution.distribute_tensor(y_pred, layout)

    def get_config(self):
        config = super().get_config()
        config.update(
            members=[
                keras.saving.serialize_keras_object(m) for m in self.members
            ],
            coefficients=ops.convert_to_numpy(self.coefficients).tolist(),
            temperatures=ops.convert_to_numpy(self.temperatures).tolist(),
            standardize=ops.convert_to_numpy(self.standardize).tolist(),
            student_loss_weight=float(
                ops.convert_to_numpy(self.student_loss_weight)
            ),
            delta=self.delta,
            member_axis=self.member_axis,
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["members"] = [
            keras.saving.deserialize_keras_object(m) for m in config["members"]
        ]
        return cls(**config)
