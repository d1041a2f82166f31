"""The speed benchmarks: a quick run of every case, and their arithmetic."""

import json
import time

import keras

from benchmarks import harness
from benchmarks import render
from benchmarks import speed

CASES = ("loss", "distiller", "population", "search", "selection", "vocab")
FIELDS = {
    "loss": {"mode", "classes", "method", "inner"},
    "distiller": {"student", "teacher", "method", "teacher_outputs"},
    "population": {"method", "members", "step_flops", "flops_per_s"},
    "search": {"examples", "batch_size", "method", "student_epochs"},
    "selection": {"classes", "examples", "mode", "teacher"},
    "vocab": {"tokens", "classes", "method", "chunk_size", "peak_bytes"},
}


def test_training_flops_of_a_tiny_mlp_match_a_hand_count():
    # 3 -> 4 -> 2: 12 + 8 = 20 multiply-adds per example, 2 FLOPs each
    # forward, twice that backward: 120 per example, 5 examples, 2 members.
    assert speed.macs((3, 4, 2)) == 20
    assert speed.training_flops((3, 4, 2), batch_size=5, members=2) == 1200


def test_sizes_derived_from_the_settings():
    # Teacher: 40 h + h^2 + 10 h ~ 4.5 * (40 * 64 + 64 * 10) = 14,400.
    assert speed.teacher_widths((40, 64, 10), 4.5) == (40, 98, 98, 10)
    assert speed.kd_grid(6) == [1.0, 2.0, 3.0, 4.0, 6.0, 8.0]
    assert speed.kd_grid(2) == [1.0, 8.0]
    assert speed.chunk_rows(32000, 2**18) == 8
    assert speed.chunk_rows(128000, 2**18) == 2


def test_a_table_renders_hand_made_records():
    run = {"id": 0, "command": "c", "commit": "abc", "machine": "m",
           "date": "2026-12-07T08:00:00+00:00", "load": [None, None],
           "seconds": 3.0}  # fmt: skip
    record = {"backend": "jax", "run": 0, "examples": 4000, "batch_size": 64,
              "method": "KD tuning", "student_epochs": 60, "wall": 7.5,
              "cpu": 11.5, "ratio": 1.0, "ratio_q": [0.9, 1.1]}  # fmt: skip
    text = render.render(
        speed.TABLES["search"], {"runs": [run], "records": [record]}
    )
    assert text.splitlines()[2] == (
        "| jax | 4,000 | 64 | KD tuning | 60 | 7.50 | 11.50 | "
        "1.00 [0.90, 1.10] |"
    )
    assert text.endswith("· load unknown · 3 s\n")


# Once, under PyTorch (no compiling): the cases' code is the same on every
# backend, and the worker path is what the accuracy and language tests run
# through the command line.
if keras.backend.backend() == "torch":

    def test_quick_run_of_every_case_renders_its_table():
        run = harness.stamp("quick", time.perf_counter(), None, "test")
        for case in CASES:
            records = speed.CASES[case].run(**speed.CASES[case].sizes["quick"])
            records = [{"backend": "torch", "run": 0, **r} for r in records]
            data = {"runs": [{"id": 0, **run}], "records": records}
            json.dumps(data)  # plain records: what the harness stores
            for record in records:
                assert FIELDS[case] | {"wall", "cpu", "repeats"} <= set(record)
                assert record["wall"] > 0 and record["cpu"] >= 0
            text = render.render(speed.TABLES[case], data)
            body = text.split("\n\n")[0].splitlines()
            assert len(body) == 2 + len(records)
            if case == "population":
                population = data
        step = speed.training_flops((40, 8, 10), batch_size=32, members=2)
        assert {r["step_flops"] for r in population["records"]} == {step}
