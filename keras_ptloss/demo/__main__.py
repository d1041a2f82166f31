"""`python -m keras_ptloss.demo`: the demo program.

`python -m keras_ptloss demo` runs this in a child process and drops
TensorFlow's start-up notices from its standard error (run directly, they
show). The program's own settings: one CPU thread on torch
(`limit_torch_threads`) and no TensorFlow retracing warning
(`quiet_retracing_notices`).
"""

import argparse
import logging
import os
import sys

from keras_ptloss.cli import DEMO_DESCRIPTION
from keras_ptloss.demo import options


def limit_torch_threads():
    """On the torch backend, one CPU thread, unless `OMP_NUM_THREADS` is set.

    The demo's models are small (batches of 128 rows of 40 features), so
    eager PyTorch spends its time in OpenMP's hand-offs between threads;
    measured on 2 shared cores, one thread runs a teacher epoch in 0.75 s
    and two in 19 s. This is the demo program's own setting: `run` leaves
    the caller's process alone.

    Returns:
        The thread count now in use, or `None` on another backend.
    """
    import keras

    if keras.backend.backend() != "torch":
        return None
    import torch

    if not os.environ.get("OMP_NUM_THREADS"):
        torch.set_num_threads(1)
    return torch.get_num_threads()


class _NoRetracingNotice(logging.Filter):
    """Drops TensorFlow's "triggered tf.function retracing" warning."""

    def filter(self, record):
        return "triggered tf.function retracing" not in record.getMessage()


def quiet_retracing_notices():
    """Hides TensorFlow's retracing warning from the demo's output.

    `keras_ptloss.calibrate` runs `model.predict` once per calibrated
    model, and every student of the demo is a new model, so TensorFlow
    traces a new predict step for each and warns that it retraces often.
    That is expected here; only that message is dropped (a filter on the
    `tensorflow` logger), every other warning still shows. This is the demo
    program's own setting: `run` leaves the caller's logging alone.
    """
    logger = logging.getLogger("tensorflow")
    if not any(isinstance(f, _NoRetracingNotice) for f in logger.filters):
        logger.addFilter(_NoRetracingNotice())


def main(argv=None):
    """Parses the demo's options and runs it; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m keras_ptloss demo", description=DEMO_DESCRIPTION
    )
    options.add_arguments(parser)
    args = parser.parse_args(argv)
    from keras_ptloss.demo import pipeline

    limit_torch_threads()
    quiet_retracing_notices()
    pipeline.run_from_args(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
