"""The accuracy benchmark: `--quick` runs end to end through the Distiller."""

import json
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import scipy.special

from keras_ptloss.baselines import pack_targets
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
            # Every student is also measured after temperature scaling.
            assert run["test_nll_calibrated"] > 0.0
            assert 0.0 <= run["test_ece_calibrated"] <= 1.0
            assert run["calibration"]["temperature"] > 0.0
            assert run["calibration"]["nll_after"] <= (
                run["calibration"]["nll_before"] + 1e-9
            )
    # The default pipeline: one search per seed, its own (calibrated)
    # student, within the baselines' tuning budget.
    pipeline = summary["rows"][accuracy_settings.PIPELINE]
    assert sorted(pipeline["by_seed"]) == list(range(2))
    for run in pipeline["runs"]:
        search = run["search"]
        epochs = summary["setting"]["student_epochs"]
        budget = accuracy_settings.QUICK["tune_budget"] * epochs
        assert search["cost"]["budget"] == budget
        assert 0 < search["cost"]["student_epochs"] <= budget
        assert search["calibration"] == run["calibration"]
        assert any(c["standardize"] for c in search["candidates"])  # K = 10
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
    assert "PTLoss pipeline (default search, calibrated)" in markdown
    assert "after temperature scaling" in markdown
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


# The same sizes for a whole (one-seed, one-epoch) run of a setting.
TINY_MNIST1D_SIZES = {
    "mnist1d_samples": 600,
    "student_hidden": {"mnist1d": [8], "digits": [8], "gaussian": [8]},
    "student_epochs": {"mnist1d": 1, "digits": 1, "gaussian": 1},
    "teacher_epochs": {"mnist1d": 1, "digits": 1, "gaussian": 1},
}


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


# --------------------------------------------------------------------------
# The default pipeline profile: K = 2 / K = 3 settings, calibration, targets.


@pytest.mark.parametrize(
    "name, num_classes, noisy",
    [
        ("mnist1d_k2", 2, False),
        ("mnist1d_k2_noisy", 2, True),
        ("mnist1d_k3", 3, False),
        ("mnist1d_k3_noisy", 3, True),
    ],
)
def test_superclass_settings_have_k_classes_and_mnist1d_splits(
    name, num_classes, noisy
):
    setting = accuracy_settings.build_setting(name, TINY_MNIST1D)
    reference = accuracy_settings.build_setting(
        "mnist1d_unlabelled", TINY_MNIST1D
    )
    assert setting.num_classes == num_classes
    assert setting.make_student().output_shape == (None, num_classes)
    assert setting.make_teacher().output_shape == (None, num_classes)
    assert setting.student_desc.endswith(f"-{num_classes}")
    # Super-classes of the digits: {0-4, 5-9} or {0-3, 4-6, 7-9}.
    edges = {2: [5], 3: [4, 7]}[num_classes]
    for split in ("validation", "test"):
        x, y = getattr(setting, split)
        x_ref, digits = getattr(reference, split)
        np.testing.assert_array_equal(x, x_ref)
        np.testing.assert_array_equal(y, np.digitize(digits, edges))
    # Unlabelled transfer, as in mnist1d_unlabelled.
    np.testing.assert_array_equal(setting.transfer[0], reference.transfer[0])
    assert setting.transfer[1] is None
    x_train, teacher_labels = setting.teacher_data
    np.testing.assert_array_equal(x_train, reference.teacher_data[0])
    clean = np.digitize(reference.teacher_data[1], edges)
    flipped = teacher_labels != clean
    assert flipped.sum() == (round(0.4 * clean.size) if noisy else 0)
    assert set(np.unique(teacher_labels)) <= set(range(num_classes))
    np.testing.assert_array_equal(setting.alone[1], teacher_labels)
    assert name in accuracy_settings.PROFILES["pipeline"]["settings"]


def test_lskd_is_not_applicable_at_two_classes_and_dkd_equals_kd(rng):
    def reasons(k):
        return {
            m: accuracy_harness.not_applicable(m, k)
            for m in accuracy_settings.METHODS
        }

    two = reasons(2)
    refused = {m for m, reason in two.items() if reason is not None}
    assert refused == {"lskd", accuracy_settings.SEARCHED_STD}
    assert "at least 3 classes" in two["lskd"]
    assert all(reason is None for reason in reasons(3).values())
    # At K = 2 DKD's non-target part is empty: DKD = alpha * KD whatever
    # beta (the report's note), against T^2 KL(p_T || q_T) in numpy.
    teacher = rng.normal(size=(6, 2))
    student = rng.normal(size=(6, 2))
    labels = teacher.argmax(1)
    targets = pack_targets(teacher, labels)
    temperature = 4.0
    p = scipy.special.softmax(teacher / temperature, axis=1)
    log_q = scipy.special.log_softmax(student / temperature, axis=1)
    kl = np.sum(p * (np.log(p) - log_q), axis=1)
    expected = temperature**2 * kl.mean()
    for beta in (1.0, 8.0):
        loss = accuracy_harness.kp.DKDLoss(
            alpha=1.0, beta=beta, temperature=4.0, teacher_from_logits=True
        )
        value = float(keras.ops.convert_to_numpy(loss(targets, student)))
        assert value == pytest.approx(expected, rel=1e-5)


def test_student_record_calibrates_on_validation_like_numpy(rng):
    x_val = rng.normal(size=(300, 4)).astype("float32")
    x_test = rng.normal(size=(400, 4)).astype("float32")
    kernel = rng.normal(scale=3.0, size=(4, 3)).astype("float32")

    def labels(x):  # noisy labels: the model is over-confident
        logits = x @ kernel / 4.0 + rng.gumbel(size=(len(x), 3))
        return logits.argmax(1).astype("int32")

    setting = accuracy_settings.Setting("toy", "toy", "", 3)
    setting.validation = (x_val, labels(x_val))
    setting.test = (x_test, labels(x_test))
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    model.set_weights([kernel, np.zeros(3, "float32")])
    record = accuracy_harness.student_record(setting, model, 15)

    def nll(logits, y):
        log_p = scipy.special.log_softmax(logits, axis=1)
        return -np.mean(log_p[np.arange(len(y)), y])

    val_logits = x_val.astype("float64") @ kernel
    test_logits = x_test.astype("float64") @ kernel
    # The temperature minimising the validation NLL, by a fine grid.
    grid = np.exp(np.linspace(np.log(0.05), np.log(20.0), 20001))
    best = grid[
        np.argmin([nll(val_logits / t, setting.validation[1]) for t in grid])
    ]
    temperature = record["calibration"]["temperature"]
    assert temperature == pytest.approx(best, rel=1e-3)
    assert temperature > 1.0
    y_test = setting.test[1]
    assert record["test_nll"] == pytest.approx(
        nll(test_logits, y_test), rel=1e-5
    )
    assert record["test_nll_calibrated"] == pytest.approx(
        nll(test_logits / temperature, y_test), rel=1e-5
    )
    assert record["test_ece_calibrated"] == pytest.approx(
        accuracy_settings.ece_of(test_logits / temperature, y_test), abs=1e-6
    )
    # Accuracy is unchanged by the scaling.
    assert record["test_accuracy"] == pytest.approx(
        np.mean((test_logits / temperature).argmax(1) == y_test)
    )


def _pipeline_records(accuracies, eces, not_applicable=()):
    """Hand-made records of the pipeline profile: `accuracies[setting][
    method]` and `eces[setting][method]` are per-seed lists."""
    key = lambda *parts: accuracy_harness.record_key("pipeline", "jax", *parts)  # noqa: E731
    records = {key("meta"): {"pipeline|jax": {"command": "x", "date": "d"}}}
    for name, methods in accuracies.items():
        k = 2 if "k2" in name else 10
        records[key(name, "teacher")] = {
            "test_accuracy": 0.9,
            "test_ece": 0.05,
            "seconds": 1.0,
        }
        records[key(name, "setting")] = {
            "title": name,
            "student": f"MLP 40-64-64-{k}",
            "student_epochs": 4,
            "teacher_train_size": 1,
            "transfer_size": 2,
            "validation_size": 3,
            "test_size": 4,
        }
        chosen = {}
        for method, values in methods.items():
            hp = {} if method in ("ce", "pt_pipeline") else {"temperature": 2.0}
            chosen[method] = hp
            for seed, value in enumerate(values):
                run = {
                    "test_accuracy": value,
                    "test_nll": 0.5,
                    "test_ece": 0.05,
                    "test_nll_calibrated": 0.4,
                    "test_ece_calibrated": eces[name][method][seed],
                    "calibration": {"temperature": 1.5},
                    "seconds": 1.0,
                }
                if method == accuracy_settings.PIPELINE:
                    run["search"] = {
                        "candidates": [
                            {"label": "KD T=2", "standardize": False}
                        ],
                        "winner": 0,
                        "cost": {"student_epochs": 24, "budget": 24},
                        "seconds": 5.0,
                    }
                    records[key(name, "pipeline", method, f"seed={seed}")] = run
                else:
                    parts = accuracy_report.run_parts(method, hp)
                    records[key(name, "run", *parts, f"seed={seed}")] = run
        records[key(name, "chosen")] = chosen
        for method in not_applicable:
            records[key(name, "not_applicable", method)] = {
                "reason": "needs at least 3 classes"
            }
    return records


def test_pipeline_targets_are_computed_from_paired_seeds(rng):
    seeds = 5
    settings = ("mnist1d_unlabelled", "mnist1d_k2")
    accuracies, eces = {}, {}
    for name in settings:
        kd = rng.uniform(0.6, 0.7, size=seeds)
        accuracies[name] = {
            "kd": kd,
            "kd_ce": kd + rng.normal(0.01, 0.002, size=seeds),
            "pt_pipeline": kd + rng.normal(0.02, 0.002, size=seeds),
        }
        eces[name] = {
            "kd": rng.uniform(0.01, 0.02, size=seeds),
            "kd_ce": rng.uniform(0.01, 0.02, size=seeds),
            "pt_pipeline": rng.uniform(0.01, 0.02, size=seeds),
        }
    # In the K = 2 setting the pipeline is clearly below KD + CE (well
    # beyond one standard error), still above KD, and badly calibrated.
    k2 = accuracies["mnist1d_k2"]
    k2["kd_ce"] = k2["kd"] + 0.05
    k2["pt_pipeline"] = k2["kd"] + rng.normal(0.005, 0.002, size=seeds)
    eces["mnist1d_k2"]["pt_pipeline"] = eces["mnist1d_k2"]["kd"] + 0.03
    records = _pipeline_records(accuracies, eces, not_applicable=["lskd"])
    profile = dict(
        accuracy_settings.PROFILES["pipeline"], settings=list(settings)
    )
    summary = accuracy_report.summarize(records, "pipeline", "jax", profile)
    targets = accuracy_report.pipeline_targets(summary)

    over_kd = []
    for name in settings:
        a = accuracies[name]
        best = max(("kd", "kd_ce"), key=lambda m: a[m].mean())
        d = a["pt_pipeline"] - a[best]
        se = d.std(ddof=1) / np.sqrt(seeds)
        entry = targets["settings"][name]
        assert entry["best"] == best
        assert entry["vs_best"][0] == pytest.approx(d.mean())
        assert entry["vs_best"][1] == pytest.approx(se)
        assert entry["vs_best"][2] == seeds
        assert entry["within_se"] == (d.mean() >= -se)
        over_kd.append((a["pt_pipeline"] - a["kd"]).mean())
        ece = eces[name]
        assert entry["ece"] == pytest.approx(
            (ece["pt_pipeline"].mean(), ece["kd"].mean())
        )
    assert targets["settings"]["mnist1d_unlabelled"]["within_se"]
    assert not targets["settings"]["mnist1d_k2"]["within_se"]
    assert targets["never_below_best"] is False
    assert targets["mean_over_kd"] == pytest.approx(np.mean(over_kd))
    assert targets["over_kd"] == (np.mean(over_kd) >= 0.01)
    assert targets["ece"] is False

    lines = accuracy_report.pipeline_section(records, "jax")
    text = "\n".join(lines)
    assert (
        "KERAS_BACKEND=jax python benchmarks/accuracy.py --profile pipeline"
        in text
    )
    assert "**missed** in `mnist1d_k2`" in text
    assert "n/a¹" in text and "needs at least 3 classes" in text
    assert "missing: `mnist1d_noisy`" in text  # the profile's other settings
    verdicts = [line for line in lines if line.startswith("- At least +1.0")]
    assert ("**met**" in verdicts[0]) == bool(np.mean(over_kd) >= 0.01)


def test_pipeline_profile_runs_a_two_class_setting(tmp_path, one_thread):
    profile = dict(
        accuracy_settings.PROFILES["pipeline"],
        **TINY_MNIST1D_SIZES,
        settings=["mnist1d_k2"],
        methods=["kd", "lskd", accuracy_settings.PIPELINE],
        seeds=1,
        tune_budget=1,
    )
    store = accuracy_harness.Store(tmp_path / "accuracy.json")
    accuracy_harness.run_setting(
        "mnist1d_k2", "pipeline", profile, store, "jax", lambda message: None
    )
    records = store.data()["records"]
    key = lambda *parts: accuracy_harness.record_key(  # noqa: E731
        "pipeline", "jax", "mnist1d_k2", *parts
    )
    # LS-KD is refused by the library at K = 2: recorded, not trained.
    assert (
        "at least 3 classes" in records[key("not_applicable", "lskd")]["reason"]
    )
    assert set(records[key("chosen")]) == {"kd", accuracy_settings.PIPELINE}
    assert not any("|pt_std|" in k for k in records)
    # The pipeline searched the logits only (standardize="auto" at K = 2),
    # within one full training, and returned its student calibrated.
    run = records[key("pipeline", accuracy_settings.PIPELINE, "seed=0")]
    search = run["search"]
    assert not any(c["standardize"] for c in search["candidates"])
    epochs = TINY_MNIST1D_SIZES["student_epochs"]["mnist1d"]
    assert (
        search["cost"]["student_epochs"] <= epochs == search["cost"]["budget"]
    )
    assert search["calibration"] == run["calibration"]
    assert 0.0 <= run["test_ece_calibrated"] <= 1.0
    summary = accuracy_report.summarize(records, "pipeline", "jax", profile)
    assert summary["mnist1d_k2"]["not_applicable"].keys() == {"lskd"}
