"""`python -m keras_ptloss`: help, the demo options, the benchmark launcher.

The tests that start a fresh Python process importing Keras (TensorFlow's
start-up lines, the command's own process) run on one backend,
`CHECK_BACKEND`: under the others they are not defined, so nothing is
skipped.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import keras
import pytest

from keras_ptloss import cli
from keras_ptloss.version import __version__

ROOT = Path(__file__).resolve().parent.parent
CHECK_BACKEND = "tensorflow"


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
        "--labelled-fraction",
        "--validation-fraction",
        "--test-fraction",
        "--noise-rate",
        "--teachers",
        "--teacher-epochs",
        "--student-epochs",
        "--order",
        "--mode",
        "--temperatures",
        "--standardized-temperatures",
        "--seeds",
        "--batch-size",
        "--learning-rate",
        "--output-dir",
        "--seed",
        "--verbose",
    ):
        assert option in out


def test_a_command_is_required(capsys):
    assert _exit_code([]) == 2
    assert "COMMAND" in capsys.readouterr().err


def test_benchmark_forwards_arguments_and_exit_status(tmp_path, monkeypatch):
    bench = tmp_path / "benchmarks"
    bench.mkdir()
    record = tmp_path / "argv.txt"
    (bench / "__init__.py").write_text("")
    (bench / "__main__.py").write_text(
        "import os, sys\n"
        f"open({str(record)!r}, 'w').write('\\n'.join(sys.argv[1:]))\n"
        "open(os.path.join(os.getcwd(), 'cwd.txt'), 'w').write('x')\n"
        "sys.exit(3)\n"
    )
    monkeypatch.setattr(cli, "benchmarks_dir", lambda: bench)
    argv = ["benchmark", "run", "loss", "--quick", "--set", "x=1"]
    assert cli.main(argv) == 3
    assert record.read_text().splitlines() == [
        "run",
        "loss",
        "--quick",
        "--set",
        "x=1",
    ]
    # It runs from the checkout root (the folder above benchmarks/).
    assert (tmp_path / "cwd.txt").exists()
    assert cli.main(["benchmark", "--", "--help"]) == 3
    assert record.read_text().splitlines() == ["--help"]


def test_missing_benchmarks_folder_is_a_clear_error(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.setattr(cli, "benchmarks_dir", lambda: tmp_path / "none")
    assert cli.main(["benchmark", "list"]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "none") in err
    assert "not part of the installed package" in err


def test_benchmark_reaches_this_checkouts_harness(capfd):
    assert cli.benchmarks_dir() == ROOT / "benchmarks"
    assert cli.main(["benchmark", "list"]) == 0
    out = capfd.readouterr().out
    assert "loss" in out.split()


def test_backend_line_names_the_environment_variable(monkeypatch):
    monkeypatch.setenv("KERAS_BACKEND", "torch")
    assert cli.backend_line() == "KERAS_BACKEND=torch"
    monkeypatch.delenv("KERAS_BACKEND")
    assert "default backend, tensorflow" in cli.backend_line()


# What TensorFlow prints on import, recorded on the processors and settings
# users have: whether oneDNN's notice appears depends on the processor (on
# by default with AVX-512, off on many AMD EPYCs) and on
# TF_ENABLE_ONEDNN_OPTS; cpu_feature_guard's lines appear below log level 2;
# TensorFlow < 2.18 wrote a dated prefix. Each variant is a list of lines.
_ABSL = (
    "WARNING: All log messages before absl::InitializeLog() is called are "
    "written to STDERR"
)
_ONEDNN = (
    "I0000 00:00:1796588388.502909    8492 port.cc:153] oneDNN custom "
    "operations are on. You may see slightly different numerical results "
    "due to floating-point round-off errors from different computation "
    "orders. To turn them off, set the environment variable "
    "`TF_ENABLE_ONEDNN_OPTS=0`."
)
_GUARD = (
    "I0000 00:00:1796588383.475196    8408 cpu_feature_guard.cc:227] This "
    "TensorFlow binary is optimized to use available CPU instructions in "
    "performance-critical operations."
)
_ENABLE_AVX512 = (
    "To enable the following instructions: AVX2 AVX512F AVX512_VNNI "
    "AVX512_BF16 AVX512_FP16 AVX_VNNI AMX_TILE AMX_INT8 AMX_BF16 FMA, in "
    "other operations, rebuild TensorFlow with the appropriate compiler "
    "flags."
)
_ENABLE_AVX2 = (
    "To enable the following instructions: AVX2 FMA, in other operations, "
    "rebuild TensorFlow with the appropriate compiler flags."
)
STARTUP_VARIANTS = {
    "oneDNN on, level 0 (Intel, AVX-512)": [
        _ABSL,
        _ONEDNN,
        _GUARD,
        _ENABLE_AVX512,
        _ABSL,
        _ONEDNN,
    ],
    "oneDNN off, level 0 (AMD, or TF_ENABLE_ONEDNN_OPTS=0)": [
        _ABSL,
        _GUARD,
        _ENABLE_AVX2,
    ],
    "oneDNN on, level 2": [_ABSL, _ONEDNN, _ABSL, _ONEDNN],
    "oneDNN off, level 2": [],
    "TensorFlow 2.16, dated prefix": [
        "2024-01-01 10:00:00.000000: I tensorflow/core/util/port.cc:113] "
        "oneDNN custom operations are on.",
        "2024-01-01 10:00:00.100000: I tensorflow/core/platform/"
        "cpu_feature_guard.cc:210] This TensorFlow binary is optimized to "
        "use available CPU instructions in performance-critical operations.",
        _ENABLE_AVX2,
    ],
}
NOISE = [line for lines in STARTUP_VARIANTS.values() for line in lines]


@pytest.mark.parametrize("variant", sorted(STARTUP_VARIANTS))
def test_every_recorded_start_up_variant_is_noise(variant):
    lines = STARTUP_VARIANTS[variant]
    assert [line for line in lines if not cli.is_startup_noise(line)] == []


@pytest.mark.parametrize(
    "line",
    [
        "E0000 00:00:1.0 1 op.cc:1] an error line",
        "W0000 00:00:1796588383.475196    8408 port.cc:153] a warning",
        "I0000 00:00:1796588383.475196    8408 other.cc:1] other notice",
        "Traceback (most recent call last):",
        "UserWarning: oneDNN custom operations are on.",
        "",
    ],
)
def test_other_lines_are_not_noise(line):
    assert not cli.is_startup_noise(line)


@pytest.mark.parametrize("variant", sorted(STARTUP_VARIANTS))
def test_startup_noise_is_dropped_and_errors_are_kept(variant, capfd):
    script = (
        "import sys, warnings\n"
        f"for line in {STARTUP_VARIANTS[variant]!r}:\n"
        "    print(line, file=sys.stderr, flush=True)\n"
        "print('demo output', flush=True)\n"
        "warnings.warn('a real warning')\n"
        "print('E0000 00:00:1.0 1 op.cc:1] an error line', file=sys.stderr)\n"
        "raise ValueError('boom')\n"
    )
    status = cli.run_quietly([sys.executable, "-c", script])
    assert status == 1
    captured = capfd.readouterr()
    assert "demo output" in captured.out
    err = captured.err
    for line in NOISE:
        assert line not in err
    assert "UserWarning: a real warning" in err
    assert "an error line" in err
    assert "Traceback (most recent call last)" in err
    assert err.rstrip().endswith("ValueError: boom")


def test_demo_runs_in_a_child_with_the_log_level_set(monkeypatch):
    calls = []

    def fake_quietly(cmd, env=None, stderr=None):
        calls.append((cmd, env))
        return 5

    monkeypatch.setattr(cli, "run_quietly", fake_quietly)
    for before, after in ((None, "2"), ("1", "2"), ("0", "2"), ("3", "3")):
        if before is None:
            monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
        else:
            monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", before)
        assert cli.main(["demo", "--quick", "--seed", "3"]) == 5
        cmd, env = calls[-1]
        assert cmd == [sys.executable, "-m", "keras_ptloss.demo"] + [
            "--quick",
            "--seed",
            "3",
        ]
        assert env["TF_CPP_MIN_LOG_LEVEL"] == after
        # The child imports this checkout's package, whatever is installed.
        assert env["PYTHONPATH"].split(os.pathsep)[0] == str(ROOT)


def test_bad_demo_options_fail_in_the_parent(capsys):
    assert _exit_code(["demo", "--mode", "nope"]) == 2
    assert "invalid choice" in capsys.readouterr().err
    for teachers in ("dirty", "noisy,noisy", ""):
        assert _exit_code(["demo", "--teachers", teachers]) == 2
        err = capsys.readouterr().err
        assert "--teachers" in err
        assert "expected comma-separated names among clean, noisy" in err


@pytest.mark.parametrize(
    "argv, orig_argv, expected",
    [
        (["-m"], ["python", "-m", "keras_ptloss", "demo"], True),
        (["-m"], ["python3.11", "-mkeras_ptloss"], True),
        (
            ["-m"],
            ["python", "-X", "dev", "-W", "error", "-Bm", "keras_ptloss"],
            True,
        ),
        (["-m"], ["python", "-m", "keras_ptloss.demo"], False),
        (["-m"], ["python", "-m", "pytest", "keras_ptloss"], False),
        (["-m"], ["python", "-c", "-m keras_ptloss"], False),
        (
            ["/venv/bin/keras-ptloss", "demo"],
            ["python", "/venv/bin/keras-ptloss"],
            True,
        ),
        (["C:\\venv\\Scripts\\keras-ptloss.exe"], ["python"], True),
        (["/venv/bin/keras-ptloss-old"], ["python"], False),
        (["-c"], ["python", "-c", "import keras_ptloss"], False),
        (
            ["my_script.py"],
            ["python", "my_script.py", "-m", "keras_ptloss"],
            False,
        ),
        ([], ["python"], False),
    ],
)
def test_started_as_command(argv, orig_argv, expected):
    assert cli.started_as_command(argv, orig_argv) is expected


def _run(args, env, cwd=None):
    """`python ARGS` in a subprocess, its output captured as text."""
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=300,
    )


def _python(code, env, cwd):
    return _run(["-c", code], env, cwd)


def _tensorflow_env():
    """TensorFlow's backend, this checkout's package, no log level set."""
    env = dict(os.environ, KERAS_BACKEND="tensorflow", PYTHONPATH=str(ROOT))
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    return env


STARTUP_MARKS = ("oneDNN", "cpu_feature_guard", "absl::InitializeLog")


# Timestamps and thread ids differ between two processes.
_LOG_PREFIX = re.compile(r"^([IWEF])\d{4} [\d:.]+\s+\d+ ")


def _start_up_lines(stderr):
    return [_LOG_PREFIX.sub(r"\1 ", line) for line in stderr.splitlines()]


# Fresh processes that import Keras, on one backend: most of them set
# their own (TensorFlow, whose start-up lines are the subject), and what
# they check does not depend on the backend the suite runs.
if keras.backend.backend() == CHECK_BACKEND:

    def test_demo_package_runs_as_a_module(tmp_path):
        """`python -m keras_ptloss.demo` is the same command as `... demo`."""
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        done = _run(["-m", "keras_ptloss.demo", "--help"], env, tmp_path)
        assert done.returncode == 0, done.stderr[-2000:]
        assert done.stdout.startswith("usage: python -m keras_ptloss demo")
        for option in ("--quick", "--num-samples", "--output-dir"):
            assert option in done.stdout

    def test_real_tensorflow_start_up_lines_are_all_recognised():
        """Whatever this machine's TensorFlow prints on import at level 2 (it
        may print nothing: that depends on the processor) is start-up noise."""
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", KERAS_BACKEND="jax")
        done = _run(["-c", "import tensorflow as tf; tf.constant(1) + 1"], env)
        assert done.returncode == 0, done.stderr[-2000:]
        lines = done.stderr.splitlines()
        assert [line for line in lines if not cli.is_startup_noise(line)] == []

    def test_the_command_prints_no_tensorflow_start_up_lines(tmp_path):
        """`python -m keras_ptloss` on TensorFlow, without a log level: its own
        process prints none of TensorFlow's start-up lines (a program that
        imports the package does: see the next tests)."""
        env = _tensorflow_env()
        done = _run(["-m", "keras_ptloss", "--version"], env, tmp_path)
        assert done.returncode == 0, done.stderr[-2000:]
        assert done.stdout.strip() == f"keras-ptloss {__version__}"
        assert not [m for m in STARTUP_MARKS if m in done.stderr], done.stderr

    @pytest.mark.parametrize(
        "argv, orig_argv",
        [
            (["-m"], ["python", "-m", "keras_ptloss", "--version"]),
            (["/venv/bin/keras-ptloss", "--version"], ["python", "x"]),
        ],
    )
    def test_in_the_command_keras_waits_for_the_cli(argv, orig_argv, tmp_path):
        """In the command's process the package imports no Keras (so the CLI
        can import it first, quietly), and the CLI then registers the classes;
        whatever TensorFlow prints on this processor."""
        code = (
            "import sys\n"
            f"sys.argv, sys.orig_argv = {argv!r}, {orig_argv!r}\n"
            "import keras_ptloss\n"
            "print('keras' in sys.modules, 'keras_ptloss.cli' in sys.modules)\n"
            "import keras_ptloss.cli\n"
            "import keras\n"
            "print(keras.saving.get_registered_object('keras_ptloss>PTLoss'))\n"
        )
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        done = _python(code, env, tmp_path)
        assert done.returncode == 0, done.stderr[-2000:]
        first, second = done.stdout.splitlines()[-2:]
        assert first == "False False"
        assert second == "<class 'keras_ptloss.losses.PTLoss'>"

    def test_the_console_script_is_quiet_and_registers_the_classes(tmp_path):
        """As the `keras-ptloss` script (its `sys.argv[0]`): no start-up lines,
        and the package's serializable classes are registered for loading."""
        code = (
            "import sys\n"
            "sys.argv = ['/venv/bin/keras-ptloss', '--version']\n"
            "from keras_ptloss.cli import main\n"
            "import keras\n"
            "print(keras.saving.get_registered_object('keras_ptloss>PTLoss'))\n"
            "sys.exit(main())\n"
        )
        done = _python(code, _tensorflow_env(), tmp_path)
        assert done.returncode == 0, done.stderr[-2000:]
        assert "keras_ptloss.losses.PTLoss" in done.stdout
        assert f"keras-ptloss {__version__}" in done.stdout
        assert not [m for m in STARTUP_MARKS if m in done.stderr], done.stderr

    def test_importing_the_package_changes_no_setting_beyond_keras(tmp_path):
        """A program that imports `keras_ptloss` keeps its own logging: it sees
        the start-up lines that `import keras` alone prints (whichever this
        processor makes TensorFlow print, none included), its standard error
        still works, and `os.environ` changes only as `import keras` alone
        changes it (TensorFlow may set variables)."""
        probe = (
            "import os, sys\n"
            "before = dict(os.environ)\n"
            "import {module}\n"
            "changed = [k for k in os.environ\n"
            "           if before.get(k) != os.environ[k]]\n"
            "print(sorted(changed))\n"
            "print(sys.stderr is sys.__stderr__)\n"
            "os.write(2, b'written to fd 2 after the import\\n')\n"
        )
        keras_alone = _python(
            probe.format(module="keras"), _tensorflow_env(), tmp_path
        )
        done = _python(
            probe.format(module="keras_ptloss"), _tensorflow_env(), tmp_path
        )
        for run in (keras_alone, done):
            assert run.returncode == 0, run.stderr[-2000:]
        assert done.stdout == keras_alone.stdout
        assert done.stdout.splitlines()[-1] == "True"
        lines = _start_up_lines(done.stderr)
        assert lines[-1] == "written to fd 2 after the import"
        assert lines == _start_up_lines(keras_alone.stderr)

    def test_import_quietly_drops_notices_and_keeps_errors(tmp_path):
        """A module that prints start-up notices, a warning and an error line
        through file descriptor 2, then fails: all but the notices show, and
        the import error propagates."""
        (tmp_path / "noisy_module.py").write_text(
            "import os, warnings\n"
            f"for line in {NOISE!r}:\n"
            "    os.write(2, (line + '\\n').encode())\n"
            "os.write(2, b'E0000 00:00:1.0 1 op.cc:1] an error line\\n')\n"
            "warnings.warn('a real warning')\n"
            "raise ImportError('boom')\n"
        )
        code = (
            "import sys\n"
            "from keras_ptloss.cli import import_quietly\n"
            "print('before', file=sys.stderr, flush=True)\n"
            "import_quietly('noisy_module')\n"
        )
        env = dict(
            os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(tmp_path)])
        )
        done = _python(code, env, tmp_path)
        assert done.returncode == 1
        # What importing the package itself printed (TensorFlow's notices on
        # that backend: a plain import is not filtered) comes before "before".
        err = done.stderr.split("before\n", 1)[1]
        for line in NOISE:
            assert line not in err
        assert "an error line" in err
        assert "UserWarning: a real warning" in err
        assert err.rstrip().endswith("ImportError: boom")
        # Standard error works again after the import.
        assert err.index("an error line") < err.index("Traceback")
