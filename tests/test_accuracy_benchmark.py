"""The accuracy benchmark: `--quick` runs end to end through the Distiller."""

import json
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import scipy.special

from tests.utils import run_program

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "accuracy.py"
sys.path.insert(0, str(ROOT / "benchmarks"))

import accuracy  # noqa: E402
import accuracy_harness  # noqa: E402
import accuracy_report  # noqa: E402
import accuracy_settings  # noqa: E402


@pytest.fixture
def one_thread():
    previous = accuracy.limit_threads(1)
    yield
    if previous is not None:
        import torch

        torch.set_num_threads(previous)


def test_quick_run_writes_json_markdown_and_plot_and_resumes(tmp_path):
    backend = keras.backend.backend()
    argv = [SCRIPT, "--quick", "--output-dir", tmp_path, "--silent"]
    run_program(*argv)
    records = json.loads((tmp_path / "accuracy.json").read_text())["records"]
    # Resuming trains nothing new: every run is found in the JSON.
    before = dict(records)
    run_program(*argv)
    after = json.loads((tmp_path / "accuracy.json").read_text())["records"]
    runs = {k: v for k, v in after.items() if "|run|" in k}
    assert {k: before[k] for k in runs} == runs

    setting = "gaussian"
    prefix = f"quick|{backend}|{setting}|"
    teacher = after[prefix + "teacher"]
    assert 0.0 <= teacher["test_accuracy"] <= 1.0
    assert 0.0 <= teacher["excess_risk"] <= 1.0
    chosen = after[prefix + "chosen"]
    assert set(chosen) == set(accuracy_settings.METHODS)
    # Every method has one finite result per seed, with NLL and ECE.
    summary = accuracy_report.summarize(
        after, "quick", backend, accuracy_settings.PROFILES["quick"]
    )[setting]
    for method, row in summary["rows"].items():
        assert len(row["runs"]) == accuracy_settings.QUICK["seeds"], method
        assert not row["legacy"]
        for run in row["runs"]:
            assert 0.0 <= run["test_accuracy"] <= 1.0
            assert run["kl_to_bayes"] >= 0.0
            assert run["test_nll"] > 0.0
            assert 0.0 <= run["test_ece"] <= 1.0
    # PTLoss coefficients come from select_coefficients and are recorded.
    selection = summary["rows"]["pt_m5_classwise"]["selection"]
    assert len(selection["coefficients"]) == 10
    assert selection["wall_time"] > 0
    # The searched rows: search_coefficients within the tuning budget.
    for method in accuracy_settings.SEARCH_STANDARDIZE:
        search = summary["rows"][method]["search"]
        epochs = summary["setting"]["student_epochs"]
        budget = accuracy_settings.QUICK["tune_budget"] * epochs
        assert search["cost"]["budget"] == budget
        assert 0 < search["cost"]["student_epochs"] <= budget
        assert search["seconds"] > 0
        assert chosen[method]["temperature"] == search["temperature"]
    assert summary["tuning_seconds"]["kd"] > 0
    # The study: every first-rung candidate trained fully.
    quality = accuracy_report.search_quality(
        summary, accuracy_settings.SEARCHED
    )
    search = summary["rows"][accuracy_settings.SEARCHED]["search"]
    assert quality["num_candidates"] == len(search["ranking"][0]["members"])
    winner = search["candidates"][search["winner"]]
    assert quality["pick_label"] == winner["label"]
    # The selection-quality grid and its statistics.
    quality = accuracy_report.selection_quality(summary)
    assert quality["num_points"] == len(accuracy_settings.QUICK["grid"])
    assert -1.0 <= quality["spearman"] <= 1.0
    markdown = (tmp_path / "accuracy.md").read_text()
    assert "python benchmarks/accuracy.py --quick" in markdown
    assert backend in markdown
    assert "PTLoss M=5 shared" in markdown and "Spearman" in markdown
    assert "PTLoss M=5 searched" in markdown and "ECE" in markdown
    assert "Targets of the student-aware search" in markdown
    for name in ("accuracy_selection.png", "accuracy_search.png"):
        png = tmp_path / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name


@pytest.fixture(scope="module")
def gaussian_setting():
    profile = accuracy_settings.QUICK
    setting = accuracy_settings.build_setting("gaussian", profile)
    accuracy_settings.train_teacher(setting, profile)
    return setting


@pytest.mark.parametrize(
    "method, first, second",
    [
        (
            "dkd",
            {"alpha": 1.0, "beta": 8.0, "temperature": 4.0},
            {"alpha": 0.5, "beta": 1.0, "temperature": 1.0},
        ),
        (
            "pt_m5_shared",
            {"coefficients": [2.0, 0.0, 0.0, 0.0, 0.1], "temperature": 4.0},
            {"coefficients": [-1.0], "temperature": 2.0},
        ),
    ],
)
def test_a_reused_distiller_trains_like_a_fresh_one(
    gaussian_setting, one_thread, method, first, second
):
    profile = accuracy_settings.QUICK
    reused = accuracy_harness.Trainer(gaussian_setting, profile)
    reused.train(method, first, seed=1)
    distiller, history = reused.fit(method, second, seed=0)
    fresh = accuracy_harness.Trainer(gaussian_setting, profile)
    fresh_distiller, fresh_history = fresh.fit(method, second, seed=0)
    assert distiller is reused.distiller(accuracy_settings.METHODS[method][1])
    assert history.history["loss"] == fresh_history.history["loss"]
    for a, b in zip(
        distiller.student.get_weights(),
        fresh_distiller.student.get_weights(),
        strict=True,
    ):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_nll_and_ece_match_their_definitions(rng):
    logits = rng.normal(scale=2.0, size=(200, 5))
    labels = rng.integers(0, 5, size=200)
    probs = scipy.special.softmax(logits, axis=1)
    nll = -np.mean(np.log(probs[np.arange(200), labels]))
    assert accuracy_settings.nll_of(logits, labels) == pytest.approx(nll)
    # ECE by an explicit loop over examples and bins.
    confidence, predicted = probs.max(1), probs.argmax(1)
    expected = 0.0
    for b in range(15):
        low, high = b / 15, (b + 1) / 15
        members = [
            i
            for i in range(200)
            if (low < confidence[i] <= high) or (b == 0 and confidence[i] == 0)
        ]
        if members:
            accuracy_in_bin = np.mean(predicted[members] == labels[members])
            confidence_in_bin = np.mean(confidence[members])
            expected += (
                len(members) / 200 * abs(accuracy_in_bin - confidence_in_bin)
            )
    assert accuracy_settings.ece_of(logits, labels, 15) == pytest.approx(
        expected
    )


# A tiny MNIST-1D profile for the teacher-scale sweep's settings.
TINY_MNIST1D = dict(
    accuracy_settings.QUICK,
    mnist1d_samples=600,
    teacher_epochs={"mnist1d": 1, "digits": 1, "gaussian": 1},
)


def test_teacher_sweep_settings_differ_only_in_their_teacher():
    built = {
        name: accuracy_settings.build_setting(name, TINY_MNIST1D)
        for name in accuracy_settings.TEACHER_SWEEP
    }
    reference = built.pop("mnist1d_unlabelled")
    sweep = len(accuracy_settings.TEACHER_SWEEP)
    descriptions = {s.teacher_desc for s in built.values()}
    assert len(descriptions | {reference.teacher_desc}) == sweep
    assert {s.student_desc for s in built.values()} == {reference.student_desc}
    builders = {s.make_teacher for s in built.values()}
    assert len(builders | {reference.make_teacher}) == sweep
    for other in built.values():
        for split in ("teacher_data", "validation", "test", "alone"):
            for a, b in zip(
                getattr(reference, split), getattr(other, split), strict=True
            ):
                np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(reference.transfer[0], other.transfer[0])
        assert other.transfer[1] is None  # unlabelled: teacher argmax
        assert other.transfer[2] == reference.transfer[2] == "teacher argmax"
    # The added settings run the sweep's methods without the grid/study;
    # the reference (the CNN of the main tables) keeps the full profile.
    full = accuracy_settings.FULL
    for name in accuracy_settings.SWEEP_ADDED:
        assert name in full["settings"]
        profile = accuracy_settings.setting_profile(full, name)
        assert profile["methods"] == accuracy_settings.SWEEP_METHODS
        assert profile["grid"] == [] and profile["search_study"] == []
    reference_profile = accuracy_settings.setting_profile(
        full, "mnist1d_unlabelled"
    )
    assert reference_profile["methods"] == "all" and reference_profile["grid"]
    # Overrides only select records: they do not change the fingerprint.
    assert accuracy_harness.profile_fingerprint(
        full
    ) == accuracy_harness.profile_fingerprint(dict(full, setting_overrides={}))
    with pytest.raises(ValueError, match="student_epochs"):
        accuracy_settings.setting_profile(
            dict(full, setting_overrides={"x": {"student_epochs": 1}}), "x"
        )


def test_recorded_teacher_metrics_match_numpy(one_thread):
    setting = accuracy_settings.build_setting(
        "mnist1d_teacher_small", TINY_MNIST1D
    )
    stats = accuracy_settings.train_teacher(setting, TINY_MNIST1D)
    x_test, y_test = setting.test
    logits = np.asarray(
        keras.ops.convert_to_numpy(setting.teacher(x_test)), "float64"
    )
    shifted = np.exp(logits - logits.max(1, keepdims=True))
    probs = shifted / shifted.sum(1, keepdims=True)
    assert stats["test_accuracy"] == pytest.approx(
        np.mean(probs.argmax(1) == y_test), abs=1e-12
    )
    assert stats["test_mean_confidence"] == pytest.approx(
        probs.max(1).mean(), rel=1e-5
    )
    assert stats["test_nll"] == pytest.approx(
        -np.mean(np.log(probs[np.arange(len(y_test)), y_test])), rel=1e-5
    )


def test_sweep_section_reports_seed_means_spreads_and_costs(rng):
    key = lambda *parts: accuracy_harness.record_key("full", "jax", *parts)  # noqa: E731
    profile = dict(accuracy_settings.FULL, seeds=5)
    methods = {
        "ce": {},
        "kd": {"temperature": 2.0},
        "pt_m5_shared": {"coefficients": [0.5, 0, 0, 0, 0], "temperature": 2.0},
        "pt_m5_searched": {"coefficients": [1.0], "temperature": 4.0},
    }
    records, accuracies = {}, {}
    for i, name in enumerate(accuracy_settings.TEACHER_SWEEP):
        records[key(name, "teacher")] = {
            "test_accuracy": 0.5 + 0.1 * i,
            "test_mean_confidence": 0.55 + 0.1 * i,
            "test_nll": 1.0 - 0.3 * i,
            "test_ece": 0.01 * (i + 1),
            "train_accuracy": 0.6,
            "seconds": 3.0,
        }
        records[key(name, "setting")] = {
            "teacher": f"teacher {i}",
            "student_epochs": 4,
        }
        records[key(name, "chosen")] = methods
        for method, hp in methods.items():
            values = rng.uniform(0.3, 0.9, size=5)
            accuracies[name, method] = values
            parts = accuracy_report.run_parts(method, hp)
            for seed, value in enumerate(values):
                records[key(name, "run", *parts, f"seed={seed}")] = {
                    "test_accuracy": float(value),
                    "test_nll": 1.0,
                    "test_ece": 0.02,
                    "seconds": 1.0,
                }
        grid = [{"temperature": 1.0}, {"temperature": 2.0}]
        records[key(name, "tuning", "kd")] = {"grid": grid}
        for hp in grid:
            parts = accuracy_report.run_parts("kd", hp)
            tune = f"seed={accuracy_settings.TUNE_SEED}"
            records.setdefault(key(name, "run", *parts, tune), {})
            records[key(name, "run", *parts, tune)]["seconds"] = 3.5
        records[key(name, "selection", "pt_m5_shared", "T=2.0")] = {
            "wall_time": 0.25
        }
        records[key(name, "search", "pt_m5_searched")] = {
            "candidates": [{"label": "KD T=1"}, {"label": "first-order"}],
            "winner": 1,
            "cost": {"student_epochs": 7},
            "seconds": 12.0,
        }
    profile["settings"] = list(accuracy_settings.TEACHER_SWEEP)
    summary = accuracy_report.summarize(records, "full", "jax", profile)
    text = "\n".join(accuracy_report.sweep_section(summary, profile))
    lines = text.splitlines()
    for name in accuracy_settings.TEACHER_SWEEP:
        assert f"`{name}`" in text
        # KD's tuning: 2 trainings x 4 epochs, 2 x 3.5 s; the search's cost.
        row = next(r for r in lines if r.startswith(f"| `{name}` | 8 / 7 |"))
        assert "| 0 / 0.2 |" in row and "| 7 / 12 (first-order) |" in row
    for method, label in (
        ("ce", "Student alone (CE)"),
        ("pt_m5_searched", "PTLoss M=5 searched"),
    ):
        row = next(r for r in lines if r.startswith(f"| {label} |"))
        for name in accuracy_settings.TEACHER_SWEEP:
            values = accuracies[name, method]
            cell = f"{100 * values.mean():.1f} ± {100 * values.std(ddof=1):.1f}"
            assert cell in row, (cell, row)
    teacher_row = next(r for r in lines if r.startswith("| test accuracy"))
    count = len(accuracy_settings.TEACHER_SWEEP)
    expected = " | ".join(f"{50 + 10 * i:.1f}" for i in range(count))
    assert teacher_row.endswith(f"| {expected} |")
    confidence_row = next(r for r in lines if "mean max prob" in r)
    expected = " | ".join(f"{0.55 + 0.1 * i:.3f}" for i in range(count))
    assert confidence_row.endswith(f"| {expected} |")
