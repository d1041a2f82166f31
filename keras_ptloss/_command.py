"""Whether this process is the command (`python -m keras_ptloss`, the
`keras-ptloss` script).

Python imports the package before the command's own code runs, so the
package asks here, from `sys.argv` alone, whether to leave Keras to
`keras_ptloss.cli` (see `keras_ptloss/__init__.py`). Nothing here imports
or changes anything.
"""

import re
import sys

# The console script's file name (`keras-ptloss`; on Windows the launcher
# `keras-ptloss.exe` or `keras-ptloss-script.py`).
SCRIPT_NAME = re.compile(r"keras-ptloss(\.exe|-script\.pyw?)?")
# The module `python -m` runs for this command.
MODULE = "keras_ptloss"


def module_of(orig_argv):
    """The module that `python [options] -m MODULE ...` runs, or `None`.

    Args:
        orig_argv: the interpreter's command line, as `sys.orig_argv`.

    Returns:
        The name after `-m` (also as `-mNAME` or in a group of flags such
        as `-Bm NAME`), or `None` when the interpreter runs a script, `-c`
        or standard input.
    """
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

    Asked while the package is imported: during `python -m keras_ptloss`
    that happens while Python locates the module, when `sys.argv[0]` is
    `"-m"` and `sys.orig_argv` names the module; the console script's
    `sys.argv[0]` is its file.

    Args:
        argv: `sys.argv` (default).
        orig_argv: `sys.orig_argv` (default).

    Returns:
        A bool.
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
