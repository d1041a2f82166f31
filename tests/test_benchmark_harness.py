"""The speed benchmarks' shared command line and driver (benchmarks/harness.py).

Pure Python: no backend is imported, so the file runs the same under every
`KERAS_BACKEND`.
"""

import json
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import harness  # noqa: E402
import timing  # noqa: E402

OPTIONS = [
    ("--samples", 100, "examples"),
    ("--classes", [10, 100], None),
    ("--min-time", 0.02, None),
    ("--hidden", "64-64", None),
    ("--budget", None, "seconds", float),
]


def parse(argv, quick=None):
    parser = harness.speed_parser(__doc__, "tiny", 60.0, OPTIONS)
    return harness.parse(parser, argv, quick=quick)


def test_option_types_follow_their_defaults():
    args = parse(
        [
            "--samples",
            "7",
            "--classes",
            "3",
            "4",
            "--min-time",
            "0.5",
            "--hidden",
            "8-8",
            "--budget",
            "2",
        ]
    )
    assert args.samples == 7
    assert args.classes == [3, 4]
    assert args.min_time == 0.5
    assert args.hidden == "8-8"
    assert args.budget == 2.0 and isinstance(args.budget, float)


def test_defaults_and_the_common_options():
    args = parse([])
    assert (args.samples, args.classes, args.budget) == (100, [10, 100], None)
    assert args.backends == ["jax", "tensorflow", "torch"]
    assert (args.threads, args.seed, args.backend_timeout) == (1, 0, 60.0)
    assert args.backend is None and args.worker_output is None
    assert args.results_dir == str(timing.RESULTS)


def test_quick_applies_its_limits_and_writes_to_the_ignored_folder():
    def shrink(args):
        args.samples = 5

    args = parse(["--quick"], quick=shrink)
    assert args.samples == 5
    assert args.results_dir == str(timing.QUICK_RESULTS)
    # Without --quick the limits are not applied.
    assert parse([], quick=shrink).samples == 100


def test_a_bad_choice_names_the_option(capsys):
    with pytest.raises(SystemExit):
        parse(["--backends", "numpy"])
    assert "--backends" in capsys.readouterr().err


def test_settings_reads_the_named_arguments_then_the_constants():
    args = parse(["--samples", "3"])
    recorded = harness.settings(args, ["samples", "seed"], order=5)
    assert list(recorded) == ["samples", "seed", "order"]
    assert recorded == {"samples": 3, "seed": 0, "order": 5}


def test_timed_rounds_runs_every_method_once_a_round_in_shuffled_order():
    calls = []

    def method(name, seconds):
        def run():
            calls.append(name)
            return seconds, seconds / 2

        return run

    methods = {"a": method("a", 1.0), "b": method("b", 3.0)}
    wall, cpu = harness.timed_rounds(methods, rounds=4, seed=0)
    assert wall == {"a": [1.0] * 4, "b": [3.0] * 4}
    assert cpu == {"a": [0.5] * 4, "b": [1.5] * 4}
    assert sorted(calls) == ["a"] * 4 + ["b"] * 4
    # Each round holds both methods once.
    rounds = [sorted(calls[i : i + 2]) for i in range(0, 8, 2)]
    assert rounds == [["a", "b"]] * 4


def test_measured_keeps_the_results_and_notes_the_skipped():
    lines = []
    results = [
        {"backend": "jax", "cases": []},
        {"backend": "torch", "skipped": "stopped after 9 s"},
    ]
    assert timing.measured(results, lines) == [results[0]]
    assert lines == ["- **torch not measured**: stopped after 9 s"]


def test_worker_env_pins_threads_and_selects_the_backend(monkeypatch):
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    monkeypatch.setenv("PYTHONPATH", "elsewhere")
    env = harness.worker_env("jax", 1)
    assert env["KERAS_BACKEND"] == "jax"
    assert env["OMP_NUM_THREADS"] == "1"
    assert env["XLA_FLAGS"] == (
        "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    )
    assert env["PYTHONPATH"] == os.pathsep.join([str(timing.ROOT), "elsewhere"])
    # XLA's flags concern JAX on one thread only.
    assert "XLA_FLAGS" not in harness.worker_env("jax", 2)
    torch_env = harness.worker_env("torch", 1)
    assert "XLA_FLAGS" not in torch_env
    assert torch_env["KERAS_BACKEND"] == "torch"


def steps(calls):
    def run_backend(args):
        calls.append(("run", args.backend))
        return {"backend": args.backend, "value": 3}

    def to_markdown(data):
        return f"# {data['name']}: {len(data['results'])} result(s)"

    def make_data(results):
        return {"settings": {"n": 1}}

    return run_backend, to_markdown, make_data


def test_run_parent_in_a_worker_writes_the_measurement(tmp_path):
    output = tmp_path / "worker.json"
    args = parse(["--backend", "jax", "--worker-output", str(output)])
    calls = []
    data = harness.run_parent(__file__, "x", [], args, steps(calls))
    assert data is None
    assert calls == [("run", "jax")]
    assert json.loads(output.read_text()) == {"backend": "jax", "value": 3}


def test_markdown_only_rewrites_the_section_from_the_json(tmp_path):
    stored = {"name": "x", "results": [{"backend": "jax"}] * 2}
    (tmp_path / "x.json").write_text(json.dumps(stored))
    args = parse(["--markdown-only", "--results-dir", str(tmp_path)])
    calls = []
    assert harness.run_parent(__file__, "x", [], args, steps(calls)) is None
    assert calls == []
    assert (tmp_path / "x.md").read_text() == "# x: 2 result(s)\n"
