"""Coefficients and proxy teachers for a top-k teacher, on k + 1 buckets.

A top-k teacher (`keras_ptloss.sparse`: its k largest probabilities, the
rest kept as one tail bucket) is coarsened to a distribution over the k
classes and the tail (`tail_buckets`), each label to its bucket
(`bucket_labels`). The proxy teacher and the coefficient selection then run
on these k + 1 buckets (`keras_ptloss.proxy`, `keras_ptloss.selection`), so
their cost scales with k, not with the vocabulary.
"""

import numpy as np

from keras_ptloss._checks import as_float_array
from keras_ptloss.proxy import proxy_teacher
from keras_ptloss.selection import select_coefficients


def tail_buckets(log_probs):
    """Probabilities on the k + 1 buckets: the top k, then the tail (numpy).

    Args:
        log_probs: top-k log-probabilities, shape `(N, k)`.

    Returns:
        Float64 array of shape `(N, k + 1)` whose rows sum to 1.
    """
    probs = np.exp(as_float_array(log_probs, "log_probs"))
    tail = np.clip(1.0 - probs.sum(axis=-1, keepdims=True), 0.0, None)
    buckets = np.concatenate([probs, tail], axis=-1)
    return buckets / buckets.sum(axis=-1, keepdims=True)


def bucket_labels(indices, labels):
    """Each label's bucket: its position in the top k, or `k` (the tail)."""
    indices = np.asarray(indices)
    labels = np.asarray(labels).reshape(-1, 1)
    hits = indices == labels
    return np.where(hits.any(axis=-1), hits.argmax(axis=-1), indices.shape[-1])


def sparse_proxy_teacher(log_probs, coefficients, **kwargs):
    """The proxy teacher of a top-k teacher, on its k + 1 buckets.

    The top-k probabilities and the tail bucket form a `(N, k + 1)`
    distribution (`tail_buckets`); with shared coefficients the proxy is
    computed on it by `keras_ptloss.proxy_teacher` (keyword arguments are
    passed on). Cost scales with k, not with the vocabulary.

    Returns:
        Float64 array of shape `(N, k + 1)`; the last column is the tail.

    Example:

    >>> import numpy as np
    >>> proxy = sparse_proxy_teacher(np.log([[0.6, 0.3]]), [0.5])
    >>> proxy.shape
    (1, 3)
    """
    coefficients = as_float_array(coefficients, "coefficients")
    if coefficients.ndim != 1:
        raise ValueError(
            "A top-k teacher takes shared `coefficients` of shape (M,). "
            f"Received: coefficients.shape={coefficients.shape}"
        )
    return proxy_teacher(tail_buckets(log_probs), coefficients, **kwargs)


def select_sparse_coefficients(indices, log_probs, labels, **kwargs):
    """Shared PTLoss coefficients for a top-k teacher, on k + 1 buckets.

    `keras_ptloss.select_coefficients` on the teacher's top-k
    probabilities plus the tail bucket (`tail_buckets`), each label mapped
    to its bucket (`bucket_labels`: its top-k position, or the tail). The
    closeness is that of the coarsened distributions, so the search costs
    what it costs for k + 1 classes whatever the vocabulary. Keyword
    arguments are passed on (`mode` must stay `"shared"`).

    Returns:
        The `SelectionResult` of `select_coefficients`.
    """
    if kwargs.get("mode", "shared") != "shared":
        raise ValueError(
            "A top-k teacher takes shared coefficients. Received: "
            f"mode={kwargs['mode']!r}"
        )
    return select_coefficients(
        tail_buckets(log_probs), bucket_labels(indices, labels), **kwargs
    )
