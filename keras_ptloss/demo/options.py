"""The demo's options: defaults, `--quick` sizes, command-line parsing."""

from keras_ptloss._checks import check_choice
from keras_ptloss._checks import check_int
from keras_ptloss._checks import check_number
from keras_ptloss._checks import check_temperature

# Defaults of the full demo, and the overrides of `--quick` (for tests).
DEFAULTS = dict(
    num_samples=5000,
    validation_fraction=0.15,
    test_fraction=0.2,
    teacher_epochs=30,
    student_epochs=30,
    batch_size=64,
    learning_rate=3e-3,
    order=5,
    mode="shared",
    temperature=2.0,
    student_loss_weight=0.5,
    num_candidates=256,
    output_dir="ptloss-demo",
    seed=0,
    verbose=1,
)
# 640 examples cut 0.65 / 0.15 / 0.2 give 416 / 96 / 128: multiples of the
# batch size, so no smaller last batch (and, on JAX, no extra compilation).
QUICK = dict(
    num_samples=640,
    teacher_epochs=2,
    student_epochs=2,
    batch_size=32,
    num_candidates=16,
)
MODES = ("shared", "classwise")


def add_arguments(parser):
    """Adds the demo's options to an `argparse` parser."""
    d = DEFAULTS
    parser.add_argument(
        "--quick",
        action="store_true",
        help="tiny sizes and 2 epochs (seconds; for tests): "
        + ", ".join(f"{k}={v}" for k, v in QUICK.items()),
    )
    parser.add_argument(
        "--num-samples",
        type=int,
        default=None,
        help="MNIST-1D examples generated, a multiple of 10 "
        f"(default {d['num_samples']})",
    )
    parser.add_argument(
        "--validation-fraction",
        type=float,
        default=d["validation_fraction"],
        help="fraction held out as the labelled validation split that "
        "chooses the coefficients; the teacher never trains on it "
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
        "--teacher-epochs",
        type=int,
        default=None,
        help=f"teacher training epochs (default {d['teacher_epochs']})",
    )
    parser.add_argument(
        "--student-epochs",
        type=int,
        default=None,
        help="epochs of each student run (alone, KD, PTLoss) "
        f"(default {d['student_epochs']})",
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
    parser.add_argument(
        "--order",
        type=int,
        default=d["order"],
        help=f"PTLoss order M (default {d['order']})",
    )
    parser.add_argument(
        "--mode",
        choices=MODES,
        default=d["mode"],
        help="coefficient selection mode: one (M,) vector shared by all "
        f"classes, or (K, M) class-wise (default {d['mode']})",
    )
    parser.add_argument(
        "--temperature",
        type=float,
        default=d["temperature"],
        help="distillation temperature T of KD and PTLoss "
        f"(default {d['temperature']})",
    )
    parser.add_argument(
        "--student-loss-weight",
        type=float,
        default=d["student_loss_weight"],
        help="weight of the hard-label loss in KD and PTLoss, in [0, 1] "
        f"(default {d['student_loss_weight']})",
    )
    parser.add_argument(
        "--num-candidates",
        type=int,
        default=None,
        help="coefficient sets sampled by the selection "
        f"(default {d['num_candidates']})",
    )
    parser.add_argument(
        "--output-dir",
        default=d["output_dir"],
        help="where the plot and results.json are written "
        f"(default ./{d['output_dir']})",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=d["seed"],
        help=f"seed of the data, the models and the selection "
        f"(default {d['seed']})",
    )
    parser.add_argument(
        "--verbose",
        type=int,
        choices=(0, 1, 2),
        default=d["verbose"],
        help="Keras fit verbosity: 1 progress bars (default), 2 one line "
        "per epoch, 0 silent (the summary and table are always printed)",
    )
    return parser


def check_options(o):
    """Raises `ValueError` for a bad option of the dict `o` of `run`."""
    for key in (
        "num_samples",
        "teacher_epochs",
        "student_epochs",
        "batch_size",
        "order",
        "num_candidates",
    ):
        check_int(o[key], key, minimum=1)
    if o["num_samples"] < 100 or o["num_samples"] % 10:
        raise ValueError(
            "`num_samples` must be a multiple of 10 and >= 100 (MNIST-1D "
            "draws as many examples per class, then is split into train, "
            f"validation and test). Received: num_samples={o['num_samples']}"
        )
    for key in ("validation_fraction", "test_fraction"):
        check_number(o[key], key, 0, 1, low_open=True, high_open=True)
    if o["validation_fraction"] + o["test_fraction"] >= 0.9:
        raise ValueError(
            "`validation_fraction + test_fraction` must be < 0.9 to leave a "
            "training set. Received: validation_fraction="
            f"{o['validation_fraction']}, test_fraction={o['test_fraction']}"
        )
    check_temperature(o["temperature"])
    check_number(o["student_loss_weight"], "student_loss_weight", 0, 1)
    check_choice(o["mode"], "mode", MODES)
