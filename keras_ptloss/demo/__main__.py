"""`python -m keras_ptloss.demo`: same as `python -m keras_ptloss demo`."""

import argparse
import sys

from keras_ptloss import demo


def main(argv=None):
    """`python -m keras_ptloss.demo`: same as `python -m keras_ptloss demo`."""
    parser = argparse.ArgumentParser(
        prog="python -m keras_ptloss demo",
        description=demo.__doc__.split("\n\n")[0],
    )
    demo.add_arguments(parser)
    demo.run_from_args(parser.parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
