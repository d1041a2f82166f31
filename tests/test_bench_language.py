"""The language benchmark: its paired differences against numpy, and (a
whole program, run once, on PyTorch, which compiles nothing; the full
benchmark runs on JAX) a quick run through the command line whose records
hold every method and whose tables render."""

import json
from pathlib import Path

import keras
import numpy as np

from benchmarks import language
from benchmarks import render
from tests.utils import run_program

ROOT = Path(__file__).resolve().parent.parent
METRICS = language.METRICS


def test_differences_to_kd_match_numpy():
    rng = np.random.default_rng(0)
    values = rng.normal(size=(2, 4, len(METRICS)))  # (method, seed, metric)
    records = [
        {"condition": "B", "seed": seed, "method": method}
        | dict(zip(METRICS, values[i, seed].tolist(), strict=True))
        for seed in range(4)
        for i, method in enumerate(("kd", "pt_search"))
    ]
    (row,) = language.difference_rows(records)
    diff = values[1] - values[0]
    for j, metric in enumerate(METRICS):
        np.testing.assert_allclose(row[metric], diff[:, j])
        se = diff[:, j].std(ddof=1) / 2
        expected = f"{diff[:, j].mean():+.3f} ± {se:.3f}"
        assert language.signed_mean_se(row[metric], 3) == expected


if keras.backend.backend() == "torch":

    def test_quick_run_records_and_tables(tmp_path):
        run_program(
            *("-m", "benchmarks", "run", "language", "--quick"),
            *("--backends", "torch", "--results-dir", str(tmp_path)),
            cwd=ROOT,
        )
        data = json.loads((tmp_path / "language.json").read_text())
        records = data["records"]
        assert {r["method"] for r in records} == set(language.METHODS)
        assert all(np.isfinite([r[m] for m in METRICS]).all() for r in records)
        by_method = {r["method"]: r for r in records}
        # The compiled KD replays the logits search's weights and batches.
        if by_method["pt_search"]["winner"] == "KD T=1":
            kd, searched = by_method["kd"], by_method["pt_search"]
            assert abs(kd["kl"] - searched["kl"]) < 1e-3
        assert "calibration_temperature" in by_method["pt_default"]
        for table in language.TABLES.values():
            text = render.render(table, data)
            assert "PTLoss, default `search_coefficients`" in text
