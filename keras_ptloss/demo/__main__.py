"""`python -m keras_ptloss.demo`: the demo program."""

import argparse
import logging
import os
import sys

from keras_ptloss.cli import DEMO_DESCRIPTION
from keras_ptloss.demo import options


def limit_torch_threads():
    """On the torch backend, one CPU thread, unless `OMP_NUM_THREADS` is set.

    The demo's models are small, so eager PyTorch spends its time in OpenMP's
    hand-offs between threads.

    Returns:
        The thread count in use, or `None` on another backend.
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
    """Hides TensorFlow's retracing warning, and only it.

    Every calibrated student is a new model, so its predict step is traced
    anew; that is expected here.
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
