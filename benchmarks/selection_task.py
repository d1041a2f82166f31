"""The selection benchmark's synthetic task, with exact Bayes probabilities.

Class means in R^d, x = mu_y + N(0, I), so
p*(k | x) = softmax_k(x . mu_k - |mu_k|^2 / 2) exactly; labels are the y
drawn with x. The teacher is over-confident and biased per class:
softmax(logit* / tau + b_k + noise). Used by `selection_speed.py` and
`plots.py` (its own module, so that neither imports the other).
"""

import numpy as np


def make_task(
    num_examples, num_classes, seed, sample=0, dim=32, tau=0.6, noise=0.3
):
    """Teacher probabilities, labels and exact Bayes probabilities p*.

    `seed` fixes the task (class means, teacher biases); `sample` the draw
    of examples from it.
    """
    task_rng = np.random.default_rng(seed)
    spread = 1.5 * np.sqrt(2.0 * np.log(num_classes) / dim)
    means = task_rng.normal(scale=spread, size=(num_classes, dim))
    bias = task_rng.normal(scale=0.3, size=num_classes)
    rng = np.random.default_rng([seed, sample])
    labels = rng.integers(0, num_classes, size=num_examples)
    x = means[labels] + rng.normal(size=(num_examples, dim))
    logits = x @ means.T - 0.5 * np.sum(means**2, axis=1)
    p_star = softmax(logits)
    teacher_logits = logits / tau + bias + noise * rng.normal(size=logits.shape)
    return softmax(teacher_logits), labels, p_star


def softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)
