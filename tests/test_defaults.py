"""One rule for teacher outputs: logits unless told otherwise.

Every public loss, functional loss, adapter, the Distiller's losses and
`search_coefficients` read the teacher's outputs as logits by default
(`teacher_from_logits=True`); probabilities need `teacher_from_logits=False`.
"""

import importlib
import inspect

import keras
import numpy as np
import pytest

import keras_ptloss
from keras_ptloss import Distiller
from keras_ptloss import KDLoss
from keras_ptloss import PTLoss
from keras_ptloss import TopKPTLoss
from keras_ptloss import pt_loss

# Modules whose public callables are documented (docs/api.md).
MODULES = (
    "keras_ptloss.losses",
    "keras_ptloss.baselines",
    "keras_ptloss.top_k",
    "keras_ptloss.distiller",
    "keras_ptloss.interop",
    "keras_ptloss.search",
    "keras_ptloss.selection",
    "keras_ptloss.calibration",
    "keras_ptloss.proxy",
    "keras_ptloss.population",
    "keras_ptloss.vocabulary",
    "keras_ptloss.callbacks",
)
# `ReestimateCoefficients(teacher_from_logits=None)` takes the flag of the
# PTLoss it updates, which is itself `True` unless given.
FOLLOWS_THE_LOSS = {"keras_ptloss.callbacks.ReestimateCoefficients"}


def _callables():
    found = {}
    for name in keras_ptloss.__all__:
        value = getattr(keras_ptloss, name)
        found[f"{value.__module__}.{value.__qualname__}"] = value
    for module_name in MODULES:
        module = importlib.import_module(module_name)
        for name, value in vars(module).items():
            if name.startswith("_") or not callable(value):
                continue
            if getattr(value, "__module__", None) != module_name:
                continue
            found[f"{module_name}.{name}"] = value
    return found


def _flag_defaults():
    defaults = {}
    for label, value in _callables().items():
        target = value.__init__ if inspect.isclass(value) else value
        try:
            parameters = inspect.signature(target).parameters
        except (TypeError, ValueError):
            continue
        if "teacher_from_logits" in parameters:
            defaults[label] = parameters["teacher_from_logits"].default
    return defaults


DEFAULTS = _flag_defaults()


def test_the_losses_the_distiller_and_the_search_take_the_flag():
    for label in (
        "keras_ptloss.losses.PTLoss",
        "keras_ptloss.losses.KDLoss",
        "keras_ptloss.losses.pt_loss",
        "keras_ptloss.losses.kd_loss",
        "keras_ptloss.losses.lean_loss",
        "keras_ptloss.baselines.KDCELoss",
        "keras_ptloss.baselines.DKDLoss",
        "keras_ptloss.baselines.LSKDLoss",
        "keras_ptloss.baselines.kd_ce_loss",
        "keras_ptloss.baselines.dkd_loss",
        "keras_ptloss.baselines.dkd_terms",
        "keras_ptloss.baselines.lskd_loss",
        "keras_ptloss.top_k.TopKPTLoss",
        "keras_ptloss.interop.KDDistillation",
        "keras_ptloss.search.search_coefficients",
    ):
        assert label in DEFAULTS, label


@pytest.mark.parametrize("label", sorted(DEFAULTS))
def test_teacher_from_logits_defaults_to_true(label):
    if label in FOLLOWS_THE_LOSS:
        assert DEFAULTS[label] is None
        return
    assert DEFAULTS[label] is True, f"{label}: {DEFAULTS[label]!r}"


def test_default_reads_the_teacher_as_logits():
    rng = np.random.default_rng(0)
    t = rng.normal(size=(4, 5))
    z = rng.normal(size=(4, 5))
    eps = np.array([0.5, -0.1])
    # The KD part in numpy: T**2 * KL(softmax(t / T) || softmax(z / T)).
    temperature = 2.0
    log_p = t / temperature - np.log(
        np.exp(t / temperature).sum(-1, keepdims=True)
    )
    log_q = z / temperature - np.log(
        np.exp(z / temperature).sum(-1, keepdims=True)
    )
    p, q = np.exp(log_p), np.exp(log_q)
    series = sum(e * (1.0 - q) ** (m + 1) for m, e in enumerate(eps))
    expected = temperature**2 * np.sum(p * (log_p - log_q + series), -1)
    got = keras.ops.convert_to_numpy(pt_loss(t, z, eps, temperature))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    loss = PTLoss(eps, temperature=temperature)
    assert loss.teacher_from_logits is True
    np.testing.assert_allclose(
        float(loss(t, z)), expected.mean(), rtol=1e-5, atol=1e-6
    )


def _models(teacher_activation):
    teacher = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(3, activation=teacher_activation, name="head"),
        ]
    )
    student = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    return teacher, student


@pytest.mark.parametrize(
    "loss", [PTLoss([0.5]), KDLoss()], ids=["PTLoss", "KDLoss"]
)
def test_distiller_refuses_a_softmax_teacher_under_the_default(loss):
    teacher, student = _models("softmax")
    with pytest.raises(ValueError) as info:
        Distiller(teacher, student, loss)
    message = str(info.value)
    assert "'head'" in message and "softmax" in message
    assert "teacher_from_logits=False" in message
    # Said explicitly, the same pair is accepted.
    flag = type(loss)(teacher_from_logits=False)
    distiller = Distiller(teacher, student, flag)
    assert distiller.distillation_loss.teacher_from_logits is False


def test_distiller_top_k_refuses_a_softmax_teacher_under_the_default():
    teacher, student = _models("softmax")
    with pytest.raises(ValueError, match="teacher_from_logits=False"):
        Distiller(teacher, student, TopKPTLoss([0.5]), top_k=2)
    distiller = Distiller(
        teacher,
        student,
        TopKPTLoss([0.5], teacher_from_logits=False),
        top_k=2,
    )
    assert distiller._teacher_logits is False


def test_none_reads_the_kind_from_the_teacher():
    teacher, student = _models("softmax")
    distiller = Distiller(teacher, student, PTLoss(teacher_from_logits=None))
    assert distiller.distillation_loss.teacher_from_logits is False
    teacher, student = _models(None)
    distiller = Distiller(teacher, student, KDLoss(teacher_from_logits=None))
    assert distiller.distillation_loss.teacher_from_logits is True
