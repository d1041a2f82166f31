"""`python -m keras_ptloss`: help, the demo options, the benchmark launcher."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from keras_ptloss import cli
from keras_ptloss.version import __version__

ROOT = Path(__file__).resolve().parent.parent


def _exit_code(argv):
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    return info.value.code


def test_help_lists_the_subcommands_and_the_default_backend(capsys):
    assert _exit_code(["--help"]) == 0
    out = capsys.readouterr().out
    assert "demo" in out and "benchmark" in out
    assert "KERAS_BACKEND" in out
    assert "default is tensorflow" in " ".join(out.split())


def test_version(capsys):
    assert _exit_code(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"keras-ptloss {__version__}"


def test_demo_help_lists_its_options(capsys):
    assert _exit_code(["demo", "--help"]) == 0
    out = capsys.readouterr().out
    for option in (
        "--quick",
        "--num-samples",
        "--teacher-epochs",
        "--student-epochs",
        "--order",
        "--mode",
        "--temperature",
        "--output-dir",
        "--seed",
    ):
        assert option in out


def test_a_command_is_required(capsys):
    assert _exit_code([]) == 2
    assert "COMMAND" in capsys.readouterr().err


def test_unknown_benchmark_is_rejected(capsys):
    assert _exit_code(["benchmark", "nope"]) == 2
    assert "invalid choice" in capsys.readouterr().err


def test_benchmark_forwards_arguments_and_exit_status(tmp_path, monkeypatch):
    bench = tmp_path / "benchmarks"
    bench.mkdir()
    record = tmp_path / "argv.txt"
    (bench / "accuracy.py").write_text(
        "import os, sys\n"
        f"open({str(record)!r}, 'w').write('\\n'.join(sys.argv[1:]))\n"
        "open(os.path.join(os.getcwd(), 'cwd.txt'), 'w').write('x')\n"
        "sys.exit(3)\n"
    )
    monkeypatch.setattr(cli, "benchmarks_dir", lambda: bench)
    argv = ["benchmark", "accuracy", "--quick", "--seeds", "3", "-x"]
    assert cli.main(argv) == 3
    assert record.read_text().splitlines() == ["--quick", "--seeds", "3", "-x"]
    # The script runs from the checkout root (the folder above benchmarks/).
    assert (tmp_path / "cwd.txt").exists()
    assert cli.main(["benchmark", "accuracy", "--", "--help"]) == 3
    assert record.read_text().splitlines() == ["--help"]


def test_missing_benchmarks_folder_is_a_clear_error(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.setattr(cli, "benchmarks_dir", lambda: tmp_path / "none")
    assert cli.main(["benchmark", "loss-speed", "--quick"]) == 2
    err = capsys.readouterr().err
    assert "loss_speed.py" in err
    assert "not part of the installed package" in err


def test_benchmark_names_match_the_scripts_of_this_checkout():
    assert cli.benchmarks_dir() == ROOT / "benchmarks"
    missing = [
        script
        for script in cli.BENCHMARKS.values()
        if not (ROOT / "benchmarks" / script).is_file()
    ]
    assert missing == []


@pytest.mark.parametrize("name", sorted(cli.BENCHMARKS))
def test_benchmark_help_runs_through_the_cli(name, capfd):
    """Each benchmark script exists, takes --help, and the CLI reaches it."""
    assert cli.main(["benchmark", name, "--help"]) == 0
    out = capfd.readouterr().out
    assert "--quick" in out


def test_backend_line_names_the_environment_variable(monkeypatch):
    monkeypatch.setenv("KERAS_BACKEND", "torch")
    assert cli.backend_line() == "KERAS_BACKEND=torch"
    monkeypatch.delenv("KERAS_BACKEND")
    assert "default backend, tensorflow" in cli.backend_line()


def test_demo_package_runs_as_a_module(tmp_path):
    """`python -m keras_ptloss.demo` is the same command as `... demo`."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run(
        [sys.executable, "-m", "keras_ptloss.demo", "--help"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("usage: python -m keras_ptloss demo")
    for option in ("--quick", "--num-samples", "--output-dir"):
        assert option in done.stdout
