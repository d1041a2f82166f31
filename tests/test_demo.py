"""The demo: the README's command, in quick mode, end to end.

`quick_run` runs the command the README shows (taken from the README
itself, so the two cannot drift apart) with `--quick`, once for the
module, in a subprocess without `TF_CPP_MIN_LOG_LEVEL` (as a user runs
it) and with both teachers (`--teachers clean,noisy`; the default runs
the noisy one), and the tests check everything the demo promises: the
teachers, the default search and the baselines' budgets, the calibration
of every student, the tables over seeds and the verdict (recomputed here
from the per-seed numbers it saves), the plots and the JSON.

The whole program runs on one backend, TensorFlow (`PROGRAM_BACKEND`):
under the others those tests are not defined, so nothing is skipped. Its
backend-specific parts run on every backend: the backend line it prints,
its thread setting on torch, and the library calls it makes (tested in
their own files).
"""

import inspect
import json
import logging
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
from keras_ptloss import search_coefficients
from keras_ptloss.cli import build_parser
from keras_ptloss.cli import is_startup_noise
from tests.utils import readme_commands

BACKEND = keras.backend.backend()
PROGRAM_BACKEND = "tensorflow"
ROOT = Path(__file__).resolve().parent.parent
TEACHERS = ("clean", "noisy")
STUDENTS = ("student alone", "KD", "LS-KD", "PTLoss")
SCORES = ("accuracy", "nll_raw", "nll_calibrated", "ece_raw", "ece_calibrated")


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


def per_seed(results, teacher, method, score):
    """One score of one method over the seeds, from the saved runs."""
    runs = results["teachers"][teacher]["runs"]
    return np.array([r[method]["scores"][score] for r in runs])


def test_backend_line_names_the_backend_and_the_torch_threads(monkeypatch):
    threads = ""
    if BACKEND == "torch":
        import torch

        threads = f", {torch.get_num_threads()} CPU thread(s)"
    monkeypatch.setenv("KERAS_BACKEND", BACKEND)
    assert demo.backend_description() == (
        f"{BACKEND} (KERAS_BACKEND={BACKEND}){threads}"
    )
    monkeypatch.delenv("KERAS_BACKEND")
    assert demo.backend_description() == (
        f"{BACKEND} (KERAS_BACKEND unset: Keras's configured default; "
        f"Keras ships with tensorflow){threads}"
    )


def test_the_demo_program_uses_one_torch_thread_unless_told(monkeypatch):
    from keras_ptloss.demo.__main__ import limit_torch_threads

    if BACKEND != "torch":
        assert limit_torch_threads() is None
        return
    import torch

    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        monkeypatch.setenv("OMP_NUM_THREADS", "2")
        assert limit_torch_threads() == 2  # the user's setting stands
        monkeypatch.delenv("OMP_NUM_THREADS")
        assert limit_torch_threads() == 1
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)


def test_the_demo_program_hides_only_the_retracing_warning():
    from keras_ptloss.demo.__main__ import quiet_retracing_notices

    class Keep(logging.Handler):
        def __init__(self):
            super().__init__()
            self.messages = []

        def emit(self, record):
            self.messages.append(record.getMessage())

    logger = logging.getLogger("tensorflow")
    filters, keep = list(logger.filters), Keep()
    logger.addHandler(keep)
    try:
        quiet_retracing_notices()
        quiet_retracing_notices()
        assert len(logger.filters) == len(filters) + 1
        logger.warning(
            "5 out of the last 13 calls to <function f> triggered "
            "tf.function retracing. Tracing is expensive."
        )
        logger.warning("another warning")
        assert keep.messages == ["another warning"]
    finally:
        logger.removeHandler(keep)
        logger.filters[:] = filters


def test_demo_defaults_are_the_search_defaults():
    """The full demo runs `search_coefficients` as a user gets it."""
    defaults = {
        name: p.default
        for name, p in inspect.signature(search_coefficients).parameters.items()
    }
    for key in ("order", "mode", "temperatures", "standardized_temperatures"):
        assert demo.DEFAULTS[key] == defaults[key], key
    assert defaults["standardize"] == "auto" and defaults["calibrate"] is True
    # Every tuned method gets the search's default budget.
    assert defaults["budget"] is None  # i.e. 6 * epochs
    assert demo.TUNE_BUDGET == 6


def test_quick_flag_sets_small_sizes_and_explicit_options_win():
    parser = build_parser()
    quick = demo.options_from_args(parser.parse_args(["demo", "--quick"]))
    assert {k: quick[k] for k in demo.QUICK} == demo.QUICK
    full = demo.options_from_args(parser.parse_args(["demo"]))
    assert full == demo.DEFAULTS
    mixed = demo.options_from_args(
        parser.parse_args(
            [
                "demo",
                "--quick",
                "--teacher-epochs",
                "7",
                "--temperatures",
                "3",
                "--noise-rate",
                "0.2",
            ]
        )
    )
    assert mixed["teacher_epochs"] == 7
    assert mixed["temperatures"] == (3.0,)
    assert mixed["noise_rate"] == 0.2
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
        (dict(noise_rate=0.0), "noise_rate"),
        (dict(noise_rate=0.9), "noise_rate"),
        (dict(temperatures=(1.0, 0.0)), "temperatures"),
        (dict(temperatures=()), "temperatures"),
        (dict(learning_rate=-1.0), "learning_rate"),
        (dict(mode="per-class"), "mode"),
        (dict(teachers=()), "teachers"),
        (dict(teachers=("noisy", "dirty")), "teachers"),
        (dict(teachers=("noisy", "noisy")), "teachers"),
        (dict(teachers="noisy"), "teachers"),
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


def test_scores_match_hand_computed_values():
    raw = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])
    calibrated = np.array([[0.5, 0.3, 0.2], [0.2, 0.35, 0.45]])
    labels = np.array([0, 1])
    s = demo.scores(raw, calibrated, labels)
    assert s["accuracy"] == 0.5
    assert s["nll_raw"] == pytest.approx(-(np.log(0.7) + np.log(0.3)) / 2)
    assert s["nll_calibrated"] == pytest.approx(
        -(np.log(0.5) + np.log(0.35)) / 2
    )
    # 15 equal bins: one right at 0.7 and one wrong at 0.6, apart.
    assert s["ece_raw"] == pytest.approx((abs(1 - 0.7) + abs(0 - 0.6)) / 2)
    assert s["ece_calibrated"] == pytest.approx(
        (abs(1 - 0.5) + abs(0 - 0.45)) / 2
    )


def test_summarize_gives_mean_and_sample_std():
    def run(values):
        return {
            name: {
                "scores": {key: i * v for i, key in enumerate(SCORES, 1)},
                "seconds": 1.0,
                "student_epochs": 5,
                "choice": f"c{v}",
            }
            for name, v in zip(STUDENTS, values, strict=True)
        }

    runs = [run([0.5, 0.6, 0.7, 0.8]), run([0.7, 0.8, 0.9, 1.0])]
    summary = demo.summarize(runs)
    assert summary["KD"]["accuracy"]["mean"] == pytest.approx(0.7)
    assert summary["KD"]["accuracy"]["std"] == pytest.approx(np.sqrt(0.02))
    assert summary["KD"]["nll_raw"]["values"] == [1.2, 1.6]
    assert summary["student alone"]["choices"] == ["c0.5", "c0.7"]
    assert set(summary["PTLoss"]) == {
        *SCORES,
        "seconds",
        "student_epochs",
        "choices",
    }


def _printed(line, baseline):
    """The mean and spread printed for `PTLoss - baseline` in a line."""
    match = re.search(
        rf"PTLoss - {baseline}: ([+-][\d.]+)(?: ± ([\d.]+))?", line
    )
    return float(match.group(1)), match.group(2) and float(match.group(2))


def _summary(values):
    """A `summarize`-shaped dict from per-method per-seed scores."""
    return {
        name: {
            key: {"mean": float(np.mean(v[key])), "values": list(v[key])}
            for key in v
        }
        for name, v in values.items()
    }


def _summaries(accuracy, nll=None):
    """`verdict`'s input: per teacher, per method, accuracy (and NLL)."""
    return {
        teacher: _summary(
            {
                name: {
                    "accuracy": acc[name],
                    "nll_calibrated": (nll or {})
                    .get(teacher, {})
                    .get(name, [1.0] * len(acc[name])),
                }
                for name in STUDENTS
            }
        )
        for teacher, acc in accuracy.items()
    }


def test_verdict_compares_ptloss_with_both_baselines_per_teacher():
    clean = {
        "student alone": [0.50, 0.52, 0.51],
        "KD": [0.68, 0.67, 0.69],
        "LS-KD": [0.71, 0.70, 0.70],
        "PTLoss": [0.71, 0.69, 0.71],
    }
    noisy = {
        "student alone": [0.40, 0.41, 0.42],
        "KD": [0.55, 0.56, 0.57],
        "LS-KD": [0.54, 0.55, 0.55],
        "PTLoss": [0.60, 0.62, 0.61],
    }
    nll = {"noisy": {"KD": [1.0, 1.1, 0.9], "PTLoss": [0.95, 1.12, 0.91]}}
    lines = demo.verdict(_summaries({"clean": clean, "noisy": noisy}, nll))
    assert lines[0].endswith("mean ± std over 3 seed(s)):")
    d_kd = 100 * (np.array(clean["PTLoss"]) - np.array(clean["KD"]))
    d_ls = 100 * (np.array(clean["PTLoss"]) - np.array(clean["LS-KD"]))
    assert lines[1] == (
        f"  clean teacher, test accuracy: PTLoss - KD: {d_kd.mean():+.1f} ± "
        f"{d_kd.std(ddof=1):.1f} points (larger than its spread); "
        f"PTLoss - LS-KD: {d_ls.mean():+.1f} ± {d_ls.std(ddof=1):.1f} "
        "points (within its spread)"
    )
    assert lines[2] == (
        "  clean teacher, calibrated test NLL: PTLoss - KD: +0.000 nats (the "
        "same on every seed); PTLoss - LS-KD: +0.000 nats (the same on every "
        "seed)"
    )
    d = np.array(nll["noisy"]["PTLoss"]) - np.array(nll["noisy"]["KD"])
    assert lines[4].startswith(
        f"  noisy teacher, calibrated test NLL: PTLoss - KD: {d.mean():+.3f} "
        f"± {d.std(ddof=1):.3f} nats (within its spread); "
    )
    assert lines[5] == (
        "  in this run, PTLoss ties with the clean teacher and helps with the "
        "noisy teacher"
    )
    assert lines[6].startswith("  (on test accuracy: helps = ahead of both")
    # The spread: the smallest and largest std of the four accuracy
    # differences (two teachers, two baselines).
    stds = [
        100 * (np.array(acc["PTLoss"]) - np.array(acc[b])).std(ddof=1)
        for acc in (clean, noisy)
        for b in ("KD", "LS-KD")
    ]
    assert lines[7] == (
        "  what this run resolves: over 3 seeds the per-seed test accuracy "
        "differences (PTLoss minus KD, minus LS-KD) vary by "
        f"{min(stds):.1f} to {max(stds):.1f} points (std); a mean difference "
        "larger than that is resolved, a smaller one cannot be told apart "
        "from the variation between seeds"
    )
    assert len(lines) == 8


def test_teacher_outcome_needs_both_baselines_beaten_and_a_spread():
    base = {"student alone": [0.5, 0.5], "KD": [0.6, 0.7]}

    def outcome(ls_kd, ptloss):
        summary = _summaries(
            {"t": dict(base, **{"LS-KD": ls_kd, "PTLoss": ptloss})}
        )
        return demo.teacher_outcome(summary["t"])

    # Ahead of both by more than the spread of the paired differences.
    assert outcome([0.6, 0.7], [0.65, 0.76]) == "helps"
    # Ahead of KD, level with LS-KD.
    assert outcome([0.65, 0.76], [0.65, 0.76]) == "ties"
    # Behind LS-KD on every seed.
    assert outcome([0.7, 0.8], [0.65, 0.76]) == "hurts"
    one_seed = _summaries({"t": {n: [0.6] for n in STUDENTS}})
    assert demo.teacher_outcome(one_seed["t"]) is None
    lines = demo.verdict(one_seed)
    assert "cannot be judged (one seed) with the t teacher" in lines[-3]
    assert lines[-1].startswith("  this run cannot resolve any difference")


# The whole program (minutes of training in a child process) runs on one
# backend, TensorFlow, the one it is fastest on and the one whose start-up
# notices it must hide from its own process too; what differs between
# backends is tested above on every backend: `backend_description`,
# `limit_torch_threads`, and the library calls it makes in their own tests.
if BACKEND == PROGRAM_BACKEND:

    @pytest.fixture(scope="module")
    def quick_run(tmp_path_factory):
        cwd = tmp_path_factory.mktemp("demo")
        proc = subprocess.Popen(
            [*demo_argv(), "--quick", "--teachers", "clean,noisy"],
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
        assert [
            line for line in err.splitlines() if is_startup_noise(line)
        ] == []
        for mark in ("oneDNN", "cpu_feature_guard", "absl::InitializeLog"):
            assert mark not in err
        assert "Error" not in err and "Traceback" not in err
        # Each calibrated student is a new model with its own predict step.
        assert "retracing" not in err

    def test_readme_demo_command_runs_the_teachers_it_is_given(quick_run):
        _, out, results = quick_run[:3]
        assert f"backend: {BACKEND} (KERAS_BACKEND={BACKEND})" in out
        # On torch the demo's program uses one thread unless OMP_NUM_THREADS
        # says otherwise (the library's functions leave threads alone).
        threads = os.environ.get("OMP_NUM_THREADS") or "1"
        assert (f", {threads} CPU thread(s)" in out) is (BACKEND == "torch")
        sizes = results["sizes"]
        n = demo.QUICK["num_samples"]
        assert sum(sizes.values()) == n
        d = demo.DEFAULTS
        expected = dict(
            labelled=d["labelled_fraction"],
            transfer=1
            - d["labelled_fraction"]
            - d["validation_fraction"]
            - d["test_fraction"],
            validation=d["validation_fraction"],
            test=d["test_fraction"],
        )
        for name, fraction in expected.items():
            assert abs(sizes[name] - n * fraction) <= 1, (name, sizes)
        flipped = round(demo.DEFAULTS["noise_rate"] * sizes["labelled"])
        assert f"{flipped} of them flipped for the noisy teacher" in out
        assert f"{sizes['transfer']} unlabelled transfer" in out
        assert list(results["teachers"]) == list(TEACHERS)
        assert results["options"]["teachers"] == list(TEACHERS)
        # Without `--teachers`, the noisy teacher alone.
        assert demo.DEFAULTS["teachers"] == ("noisy",)
        assert (
            "40% of its labels flipped"
            in results["teachers"]["noisy"]["description"]
        )
        # Teacher progress bars, then each teacher's search summary.
        assert "Epoch 2/2" in out and "━" in out
        assert out.count("PTLoss: Student-aware search:") == len(TEACHERS)
        assert out.count("  calibrated: T = ") == len(TEACHERS)
        assert "T tuned over {1, 2}" in out

    def test_demo_prints_the_tables_it_saves_with_mean_and_std(quick_run):
        _, out, results = quick_run[:3]
        assert results["backend"] == BACKEND
        for teacher in TEACHERS:
            entry = results["teachers"][teacher]
            assert entry["table"] in out
            runs = entry["runs"]
            assert [r["seed"] for r in runs] == list(range(demo.QUICK["seeds"]))
            rows = entry["table"].splitlines()[2:]
            names = [row.split("|")[1].strip() for row in rows]
            assert names == ["teacher", *STUDENTS]
            cells = [c.strip() for c in rows[0].split("|")]
            assert cells[2] == f"{100 * entry['scores']['accuracy']:.1f}"
            assert cells[3:7] == [
                f"{entry['scores'][k]:.3f}" for k in SCORES[1:]
            ]
            for name, row in zip(STUDENTS, rows[1:], strict=True):
                cells = [c.strip() for c in row.split("|")]
                accuracy = per_seed(results, teacher, name, "accuracy")
                assert np.all((0 <= accuracy) & (accuracy <= 1))
                assert cells[2] == (
                    f"{100 * accuracy.mean():.1f} ± "
                    f"{100 * accuracy.std(ddof=1):.1f}"
                )
                for cell, key in zip(cells[3:7], SCORES[1:], strict=True):
                    values = per_seed(results, teacher, name, key)
                    assert np.all(np.isfinite(values)) and np.all(values >= 0)
                    expected = f"{values.mean():.3f} ± {values.std(ddof=1):.3f}"
                    assert cell == expected, (teacher, name, key)

    def test_every_student_is_calibrated_on_the_validation_split(quick_run):
        _, _, results = quick_run[:3]
        n_val = results["sizes"]["validation"]
        for teacher in TEACHERS:
            entry = results["teachers"][teacher]
            for fit in [entry["calibration"]] + [
                r[name]["calibration"]
                for r in entry["runs"]
                for name in STUDENTS
            ]:
                assert fit["num_examples"] == n_val
                assert fit["temperature"] > 0
                # The fitted T minimises the validation NLL; T = 1 is in range.
                assert fit["nll_after"] <= fit["nll_before"] + 1e-6
            for run in entry["runs"]:
                # PTLoss: the search's own calibration, as returned to a user.
                assert (
                    run["PTLoss"]["calibration"]
                    == run["PTLoss"]["search"]["calibration"]
                )

    def test_budgets_and_choices(quick_run):
        _, _, results = quick_run[:3]
        epochs = demo.QUICK["student_epochs"]
        temperatures = demo.QUICK["temperatures"]
        budget = 6 * epochs
        assert results["budget"] == budget
        kd_choices = {f"T={t:g}" for t in temperatures}
        ls_choices = {
            f"T={t:g}" for t in demo.QUICK["standardized_temperatures"]
        }
        for teacher in TEACHERS:
            for run in results["teachers"][teacher]["runs"]:
                assert run["student alone"]["student_epochs"] == epochs
                for name in ("KD", "LS-KD", "PTLoss"):
                    assert epochs <= run[name]["student_epochs"] <= budget
                assert run["KD"]["choice"] in kd_choices
                assert run["LS-KD"]["choice"] in ls_choices
                search = run["PTLoss"]["search"]
                assert search["cost"]["budget"] == budget
                # The default pipeline: logits and z-scored logits together.
                candidates = search["candidates"]
                assert {c["standardize"] for c in candidates} == {False, True}
                label = candidates[search["winner"]]["label"]
                assert run["PTLoss"]["choice"] == label

    def test_demo_writes_the_plots_it_prints(quick_run):
        cwd, out, _ = quick_run[:3]
        import matplotlib.image

        names = ("demo.png", "search-clean.png", "search-noisy.png")
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
        assert (
            "ValueError: `num_samples` must be a multiple of 10" in proc.stderr
        )

    def test_demo_prints_a_verdict_computed_from_its_numbers(quick_run):
        _, out, results = quick_run[:3]
        assert "\n".join(results["verdict"]) in out
        lines = iter(results["verdict"][1:])
        outcomes = {}
        for teacher in TEACHERS:
            for score, label, scale in (
                ("accuracy", "test accuracy", 100),
                ("nll_calibrated", "calibrated test NLL", 1),
            ):
                line = next(lines)
                assert line.startswith(f"  {teacher} teacher, {label}: ")
                half_unit = 0.05 if scale == 100 else 0.0005
                ptloss = per_seed(results, teacher, "PTLoss", score)
                for baseline in ("KD", "LS-KD"):
                    diff = scale * (
                        ptloss - per_seed(results, teacher, baseline, score)
                    )
                    mean, std = diff.mean(), diff.std(ddof=1)
                    printed_mean, printed_std = _printed(line, baseline)
                    assert abs(printed_mean - mean) <= half_unit + 1e-9
                    if score == "accuracy":
                        # +1 ahead, -1 behind by more than the spread, 0 within.
                        sign = int(mean > std) - int(mean < -std)
                        outcomes.setdefault(teacher, []).append(sign)
                    if mean == 0 and std == 0:
                        assert f"PTLoss - {baseline}: +0.0" in line
                        continue
                    assert abs(printed_std - std) <= half_unit + 1e-9
        last = next(lines)
        assert next(lines).startswith("  (on test accuracy: helps = ")
        spreads = [
            100
            * (
                per_seed(results, t, "PTLoss", "accuracy")
                - per_seed(results, t, b, "accuracy")
            ).std(ddof=1)
            for t in TEACHERS
            for b in ("KD", "LS-KD")
        ]
        low, high = f"{min(spreads):.1f}", f"{max(spreads):.1f}"
        spread = low if low == high else f"{low} to {high}"
        assert next(lines) == (
            f"  what this run resolves: over {demo.QUICK['seeds']} seeds "
            "the per-seed test accuracy differences (PTLoss minus KD, minus "
            f"LS-KD) vary by {spread} points (std); a mean difference larger "
            "than that is resolved, a smaller one cannot be told apart from "
            "the variation between seeds"
        )
        for teacher, signs in outcomes.items():
            if min(signs) < 0:
                verb = "falls behind"
            elif min(signs) > 0:
                verb = "helps"
            else:
                verb = "ties"
            assert f"{verb} with the {teacher} teacher" in last
