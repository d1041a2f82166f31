"""`python -m keras_ptloss.demo`: the demo, unfiltered.

`python -m keras_ptloss demo` runs this in a child process and drops
TensorFlow's start-up notices from its standard error.
"""

import argparse
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


def main(argv=None):
    """Parses the demo's options and runs it; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m keras_ptloss demo", description=DEMO_DESCRIPTION
    )
    options.add_arguments(parser)
    args = parser.parse_args(argv)
    from keras_ptloss.demo import pipeline

    limit_torch_threads()
    pipeline.run_from_args(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
