"""The one PTLoss core (`keras_ptloss._core.perturbed_terms`) against float64
numpy, the layering of the loss modules, and the host-check hook every loss
class runs before Keras turns numpy inputs into tensors."""

import ast
from pathlib import Path

import numpy as np
import pytest
from keras import ops

from keras_ptloss import TopKPTLoss
from keras_ptloss._core import LOG_ZERO
from keras_ptloss._core import perturbed_terms
from keras_ptloss._hyperparameters import HyperparameterLoss
from keras_ptloss.top_k import pack_top_k
from tests.utils import assert_allclose
from tests.utils import np_softmax
from tests.utils import to_numpy

PACKAGE = Path(__file__).resolve().parent.parent / "keras_ptloss"
K, M = 5, 3


def np_terms(p, q, eps):
    """Per-class `p * (log p - log q + sum_m eps_m (1 - q)**m)`, 0 at p = 0,
    and the series derivative `g = sum_m m eps_m (1 - q)**(m - 1)`."""
    eps = np.asarray(eps, "float64")
    u = 1.0 - q
    series = sum(eps[..., m - 1] * u**m for m in range(1, M + 1))
    g = sum(m * eps[..., m - 1] * u ** (m - 1) for m in range(1, M + 1))
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * (np.log(p) - np.log(q) + series), 0.0)
    return terms, g


@pytest.fixture
def pair(rng):
    p = np_softmax(rng.normal(size=(4, K)) * 2)
    p[0, 1] = 0.0  # an exact zero of the teacher
    p = p / p.sum(-1, keepdims=True)
    q = np_softmax(rng.normal(size=(4, K)))
    return p, q


def _log(p):
    with np.errstate(divide="ignore"):
        return _tensor(np.where(p > 0, np.log(p), LOG_ZERO))


def _tensor(values):
    # The core takes the tensors its public callers made.
    return ops.convert_to_tensor(np.asarray(values, "float32"))


@pytest.mark.parametrize("shape", [(M,), (K, M)], ids=["shared", "classwise"])
def test_terms_and_derivative_match_numpy(rng, pair, shape):
    p, q = pair
    eps = rng.uniform(-0.1, 0.5, size=shape)
    expected, expected_g = np_terms(p, q, eps)
    got_p, terms, g = perturbed_terms(
        _log(p), _log(q), _tensor(eps), derivative=True
    )
    assert_allclose(got_p, p, atol=1e-7)
    assert_allclose(terms, expected, atol=1e-6)
    assert_allclose(g, np.broadcast_to(expected_g, g.shape), atol=1e-6)
    assert to_numpy(terms)[0, 1] == 0.0


def test_without_coefficients_the_terms_are_kl_and_no_derivative(pair):
    p, q = pair
    expected, _ = np_terms(p, q, np.zeros(M))
    _, terms, g = perturbed_terms(_log(p), _log(q), derivative=True)
    assert_allclose(terms, expected, atol=1e-6)
    assert g is None


def test_support_mask_counts_only_its_classes(rng, pair):
    # Classes outside `support` contribute 0 and their p reads as 0, even
    # where the teacher puts mass on them.
    p, q = pair
    support = np.ones_like(p, dtype=bool)
    support[:, -1] = False
    eps = rng.uniform(-0.1, 0.5, size=(M,))
    expected, _ = np_terms(np.where(support, p, 0.0), q, eps)
    got_p, terms = perturbed_terms(
        _log(p), _log(q), _tensor(eps), support=ops.convert_to_tensor(support)
    )
    assert_allclose(got_p, np.where(support, p, 0.0), atol=1e-7)
    assert_allclose(terms, expected, atol=1e-6)
    assert np.all(to_numpy(terms)[:, -1] == 0.0)


def test_member_axis_of_coefficients_is_one_more_batch_axis(rng, pair):
    # Coefficients (N, 1, K, M) against (batch, N, S, K): each member n
    # gets the terms of its own eps[n], as if computed alone.
    p, q = pair
    members = rng.uniform(-0.05, 0.4, size=(3, K, M))
    p_members = np.repeat(p[:, None, None, :], 3, axis=1)
    q_members = np.stack([np.roll(q, n, axis=-1) for n in range(3)], axis=1)
    q_members = q_members[:, :, None, :]
    _, terms = perturbed_terms(
        _log(p_members),
        _log(q_members),
        _tensor(members[:, None]),
    )
    for n in range(3):
        expected, _ = np_terms(p, np.roll(q, n, axis=-1), members[n])
        assert_allclose(to_numpy(terms)[:, n, 0], expected, atol=1e-6)


LOSS_MODULES = ("losses", "baselines", "_core", "_hyperparameters", "_logits")
HIGHER_LAYERS = {"proxy", "selection", "search", "distiller", "callbacks"}


def _imported_names(module):
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[-1])
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            imported.update(a.name.split(".")[-1] for a in node.names)
    return imported


@pytest.mark.parametrize("module", LOSS_MODULES)
def test_loss_modules_import_no_higher_layer(module):
    assert _imported_names(module) & (HIGHER_LAYERS | {"population"}) == set()


def test_top_k_module_imports_no_trainer():
    # It holds the top-k proxy and selection too, so it sits above
    # `proxy` and `selection`, but below the Distiller that imports it.
    imported = _imported_names("top_k")
    assert {"proxy", "selection"} <= imported
    assert (
        imported & {"search", "distiller", "callbacks", "population"} == set()
    )


def test_top_k_loss_checks_its_host_targets_through_the_shared_call():
    # The hook runs on the numpy targets before Keras makes them tensors.
    assert "__call__" not in vars(TopKPTLoss)
    assert TopKPTLoss.__call__ is HyperparameterLoss.__call__
    packed = pack_top_k([[0, 7]], np.log([[0.6, 0.3]]))
    with pytest.raises(ValueError, match="id 7 for y_pred with 4 classes"):
        TopKPTLoss([0.5])(packed, np.zeros((1, 4)))
