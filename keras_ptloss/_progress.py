"""The progress bar of the coefficient selection and the search."""

import time

import numpy as np


class Progress:
    """A `keras.utils.Progbar` shown with `verbose=1` once `delay` passed.

    Args:
        verbose: `1` shows the bar; any other value shows nothing.
        stateful_metrics: the values shown as they are, not averaged.
        delay: seconds to wait before the bar appears (short runs show
            none).
        **bar_kwargs: passed to `keras.utils.Progbar` (e.g. `unit_name`).
    """

    def __init__(self, verbose, stateful_metrics=(), delay=0.0, **bar_kwargs):
        self.verbose = verbose
        self.stateful_metrics = list(stateful_metrics)
        self.delay = delay
        self.bar_kwargs = bar_kwargs
        self.target = None
        self.step = 0
        self.bar = None
        self.t0 = time.perf_counter()

    def start(self, target):
        self.target = target

    def update(self, step, **values):
        """Moves the bar to `step`, showing the finite `values`."""
        self.step = step
        if self.verbose != 1:
            return
        if self.bar is None:
            if time.perf_counter() - self.t0 < self.delay:
                return
            import keras

            self.bar = keras.utils.Progbar(
                self.target,
                stateful_metrics=self.stateful_metrics,
                **self.bar_kwargs,
            )
        finite = [(k, v) for k, v in values.items() if np.isfinite(v)]
        self.bar.update(self.step, values=finite)

    def advance(self, count=1, **values):
        """Moves the bar `count` steps on (at most to the target)."""
        step = min(self.step + max(count, 0), self.target or self.step)
        self.update(step, **values)

    def close(self):
        if self.bar is not None and self.target is not None:
            self.bar.update(self.target, finalize=True)
