"""The accuracy benchmark: its aggregation, and a quick run through the
command line (a whole program, run once, on PyTorch, which compiles
nothing; the full benchmark runs on JAX)."""

import json

import keras
import numpy as np

from benchmarks import accuracy
from benchmarks import harness
from benchmarks import render
from tests.utils import run_program


def hand_made():
    """Two settings, KD / DKD / pipeline / training-free over 3 seeds."""
    rng = np.random.default_rng(0)
    acc = {s: rng.uniform(0.5, 0.9, size=(4, 3)) for s in ("a", "b")}
    methods = ("kd", "dkd", "pipeline", "selected")
    records = [
        {"kind": "run", "setting": f"mnist1d_k{2 + (s == 'b')}", "method": m,
         "seed": seed, "test_accuracy": float(acc[s][i, seed])}
        for s in acc for i, m in enumerate(methods) for seed in range(3)
    ]  # fmt: skip
    return records, acc


def test_paired_differences_and_mean_se_match_numpy():
    records, acc = hand_made()
    diffs = accuracy.paired(records, "mnist1d_k3", "pipeline", "kd")
    np.testing.assert_allclose(diffs, acc["b"][2] - acc["b"][0])
    mean, se = accuracy.mean_se(diffs)
    expected = np.std(acc["b"][2] - acc["b"][0], ddof=1) / np.sqrt(3)
    np.testing.assert_allclose([mean, se], [np.mean(diffs), expected])
    assert accuracy.mean_se([0.5]) == (0.5, 0.0)
    assert accuracy.mean_se([]) is None


def test_pipeline_table_rows_from_hand_made_records():
    records, acc = hand_made()
    rows = accuracy.pipeline_rows(records)
    best = "KD" if acc["a"][0].mean() > acc["a"][1].mean() else "DKD"
    d = 100 * (acc["a"][2] - acc["a"][0])
    se = np.std(d, ddof=1) / np.sqrt(3)
    assert rows[0]["setting"] == "`mnist1d_k2`" and rows[0]["best"] == best
    assert rows[0]["pipeline_kd"] == f"{d.mean():+.2f} ± {se:.2f}"
    free = [100 * (acc[s][3] - acc[s][0]).mean() for s in acc]
    assert rows[-1]["setting"] == "mean of 2 settings"
    assert rows[-1]["selected_kd"] == f"{np.mean(free):+.2f}"


if keras.backend.backend() == "torch":

    def test_quick_run_records_and_tables(tmp_path):
        run_program(
            *("-m", "benchmarks", "run", "accuracy", "--quick"),
            *("--backends", "torch", "--results-dir", str(tmp_path)),
            cwd=harness.ROOT,
        )
        data = json.loads((tmp_path / "accuracy.json").read_text())
        records = data["records"]
        assert {r["backend"] for r in records} == {"torch"}
        found = {(r["kind"], r["method"], r.get("seed")) for r in records}
        for method in ("kd", "poly1", "selected", "pipeline"):
            assert {("run", method, 0), ("run", method, 1)} <= found
            assert ("choice", method, None) in found
        lskd = [r for r in records if r["method"] == "lskd"]
        assert len(lskd) == 1 and "3 classes" in lskd[0]["not_applicable"]
        for record in records:
            if record["kind"] == "run":
                assert 0 <= record["test_ece_calibrated"] <= 1
                assert record["test_nll"] > 0 and "curve" not in record
        for table in accuracy.TABLES.values():
            text = render.render(table, data)
            assert text.startswith("| ") and "Measured: " in text
        text = render.render(accuracy.TABLES["accuracy"], data)
        assert "| LS-KD | – | – | n/a |" in text
