"""The benchmarks' command line.

    python -m benchmarks list
    python -m benchmarks run CASE... [--quick] [--backends B...] [--set K=V]
                             [--threads N] [--results-dir DIR]
    python -m benchmarks report [--check]

`run` measures cases (each backend in its own process) into
`benchmarks/results/<case>.json` (`--quick`: a smoke run into the
git-ignored `results/tmp/`); `report` renders every marked table of
BENCHMARKS.md from those files; `--check` only says whether it is current.
"""

import argparse
import json
import sys

from benchmarks import harness
from benchmarks import render


def parse_setting(text):
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="the cases and what they measure")
    run = sub.add_parser("run", help="measure cases into results/<case>.json")
    run.add_argument("cases", nargs="+", metavar="CASE")
    run.add_argument("--quick", action="store_true", help="smoke-test sizes")
    run.add_argument(
        "--backends",
        nargs="+",
        choices=harness.BACKENDS,
        help="the backends to run instead of the case's own",
    )
    run.add_argument(
        "--set",
        type=parse_setting,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a size argument (VALUE is JSON where it parses)",
    )
    run.add_argument("--results-dir", help="where the JSON goes")
    run.add_argument(
        "--threads",
        type=int,
        help="intra-op threads per worker instead of the case's (0: the "
        "backends' defaults, every core)",
    )
    report = sub.add_parser("report", help="render BENCHMARKS.md's tables")
    report.add_argument(
        "--check", action="store_true", help="fail if BENCHMARKS.md is stale"
    )
    worker = sub.add_parser("worker")  # one backend, started by `run`
    worker.add_argument("case")
    worker.add_argument("--size", required=True)
    worker.add_argument("--output", required=True)
    args = parser.parse_args(argv)

    if args.command == "list":
        for name, case in sorted(harness.cases().items()):
            backends = ", ".join(case.backends) or "numpy"
            print(f"{name:16} {backends:24} {case.description}")
    elif args.command == "run":
        harness.run(
            args.cases,
            quick=args.quick,
            backends=args.backends,
            overrides=dict(args.set),
            folder=args.results_dir,
            threads=args.threads,
        )
    elif args.command == "report":
        current = render.DOCUMENT.read_text()
        text = render.report(current)
        if args.check:
            if text != current:
                print(
                    "BENCHMARKS.md is stale: run `python -m benchmarks report`"
                )
                return 1
            print("BENCHMARKS.md is current")
        else:
            render.DOCUMENT.write_text(text)
            print(f"wrote {render.DOCUMENT}")
    else:
        harness.serve_worker(args.case, args.size, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
