"""Every public entry point, fed its plausible mistakes, raises a readable
`ValueError` that names the argument and the value it received.

One table: each row is `(id, call, pattern)`; `call()` must raise
`ValueError` whose message matches `pattern` (a regex naming the argument
and, where there is one, the received value).
"""

import numpy as np
import pytest

from keras_ptloss import Distiller
from keras_ptloss import DKDLoss
from keras_ptloss import KDCELoss
from keras_ptloss import KDLoss
from keras_ptloss import LSKDLoss
from keras_ptloss import Poly1Loss
from keras_ptloss import PTLoss
from keras_ptloss import ReestimateCoefficients
from keras_ptloss import kd_loss
from keras_ptloss import pt_loss
from keras_ptloss import select_coefficients
from keras_ptloss.datasets import load_digits
from keras_ptloss.datasets import load_mnist1d
from keras_ptloss.datasets import make_gaussian_mixture
from keras_ptloss.datasets import noisy_labels
from keras_ptloss.datasets import split_dataset
from keras_ptloss.proxy import closeness
from keras_ptloss.proxy import proxy_teacher
from keras_ptloss.proxy import temper
from tests.utils import tiny_classifier

K = 3
PROBS = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])
LOGITS = np.array([[1.0, -0.5, 0.25], [0.0, 2.0, -1.0]])
LABELS = np.array([0, 2])


def _probs_with(value):
    probs = PROBS.copy()
    probs[0, 0] = value
    return probs


NEGATIVE = np.array([[1.2, -0.1, -0.1], [0.1, 0.3, 0.6]])
NAN_PROBS = _probs_with(np.nan)
INF_PROBS = _probs_with(np.inf)
UNNORMALISED = np.array([[0.7, 0.7, 0.1], [0.1, 0.3, 0.6]])
FOUR_CLASSES = np.full((2, 4), 0.25)


def _models(teacher_classes=K, student_classes=K):
    teacher = tiny_classifier(4, teacher_classes, seed=0)
    student = tiny_classifier(4, student_classes, seed=2)
    return teacher, student


def _distiller(**kwargs):
    teacher, student = _models()
    return Distiller(
        teacher, student, PTLoss(teacher_from_logits=True), **kwargs
    )


def _distiller_fit(x, y=None, **fit_kwargs):
    distiller = _distiller()
    distiller.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    return distiller.fit(x, y, epochs=1, verbose=0, **fit_kwargs)


def _callback_fit(callback):
    distiller = _distiller()
    distiller.compile(optimizer="sgd")
    return distiller.fit(
        np.ones((4, 4)), epochs=1, verbose=0, callbacks=[callback]
    )


X4 = np.ones((6, 4), "float32")
Y_VAL = np.array([0, 1, 2, 0, 1, 2])
VAL_PROBS = np.tile(PROBS, (3, 1))

CASES = [
    # ---------------- PTLoss / pt_loss
    (
        "ptloss_order_0",
        lambda: PTLoss([], teacher_from_logits=False),
        r"coefficients.*order M >= 1",
    ),
    (
        "ptloss_coefficients_3d",
        lambda: PTLoss(np.zeros((2, 2, 2)), teacher_from_logits=False),
        r"coefficients.*shape \(2, 2, 2\)",
    ),
    (
        "ptloss_coefficients_nan",
        lambda: PTLoss([np.nan, 0.0], teacher_from_logits=False),
        r"coefficients.*finite.*nan",
    ),
    (
        "ptloss_coefficients_text",
        lambda: PTLoss("large", teacher_from_logits=False),
        r"coefficients.*'large'",
    ),
    (
        "ptloss_temperature_0",
        lambda: PTLoss(temperature=0, teacher_from_logits=False),
        r"temperature.*temperature=0",
    ),
    (
        "ptloss_temperature_string",
        lambda: PTLoss(temperature="2", teacher_from_logits=False),
        r"temperature.*temperature='2'",
    ),
    (
        "ptloss_from_logits_string",
        lambda: PTLoss(from_logits="yes", teacher_from_logits=False),
        r"from_logits.*from_logits='yes'",
    ),
    (
        "ptloss_unknown_reduction",
        lambda: PTLoss(reduction="average", teacher_from_logits=False),
        r"reduction.*average",
    ),
    (
        "ptloss_nonconvex",
        lambda: PTLoss([0.0, -1.0], teacher_from_logits=False),
        r"coefficients.*convex",
    ),
    (
        "ptloss_call_class_count",
        lambda: PTLoss(teacher_from_logits=False)(FOUR_CLASSES, LOGITS),
        r"y_true.*y_pred.*\(2, 4\).*\(2, 3\)",
    ),
    (
        "ptloss_call_classwise_rows",
        lambda: PTLoss(np.zeros((4, 2)), teacher_from_logits=False)(
            PROBS, LOGITS
        ),
        r"coefficients.*\(3, M\).*\(4, 2\)",
    ),
    (
        "ptloss_call_negative_probs",
        lambda: PTLoss(teacher_from_logits=False)(NEGATIVE, LOGITS),
        r"y_true.*non-negative.*-0.1",
    ),
    (
        "ptloss_call_nan_probs",
        lambda: PTLoss(teacher_from_logits=False)(NAN_PROBS, LOGITS),
        r"y_true.*finite.*nan",
    ),
    (
        "ptloss_call_inf_probs",
        lambda: PTLoss(teacher_from_logits=False)(INF_PROBS, LOGITS),
        r"y_true.*finite.*inf",
    ),
    (
        "ptloss_call_unnormalised_probs",
        lambda: PTLoss(teacher_from_logits=False)(UNNORMALISED, LOGITS),
        r"y_true.*sum to 1.*1\.5",
    ),
    (
        "ptloss_call_nan_logits",
        lambda: PTLoss(teacher_from_logits=False)(PROBS, _probs_with(np.nan)),
        r"y_pred.*finite.*nan",
    ),
    (
        "ptloss_call_student_probs_not_normalised",
        lambda: PTLoss(from_logits=False, teacher_from_logits=False)(
            PROBS, UNNORMALISED
        ),
        r"y_pred.*sum to 1.*1\.5",
    ),
    (
        "pt_loss_rank_mismatch",
        lambda: pt_loss(PROBS[0], LOGITS, [0.0], teacher_from_logits=False),
        r"y_true.*y_pred.*\(3,\).*\(2, 3\)",
    ),
    (
        "pt_loss_negative_probs",
        lambda: pt_loss(NEGATIVE, LOGITS, [0.0], teacher_from_logits=False),
        r"y_true.*non-negative.*-0.1",
    ),
    (
        "pt_loss_integer_labels_as_teacher",
        lambda: pt_loss(LABELS, LOGITS, [0.0], teacher_from_logits=False),
        r"y_true.*y_pred.*\(2,\).*\(2, 3\)",
    ),
    # ---------------- KDLoss / kd_loss
    (
        "kdloss_temperature_negative",
        lambda: KDLoss(temperature=-1.0, teacher_from_logits=False),
        r"temperature.*temperature=-1",
    ),
    (
        "kdloss_call_class_count",
        lambda: KDLoss(teacher_from_logits=False)(FOUR_CLASSES, LOGITS),
        r"y_true.*y_pred.*\(2, 4\).*\(2, 3\)",
    ),
    (
        "kd_loss_unnormalised_probs",
        lambda: kd_loss(UNNORMALISED, LOGITS, teacher_from_logits=False),
        r"y_true.*sum to 1.*1\.5",
    ),
    (
        "kd_loss_nan_teacher_logits",
        lambda: kd_loss(NAN_PROBS, LOGITS, teacher_from_logits=True),
        r"y_true.*finite.*nan",
    ),
    (
        "ptloss_standardize_not_bool",
        lambda: PTLoss(standardize="yes", teacher_from_logits=False),
        r"standardize.*standardize='yes'",
    ),
    (
        "ptloss_standardize_student_probabilities",
        lambda: PTLoss(
            standardize=True, from_logits=False, teacher_from_logits=False
        ),
        r"standardize=True.*from_logits=False",
    ),
    (
        "ptloss_standardize_teacher_probabilities_at_call",
        lambda: PTLoss(standardize=True, teacher_from_logits=False)(
            PROBS, LOGITS
        ),
        r"standardize=True.*teacher_from_logits=False",
    ),
    (
        "ptloss_set_temperature_negative",
        lambda: PTLoss(teacher_from_logits=False).set_temperature(-2.0),
        r"temperature.*temperature=-2",
    ),
    (
        "kdloss_teacher_flag_not_bool",
        lambda: KDLoss(teacher_from_logits="yes"),
        r"teacher_from_logits.*teacher_from_logits='yes'",
    ),
    # ---------------- baselines
    (
        "kdce_label_weight_out_of_range",
        lambda: KDCELoss(label_weight=1.5, teacher_from_logits=False),
        r"label_weight.*1\.5",
    ),
    (
        "dkd_alpha_negative",
        lambda: DKDLoss(alpha=-1.0, teacher_from_logits=False),
        r"alpha.*-1",
    ),
    (
        "dkd_temperature_string",
        lambda: DKDLoss(temperature="high", teacher_from_logits=False),
        r"temperature.*'high'",
    ),
    (
        "lskd_delta_negative",
        lambda: LSKDLoss(delta=-1.0, teacher_from_logits=False),
        r"delta.*-1",
    ),
    (
        "poly1_epsilon_below_minus_one",
        lambda: Poly1Loss(epsilon=-2.0),
        r"epsilon.*-2",
    ),
    (
        "poly1_labels_out_of_range",
        lambda: Poly1Loss()(np.array([0, 3]), LOGITS),
        r"labels.*\[0, 2\].*3",
    ),
    (
        "poly1_labels_wrong_shape",
        lambda: Poly1Loss()(np.zeros((2, 4)), LOGITS),
        r"labels.*labels.shape=\(2, 4\)",
    ),
    # ---------------- proxy_teacher / closeness / select_coefficients
    (
        "proxy_negative_probs",
        lambda: proxy_teacher(NEGATIVE, [0.5]),
        r"teacher_probs.*non-negative.*-0.1",
    ),
    (
        "proxy_nan_probs",
        lambda: proxy_teacher(NAN_PROBS, [0.5]),
        r"teacher_probs.*finite.*nan",
    ),
    (
        "proxy_unnormalised_probs",
        lambda: proxy_teacher(UNNORMALISED, [0.5]),
        r"teacher_probs.*sum to 1.*1\.5",
    ),
    (
        "proxy_order_0",
        lambda: proxy_teacher(PROBS, []),
        r"coefficients.*order M >= 1",
    ),
    (
        "proxy_classwise_rows",
        lambda: proxy_teacher(PROBS, np.zeros((4, 1))),
        r"coefficients.*\(3, M\).*\(4, 1\)",
    ),
    (
        "proxy_unknown_method",
        lambda: proxy_teacher(PROBS, [0.5], method="magic"),
        r"method.*'magic'",
    ),
    (
        "closeness_labels_out_of_range",
        lambda: closeness(PROBS, np.array([0, 3])),
        r"labels.*\[0, 3\).*3",
    ),
    (
        "closeness_float_labels",
        lambda: closeness(PROBS, np.array([0.5, 1.0])),
        r"labels.*integer.*0\.5",
    ),
    (
        "closeness_label_count",
        lambda: closeness(PROBS, np.array([0, 1, 2])),
        r"labels.*\(2,\).*\(3,\)",
    ),
    (
        "closeness_unknown_metric",
        lambda: closeness(PROBS, LABELS, metric="kl"),
        r"metric.*'kl'",
    ),
    (
        "select_order_0",
        lambda: select_coefficients(VAL_PROBS, Y_VAL, order=0, verbose=0),
        r"order.*order=0",
    ),
    (
        "select_unknown_mode",
        lambda: select_coefficients(VAL_PROBS, Y_VAL, mode="pairs"),
        r"mode.*'pairs'",
    ),
    (
        "select_unknown_metric",
        lambda: select_coefficients(VAL_PROBS, Y_VAL, metric="auc"),
        r"metric.*'auc'",
    ),
    (
        "select_empty_validation",
        lambda: select_coefficients(
            np.zeros((0, K)), np.zeros((0,), "int64"), verbose=0
        ),
        r"teacher_probs.*\(0, 3\)",
    ),
    (
        "select_logits_not_probs",
        lambda: select_coefficients(np.tile(LOGITS, (3, 1)), Y_VAL, verbose=0),
        r"teacher_probs.*non-negative",
    ),
    (
        "select_labels_out_of_range",
        lambda: select_coefficients(
            VAL_PROBS, np.array([0, 1, 2, 0, 1, 5]), verbose=0
        ),
        r"labels.*\[0, 3\).*5",
    ),
    (
        "select_probs_off_by_2e-3",
        lambda: select_coefficients(VAL_PROBS * 1.002, Y_VAL, verbose=0),
        r"teacher_probs.*sum to 1.*1\.002",
    ),
    (
        "select_probs_one_example",
        lambda: select_coefficients(PROBS[0], Y_VAL[:1], verbose=0),
        r"teacher_probs.*\(N, K\).*\(3,\)",
    ),
    (
        "select_verbose_3",
        lambda: select_coefficients(VAL_PROBS, Y_VAL, verbose=3),
        r"verbose.*verbose=3",
    ),
    (
        "select_temperature_range_reversed",
        lambda: select_coefficients(
            VAL_PROBS, Y_VAL, temperature_range=(4.0, 1.0)
        ),
        r"temperature_range.*\(4\.0, 1\.0\)",
    ),
    (
        "proxy_rank_3_probs",
        lambda: proxy_teacher(PROBS[None], [0.5]),
        r"teacher_probs.*\(1, 2, 3\)",
    ),
    (
        "proxy_tol_negative",
        lambda: proxy_teacher(PROBS, [0.5], tol=-1.0),
        r"tol.*tol=-1\.0",
    ),
    (
        "closeness_probs_one_example",
        lambda: closeness(PROBS[0], LABELS[:1]),
        r"probs.*\(N, K\).*\(3,\)",
    ),
    (
        "temper_temperature_0",
        lambda: temper(PROBS, 0),
        r"temperature.*temperature=0",
    ),
    # ---------------- Distiller
    (
        "distiller_teacher_not_model",
        lambda: Distiller(
            "teacher", _models()[1], PTLoss(teacher_from_logits=False)
        ),
        r"teacher.*str",
    ),
    (
        "distiller_loss_not_distillation_loss",
        lambda: Distiller(*_models(), "kl_divergence"),
        r"distillation_loss.*'kl_divergence'",
    ),
    (
        "distiller_class_count_mismatch",
        lambda: Distiller(*_models(4, 3), PTLoss(teacher_from_logits=True)),
        r"teacher.*student.*4.*3",
    ),
    (
        "distiller_weight_out_of_range",
        lambda: _distiller(student_loss_weight=2.0),
        r"student_loss_weight.*2\.0",
    ),
    (
        "distiller_temperature_zero",
        lambda: _distiller(temperature=0.0),
        r"temperature.*temperature=0",
    ),
    (
        "distiller_from_logits_contradiction",
        lambda: Distiller(*_models(), PTLoss(teacher_from_logits=False)),
        r"teacher.*teacher_from_logits=False",
    ),
    (
        "distiller_compile_unknown_optimizer",
        lambda: _distiller().compile(optimizer="fastest"),
        r"fastest",
    ),
    (
        "distiller_fit_labels_out_of_range",
        lambda: _distiller_fit(X4, np.array([0, 1, 2, 0, 1, 7])),
        r"y.*\[0, 2\].*7",
    ),
    (
        "distiller_fit_wrong_feature_count",
        lambda: _distiller_fit(np.ones((6, 5), "float32"), Y_VAL),
        r"expected axis -1 of input shape to have value 4, but received "
        r"input with shape \((6|None), 5\)",
    ),
    (
        "distiller_fit_label_count",
        lambda: _distiller_fit(X4, Y_VAL[:5]),
        r"(?s)'x' sizes: 6.*'y' sizes: 5",
    ),
    (
        "distiller_set_coefficients_shape",
        lambda: _distiller().set_coefficients(np.zeros(3)),
        r"coefficients.*\(5,\).*\(3,\)",
    ),
    (
        "distiller_compile_loss_weights",
        lambda: _distiller().compile(optimizer="sgd", loss_weights=[0.5]),
        r"loss_weights.*student_loss_weight.*loss_weights=\[0\.5\]",
    ),
    (
        "distiller_compile_unknown_loss",
        lambda: _distiller().compile(optimizer="sgd", loss="no_such_loss"),
        r"no_such_loss",
    ),
    # ---------------- ReestimateCoefficients
    (
        "callback_validation_not_tuple",
        lambda: ReestimateCoefficients(X4),
        r"validation_data.*ndarray",
    ),
    (
        "callback_label_count",
        lambda: ReestimateCoefficients((X4, Y_VAL[:4])),
        r"validation_data.*6 inputs and 4 labels",
    ),
    (
        "callback_empty_validation",
        lambda: ReestimateCoefficients(
            (np.zeros((0, 4)), np.zeros((0,), "int64"))
        ),
        r"validation_data\[1\].*N > 0.*shape \(0,\)",
    ),
    (
        "callback_frequency_0",
        lambda: ReestimateCoefficients((X4, Y_VAL), frequency=0),
        r"frequency.*frequency=0",
    ),
    (
        "callback_unknown_metric",
        lambda: ReestimateCoefficients((X4, Y_VAL), metric="auc"),
        r"metric.*'auc'",
    ),
    (
        "callback_teacher_probs_shape",
        lambda: ReestimateCoefficients(
            (None, Y_VAL), teacher_probs=np.full((6, 4, 1), 0.25)
        ),
        r"teacher_probs.*\(6, 4, 1\)",
    ),
    (
        "callback_teacher_probs_negative",
        lambda: ReestimateCoefficients(
            (None, Y_VAL[:2]), teacher_probs=NEGATIVE
        ),
        r"teacher_probs.*non-negative.*-0.1",
    ),
    (
        "callback_labels_out_of_range",
        lambda: ReestimateCoefficients(
            (None, np.array([0, 4])), teacher_probs=PROBS
        ),
        r"validation_data\[1\].*\[0, 3\).*4",
    ),
    (
        "callback_teacher_class_count",
        lambda: _callback_fit(
            ReestimateCoefficients((None, LABELS), teacher_probs=FOUR_CLASSES)
        ),
        r"teacher_probs.*\(3\).*shape \(2, 4\)",
    ),
    # ---------------- data sets
    (
        "split_empty_fraction",
        lambda: split_dataset(X4, Y_VAL, fractions={"train": 0.5, "val": 0}),
        r"fractions\['val'\]=0",
    ),
    (
        "split_fractions_sum",
        lambda: split_dataset(X4, Y_VAL, {"train": 0.5, "val": 0.2}),
        r"fractions.*sum 0\.7",
    ),
    (
        "split_empty_validation_split",
        lambda: split_dataset(X4, Y_VAL, {"train": 0.95, "val": 0.05}),
        r"fractions=.*'val': 0\.05.*counts \[6, 0\]",
    ),
    (
        "split_length_mismatch",
        lambda: split_dataset(X4, Y_VAL[:4]),
        r"x.*y.*6.*4",
    ),
    (
        "mnist1d_num_samples_0",
        lambda: load_mnist1d(num_samples=0),
        r"num_samples.*num_samples=0",
    ),
    ("digits_negative_seed", lambda: load_digits(seed=-1), r"seed.*-1"),
    (
        "gaussian_mixture_empty_validation",
        lambda: make_gaussian_mixture(
            num_samples=10, fractions={"train": 0.95, "val": 0.05}
        ),
        r"fractions=.*'val': 0\.05.*counts \[10, 0\]",
    ),
    (
        "noisy_labels_rate",
        lambda: noisy_labels(Y_VAL, noise_rate=1.5),
        r"noise_rate.*1\.5",
    ),
    (
        "noisy_labels_unknown_mode",
        lambda: noisy_labels(Y_VAL, 0.1, mode="adversarial"),
        r"mode.*'adversarial'",
    ),
    (
        "noisy_labels_out_of_range",
        lambda: noisy_labels(Y_VAL, 0.1, num_classes=2),
        r"labels.*2",
    ),
    # Standardised logits of two classes are always +-1/sqrt(2).
    (
        "lskd_two_classes",
        lambda: LSKDLoss(teacher_from_logits=True)(
            LOGITS[:, :2], LOGITS[:, :2]
        ),
        r"at least 3 classes.*Received: logits with 2 class",
    ),
    (
        "ptloss_standardize_two_classes",
        lambda: PTLoss(standardize=True, teacher_from_logits=True)(
            LOGITS[:, :2], LOGITS[:, :2]
        ),
        r"at least 3 classes.*Received: logits with 2 class",
    ),
    (
        "kdloss_standardize_two_classes",
        lambda: KDLoss(standardize=True, teacher_from_logits=True)(
            LOGITS[:, :2], LOGITS[:, :2]
        ),
        r"at least 3 classes.*Received: logits with 2 class",
    ),
]


@pytest.mark.parametrize(
    "call, pattern",
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_bad_input_raises_readable_value_error(call, pattern):
    with pytest.raises(ValueError, match=pattern):
        call()


def test_case_ids_are_unique():
    ids = [case[0] for case in CASES]
    assert len(ids) == len(set(ids))
