"""Smoke test: `benchmarks/accuracy.py --quick` runs end to end."""

import json
import sys
from pathlib import Path

import keras

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import accuracy  # noqa: E402
import accuracy_report  # noqa: E402
import accuracy_settings  # noqa: E402


def test_quick_run_writes_json_markdown_and_plot_and_resumes(tmp_path):
    backend = keras.backend.backend()
    previous_threads = accuracy.limit_threads(1)
    try:
        accuracy.main(["--quick", "--output-dir", str(tmp_path), "--silent"])
        records = json.loads((tmp_path / "accuracy.json").read_text())[
            "records"
        ]
        # Resuming trains nothing new: every run is found in the JSON.
        before = dict(records)
        accuracy.main(["--quick", "--output-dir", str(tmp_path), "--silent"])
    finally:
        if previous_threads is not None:
            import torch

            torch.set_num_threads(previous_threads)
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
    # Every method has one finite result per seed.
    summary = accuracy_report.summarize(
        after, "quick", backend, accuracy_settings.PROFILES["quick"]
    )[setting]
    for method, row in summary["rows"].items():
        assert len(row["runs"]) == accuracy_settings.QUICK["seeds"], method
        for run in row["runs"]:
            assert 0.0 <= run["test_accuracy"] <= 1.0
            assert run["kl_to_bayes"] >= 0.0
    # PTLoss coefficients come from select_coefficients and are recorded.
    selection = summary["rows"]["pt_m5_classwise"]["selection"]
    assert len(selection["coefficients"]) == 10
    assert selection["wall_time"] > 0
    # The selection-quality grid and its statistics.
    quality = accuracy_report.selection_quality(summary)
    assert quality["num_points"] == len(accuracy_settings.QUICK["grid"])
    assert -1.0 <= quality["spearman"] <= 1.0
    markdown = (tmp_path / "accuracy.md").read_text()
    assert "python benchmarks/accuracy.py --quick" in markdown
    assert backend in markdown
    assert "PTLoss M=5 shared" in markdown and "Spearman" in markdown
    png = tmp_path / "accuracy_selection.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
