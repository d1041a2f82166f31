"""The demo: the README's command, in quick mode, end to end.

`quick_run` runs the command the README shows (taken from the README
itself, so the two cannot drift apart) with `--quick`, in a subprocess on
the backend under test and without `TF_CPP_MIN_LOG_LEVEL` (as a user runs
it), and the tests check everything the demo promises: the setting, the
search summary, the table over seeds (recomputed here from the per-seed
numbers it saves), the plots and the JSON.
"""

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from keras_ptloss import demo
from keras_ptloss.cli import build_parser
from keras_ptloss.cli import is_startup_noise
from tests.utils import readme_commands

BACKEND = keras.backend.backend()
ROOT = Path(__file__).resolve().parent.parent
STUDENTS = (
    "student alone",
    "KD",
    "PTLoss, training-free",
    "PTLoss, searched",
    "PTLoss, searched, standardised",
)
SEARCHES = {"PTLoss, searched": False, "PTLoss, searched, standardised": True}


def demo_argv():
    """The argv of the README's demo command (the part after `&&`)."""
    run = readme_commands()["demo"].split("&&")[-1].strip()
    argv = shlex.split(run)
    assert argv[0] == "python"
    return [sys.executable, *argv[1:]]


def user_env():
    """The backend under test, this checkout's package, no log level."""
    path = os.pathsep.join(
        filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])
    )
    env = dict(os.environ, KERAS_BACKEND=BACKEND, PYTHONPATH=path)
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    return env


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("demo")
    proc = subprocess.Popen(
        [*demo_argv(), "--quick"],
        cwd=cwd,
        env=user_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-3000:] + err[-3000:]
    results = json.loads((cwd / "ptloss-demo" / "results.json").read_text())
    return cwd, out, results, err, proc.pid


def test_the_command_prints_no_tensorflow_start_up_notices(quick_run):
    """Neither the command's own process (which imports the package, and
    Keras with it, before the command line runs) nor the demo's child
    prints TensorFlow's start-up notices, whatever the backend (the demo
    seeds TensorFlow too when it is installed)."""
    err = quick_run[3]
    assert [line for line in err.splitlines() if is_startup_noise(line)] == []
    for mark in ("oneDNN", "cpu_feature_guard", "absl::InitializeLog"):
        assert mark not in err
    assert "Error" not in err and "Traceback" not in err


def test_readme_demo_command_runs_the_unlabelled_regime(quick_run):
    _, out, results = quick_run[:3]
    assert f"backend: {BACKEND} (KERAS_BACKEND={BACKEND})" in out
    # On torch the demo's program uses one thread unless OMP_NUM_THREADS
    # says otherwise (the library's functions leave threads alone).
    threads = os.environ.get("OMP_NUM_THREADS") or "1"
    assert (f", {threads} CPU thread(s)" in out) is (BACKEND == "torch")
    sizes = results["sizes"]
    n = demo.QUICK["num_samples"]
    assert sum(sizes.values()) == n
    expected = dict(labelled=0.15, transfer=0.55, validation=0.1, test=0.2)
    for name, fraction in expected.items():
        assert abs(sizes[name] - n * fraction) <= 1, (name, sizes)
    assert f"{sizes['transfer']} unlabelled transfer" in out
    # Teacher progress bars, then the search summary of the first seed.
    assert "Epoch 2/2" in out and "━" in out
    for name in SEARCHES:
        assert f"{name}: Student-aware search:" in out
    assert "winner:" in out
    assert "T tuned over {1, 2, 4}" in out


def test_demo_prints_the_table_it_saves_with_mean_and_std(quick_run):
    _, out, results = quick_run[:3]
    assert results["backend"] == BACKEND
    assert results["table"] in out
    runs = results["runs"]
    assert [r["seed"] for r in runs] == list(range(demo.QUICK["seeds"]))
    rows = results["table"].splitlines()[2:]
    assert [row.split("|")[1].strip() for row in rows] == list(demo.METHODS)
    teacher = results["teacher"]
    assert f"| {100 * teacher['accuracy']:.1f} |" in rows[0]
    for name, row in zip(STUDENTS, rows[1:], strict=True):
        accuracy = np.array([r[name]["scores"]["accuracy"] for r in runs])
        nll = np.array([r[name]["scores"]["nll"] for r in runs])
        assert np.all((0 <= accuracy) & (accuracy <= 1))
        assert np.all(np.isfinite(nll)) and np.all(nll >= 0)
        cells = [c.strip() for c in row.split("|")]
        assert cells[2] == (
            f"{100 * accuracy.mean():.1f} ± {100 * accuracy.std(ddof=1):.1f}"
        )
        assert cells[3] == f"{nll.mean():.3f} ± {nll.std(ddof=1):.3f}"


def test_budgets_and_choices(quick_run):
    _, _, results = quick_run[:3]
    epochs = demo.QUICK["student_epochs"]
    grid = len(demo.DEFAULTS["temperatures"])
    for run in results["runs"]:
        assert run["student alone"]["student_epochs"] == epochs
        assert run["PTLoss, training-free"]["student_epochs"] == epochs
        kd_cost = run["KD"]["student_epochs"]
        assert kd_cost <= grid * epochs
        # The search gets no more than KD's tuning budget.
        assert run["KD"]["choice"] in {"T=1", "T=2", "T=4"}
        for name, standardize in SEARCHES.items():
            search = run[name]["search"]
            assert run[name]["student_epochs"] <= grid * epochs
            assert search["cost"]["budget"] == grid * epochs
            candidates = search["candidates"]
            assert {c["standardize"] for c in candidates} == {standardize}
            label = candidates[search["winner"]]["label"]
            assert run[name]["choice"] == label
            assert label.endswith(" LS") is standardize


def test_demo_writes_the_plots_it_prints(quick_run):
    cwd, out, _ = quick_run[:3]
    import matplotlib.image

    names = ("demo.png", "search.png", "search-standardised.png")
    paths = [cwd / "ptloss-demo" / name for name in names]
    assert "plots: " + ", ".join(str(p.resolve()) for p in paths) in out
    for path in paths:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        image = matplotlib.image.imread(path)
        assert image.shape[0] > 200 and image.shape[1] > 400


def test_an_error_in_the_demo_still_shows(tmp_path):
    """A bad option that only the run checks: the traceback and the
    message reach the user, and the exit status is not 0."""
    proc = subprocess.run(
        [*demo_argv(), "--num-samples", "105"],
        cwd=tmp_path,
        env=user_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1
    assert "Traceback (most recent call last)" in proc.stderr
    assert "ValueError: `num_samples` must be a multiple of 10" in proc.stderr


def test_quick_flag_sets_small_sizes_and_explicit_options_win():
    parser = build_parser()
    quick = demo.options_from_args(parser.parse_args(["demo", "--quick"]))
    assert {k: quick[k] for k in demo.QUICK} == demo.QUICK
    full = demo.options_from_args(parser.parse_args(["demo"]))
    assert full == demo.DEFAULTS
    mixed = demo.options_from_args(
        parser.parse_args(
            ["demo", "--quick", "--teacher-epochs", "7", "--temperatures", "3"]
        )
    )
    assert mixed["teacher_epochs"] == 7
    assert mixed["temperatures"] == (3.0,)
    assert mixed["student_epochs"] == demo.QUICK["student_epochs"]


@pytest.mark.parametrize(
    "options, name",
    [
        (dict(num_samples=105), "num_samples"),
        (dict(num_samples=50), "num_samples"),
        (dict(teacher_epochs=0), "teacher_epochs"),
        (dict(seeds=0), "seeds"),
        (dict(validation_fraction=1.5), "validation_fraction"),
        (dict(labelled_fraction=0.7, test_fraction=0.2), "labelled_fraction"),
        (dict(temperatures=(1.0, 0.0)), "temperatures"),
        (dict(temperatures=()), "temperatures"),
        (dict(learning_rate=-1.0), "learning_rate"),
        (dict(mode="per-class"), "mode"),
        (dict(epochs=3), "epochs"),
    ],
)
def test_demo_rejects_bad_options_before_training(options, name, tmp_path):
    with pytest.raises(ValueError, match=name):
        demo.run(output_dir=str(tmp_path), **options)
    assert not (tmp_path / "results.json").exists()


def test_reliability_bins_match_a_hand_count():
    probs = np.array([[0.95, 0.05], [0.92, 0.08], [0.15, 0.85], [0.45, 0.55]])
    labels = np.array([0, 1, 1, 1])
    conf, acc, count = demo.reliability(probs, labels, bins=10)
    # Confidences 0.95, 0.92 (bin 9), 0.85 (bin 8), 0.55 (bin 5).
    assert count.tolist() == [0, 0, 0, 0, 0, 1, 0, 0, 1, 2]
    np.testing.assert_allclose(conf[[5, 8, 9]], [0.55, 0.85, 0.935])
    np.testing.assert_allclose(acc[[5, 8, 9]], [1.0, 1.0, 0.5])
    assert np.isnan(conf[0]) and np.isnan(acc[0])
    # ECE by hand: (1 |1 - 0.55| + 1 |1 - 0.85| + 2 |0.5 - 0.935|) / 4.
    expected = (0.45 + 0.15 + 2 * 0.435) / 4
    assert demo.expected_calibration_error(probs, labels) == pytest.approx(
        expected
    )


def test_scores_match_hand_computed_values():
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])
    labels = np.array([0, 1])
    s = demo.scores(probs, labels)
    assert s["accuracy"] == 0.5
    assert s["nll"] == pytest.approx(-(np.log(0.7) + np.log(0.3)) / 2)
    brier = ((0.3**2 + 0.2**2 + 0.1**2) + (0.1**2 + 0.7**2 + 0.6**2)) / 2
    assert s["brier"] == pytest.approx(brier)


def test_summarize_gives_mean_and_sample_std():
    def run(values):
        return {
            name: {
                "scores": dict(accuracy=v, nll=2 * v, ece=0.1, brier=v / 2),
                "seconds": 1.0,
                "student_epochs": 5,
                "choice": f"c{v}",
            }
            for name, v in zip(STUDENTS, values, strict=True)
        }

    runs = [run([0.5, 0.6, 0.7, 0.8, 0.9]), run([0.7, 0.8, 0.9, 1.0, 0.6])]
    summary = demo.summarize(runs)
    assert summary["KD"]["accuracy"]["mean"] == pytest.approx(0.7)
    assert summary["KD"]["accuracy"]["std"] == pytest.approx(np.sqrt(0.02))
    assert summary["KD"]["nll"]["values"] == [1.2, 1.6]
    assert summary["student alone"]["choices"] == ["c0.5", "c0.7"]


def _verdict_expected(values, score, higher, scale):
    """The verdict's best method and its paired difference, by numpy."""
    means = {name: np.mean(v) for name, v in values.items()}
    best = (max if higher else min)(means, key=means.get)
    if best == "KD":
        rest = {n: m for n, m in means.items() if n != "KD"}
        other = (max if higher else min)(rest, key=rest.get)
    else:
        other = "KD"
    diff = scale * (np.array(values[best]) - np.array(values[other]))
    return best, other, diff.mean(), diff.std(ddof=1)


def test_demo_prints_a_verdict_computed_from_its_numbers(quick_run):
    _, out, results = quick_run[:3]
    assert "\n".join(results["verdict"]) in out
    runs = results["runs"]
    lines = results["verdict"][1:]
    for line, (score, higher, scale) in zip(
        lines, (("accuracy", True, 100), ("nll", False, 1)), strict=False
    ):
        values = {
            name: [r[name]["scores"][score] for r in runs] for name in STUDENTS
        }
        best, other, mean, std = _verdict_expected(values, score, higher, scale)
        assert f": {best} (" in line
        assert f"; {best} - {other}: " in line
        if not (mean == 0 and std == 0):
            # The printed numbers, to their printed precision.
            printed = re.search(r": ([+-][\d.]+) ± ([\d.]+)", line)
            half_unit = 0.05 if scale == 100 else 0.0005
            assert abs(float(printed.group(1)) - mean) <= half_unit + 1e-9
            assert abs(float(printed.group(2)) - std) <= half_unit + 1e-9
            word = "larger than" if abs(mean) > std else "within"
            assert f"({word} its spread over seeds)" in line
    assert lines[2].startswith("  distillation (test accuracy): KD - student")


def _summary(values):
    """A `summarize`-shaped dict from per-method per-seed scores."""
    return {
        name: {
            key: {"mean": float(np.mean(v[key])), "values": list(v[key])}
            for key in ("accuracy", "nll")
        }
        for name, v in values.items()
    }


def test_verdict_names_the_best_and_compares_it_with_kd():
    acc = {
        "student alone": [0.50, 0.52, 0.51],
        "KD": [0.68, 0.67, 0.69],
        "PTLoss, training-free": [0.67, 0.67, 0.68],
        "PTLoss, searched": [0.69, 0.66, 0.70],
        "PTLoss, searched, standardised": [0.71, 0.70, 0.72],
    }
    nll = {
        "student alone": [1.5, 1.6, 1.55],
        "KD": [1.0, 1.1, 0.9],
        "PTLoss, training-free": [1.0, 1.0, 1.0],
        "PTLoss, searched": [0.95, 1.12, 0.91],
        "PTLoss, searched, standardised": [2.0, 2.1, 2.2],
    }
    summary = _summary(
        {n: {"accuracy": acc[n], "nll": nll[n]} for n in STUDENTS}
    )
    lines = demo.verdict(summary)
    assert lines[0].endswith("mean ± std over 3 seed(s)):")
    # Accuracy: standardised - KD = 3, 3, 3 points: std 0, larger.
    assert lines[1] == (
        "  best test accuracy: PTLoss, searched, standardised (71.0 %); "
        "PTLoss, searched, standardised - KD: +3.0 ± 0.0 points "
        "(larger than its spread over seeds)"
    )
    # NLL: searched - KD = -0.05, +0.02, +0.01: mean -0.00667, within.
    d = np.array([0.95, 1.12, 0.91]) - np.array([1.0, 1.1, 0.9])
    best = np.mean(nll["PTLoss, searched"])
    assert lines[2] == (
        f"  best test NLL: PTLoss, searched ({best:.3f} nats); "
        f"PTLoss, searched - KD: {d.mean():+.3f} ± "
        f"{d.std(ddof=1):.3f} nats (within its spread over seeds)"
    )
    d = 100 * (np.array(acc["KD"]) - np.array(acc["student alone"]))
    assert lines[3] == (
        "  distillation (test accuracy): KD - student alone: "
        f"{d.mean():+.1f} ± {d.std(ddof=1):.1f} points "
        "(larger than its spread over seeds)"
    )


def test_verdict_when_kd_is_best_compares_with_the_runner_up():
    acc = {name: [0.5, 0.6] for name in STUDENTS}
    acc["KD"] = [0.7, 0.8]
    acc["PTLoss, searched"] = [0.7, 0.8]
    summary = _summary(
        {n: {"accuracy": acc[n], "nll": [1.0]} for n in STUDENTS}
    )
    summary_one = _summary(
        {n: {"accuracy": acc[n][:1], "nll": [1.0]} for n in STUDENTS}
    )
    line = demo.verdict(summary)[1]
    assert line.startswith("  best test accuracy: KD (75.0 %); KD - PTLoss, ")
    assert line.endswith(": +0.0 points (the same on every seed)")
    line = demo.verdict(summary_one)[3]
    assert line.endswith("(one seed: no spread to compare with)")
