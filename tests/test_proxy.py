"""The proxy teacher against closed forms, scipy and PTLoss itself."""

import numpy as np
import pytest
import scipy.optimize
from keras import ops

from keras_ptloss import PTLoss
from keras_ptloss import pt_loss
from keras_ptloss.proxy import ProxyTeacherConvergenceError
from keras_ptloss.proxy import closeness
from keras_ptloss.proxy import detemper
from keras_ptloss.proxy import proxy_teacher
from keras_ptloss.proxy import temper
from tests.utils import np_temper
from tests.utils import random_probs
from tests.utils import value_and_grad

K = 5


def convex_coefficients(rng, num_classes, order, scale=1.0):
    """Random class-wise coefficients inside the sufficient convex region."""
    eps = rng.uniform(-scale, scale, size=(num_classes, order))
    for m in range(2, order + 1):
        floor = -0.99 / (m * (m - 1) * (order - 1))
        eps[:, m - 1] = np.maximum(eps[:, m - 1], floor)
    return eps


def np_g(q, eps):
    """g_k(q_k) = 1/q_k + sum_m m eps[k, m] (1 - q_k)^(m-1), direct powers."""
    eps = np.broadcast_to(np.atleast_2d(eps), (q.shape[-1], eps.shape[-1]))
    total = 1.0 / q
    for m in range(1, eps.shape[1] + 1):
        total = total + m * eps[:, m - 1] * (1.0 - q) ** (m - 1)
    return total


def np_objective(q, p, eps):
    """sum_k p_k [-log q_k + sum_m eps[k, m] (1 - q_k)^m] for one example."""
    eps = np.broadcast_to(np.atleast_2d(eps), (q.shape[-1], eps.shape[-1]))
    poly = sum(eps[:, m - 1] * (1 - q) ** m for m in range(1, eps.shape[1] + 1))
    return float(np.sum(p * (-np.log(q) + poly)))


def scipy_proxy(p, eps):
    """Independent reference: BFGS over softmax logits, analytic gradient."""

    def fun(z):
        q = np.exp(z - z.max())
        q /= q.sum()
        grad_q = -p * np_g(q, eps)
        return np_objective(q, p, eps), q * (grad_q - np.dot(q, grad_q))

    result = scipy.optimize.minimize(
        fun, np.log(p), jac=True, method="BFGS", options={"gtol": 1e-13}
    )
    q = np.exp(result.x - result.x.max())
    return q / q.sum()


def entropy(q):
    with np.errstate(divide="ignore", invalid="ignore"):
        return -np.sum(np.where(q > 0, q * np.log(q), 0.0), axis=-1)


# --- The solution -------------------------------------------------------------


@pytest.mark.parametrize("shape", [(3,), (K, 1), (K, 5)])
def test_zero_coefficients_return_the_teacher(rng, shape):
    teacher = random_probs(rng, (6, K), concentration=0.5)
    teacher[0] = [0.5, 0.0, 0.25, 0.25, 0.0]
    np.testing.assert_allclose(
        proxy_teacher(teacher, np.zeros(shape)), teacher, atol=1e-12
    )
    # De-tempering undoes the tempering exactly when eps = 0.
    np.testing.assert_allclose(
        proxy_teacher(teacher, np.zeros(shape), temperature=3.0, detemper=True),
        teacher,
        atol=1e-12,
    )


@pytest.mark.parametrize("classwise", [False, True])
def test_order_one_matches_closed_form(rng, classwise):
    teacher = random_probs(rng, (8, K), concentration=0.7)
    eps = rng.uniform(-3.0, 3.0, size=(K, 1) if classwise else (1,))
    eps_k = np.broadcast_to(eps[:, 0] if classwise else eps, (K,))
    proxy = proxy_teacher(teacher, eps)
    for p, q in zip(teacher, proxy, strict=True):
        # q_k = p_k / (lam - eps_k p_k), lam the root of sum_k q_k = 1.
        def total(lam, p=p):
            return np.sum(p / (lam - eps_k * p)) - 1.0

        pole = np.max(eps_k * p)
        lam = scipy.optimize.brentq(
            total, pole + 1e-12, pole + 10.0 + np.abs(eps_k).sum(), xtol=1e-15
        )
        np.testing.assert_allclose(q, p / (lam - eps_k * p), rtol=1e-9)


@pytest.mark.parametrize("order", [1, 2, 3, 4, 5])
def test_matches_scipy_minimize_on_random_instances(order):
    rng = np.random.default_rng(order)
    for _ in range(4):
        num_classes = int(rng.integers(2, 7))
        p = rng.dirichlet(np.full(num_classes, 0.8))
        eps = convex_coefficients(rng, num_classes, order, scale=1.5)
        q = proxy_teacher(p, eps)
        reference = scipy_proxy(p, eps)
        np.testing.assert_allclose(q, reference, atol=1e-6)
        assert (
            np_objective(q, p, eps) <= np_objective(reference, p, eps) + 1e-12
        )


def test_stationarity_holds_with_the_returned_multiplier(rng):
    teacher = random_probs(rng, (20, K), concentration=0.3)
    eps = convex_coefficients(rng, K, 4, scale=4.0)
    q, info = proxy_teacher(teacher, eps, return_info=True)
    lam = info["lam"]
    assert info["residual"] <= 1e-10
    np.testing.assert_allclose(
        teacher * np_g(q, eps),
        np.broadcast_to(lam[:, None], q.shape),
        rtol=1e-8,
    )
    np.testing.assert_allclose(q.sum(axis=-1), 1.0, atol=1e-12)


def test_bisection_agrees_with_newton(rng):
    teacher = random_probs(rng, (30, K), concentration=0.2)
    eps = convex_coefficients(rng, K, 5, scale=8.0)
    np.testing.assert_allclose(
        proxy_teacher(teacher, eps, method="bisection"),
        proxy_teacher(teacher, eps, method="newton"),
        atol=1e-9,
    )


def test_hard_instances_are_solved_exactly():
    """Near one-hot teachers with strong coefficients, where plain Newton
    from the teacher does not settle: the safeguards must still reach the
    KKT tolerance, and agree with the nested solver."""
    rng = np.random.default_rng(3)
    logits = rng.normal(scale=12.0, size=(200, 10))
    teacher = np.exp(logits - logits.max(1, keepdims=True))
    teacher /= teacher.sum(1, keepdims=True)
    for eps in ([-7.5, 0.5, 6.2, 0.75, 0.0], [-2.15], [20.0, -0.12, 15.0]):
        q, info = proxy_teacher(teacher, eps, return_info=True)
        assert info["residual"] <= 1e-10
        np.testing.assert_allclose(
            q, proxy_teacher(teacher, eps, method="bisection"), atol=1e-8
        )


def test_zero_probability_classes_stay_zero(rng):
    teacher = np.array([[0.6, 0.0, 0.3, 0.1, 0.0], [0.0, 0.0, 1.0, 0.0, 0.0]])
    eps = convex_coefficients(rng, K, 3)
    proxy = proxy_teacher(teacher, eps)
    assert np.all(proxy[teacher == 0] == 0.0)
    np.testing.assert_allclose(proxy[1], [0, 0, 1, 0, 0])
    # The positive classes solve the problem restricted to them.
    positive = teacher[0] > 0
    np.testing.assert_allclose(
        proxy[0, positive],
        scipy_proxy(teacher[0, positive], eps[positive]),
        atol=1e-6,
    )


@pytest.mark.parametrize("order", [1, 5])
def test_positive_coefficients_sharpen_negative_smooth(rng, order):
    teacher = random_probs(rng, (50, K), concentration=1.0)
    plus = np.zeros(order)
    plus[0] = 1.5
    minus = -plus
    sharp = proxy_teacher(teacher, plus)
    smooth = proxy_teacher(teacher, minus)
    assert np.all(entropy(sharp) < entropy(teacher))
    assert np.all(entropy(smooth) > entropy(teacher))
    assert np.all(sharp.max(1) > teacher.max(1))
    assert np.all(smooth.max(1) < teacher.max(1))
    # Shared coefficients keep the ranking of the classes.
    np.testing.assert_array_equal(sharp.argsort(1), teacher.argsort(1))
    np.testing.assert_array_equal(smooth.argsort(1), teacher.argsort(1))


def test_temperature_tempers_the_teacher_first(rng):
    teacher = random_probs(rng, (10, K), concentration=0.5)
    eps = convex_coefficients(rng, K, 3)
    t = 2.5
    tempered = proxy_teacher(teacher, eps, temperature=t)
    np.testing.assert_allclose(
        tempered, proxy_teacher(np_temper(teacher, t), eps), atol=1e-12
    )
    student = proxy_teacher(teacher, eps, temperature=t, detemper=True)
    expected = tempered**t / np.sum(tempered**t, axis=1, keepdims=True)
    np.testing.assert_allclose(student, expected, atol=1e-12)
    np.testing.assert_allclose(
        detemper(temper(teacher, t), t), teacher, atol=1e-12
    )


def test_batched_candidates_match_one_at_a_time(rng):
    teacher = random_probs(rng, (7, K), concentration=0.6)
    shared = np.stack([convex_coefficients(rng, 1, 4)[0] for _ in range(3)])
    temps = np.array([1.0, 0.5, 3.0])
    batch = proxy_teacher(teacher, shared, temperature=temps, batched=True)
    assert batch.shape == (3, 7, K)
    for c in range(3):
        np.testing.assert_allclose(
            batch[c], proxy_teacher(teacher, shared[c], temperature=temps[c])
        )
    classwise = np.stack([convex_coefficients(rng, K, 2) for _ in range(2)])
    batch = proxy_teacher(teacher, classwise, batched=True, detemper=True)
    for c in range(2):
        np.testing.assert_allclose(
            batch[c], proxy_teacher(teacher, classwise[c])
        )


def test_single_example_keeps_its_shape(rng):
    p = random_probs(rng, (K,))
    q = proxy_teacher(p, [0.5, 0.1])
    assert q.shape == (K,)
    np.testing.assert_allclose(q, proxy_teacher(p[None], [0.5, 0.1])[0])


# --- Tie to the loss: PTLoss is minimal at the proxy teacher ------------------


@pytest.mark.parametrize("temperature", [1.0, 2.0])
@pytest.mark.parametrize("classwise", [False, True])
def test_ptloss_gradient_vanishes_at_the_proxy_teacher(
    rng, temperature, classwise
):
    teacher = random_probs(rng, (6, K), concentration=1.0)
    eps = convex_coefficients(rng, K if classwise else 1, 4, scale=1.0)
    eps = eps if classwise else eps[0]
    proxy = proxy_teacher(teacher, eps, temperature=temperature)

    def total_loss(logits):
        return ops.sum(
            pt_loss(
                teacher,
                logits,
                eps,
                temperature=temperature,
                teacher_from_logits=False,
            )
        )

    # Student logits whose tempered softmax is the proxy teacher.
    _, grad_at_proxy = value_and_grad(total_loss, temperature * np.log(proxy))
    _, grad_at_teacher = value_and_grad(
        total_loss, temperature * np.log(np_temper(teacher, temperature))
    )
    assert np.abs(grad_at_proxy).max() < 2e-6
    assert np.abs(grad_at_teacher).max() > 1e-2
    # And it is a minimum: moving the logits increases PTLoss.
    loss = PTLoss(
        eps, temperature=temperature, reduction="sum", teacher_from_logits=False
    )
    base = float(
        ops.convert_to_numpy(loss(teacher, temperature * np.log(proxy)))
    )
    for _ in range(3):
        moved = temperature * np.log(proxy) + 0.05 * rng.normal(
            size=proxy.shape
        )
        assert float(ops.convert_to_numpy(loss(teacher, moved))) > base


# --- Non-convex coefficients and convergence ----------------------------------


def test_nonconvex_coefficients_raise_unless_allowed(rng):
    teacher = random_probs(rng, (4, K), concentration=3.0)
    eps = [0.0, -0.6]  # q^2 phi'' = 1 - 1.2 q^2 < 0 near q = 1: not convex
    with pytest.raises(ValueError, match="convex region"):
        proxy_teacher(teacher, eps)
    q = proxy_teacher(teacher, eps, allow_nonconvex=True)
    # What is returned is a KKT point, checked independently.
    lam = teacher[:, :1] * np_g(q, np.array(eps))[:, :1]
    np.testing.assert_allclose(
        teacher * np_g(q, np.array(eps)),
        np.broadcast_to(lam, q.shape),
        rtol=1e-8,
    )


def test_non_convergence_raises_instead_of_returning(rng):
    teacher = random_probs(rng, (4, K), concentration=0.3)
    with pytest.raises(ProxyTeacherConvergenceError, match="KKT residual"):
        proxy_teacher(teacher, [3.0, 1.0], method="newton", max_iter=1)


# --- Invalid inputs -----------------------------------------------------------


INVALID_TEACHERS = [
    (np.ones((2, 3, 4)) / 4, "shape"),
    (np.zeros((0, 3)), "shape"),
    (np.array([[0.5, np.nan, 0.5]]), "finite"),
    (np.array([[1.2, -0.2, 0.0]]), "non-negative"),
    (np.array([[0.5, 0.2, 0.2]]), "sum to 1"),
    (np.array([[2.0, 1.0, -0.5]]) + 5, "sum to 1"),
    ("abc", "teacher_probs"),
]

INVALID_ARGUMENTS = [
    (dict(coefficients=np.zeros((4, 2))), "one row per class"),
    (dict(coefficients=np.zeros((3, 0))), "at least one"),
    (dict(coefficients=[np.nan]), "finite"),
    (dict(coefficients=np.zeros((2, 3, 2))), r"\(M,\) .* \(K, M\)"),
    (dict(coefficients=[0.5], temperature=0.0), "temperature"),
    (dict(coefficients=[0.5], temperature=[1.0, 2.0]), "temperature"),
    (dict(coefficients=[0.5], method="magic"), "method"),
    (dict(coefficients=[0.5], tol=-1.0), "tol"),
    (dict(coefficients=[0.5], max_iter=0), "max_iter"),
    (dict(coefficients=np.zeros(3), batched=True), r"\(C, M\)"),
    (
        dict(coefficients=np.zeros((2, 4, 1)), batched=True),
        "one row per class",
    ),
    (
        dict(
            coefficients=np.zeros((2, 1)),
            batched=True,
            temperature=[1.0, 2.0, 3.0],
        ),
        r"shape \(2,\)",
    ),
]


def test_invalid_teacher_probs_raise():
    for teacher, match in INVALID_TEACHERS:
        with pytest.raises(ValueError, match=match):
            proxy_teacher(teacher, [0.5])


def test_invalid_arguments_raise():
    teacher = np.full((2, 3), 1 / 3)
    for kwargs, match in INVALID_ARGUMENTS:
        with pytest.raises(ValueError, match=match):
            proxy_teacher(teacher, **kwargs)


def test_rows_within_the_shared_tolerance_are_renormalised(rng):
    teacher = random_probs(rng, (6, K))
    off = (
        teacher * (1.0 + np.array([5e-4, -5e-4, 4e-4, 0, 1e-4, -3e-4]))[:, None]
    )
    np.testing.assert_allclose(
        proxy_teacher(off, [0.5]), proxy_teacher(teacher, [0.5]), atol=1e-12
    )
    labels = np.arange(6) % K
    one_hot = np.eye(K)[labels]
    expected = np.mean(np.sum((teacher - one_hot) ** 2, axis=1))
    assert closeness(off, labels) == pytest.approx(expected, rel=1e-12)
    too_far = teacher.copy()
    too_far[2] *= 0.998
    with pytest.raises(ValueError, match=r"`teacher_probs`.*row \[2\]"):
        proxy_teacher(too_far, [0.5])
    with pytest.raises(ValueError, match=r"`probs`.*sum to 1.*0\.998"):
        closeness(too_far, labels)


def test_temper_and_detemper_reject_a_non_positive_temperature():
    for function in (temper, detemper):
        for bad in (0.0, -1.0, np.inf, "2"):
            with pytest.raises(ValueError, match="temperature"):
                function(np.array([0.5, 0.5]), bad)


# --- Closeness ----------------------------------------------------------------


def test_closeness_metrics_match_their_definitions(rng):
    probs = random_probs(rng, (40, K), concentration=0.5)
    labels = rng.integers(0, K, size=40)
    one_hot = np.eye(K)[labels]
    diff = probs - one_hot
    expected = {
        "brier": np.mean(np.sum(diff**2, axis=1)),
        "l2": np.mean(np.linalg.norm(diff, axis=1)),
        "tvd": np.mean(0.5 * np.sum(np.abs(diff), axis=1)),
        "nll": np.mean(-np.log(probs[np.arange(40), labels])),
    }
    assert closeness(probs, labels) == pytest.approx(expected["brier"])
    for metric, value in expected.items():
        assert closeness(probs, labels, metric=metric) == pytest.approx(value)


def test_closeness_of_a_zero_label_probability_is_infinite_nll():
    assert closeness([[1.0, 0.0]], [1], metric="nll") == np.inf


def test_closeness_invalid_inputs_raise():
    probs = np.full((2, 3), 1 / 3)
    cases = [
        ([0, 3], "brier", r"\[0, 3\)"),
        ([0, -1], "brier", r"\[0, 3\)"),
        ([0], "brier", r"shape \(2,\)"),
        ([[0, 1]], "brier", r"shape \(2,\)"),
        ([0.5, 1.0], "brier", "integer"),
        (["a", "b"], "brier", "integer"),
        ([0, 1], "kl", "metric"),
    ]
    for labels, metric, match in cases:
        with pytest.raises(ValueError, match=match):
            closeness(probs, labels, metric=metric)
    with pytest.raises(ValueError, match=r"\(N, K\)"):
        closeness(np.full((3,), 1 / 3), [0])
