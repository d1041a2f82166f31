"""Accuracy of students trained with PTLoss against tuned KD baselines.

Settings (all offline, see `keras_ptloss.datasets`):

- `mnist1d_self`: MNIST-1D, CNN teacher -> small MLP student; the transfer
  set is the teacher's own labelled training set (an over-confident
  teacher there);
- `mnist1d_unlabelled`: the same teacher, transfer set = a separate
  unlabelled split (hard-label terms use the teacher's argmax);
- `digits`: scikit-learn digits, MLP teacher -> small MLP student, transfer
  set = the teacher's training set;
- `gaussian`: a Gaussian mixture with exact Bayes probabilities p*; MLP
  teacher -> small MLP student on an unlabelled transfer split; reports
  the student's excess 0-1 risk over the Bayes classifier and its
  distance to p*;
- `mnist1d_noisy`: an unreliable CNN teacher trained on MNIST-1D labels
  with 40% symmetric noise; unlabelled transfer split; the student alone is
  trained on the noisy labels;
- the teacher-scale sweep, `mnist1d_teacher_small`,
  `mnist1d_teacher_mlp_wide`, `mnist1d_teacher_cnn_small` and
  `mnist1d_teacher_large`: `mnist1d_unlabelled` (same splits, student and
  budgets) with a small MLP, an over-confident wide MLP, a small CNN and a
  wider, deeper CNN teacher;
  the student alone, every tuned baseline and PTLoss M = 5 training-free
  and searched (no coefficient grid or search study: the profile's
  `setting_overrides`). Reported in their own section beside the CNN
  teacher of `mnist1d_unlabelled`, with each teacher's test accuracy, mean
  confidence and ECE and the searches' cost beside KD's tuning;
- `mnist1d_k2`, `mnist1d_k2_noisy`, `mnist1d_k3`, `mnist1d_k3_noisy`
  (profile `pipeline` only): `mnist1d_unlabelled` (and `mnist1d_noisy`)
  with the digits grouped into K = 2 or 3 super-classes.

Methods: student alone (cross-entropy), KD, KD + CE, DKD, logit-standardised
KD, Poly-1, PTLoss of order M in {1, 2, 5}, shared and class-wise, with
coefficients from `keras_ptloss.select_coefficients`, and PTLoss M = 5 with
coefficients and temperature from `keras_ptloss.search_coefficients` (the
student-aware search, on the teacher's logits and on standardised ones),
and the default pipeline: `search_coefficients` with its defaults, one call
per seed, its own calibrated student. A method the library refuses for a
setting (LS-KD at K = 2) is recorded as not applicable, with the reason.
Every tuned method gets the same budget of student trainings on the
validation split (the profile's `tune_budget`); the selected PTLoss rows use
KD's tuned temperature and choose their coefficients by the proxy teacher,
without training; the search spends the same budget in student-epochs.
Every method trains through `keras_ptloss.Distiller` on pre-computed teacher
outputs, one Distiller (one compiled step) per setting and loss family,
whose loss holds the hyper-parameters in variables; a run re-initialises the
student and the optimizer state. Test NLL and ECE are recorded beside the
accuracy, before and after temperature scaling fitted on the validation
split (`keras_ptloss.calibrate`).

The `pipeline` profile (`--profile pipeline`) runs the default pipeline
against the student alone, the tuned KD, KD + CE, DKD and LS-KD and the
plain search on `mnist1d_unlabelled`, `mnist1d_noisy` and the K = 2 / 3
settings; its section of the markdown computes the issue's targets.

Selection quality: the student trained with the selected M = 1 shared
coefficient against every point of a coefficient grid (the oracle is the
grid point with the best mean test accuracy), and the Spearman correlation
between the proxy teacher's closeness (validation Brier) and the student's
test accuracy across the grid; plotted to a PNG. For the search: every
first-rung candidate trained fully, the Spearman correlation between its
short-run and full-run accuracy, and the search's pick against the oracles.

Every training result is appended to the JSON as it finishes, so an
interrupted run resumes where it stopped. The markdown section is then
generated from the JSON.

Modules: `accuracy_settings.py` (profiles, methods, data, teachers),
`accuracy_harness.py` (training, the JSON store, the run),
`accuracy_report/` (summaries, tables, plots, targets: one module a
section); this file is the command line.

Usage:
    KERAS_BACKEND=jax python benchmarks/accuracy.py          # the table
    KERAS_BACKEND=jax python benchmarks/accuracy.py --settings \
        mnist1d_teacher_small mnist1d_teacher_mlp_wide \
        mnist1d_teacher_cnn_small mnist1d_unlabelled mnist1d_teacher_large
    KERAS_BACKEND=torch python benchmarks/accuracy.py --cross-check
    KERAS_BACKEND=jax python benchmarks/accuracy.py --profile pipeline
    python benchmarks/accuracy.py --quick                    # tiny, ~2 min
    python benchmarks/accuracy.py --report-only              # markdown only
"""

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import keras  # noqa: E402
import timing  # noqa: E402
from accuracy_harness import Store  # noqa: E402
from accuracy_harness import record_key  # noqa: E402
from accuracy_harness import run  # noqa: E402
from accuracy_report import write_report  # noqa: E402
from accuracy_settings import ALL_SETTINGS  # noqa: E402
from accuracy_settings import BACKENDS  # noqa: E402
from accuracy_settings import NAME  # noqa: E402
from accuracy_settings import PROFILES  # noqa: E402

# --------------------------------------------------------------------------
# Command line.
# --------------------------------------------------------------------------


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--quick",
        action="store_true",
        help="tiny end-to-end run (two small settings, 2 seeds, 2 epochs); "
        "writes under benchmarks/results/tmp/ unless --output-dir is given",
    )
    mode.add_argument(
        "--cross-check",
        action="store_true",
        help="the smaller fixed-hyper-parameter run used to compare "
        "backends; appended to the same JSON as the full table",
    )
    mode.add_argument(
        "--profile",
        choices=sorted(PROFILES),
        help="run this profile (--quick and --cross-check are 'quick' and "
        "'cross'); 'pipeline': the default search_coefficients pipeline "
        "against the tuned baselines at K = 10, 2 and 3, appended to the "
        "same JSON as the full table, with its own section",
    )
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="regenerate the markdown and PNG from the JSON, train nothing",
    )
    parser.add_argument(
        "--settings",
        nargs="+",
        choices=ALL_SETTINGS,
        help="run only these settings (default: the profile's)",
    )
    parser.add_argument(
        "--seeds", type=int, help="number of seeds (default: the profile's)"
    )
    parser.add_argument(
        "--output-dir",
        type=Path,
        help="folder for accuracy.json/.md/.png (default: "
        "benchmarks/results, or benchmarks/results/tmp for --quick)",
    )
    parser.add_argument("--silent", action="store_true", help="no progress")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    args.argv = argv
    if args.profile is None:
        args.profile = (
            "quick" if args.quick else "cross" if args.cross_check else "full"
        )
    args.quick = args.profile == "quick"
    if args.output_dir is None:
        args.output_dir = timing.QUICK_RESULTS if args.quick else timing.RESULTS
    args.json = args.output_dir / f"{NAME}.json"
    args.md = args.output_dir / f"{NAME}.md"
    args.png = args.output_dir / f"{NAME}_selection.png"
    return args


def limit_threads(num_threads=1):
    """One intra-op thread for torch: on a shared 2-core machine its default
    thread pool spins and makes small matmuls ~1000x slower (measured)."""
    if keras.backend.backend() == "torch":
        import torch

        previous = torch.get_num_threads()
        torch.set_num_threads(num_threads)
        return previous
    return None


def main(argv=None):
    args = parse_args(argv)
    backend = keras.backend.backend()
    limit_threads(1)
    if not args.report_only:
        run(args)
    # The markdown section belongs to the full table (cross-check and
    # pipeline runs only add their sections to it).
    report_profile = "quick" if args.quick else "full"
    report_backend = backend
    if args.profile in ("cross", "pipeline") or args.report_only:
        report_backend = _main_backend(args.json, report_profile, backend)
    write_report(args.json, args.md, args.png, report_profile, report_backend)
    print(f"wrote {args.json}, {args.md}")


def _main_backend(json_path, profile_name, default):
    if not Path(json_path).exists():
        return default
    records = Store(json_path).data().get("records", {})
    for b in BACKENDS:
        if record_key(profile_name, b, "meta") in records:
            return b
    return default


if __name__ == "__main__":
    main()
