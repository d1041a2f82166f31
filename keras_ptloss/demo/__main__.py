"""`python -m keras_ptloss.demo`: the demo, unfiltered.

`python -m keras_ptloss demo` runs this in a child process and drops
TensorFlow's start-up notices from its standard error.
"""

import argparse
import sys

from keras_ptloss.cli import DEMO_DESCRIPTION
from keras_ptloss.demo import options


def main(argv=None):
    """Parses the demo's options and runs it; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m keras_ptloss demo", description=DEMO_DESCRIPTION
    )
    options.add_arguments(parser)
    args = parser.parse_args(argv)
    from keras_ptloss.demo import pipeline

    pipeline.run_from_args(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
