"""A synthetic language whose next-token distribution is known exactly."""

import numpy as np

from keras_ptloss._checks import check_int
from keras_ptloss._checks import check_number
from keras_ptloss.datasets.loaders import DEFAULT_FRACTIONS
from keras_ptloss.datasets.loaders import check_fractions


class HiddenMarkovLanguage:
    """A hidden Markov language with exact next-token probabilities.

    With transitions `A` `(H, H)`, emissions `B` `(H, V)` and the filtered
    state `b_t(h) = P(h_t = h | x_0..x_t)`,

        p*(x_{t+1} = v | x_0..x_t) = sum_h (b_t A)(h) B(h, v).

    States emit overlapping token sets, so the whole prefix matters.

    Args:
        vocab_size: number of tokens `V >= 2`.
        num_states: hidden states `H >= 1`.
        tokens_per_state: tokens each state can emit, in `[1, V]`.
        successors: states each state can move to, in `[1, H]`.
        concentration: Dirichlet parameter of the weights, `> 0`.
        seed: seed of the model.

    Example:

    >>> language = HiddenMarkovLanguage(vocab_size=50, num_states=4,
    ...                                 tokens_per_state=8, seed=0)
    >>> tokens = language.sample(3, length=6, seed=1)
    >>> tokens.shape
    (3, 7)
    >>> probs = language.next_token_probs(tokens[:, :-1])
    >>> probs.shape, bool(abs(probs.sum(-1) - 1).max() < 1e-9)
    ((3, 6, 50), True)
    """

    def __init__(
        self,
        vocab_size=1024,
        num_states=32,
        tokens_per_state=64,
        successors=4,
        concentration=0.2,
        seed=0,
    ):
        self.vocab_size = check_int(vocab_size, "vocab_size", minimum=2)
        self.num_states = check_int(num_states, "num_states", minimum=1)
        self.tokens_per_state = check_int(
            tokens_per_state, "tokens_per_state", 1, self.vocab_size
        )
        self.successors = check_int(
            successors, "successors", 1, self.num_states
        )
        self.concentration = check_number(
            concentration, "concentration", low=0, low_open=True
        )
        self.seed = check_int(seed, "seed", minimum=0)
        rng = np.random.default_rng(self.seed)
        h, v = self.num_states, self.vocab_size
        self.initial = rng.dirichlet(np.ones(h))
        self.transitions = np.zeros((h, h))
        self.emissions = np.zeros((h, v))
        for state in range(h):
            targets = rng.choice(h, size=self.successors, replace=False)
            self.transitions[state, targets] = _dirichlet(
                rng, self.concentration, self.successors
            )
            tokens = rng.choice(v, size=self.tokens_per_state, replace=False)
            self.emissions[state, tokens] = _dirichlet(
                rng, self.concentration, self.tokens_per_state
            )
        # Distribution of the next token given the current state.
        self.next_emissions = self.transitions @ self.emissions

    def sample(self, num_sequences, length, seed=0):
        """Draws int32 sequences `(num_sequences, length + 1)`."""
        n = check_int(num_sequences, "num_sequences", minimum=1)
        length = check_int(length, "length", minimum=1)
        rng = np.random.default_rng(check_int(seed, "seed", minimum=0))
        states = _draw(rng, np.broadcast_to(self.initial, (n, self.num_states)))
        tokens = np.empty((n, length + 1), dtype="int32")
        for t in range(length + 1):
            if t > 0:
                states = _draw(rng, self.transitions[states])
            tokens[:, t] = _draw(rng, self.emissions[states])
        return tokens

    def state_beliefs(self, tokens):
        """Filtered hidden states `P(h_t | x_0..x_t)`, float64 `(n, L, H)`."""
        tokens = self._check_tokens(tokens)
        n, length = tokens.shape
        beliefs = np.empty((n, length, self.num_states))
        prior = np.broadcast_to(self.initial, (n, self.num_states))
        for t in range(length):
            if t > 0:
                prior = beliefs[:, t - 1] @ self.transitions
            joint = prior * self.emissions[:, tokens[:, t]].T
            total = joint.sum(axis=-1, keepdims=True)
            if np.any(total <= 0):
                row = int(np.argmin(total[:, 0]))
                raise ValueError(
                    "`tokens` must be possible under this language. Received: "
                    f"sequence {row} is impossible at position {t}"
                )
            beliefs[:, t] = joint / total
        return beliefs

    def next_token_probs(self, tokens, dtype="float64"):
        """Exact `p*(x_{t+1} | x_0..x_t)` for prefixes `(n, L)`: `(n, L, V)`."""
        return (self.state_beliefs(tokens) @ self.next_emissions).astype(dtype)

    def entropy_rate(self, tokens):
        """Mean entropy of `p*` over the positions of `tokens`, in nats."""
        probs = self.next_token_probs(tokens)
        logs = np.log(np.where(probs > 0, probs, 1.0))
        return float(-np.mean(np.sum(probs * logs, axis=-1)))

    def get_config(self):
        return {
            "vocab_size": self.vocab_size,
            "num_states": self.num_states,
            "tokens_per_state": self.tokens_per_state,
            "successors": self.successors,
            "concentration": self.concentration,
            "seed": self.seed,
        }

    def _check_tokens(self, tokens):
        array = np.asarray(tokens)
        if (
            array.ndim != 2
            or array.size == 0
            or array.dtype.kind not in "iu"
            or array.min() < 0
            or array.max() >= self.vocab_size
        ):
            raise ValueError(
                "`tokens` must be a non-empty 2-D integer array of token ids "
                f"in [0, {self.vocab_size}). Received: tokens with shape "
                f"{array.shape} and dtype {array.dtype}"
            )
        return array


def make_language(num_sequences=2000, length=32, fractions=None, seed=0, **kw):
    """Samples a `HiddenMarkovLanguage` and cuts the sequences into splits.

    Args:
        num_sequences: total number of sequences.
        length: predicted positions per sequence.
        fractions: dict `{name: fraction}` summing to 1. Defaults to train
            0.4, transfer 0.3, validation 0.1, test 0.2.
        seed: seed of the language and of the draw.
        **kw: `HiddenMarkovLanguage` arguments.

    Returns:
        `(splits, language)`: `splits` a dict `{name: (inputs, targets)}` of
        int32 `(n, length)` (targets shifted by one).

    Example:

    >>> splits, language = make_language(100, length=8, vocab_size=64,
    ...                                  num_states=4, seed=0)
    >>> inputs, targets = splits["test"]
    >>> inputs.shape, language.next_token_probs(inputs).shape
    ((20, 8), (20, 8, 64))
    """
    fractions = check_fractions(
        DEFAULT_FRACTIONS if fractions is None else fractions
    )
    num_sequences = check_int(num_sequences, "num_sequences", minimum=1)
    language = HiddenMarkovLanguage(seed=seed, **kw)
    tokens = language.sample(num_sequences, length, seed=seed + 1)
    counts = [int(np.floor(num_sequences * f)) for f in fractions.values()]
    counts[0] += num_sequences - sum(counts)
    if min(counts) < 1:
        raise ValueError(
            f"Every split needs at least one sequence: {num_sequences} "
            f"sequences cut by fractions={fractions}. Received: "
            f"num_sequences={num_sequences}"
        )
    splits, start = {}, 0
    for name, count in zip(fractions, counts, strict=True):
        chunk = tokens[start : start + count]
        splits[name] = (chunk[:, :-1].copy(), chunk[:, 1:].copy())
        start += count
    return splits, language


def _dirichlet(rng, concentration, size):
    # Strictly positive weights, so every listed choice stays possible.
    weights = rng.dirichlet(np.full(size, concentration))
    weights = np.maximum(weights, 1e-6)
    return weights / weights.sum()


def _draw(rng, probs):
    cumulative = np.cumsum(probs, axis=-1)
    u = rng.random(probs.shape[0])[:, None] * cumulative[:, -1:]
    index = (cumulative <= u).sum(axis=-1)
    return np.minimum(index, probs.shape[-1] - 1)
