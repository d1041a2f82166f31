"""The demo: the README's command, in quick mode, end to end.

`test_readme_demo_command_runs` runs the command the README shows (taken
from the README itself, so the two cannot drift apart) with `--quick`, in
a subprocess on the backend under test, and checks everything the demo
promises: the selection summary, Keras progress bars, the comparison table,
the plot and the JSON it writes.
"""

import json
import os
import shlex
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_ptloss import demo
from keras_ptloss.cli import build_parser
from tests.utils import readme_commands

BACKEND = keras.backend.backend()


def demo_argv():
    """The argv of the README's demo command (the part after `&&`)."""
    run = readme_commands()["demo"].split("&&")[-1].strip()
    argv = shlex.split(run)
    assert argv[0] == "python"
    return [sys.executable, *argv[1:]]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("demo")
    env = dict(os.environ, KERAS_BACKEND=BACKEND, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run(
        [*demo_argv(), "--quick"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return cwd, proc.stdout


def test_readme_demo_command_runs(quick_run):
    cwd, out = quick_run
    assert f"backend: {BACKEND} (KERAS_BACKEND={BACKEND})" in out
    # The selection summary, Keras progress bars and the callback's lines.
    assert "Coefficient selection: mode=shared, order M=5" in out
    assert "proxy teacher" in out
    assert "Epoch 2/2" in out and "━" in out
    assert "ReestimateCoefficients" in out


def test_demo_prints_the_table_it_saves(quick_run):
    cwd, out = quick_run
    results = json.loads((cwd / "ptloss-demo" / "results.json").read_text())
    assert results["backend"] == BACKEND
    assert results["table"] in out
    rows = results["table"].splitlines()[2:]
    assert [row.split("|")[1].strip() for row in rows] == list(demo.METHODS)
    for name, row in zip(demo.METHODS, rows, strict=True):
        r = results["results"][name]
        assert 0.0 <= r["accuracy"] <= 1.0
        assert 0.0 <= r["brier"] <= 2.0
        assert np.isfinite(r["nll"]) and r["nll"] >= 0.0
        assert f"{100 * r['accuracy']:.1f} %" in row


def test_demo_quick_sizes_and_selection(quick_run):
    cwd, _ = quick_run
    results = json.loads((cwd / "ptloss-demo" / "results.json").read_text())
    options = results["options"]
    for key, value in demo.QUICK.items():
        assert options[key] == value
    # Every student trained for the quick number of epochs.
    for name in ("student alone", "KD", "PTLoss"):
        assert len(results["history"][name]) == demo.QUICK["student_epochs"]
    coefficients = np.asarray(results["selection"]["coefficients"])
    assert coefficients.shape == (demo.DEFAULTS["order"],)
    assert np.all(np.isfinite(coefficients))
    # The callback logged the coefficients in effect after each epoch.
    logged = results["reestimation_logs"]
    assert len(logged["pt_eps_1"]) == demo.QUICK["student_epochs"]
    np.testing.assert_allclose(
        [logged[f"pt_eps_{m + 1}"][-1] for m in range(len(coefficients))],
        coefficients,
        rtol=1e-5,
        atol=1e-6,
    )


def test_demo_writes_the_plot_it_prints(quick_run):
    cwd, out = quick_run
    path = cwd / "ptloss-demo" / "demo.png"
    assert f"plot: {path.resolve()}" in out
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    image = matplotlib.image.imread(path)
    assert image.shape[0] > 200 and image.shape[1] > 400


def test_quick_flag_sets_small_sizes_and_explicit_options_win():
    parser = build_parser()
    quick = demo.options_from_args(parser.parse_args(["demo", "--quick"]))
    assert {k: quick[k] for k in demo.QUICK} == demo.QUICK
    full = demo.options_from_args(parser.parse_args(["demo"]))
    assert {k: full[k] for k in demo.QUICK} == {
        k: demo.DEFAULTS[k] for k in demo.QUICK
    }
    mixed = demo.options_from_args(
        parser.parse_args(["demo", "--quick", "--teacher-epochs", "7"])
    )
    assert mixed["teacher_epochs"] == 7
    assert mixed["student_epochs"] == demo.QUICK["student_epochs"]


@pytest.mark.parametrize(
    "options, name",
    [
        (dict(num_samples=105), "num_samples"),
        (dict(num_samples=50), "num_samples"),
        (dict(teacher_epochs=0), "teacher_epochs"),
        (dict(validation_fraction=1.5), "validation_fraction"),
        (dict(validation_fraction=0.5, test_fraction=0.45), "test_fraction"),
        (dict(temperature=0.0), "temperature"),
        (dict(student_loss_weight=1.5), "student_loss_weight"),
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
