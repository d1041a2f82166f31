"""The proxy teacher and the coefficient selection of a top-k teacher, on
its k + 1 buckets (`keras_ptloss.top_k`), against the dense
entry points on the same buckets."""

import numpy as np
import pytest

from keras_ptloss.proxy import proxy_teacher
from keras_ptloss.top_k import bucket_labels
from keras_ptloss.top_k import select_top_k_coefficients
from keras_ptloss.top_k import tail_buckets
from keras_ptloss.top_k import top_k_log_probs
from keras_ptloss.top_k import top_k_proxy_teacher


def test_tail_buckets_and_labels():
    log_probs = np.log([[0.5, 0.2], [0.9, 0.1]])
    np.testing.assert_allclose(
        tail_buckets(log_probs), [[0.5, 0.2, 0.3], [0.9, 0.1, 0.0]], atol=1e-12
    )
    np.testing.assert_array_equal(
        bucket_labels([[4, 7], [1, 2]], [7, 9]), [1, 2]
    )


def test_top_k_proxy_is_the_proxy_of_the_buckets(rng):
    p = rng.dirichlet(np.ones(30), size=6)
    indices, log_probs = top_k_log_probs(p, 5, from_logits=False)
    got = top_k_proxy_teacher(log_probs, [0.5, -0.05])
    top = np.take_along_axis(p, indices, -1)
    buckets = np.concatenate([top, 1 - top.sum(-1, keepdims=True)], -1)
    expected = proxy_teacher(buckets, [0.5, -0.05])
    np.testing.assert_allclose(got, expected, atol=1e-6)
    # M = 1 closed form: q = p / (lam - eps p) with sum q = 1.
    one = top_k_proxy_teacher(log_probs, [0.5])
    lam = buckets / one + 0.5 * buckets
    np.testing.assert_allclose(lam, lam[:, :1] * np.ones_like(lam), rtol=1e-5)


def test_top_k_selection_runs_on_buckets(rng):
    classes, k = 200, 8
    p = rng.dirichlet(np.full(classes, 0.05), size=120)
    labels = np.array([rng.choice(classes, p=row) for row in p])
    indices, log_probs = top_k_log_probs(p, k, from_logits=False)
    result = select_top_k_coefficients(
        indices, log_probs, labels, order=2, num_candidates=16, verbose=0
    )
    assert np.asarray(result.coefficients).shape == (2,)
    with pytest.raises(ValueError, match="mode"):
        select_top_k_coefficients(indices, log_probs, labels, mode="classwise")
