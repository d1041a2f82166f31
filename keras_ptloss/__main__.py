"""`python -m keras_ptloss`: see `keras_ptloss.cli`."""

import sys

from keras_ptloss.cli import main

if __name__ == "__main__":
    sys.exit(main())
