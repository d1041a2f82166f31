"""The synthetic language: exact next-token probabilities and sampling."""

import itertools

import numpy as np
import pytest

from keras_ptloss.datasets import HiddenMarkovLanguage
from keras_ptloss.datasets import make_language


def _brute_force_next(language, prefix):
    """p*(v | prefix) by summing the joint over every hidden path."""
    pi = language.initial
    a = language.transitions
    b = language.emissions
    h = language.num_states
    length = len(prefix)
    # Joint of the prefix and the next token, over hidden paths of length
    # len(prefix) + 1.
    joint = np.zeros(language.vocab_size)
    for path in itertools.product(range(h), repeat=length + 1):
        weight = pi[path[0]] * b[path[0], prefix[0]]
        for t in range(1, length):
            weight *= a[path[t - 1], path[t]] * b[path[t], prefix[t]]
        weight *= a[path[length - 1], path[length]]
        joint += weight * b[path[length]]
    return joint / joint.sum()


def test_next_token_probs_match_enumeration_of_hidden_paths():
    language = HiddenMarkovLanguage(
        vocab_size=6,
        num_states=3,
        tokens_per_state=4,
        successors=2,
        concentration=1.0,
        seed=3,
    )
    tokens = language.sample(4, length=4, seed=0)
    inputs = tokens[:, :-1]
    probs = language.next_token_probs(inputs)
    assert probs.shape == (4, 4, 6)
    for i in range(4):
        for t in range(4):
            expected = _brute_force_next(language, inputs[i, : t + 1])
            np.testing.assert_allclose(probs[i, t], expected, atol=1e-12)


def test_rows_sum_to_one_and_samples_follow_the_model():
    language = HiddenMarkovLanguage(
        vocab_size=40, num_states=5, tokens_per_state=12, seed=1
    )
    tokens = language.sample(3000, length=6, seed=2)
    inputs, targets = tokens[:, :-1], tokens[:, 1:]
    probs = language.next_token_probs(inputs)
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-12)
    # Every sampled next token had positive probability.
    chosen = np.take_along_axis(probs, targets[..., None], -1)
    assert np.all(chosen > 0)
    # E[one_hot(x_{t+1})] = E[p*(. | prefix)]: empirical token frequencies
    # agree with the mean of p* within a few binomial standard errors.
    flat = probs.reshape(-1, 40)
    counts = np.bincount(targets.reshape(-1), minlength=40) / flat.shape[0]
    mean = flat.mean(0)
    error = np.sqrt(mean * (1 - mean) / flat.shape[0]) + 1e-9
    assert np.max(np.abs(counts - mean) / error) < 5.0
    # First tokens follow initial @ emissions.
    first = np.bincount(tokens[:, 0], minlength=40) / tokens.shape[0]
    expected = language.initial @ language.emissions
    error = np.sqrt(expected * (1 - expected) / tokens.shape[0]) + 1e-9
    assert np.max(np.abs(first - expected) / error) < 5.0
    # Context matters: p* differs from the prediction given one token.
    single = language.emissions[:, inputs].transpose(1, 2, 0)
    single = single * language.initial
    single /= single.sum(-1, keepdims=True)
    assert np.abs(single @ language.next_emissions - probs)[:, 1:].max() > 0.05


def test_deterministic_from_seed_and_splits():
    splits, language = make_language(
        50, length=5, vocab_size=30, num_states=4, tokens_per_state=8, seed=7
    )
    again, _ = make_language(
        50, length=5, vocab_size=30, num_states=4, tokens_per_state=8, seed=7
    )
    assert list(splits) == ["train", "transfer", "validation", "test"]
    assert sum(len(x) for x, _ in splits.values()) == 50
    for name, (inputs, targets) in splits.items():
        assert inputs.dtype == np.int32 and inputs.shape[1] == 5
        np.testing.assert_array_equal(inputs[:, 1:], targets[:, :-1])
        np.testing.assert_array_equal(inputs, again[name][0])
    assert language.get_config()["seed"] == 7
    rebuilt = HiddenMarkovLanguage(**language.get_config())
    np.testing.assert_array_equal(rebuilt.emissions, language.emissions)
    entropy = language.entropy_rate(splits["test"][0])
    assert 0.0 < entropy < np.log(30)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"vocab_size": 1}, "vocab_size"),
        ({"num_states": 0}, "num_states"),
        ({"tokens_per_state": 100, "vocab_size": 10}, "tokens_per_state"),
        ({"successors": 9, "num_states": 3}, "successors"),
        ({"concentration": 0.0}, "concentration"),
        ({"seed": -1}, "seed"),
    ],
)
def test_bad_model_arguments_raise(kwargs, name):
    with pytest.raises(ValueError, match=name):
        HiddenMarkovLanguage(**kwargs)


def test_bad_sampling_arguments_raise():
    language = HiddenMarkovLanguage(
        vocab_size=10, num_states=2, tokens_per_state=3, successors=2, seed=0
    )
    with pytest.raises(ValueError, match="num_sequences"):
        language.sample(0, 3)
    with pytest.raises(ValueError, match="length"):
        language.sample(2, 0)
    with pytest.raises(ValueError, match="tokens"):
        language.next_token_probs(np.array([1, 2]))
    with pytest.raises(ValueError, match="tokens"):
        language.next_token_probs(np.array([[1, 10]]))
    impossible = np.setdiff1d(
        np.arange(10), np.flatnonzero(language.emissions.sum(0))
    )
    assert impossible.size >= 4  # at most 2 * 3 tokens can be emitted
    with pytest.raises(ValueError, match="impossible"):
        language.next_token_probs(impossible[None, :1])
    with pytest.raises(ValueError, match="fractions"):
        make_language(10, fractions={"a": 0.5})
    with pytest.raises(ValueError, match="num_sequences"):
        make_language(2, fractions={"a": 0.5, "b": 0.25, "c": 0.25})
