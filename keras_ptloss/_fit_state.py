"""What the package's models change in Keras's training loop (private)."""


class UntrackedFitState:
    """Keeps the state that Keras's JAX `fit` stores on a model untracked.

    After every step the JAX trainer sets `model._jax_state` to a dict of
    every state array; `Layer.__setattr__` would wrap that dict and inspect
    each array for layers and variables to track, which it never holds
    (docs/design.md, "Keras traps").
    """

    def __setattr__(self, name, value):
        if name == "_jax_state":
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)
