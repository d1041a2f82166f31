"""The language benchmark: metrics, the verdict, and a tiny run that resumes."""

import json
import math
import sys
from pathlib import Path

import keras
import numpy as np

from tests.utils import run_program

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "language.py"
sys.path.insert(0, str(ROOT / "benchmarks"))

import language  # noqa: E402


def test_metrics_match_a_direct_computation():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 4, 5)).astype("float32")
    p_star = rng.dirichlet(np.ones(5), size=(3, 4))
    p_star[0, 0] = [0.5, 0.5, 0.0, 0.0, 0.0]
    targets = rng.integers(0, 5, size=(3, 4))
    got = language.metrics_of(logits, targets, p_star)
    nll = kl = hits = expected = 0.0
    for i in range(3):
        for t in range(4):
            z = logits[i, t].astype("float64")
            q = np.exp(z - z.max())
            q /= q.sum()
            nll -= math.log(q[targets[i, t]])
            p = p_star[i, t]
            kl += sum(p[v] * math.log(p[v] / q[v]) for v in range(5) if p[v])
            hits += int(np.argmax(z) == targets[i, t])
            expected += p[np.argmax(z)]
    assert math.isclose(got["nll"], nll / 12, rel_tol=1e-6)
    assert math.isclose(got["perplexity"], math.exp(nll / 12), rel_tol=1e-6)
    assert math.isclose(got["kl"], kl / 12, rel_tol=1e-6)
    assert math.isclose(got["accuracy"], hits / 12)
    assert math.isclose(got["expected_accuracy"], expected / 12, rel_tol=1e-6)
    assert 0.0 <= got["ece"] <= 1.0


def _summary(kd, pt):
    """A summary of two methods with the given per-seed (kl, ppl, acc)."""

    def runs(values):
        return [
            {"kl": k, "perplexity": p, "accuracy": a, "ece": 0.1}
            for k, p, a in values
        ]

    rows = {"kd": {"runs": runs(kd)}, "pt_search": {"runs": runs(pt)}}
    for row in rows.values():
        row["stats"] = language.stats_of(
            [dict(r, expected_accuracy=0.0) for r in row["runs"]]
        )
    rows["pt_search"]["vs_kd"] = {
        metric: language.mean_std_se(
            [
                r[metric] - k[metric]
                for r, k in zip(
                    rows["pt_search"]["runs"], rows["kd"]["runs"], strict=True
                )
            ]
        )
        for metric in language.METRICS
    }
    return {"rows": rows}


def test_target_verdict():
    kd = [(1.0, 10.0, 0.30), (1.1, 11.0, 0.32), (0.9, 9.0, 0.28)]
    better = [(k - 0.1, p - 1.0, a) for k, p, a in kd]
    verdict = language.target_verdict(_summary(kd, better))
    assert verdict == {
        "kl": True,
        "perplexity": True,
        "accuracy": True,
        "met": True,
    }
    # Lower KL by less than one SE of the paired differences: not met.
    noisy = [(1.05, 9.0, 0.3), (1.0, 10.0, 0.32), (0.85, 8.0, 0.28)]
    verdict = language.target_verdict(_summary(kd, noisy))
    assert not verdict["kl"] and verdict["perplexity"]
    assert not verdict["met"]
    # Accuracy more than one KD standard deviation below KD's: not met.
    worse = [(k - 0.1, p - 1.0, a - 0.1) for k, p, a in kd]
    assert not language.target_verdict(_summary(kd, worse))["accuracy"]


def test_quick_run_writes_json_and_markdown_and_resumes(tmp_path):
    argv = [
        "--quick",
        "--seeds",
        "1",
        "--methods",
        "kd",
        "pt_selected",
        "pt_search",
        "--output-dir",
        str(tmp_path),
        "--cache-dir",
        str(tmp_path),
        "--silent",
    ]
    run_program(SCRIPT, *argv)
    records = json.loads((tmp_path / "language.json").read_text())["records"]
    run_program(SCRIPT, *argv)  # resumes: nothing is trained again
    again = json.loads((tmp_path / "language.json").read_text())["records"]
    summary = language.summarize(again, "quick", keras.backend.backend())
    runs = {k: v for k, v in records.items() if "|run|" in k}
    assert len(runs) == 3
    assert {k: again[k] for k in runs} == runs
    rows = summary["rows"]
    assert set(rows) == {"kd", "pt_selected", "pt_search"}
    for row in rows.values():
        (run,) = row["runs"]
        assert 0.0 <= run["accuracy"] <= 1.0
        assert run["kl"] > 0.0 and run["perplexity"] > 1.0
        assert 0.0 <= run["ece"] <= 1.0
    assert rows["kd"]["runs"][0]["temperature"] in language.TEMPERATURES
    # The training-free pick uses KD's tuned temperature.
    assert (
        rows["pt_selected"]["runs"][0]["temperature"]
        == rows["kd"]["runs"][0]["temperature"]
    )
    search = rows["pt_search"]["runs"][0]
    epochs = language.QUICK["student_epochs"]
    assert search["student_epochs"] <= language.QUICK["tune_budget"] * epochs
    reference = summary["reference"]
    # The Bayes predictor is at KL 0 and beats the teacher's perplexity.
    assert abs(reference["bayes"]["kl"]) < 1e-5
    assert reference["bayes"]["nll"] < reference["teacher"]["nll"]
    text = (tmp_path / "language.md").read_text()
    assert "KL(p* ‖ student)" in text and "Target met" in text
    assert "--quick --seeds 1" in text


def _records(name, kd_values, pt_values):
    """Stored records of one condition: meta, references, two methods."""
    metrics = {
        "accuracy": 0.1,
        "expected_accuracy": 0.1,
        "nll": 3.0,
        "perplexity": 20.0,
        "kl": 0.0,
        "ece": 0.01,
    }
    key = f"{name}|jax|"
    records = {
        key + "meta": {
            "command": f"python language.py --condition {name}",
            "date": "today",
            "machine": {"cpu": "cpu"},
            "profile": dict(language.PROFILES[name], seeds=len(kd_values)),
        },
        key + "reference": {
            "teacher": dict(
                metrics, train=metrics, validation_perplexity=[30.0, 25.0, 40.0]
            ),
            "bayes": dict(metrics, entropy_rate=3.0),
        },
    }
    for method, values in (("kd", kd_values), ("pt_search", pt_values)):
        for seed, (kl, ppl) in enumerate(values):
            records[f"{key}run|{seed}|{method}"] = dict(
                metrics, kl=kl, perplexity=ppl, temperature=1.0, winner="w"
            )
    return records


def test_report_puts_both_conditions_side_by_side(tmp_path):
    kd_a, pt_a = [(1.0, 70.0), (1.2, 72.0)], [(1.1, 71.0), (1.2, 74.0)]
    kd_b, pt_b = [(2.0, 90.0), (2.2, 94.0)], [(1.5, 80.0), (1.9, 85.0)]
    records = {
        **_records("full", kd_a, pt_a),
        **_records("overconfident", kd_b, pt_b),
    }
    path = tmp_path / "language.json"
    path.write_text(json.dumps({"records": records}))
    summary = language.write_report(
        path, tmp_path / "language.md", "overconfident", "jax"
    )
    # The summary returned is the condition asked for.
    diff = summary["rows"]["pt_search"]["vs_kd"]["kl"]
    assert math.isclose(diff["mean"], (-0.5 - 0.3) / 2)
    assert math.isclose(diff["se"], np.std([-0.5, -0.3], ddof=1) / math.sqrt(2))
    text = (tmp_path / "language.md").read_text()
    # One side-by-side table with both conditions' paired differences:
    # condition A: perplexity +1, +2 (mean +1.50, SE 0.50); condition B:
    # -10, -9 (mean -9.50, SE 0.50).
    header = next(line for line in text.splitlines() if "Δ KD" in line)
    assert "full: perplexity" in header and "overconfident: KL" in header
    row = next(
        line
        for line in text.splitlines()
        if line.startswith("| PTLoss, searched") and "(+1.50 ± 0.50)" in line
    )
    assert "(-9.50 ± 0.50)" in row
    assert text.count("Target met") == 2
    # The teacher's validation curve: best after epoch 2 of 3.
    assert "lowest after epoch 2 of 3 (25.000)" in text
