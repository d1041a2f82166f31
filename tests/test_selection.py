"""Training-free coefficient selection.

The method: docs/design.md, "Choosing the coefficients".
"""

import dataclasses
import inspect
import json

import numpy as np
import pytest
from keras import ops

from keras_ptloss import PTLoss
from keras_ptloss import SelectionResult
from keras_ptloss import pt_loss
from keras_ptloss import select_coefficients
from keras_ptloss import selection
from keras_ptloss._solver import Objective
from keras_ptloss.coefficients import convexity_margin
from keras_ptloss.datasets import GaussianMixture
from keras_ptloss.proxy import closeness
from keras_ptloss.proxy import proxy_teacher
from keras_ptloss.selection import coefficient_box
from tests.utils import np_softmax
from tests.utils import random_probs
from tests.utils import value_and_grad

FAST = dict(num_candidates=48, screen_size=None, verbose=0)
SILENT = dict(screen_size=None, verbose=0)


def miscalibrated_task(tau, noise, num_samples, seed=0, num_classes=4):
    """Exact Bayes probabilities p*, labels drawn from them, and a teacher
    derived from p* by tempering its log-probabilities by `1/tau` (tau < 1:
    over-confident, tau > 1: under-confident) plus Gaussian noise."""
    task = GaussianMixture(
        num_classes=num_classes, num_features=3, separation=1.5, seed=seed
    )
    x, y = task.sample(num_samples, seed=seed + 1)
    log_p_star = task.bayes_log_probs(x)
    rng = np.random.default_rng(seed + 2)
    logits = log_p_star / tau + noise * rng.normal(size=log_p_star.shape)
    return np.exp(log_p_star), y.astype("int64"), np_softmax(logits)


def mean_sq_distance(a, b):
    return float(np.mean(np.sum((a - b) ** 2, axis=1)))


# --- The point of it all: closer to the true p* -------------------------------


@pytest.mark.parametrize(
    "tau, noise, mode",
    [(0.5, 0.3, "shared"), (2.0, 0.1, "shared"), (0.5, 0.3, "classwise")],
)
def test_selected_proxy_is_closer_to_bayes_probabilities(tau, noise, mode):
    p_star, labels, teacher = miscalibrated_task(tau, noise, 4000)
    val, test = slice(0, 1500), slice(1500, None)
    result = select_coefficients(
        teacher[val], labels[val], order=3, mode=mode, **FAST
    )
    proxy = proxy_teacher(
        teacher[test], result.coefficients, result.temperature, detemper=True
    )
    # Measured against the true p* on unseen examples, not the labels.
    teacher_error = mean_sq_distance(teacher[test], p_star[test])
    proxy_error = mean_sq_distance(proxy, p_star[test])
    assert proxy_error < 0.5 * teacher_error
    # Over-confident teachers are smoothed, under-confident sharpened.
    if tau < 1:
        assert np.mean(proxy.max(1)) < np.mean(teacher[test].max(1))
    else:
        assert np.mean(proxy.max(1)) > np.mean(teacher[test].max(1))


def test_well_calibrated_teacher_is_left_nearly_alone():
    p_star, labels, _ = miscalibrated_task(1.0, 0.0, 1500)
    result = select_coefficients(p_star, labels, order=2, **FAST)
    proxy = proxy_teacher(p_star, result.coefficients, detemper=True)
    assert mean_sq_distance(proxy, p_star) < 2e-3
    assert result.proxy_score <= result.teacher_score


# --- The result object --------------------------------------------------------


def test_result_reports_scores_and_is_ready_for_ptloss(rng):
    _, labels, teacher = miscalibrated_task(0.5, 0.3, 800)
    result = select_coefficients(
        teacher, labels, order=4, holdout_fraction=0.25, **FAST
    )
    assert isinstance(result, SelectionResult)
    assert result.coefficients.shape == (4,)
    assert result.mode == "shared" and result.metric == "brier"
    assert result.num_fit == 600 and result.num_holdout == 200
    # Scores recomputed independently from the split the result used.
    fit_idx, hold_idx = _split_indices(800, 0.25, seed=0)
    proxy = proxy_teacher(teacher, result.coefficients, detemper=True)
    assert result.teacher_score == pytest.approx(
        closeness(teacher[fit_idx], labels[fit_idx])
    )
    assert result.proxy_score == pytest.approx(
        closeness(proxy[fit_idx], labels[fit_idx])
    )
    assert result.holdout_proxy_score == pytest.approx(
        closeness(proxy[hold_idx], labels[hold_idx])
    )
    assert result.proxy_score < result.teacher_score
    assert result.holdout_proxy_score < result.holdout_teacher_score
    # Every candidate was scored; the teacher itself (eps = 0) is one.
    assert result.candidate_scores.shape == (49,)
    np.testing.assert_array_equal(result.candidates[0], np.zeros(4))
    assert result.proxy_score <= result.candidate_scores.min() + 1e-12
    assert result.wall_time > 0
    # Inside the convex region: PTLoss accepts it with its defaults.
    assert convexity_margin(result.coefficients) > 0
    PTLoss(
        coefficients=result.coefficients,
        temperature=result.temperature,
        teacher_from_logits=False,
    )
    # Plain JSON, and a readable summary.
    as_dict = json.loads(json.dumps(result.to_dict()))
    assert as_dict["coefficients"] == result.coefficients.tolist()
    assert as_dict["proxy_score"] == result.proxy_score
    text = str(result)
    for word in ("teacher", "proxy teacher", "held-out", "shared", "brier"):
        assert word in text


def test_result_and_configuration_are_frozen():
    _, labels, teacher = miscalibrated_task(1.0, 0.3, 200)
    result = select_coefficients(teacher, labels, order=2, **FAST)
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.temperature = 2.0
    config = selection.SelectionConfig(
        order=3,
        mode="classwise",
        metric="brier",
        temperature=2,
        tune_temperature=False,
        holdout_fraction=0.2,
        seed=0,
        verbose=0,
        num_candidates=8,
        coefficient_bound=5,
        temperature_range=[1, 4],
        screen_size=None,
        num_finalists=2,
        max_iter=None,
        patience=3,
        l2_penalty=0,
    )
    # Numbers are stored as floats, the pair as a tuple, and the class-wise
    # default of `max_iter` is resolved.
    assert config.temperature == 2.0 and isinstance(config.temperature, float)
    assert config.temperature_range == (1.0, 4.0)
    assert config.max_iter == 200
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.order = 4


def test_the_arguments_are_the_configuration_fields_with_their_defaults():
    parameters = inspect.signature(select_coefficients).parameters
    fields = dataclasses.fields(selection.SelectionConfig)
    assert list(parameters)[2:] == [f.name for f in fields]
    for field in fields:
        assert parameters[field.name].default == field.default, field.name
    config = selection.SelectionConfig()
    assert (config.order, config.mode, config.metric) == (5, "shared", "brier")
    assert config.max_iter == 30


@pytest.mark.parametrize("num_candidates", [1, 3, 13, 21, 30])
def test_any_number_of_candidates_is_sampled(num_candidates):
    _, labels, teacher = miscalibrated_task(0.5, 0.3, 200)
    result = select_coefficients(
        teacher, labels, order=2, num_candidates=num_candidates, **SILENT
    )
    # The teacher (eps = 0) first, then `num_candidates` distinct sets.
    assert result.candidates.shape == (num_candidates + 1, 2)
    np.testing.assert_array_equal(result.candidates[0], np.zeros(2))
    assert len(np.unique(result.candidates, axis=0)) == num_candidates + 1


def _split_indices(num, fraction, seed):
    order = np.random.default_rng(seed).permutation(num)
    holdout = int(round(fraction * num))
    return np.sort(order[holdout:]), np.sort(order[:holdout])


def test_classwise_keeps_the_best_held_out_iterate():
    _, labels, teacher = miscalibrated_task(0.5, 0.3, 1000, num_classes=3)
    result = select_coefficients(
        teacher,
        labels,
        order=2,
        mode="classwise",
        patience=3,
        max_iter=15,
        **FAST,
    )
    assert result.coefficients.shape == (3, 2)
    assert np.all(convexity_margin(result.coefficients) > 0)
    held = [h["holdout"] for h in result.history if "holdout" in h]
    assert len(held) >= 2
    # The first held-out value is the shared start; the result is the best.
    assert result.holdout_proxy_score == pytest.approx(min(held))
    assert result.holdout_proxy_score <= held[0]
    PTLoss(coefficients=result.coefficients, teacher_from_logits=False)


def test_tuned_temperature_stays_in_range_and_helps():
    _, labels, teacher = miscalibrated_task(0.5, 0.3, 1000)
    result = select_coefficients(
        teacher,
        labels,
        order=2,
        tune_temperature=True,
        temperature_range=(0.5, 4.0),
        **FAST,
    )
    assert 0.5 <= result.temperature <= 4.0
    assert np.all(result.candidate_temperatures >= 0.5 - 1e-12)
    assert np.all(result.candidate_temperatures <= 4.0 + 1e-12)
    assert result.proxy_score < result.teacher_score
    proxy = proxy_teacher(
        teacher, result.coefficients, result.temperature, detemper=True
    )
    fit_idx, _ = _split_indices(1000, 0.2, seed=0)
    assert result.proxy_score == pytest.approx(
        closeness(proxy[fit_idx], labels[fit_idx])
    )


def test_other_metrics_are_optimised():
    _, labels, teacher = miscalibrated_task(0.5, 0.3, 600)
    fit_idx, _ = _split_indices(600, 0.2, seed=0)
    for metric in ("l2", "tvd", "nll"):
        result = select_coefficients(
            teacher, labels, order=2, metric=metric, **FAST
        )
        assert result.metric == metric
        assert result.proxy_score < result.teacher_score
        proxy = proxy_teacher(teacher, result.coefficients, detemper=True)
        assert result.proxy_score == pytest.approx(
            closeness(proxy[fit_idx], labels[fit_idx], metric=metric)
        )


def test_without_a_held_out_split_everything_is_selection():
    _, labels, teacher = miscalibrated_task(0.5, 0.3, 300)
    result = select_coefficients(
        teacher, labels, order=2, holdout_fraction=0.0, **FAST
    )
    assert result.num_fit == 300 and result.num_holdout == 0
    assert result.holdout_proxy_score is None
    assert result.holdout_improvement is None
    assert result.improvement == pytest.approx(
        closeness(teacher, labels)
        - closeness(
            proxy_teacher(teacher, result.coefficients, detemper=True),
            labels,
        )
    )
    assert "held-out" not in str(result).splitlines()[4]
    assert (
        json.loads(json.dumps(result.to_dict()))["holdout_proxy_score"] is None
    )


def test_same_seed_same_result():
    _, labels, teacher = miscalibrated_task(2.0, 0.3, 500)
    a = select_coefficients(teacher, labels, order=3, seed=7, **FAST)
    b = select_coefficients(teacher, labels, order=3, seed=7, **FAST)
    np.testing.assert_array_equal(a.coefficients, b.coefficients)
    np.testing.assert_array_equal(a.candidate_scores, b.candidate_scores)


def test_searched_box_is_inside_the_convex_region():
    for order in (1, 2, 5):
        lower, _ = coefficient_box(order, 20.0)
        assert convexity_margin(lower) > 0
        # Each lower bound is tight in its coordinate (equal shares).
        if order > 1:
            assert np.sum(
                [m * (m - 1) * -lower[m - 1] for m in range(2, order + 1)]
            ) == pytest.approx(0.999)


# --- Tie to the loss on this backend ------------------------------------------


def test_ptloss_at_the_selected_coefficients_is_minimal_at_the_proxy():
    _, labels, teacher = miscalibrated_task(0.5, 0.3, 600)
    result = select_coefficients(
        teacher, labels, order=3, tune_temperature=True, **FAST
    )
    batch = teacher[:8]
    t = result.temperature
    proxy = proxy_teacher(batch, result.coefficients, t)

    def total(logits):
        return ops.sum(
            pt_loss(
                batch, logits, result.coefficients, t, teacher_from_logits=False
            )
        )

    _, grad = value_and_grad(total, t * np.log(proxy))
    assert np.abs(grad).max() < 5e-6
    # The student's T = 1 prediction there is the de-tempered proxy.
    student = np_softmax(t * np.log(proxy))
    np.testing.assert_allclose(
        student,
        proxy_teacher(batch, result.coefficients, t, detemper=True),
        atol=1e-6,
    )


# --- The implicit-function-theorem gradient -----------------------------------


@pytest.mark.parametrize("metric", ["brier", "l2", "tvd", "nll"])
def test_score_gradient_matches_finite_differences(rng, metric):
    num, k, order = 30, 4, 3
    teacher = random_probs(rng, (num, k), concentration=0.5)
    teacher[0] = [0.0, 0.7, 0.3, 0.0]  # zero-probability classes
    labels = rng.integers(0, k, size=num)
    labels[0] = 1
    objective = Objective(teacher, labels, metric)
    eps = rng.uniform(-0.04, 0.8, size=(k, order))
    for t in (1.0, 2.5):
        _, grad, grad_log_t = objective.evaluate(
            eps, t, want_grad=True, want_grad_t=True, warm=False
        )

        def score(e, temperature=t):
            return objective.evaluate(e, temperature, warm=False)[0]

        h = 1e-6
        numeric = np.zeros_like(eps)
        for idx in np.ndindex(*eps.shape):
            step = np.zeros_like(eps)
            step[idx] = h
            numeric[idx] = (score(eps + step) - score(eps - step)) / (2 * h)
        np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-8)
        numeric_t = (score(eps, t * np.exp(h)) - score(eps, t * np.exp(-h))) / (
            2 * h
        )
        assert grad_log_t == pytest.approx(numeric_t, rel=1e-5, abs=1e-8)


# --- Progress and printing ----------------------------------------------------


def test_verbose_zero_is_silent_and_one_prints(capsys, monkeypatch):
    _, labels, teacher = miscalibrated_task(0.5, 0.3, 300)
    kwargs = dict(order=2, num_candidates=8, screen_size=None)
    select_coefficients(teacher, labels, verbose=0, **kwargs)
    assert capsys.readouterr().out == ""
    select_coefficients(teacher, labels, verbose=2, **kwargs)
    out = capsys.readouterr().out
    assert "proxy teacher" in out and "━" not in out
    # A long search shows a Keras progress bar (here: any search).
    monkeypatch.setattr(selection, "_PROGRESS_DELAY", 0.0)
    select_coefficients(teacher, labels, verbose=1, **kwargs)
    out = capsys.readouterr().out
    assert "━" in out and "proxy teacher" in out


# --- Invalid inputs -----------------------------------------------------------


INVALID_ARGUMENTS = [
    (dict(order=0), "order"),
    (dict(order=2.5), "order"),
    (dict(mode="perclass"), "mode"),
    (dict(metric="kl"), "metric"),
    (dict(temperature=-1.0), "temperature"),
    (dict(holdout_fraction=1.0), "holdout_fraction"),
    (dict(holdout_fraction=0.001), "empty split"),
    (dict(mode="classwise", holdout_fraction=0.0), "held-out"),
    (dict(verbose=3), "verbose"),
    (dict(num_candidates=0), "num_candidates"),
    (dict(coefficient_bound=0.0), "coefficient_bound"),
    (dict(screen_size=0), "screen_size"),
    (dict(l2_penalty=-1.0), "l2_penalty"),
    (dict(temperature_range=(2.0, 1.0)), "temperature_range"),
    (dict(tune_temperature=True, temperature=9.0), "temperature_range"),
    (dict(tune_temperature="yes"), "tune_temperature"),
    (dict(seed=1.5), "seed"),
]


def test_invalid_arguments_raise():
    teacher = np.full((20, 3), 1 / 3)
    labels = np.arange(20) % 3
    for kwargs, match in INVALID_ARGUMENTS:
        with pytest.raises(ValueError, match=match):
            select_coefficients(teacher, labels, **kwargs)


def test_invalid_data_raise():
    third = np.full((20, 3), 1 / 3)
    cases = [
        (third, np.arange(20) % 4, r"\[0, 3\)"),
        (third, np.arange(19) % 3, r"shape \(20,\)"),
        (np.full((20, 3), 0.3), np.arange(20) % 3, "sum to 1"),
        (np.full((20, 3), np.nan), np.arange(20) % 3, "finite"),
        (np.full((3,), 1 / 3), np.arange(1), r"\(N, K\)"),
        (np.full((0, 3), 1 / 3), np.arange(0), "shape"),
    ]
    for teacher, labels, match in cases:
        with pytest.raises(ValueError, match=match):
            select_coefficients(teacher, labels, verbose=0)


def test_rows_summing_to_one_within_the_shared_tolerance_are_accepted():
    rng = np.random.default_rng(1)
    probs = random_probs(rng, (40, 3))
    labels = np.arange(40) % 3
    # Off by +-5e-4, within the 1e-3 tolerance PTLoss also uses.
    off = probs * (1.0 + np.where(np.arange(40) % 2, 5e-4, -5e-4))[:, None]
    result = select_coefficients(
        off, labels, order=1, holdout_fraction=0.0, **SILENT
    )
    # Scored on the renormalised rows (Brier score computed in numpy).
    one_hot = np.eye(3)[labels]
    expected = np.mean(np.sum((probs - one_hot) ** 2, axis=1))
    assert result.teacher_score == pytest.approx(expected, rel=1e-12)
    too_far = probs.copy()
    too_far[7] *= 1.002
    with pytest.raises(ValueError, match=r"`teacher_probs`.*sum to 1.*1\.002"):
        select_coefficients(too_far, labels, verbose=0)


def test_nll_with_a_zero_probability_label_raises():
    teacher = np.tile([[0.5, 0.5, 0.0]], (20, 1))
    labels = np.zeros(20, dtype=int)
    labels[3] = 2
    with pytest.raises(ValueError, match="infinite"):
        select_coefficients(
            teacher, labels, metric="nll", holdout_fraction=0, verbose=0
        )
