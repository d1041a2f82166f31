"""Whether this process is the command, from `sys.argv` alone.

The package asks while it is imported, to leave Keras to `keras_ptloss.cli`.
"""

import re
import sys

SCRIPT_NAME = re.compile(r"keras-ptloss(\.exe|-script\.pyw?)?")
MODULE = "keras_ptloss"


def module_of(orig_argv):
    """The module that `python [options] -m MODULE ...` runs, or `None`."""
    args = list(orig_argv[1:])
    while args:
        arg = args.pop(0)
        if arg == "-" or not arg.startswith("-"):
            return None
        if arg.startswith("--"):
            continue
        for i, flag in enumerate(arg[1:], start=1):
            rest = arg[i + 1 :]
            if flag == "c":
                return None
            if flag == "m":
                if rest:
                    return rest
                return args[0] if args else None
            if flag in "WX":
                if not rest and args:
                    args.pop(0)
                break
    return None


def started_as_command(argv=None, orig_argv=None):
    """Whether this process is `python -m keras_ptloss` or `keras-ptloss`.

    During `python -m`, `sys.argv[0]` is `"-m"` while the module is located.
    """
    # An embedded interpreter may have no `sys.argv`.
    argv = getattr(sys, "argv", []) if argv is None else argv
    orig_argv = (
        getattr(sys, "orig_argv", []) if orig_argv is None else orig_argv
    )
    if not argv:
        return False
    if argv[0] == "-m":
        return module_of(orig_argv) == MODULE
    name = re.split(r"[\\/]", argv[0])[-1]
    return SCRIPT_NAME.fullmatch(name) is not None
