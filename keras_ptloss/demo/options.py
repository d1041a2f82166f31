"""The demo's options: defaults, `--quick` sizes, command-line parsing.

Imports no backend, so `--help` does not start TensorFlow.
"""

import argparse

from keras_ptloss._names import MODES

# The teachers the demo can train, in the order it runs them: the CNN on
# the labelled split's labels, and on the same labels partly flipped.
TEACHER_NAMES = ("clean", "noisy")

# Defaults of the full demo: the accuracy benchmark's `mnist1d_noisy`
# regime (a CNN teacher trained 40 epochs on 4500 labelled examples with
# 40 % of the labels flipped, an MLP student distilled 40 epochs on an
# unlabelled split; 3000 validation examples) on a smaller transfer split
# (8500 examples, not 16500) and one teacher, so that three seeds take
# about 5 to 6 minutes on 2 CPU cores. PTLoss's gain over KD with this teacher
# grows with the student's epochs, hence one teacher at 40 epochs rather
# than two at fewer (`--teachers clean,noisy` doubles the time). `order`,
# `mode`, `temperatures` (KD's grid) and `standardized_temperatures`
# (LS-KD's) are `search_coefficients`' defaults, and every tuned method
# gets its default budget, six trainings' worth of student-epochs (a test
# checks).
DEFAULTS = dict(
    num_samples=20000,
    labelled_fraction=0.225,
    validation_fraction=0.15,
    test_fraction=0.2,
    noise_rate=0.4,
    teachers=("noisy",),
    teacher_epochs=40,
    student_epochs=40,
    seeds=3,
    batch_size=128,
    learning_rate=3e-3,
    order=5,
    mode="shared",
    temperatures=(1.0, 2.0, 4.0, 8.0),
    standardized_temperatures=(0.5, 1.0, 2.0, 4.0),
    output_dir="ptloss-demo",
    seed=0,
    verbose=1,
)
# Sizes for tests: seconds, not minutes. Two temperatures: each search is
# one population (one compiled step); a batch size that divides the
# labelled (225) and transfer (425) splits: no second step compiled for a
# last, shorter batch.
QUICK = dict(
    num_samples=1000,
    teacher_epochs=2,
    student_epochs=2,
    seeds=2,
    batch_size=25,
    temperatures=(1.0, 2.0),
    standardized_temperatures=(1.0, 2.0),
)
# Student-epochs of each tuned method: six full trainings' worth, the
# budget `search_coefficients` spends by default.
TUNE_BUDGET = 6


def _temperatures(text):
    return tuple(float(t) for t in text.split(","))


def _teachers(text):
    names = tuple(name.strip() for name in text.split(","))
    unknown = [name for name in names if name not in TEACHER_NAMES]
    if unknown or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(
            f"expected comma-separated names among {', '.join(TEACHER_NAMES)}"
            f", each at most once; received {text!r}"
        )
    return names


def _shown(value):
    if isinstance(value, tuple):
        return ",".join(v if isinstance(v, str) else f"{v:g}" for v in value)
    return str(value)


def add_arguments(parser):
    """Adds the demo's options to an `argparse` parser."""
    parser.add_argument(
        "--quick",
        action="store_true",
        help="tiny sizes (seconds; for tests): "
        + ", ".join(f"{k}={_shown(v)}" for k, v in QUICK.items()),
    )
    _add_data_arguments(parser)
    _add_training_arguments(parser)
    _add_search_arguments(parser)
    _add_output_arguments(parser)
    return parser


def _add_data_arguments(parser):
    """The data: its size, its splits and the label noise."""
    d = DEFAULTS
    parser.add_argument(
        "--num-samples",
        type=int,
        default=None,
        help="MNIST-1D examples generated, a multiple of 10 "
        f"(default {d['num_samples']})",
    )
    parser.add_argument(
        "--labelled-fraction",
        type=float,
        default=d["labelled_fraction"],
        help="fraction with labels the teachers and the student alone train "
        "on; what the other splits leave is the unlabelled transfer split "
        f"the students are distilled on (default {d['labelled_fraction']})",
    )
    parser.add_argument(
        "--validation-fraction",
        type=float,
        default=d["validation_fraction"],
        help="fraction held out as the labelled (clean) validation split "
        "that tunes KD and LS-KD, runs PTLoss's search and fits every "
        "student's calibration temperature "
        f"(default {d['validation_fraction']})",
    )
    parser.add_argument(
        "--test-fraction",
        type=float,
        default=d["test_fraction"],
        help=f"fraction held out for the test table "
        f"(default {d['test_fraction']})",
    )
    parser.add_argument(
        "--noise-rate",
        type=float,
        default=d["noise_rate"],
        help="fraction of the labelled split's labels flipped (symmetric "
        "noise, `keras_ptloss.datasets.noisy_labels`) for the second "
        "teacher and its student alone, in (0, 0.9) "
        f"(default {d['noise_rate']})",
    )
    parser.add_argument(
        "--teachers",
        type=_teachers,
        default=d["teachers"],
        help="comma-separated teachers to distil from: noisy (trained on "
        "the flipped labels), clean (trained on the labels as they are), "
        "or clean,noisy; each adds its own students "
        f"(default {_shown(d['teachers'])})",
    )


def _add_training_arguments(parser):
    """The teachers' and the students' training."""
    d = DEFAULTS
    parser.add_argument(
        "--teacher-epochs",
        type=int,
        default=None,
        help=f"teacher training epochs (default {d['teacher_epochs']})",
    )
    parser.add_argument(
        "--student-epochs",
        type=int,
        default=None,
        help="epochs of every student's full training "
        f"(default {d['student_epochs']})",
    )
    parser.add_argument(
        "--seeds",
        type=int,
        default=None,
        help="student seeds (initial weights and batch order; the data and "
        "the teachers stay fixed); the tables show mean ± std over them "
        f"(default {d['seeds']})",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help=f"batch size (default {d['batch_size']})",
    )
    parser.add_argument(
        "--learning-rate",
        type=float,
        default=d["learning_rate"],
        help=f"Adam learning rate (default {d['learning_rate']})",
    )


def _add_search_arguments(parser):
    """The search's loss settings (KD's and LS-KD's grids too)."""
    d = DEFAULTS
    parser.add_argument(
        "--order",
        type=int,
        default=d["order"],
        help=f"PTLoss order M of the search (default {d['order']})",
    )
    parser.add_argument(
        "--mode",
        choices=MODES,
        default=d["mode"],
        help="the search's coefficients: one (M,) vector shared by all "
        f"classes, or (K, M) class-wise (default {d['mode']})",
    )
    parser.add_argument(
        "--temperatures",
        type=_temperatures,
        default=None,
        help="comma-separated temperatures: KD's tuning grid and the "
        f"search's on the logits (default {_shown(d['temperatures'])}, the "
        "search's own)",
    )
    parser.add_argument(
        "--standardized-temperatures",
        type=_temperatures,
        default=None,
        help="comma-separated temperatures: LS-KD's tuning grid and the "
        "search's on z-scored logits (default "
        f"{_shown(d['standardized_temperatures'])}, the search's own)",
    )


def _add_output_arguments(parser):
    """Where the results go, the data seed and the verbosity."""
    d = DEFAULTS
    parser.add_argument(
        "--output-dir",
        default=d["output_dir"],
        help="where the plots and results.json are written "
        f"(default ./{d['output_dir']})",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=d["seed"],
        help="seed of the data, the label noise and the teachers; student "
        "seeds are seed, "
        f"seed + 1, ... (default {d['seed']})",
    )
    parser.add_argument(
        "--verbose",
        type=int,
        choices=(0, 1, 2),
        default=d["verbose"],
        help="teacher fit verbosity: 1 progress bar (default), 2 one line "
        "per epoch, 0 silent (one line per seed, the first seed's search "
        "and the tables are always printed)",
    )


def check_options(o):
    """Raises `ValueError` for a bad option of the dict `o` of `run`."""
    from keras_ptloss._checks import check_choice
    from keras_ptloss._checks import check_int
    from keras_ptloss._checks import check_number
    from keras_ptloss._checks import check_temperature

    for key in (
        "num_samples",
        "teacher_epochs",
        "student_epochs",
        "seeds",
        "batch_size",
        "order",
    ):
        check_int(o[key], key, minimum=1)
    check_int(o["seed"], "seed", minimum=0)
    if o["num_samples"] < 100 or o["num_samples"] % 10:
        raise ValueError(
            "`num_samples` must be a multiple of 10 and >= 100 (MNIST-1D "
            "draws as many examples per class, then is split into labelled, "
            "transfer, validation and test). Received: "
            f"num_samples={o['num_samples']}"
        )
    for key in ("labelled_fraction", "validation_fraction", "test_fraction"):
        check_number(o[key], key, 0, 1, low_open=True, high_open=True)
    # Above (K - 1) / K = 0.9 symmetric noise, a wrong class is as frequent
    # as the true one: the noisy teacher would learn nothing.
    check_number(
        o["noise_rate"], "noise_rate", 0, 0.9, low_open=True, high_open=True
    )
    used = o["labelled_fraction"] + o["validation_fraction"]
    if used + o["test_fraction"] >= 0.95:
        raise ValueError(
            "`labelled_fraction + validation_fraction + test_fraction` must "
            "be < 0.95 to leave an unlabelled transfer split. Received: "
            f"labelled_fraction={o['labelled_fraction']}, "
            f"validation_fraction={o['validation_fraction']}, "
            f"test_fraction={o['test_fraction']}"
        )
    check_number(o["learning_rate"], "learning_rate", 0, low_open=True)
    for name in ("temperatures", "standardized_temperatures"):
        try:
            temperatures = tuple(o[name])
        except TypeError:
            raise ValueError(
                f"`{name}` must be a list of numbers. Received: "
                f"{name}={o[name]!r}"
            ) from None
        if not temperatures:
            raise ValueError(f"`{name}` must not be empty. Received: ()")
        for t in temperatures:
            check_temperature(t, name)
    check_choice(o["mode"], "mode", MODES)
    teachers = o["teachers"]
    if (
        isinstance(teachers, str)
        or not isinstance(teachers, (list, tuple))
        or not teachers
        or any(name not in TEACHER_NAMES for name in teachers)
        or len(set(teachers)) != len(teachers)
    ):
        raise ValueError(
            "`teachers` must be a non-empty list of distinct names among "
            f"{TEACHER_NAMES}. Received: teachers={teachers!r}"
        )
    check_int(o["verbose"], "verbose", 0, 2)
