"""Checks of `from_logits` flags against a model's last layer."""

import keras


def final_activation(model):
    """`(kind, layer_name)`: kind `"softmax"`, `"linear"` or `None`."""
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

    Args:
        model: the teacher, student or calibrated `keras.Model`.
        outputs_logits: what the flag assumes about `model`'s outputs.
        role: `"teacher"`, `"student"` or `"model"`, for the message.
        flag: the flag's argument name, for the message.
        loss_arg: the argument that received the loss, or `None`.
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
    if loss_arg is None:
        return f"{flag}={value} was passed", f"Pass `{flag}={not value}`"
    return (
        f"`{loss_arg}` was built with {flag}={value}",
        f"Build the loss with {flag}={not value}, e.g. "
        f"`PTLoss(..., {flag}={not value})`",
    )


def teacher_emits_logits(teacher, teacher_from_logits=None, loss_arg="loss"):
    """Whether `teacher` emits logits: the flag, checked, or its last layer.

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


def resolve_teacher_flag(loss, teacher, student, loss_arg="loss"):
    """The `teacher_from_logits` a loss should have for a teacher-student pair.

    Checks both models against the loss's flags; returns `None` for a loss
    without `teacher_from_logits`.
    """
    flag = None
    if hasattr(loss, "teacher_from_logits"):
        flag = teacher_emits_logits(teacher, loss.teacher_from_logits, loss_arg)
    check_output_kind(
        student,
        getattr(loss, "from_logits", True),
        "student",
        "from_logits",
        loss_arg,
    )
    if getattr(loss, "standardize", False) and not flag:
        raise ValueError(
            f"`{loss_arg}` has standardize=True, which needs teacher logits, "
            "but the teacher outputs probabilities (its last layer applies "
            "a softmax). Remove the softmax or use standardize=False. "
            "Received: teacher_from_logits=False"
        )
    return flag
