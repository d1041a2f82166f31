"""The README's two commands and what CI and the tests run stay identical.

- The test command is, verbatim, the command `.ci/run` executes.
- The demo command installs what the test command installs, minus the test
  extra, then runs `python -m keras_ptloss demo`; tests/test_demo.py runs
  that same command (plus `--quick`), taken from the README.
- The README's Python examples run as written, at a smaller size (under
  PyTorch only, like the notebooks: they are backend-agnostic
  documentation, not library code).
"""

import re
import shlex
from pathlib import Path

import keras
import pytest
import tomllib

from keras_ptloss import CalibratedModel
from keras_ptloss import Distiller
from keras_ptloss import SearchResult
from tests.utils import readme_commands

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DEMO_RUN = "python -m keras_ptloss demo"


def _ci_commands():
    lines = (ROOT / ".ci" / "run").read_text().splitlines()
    return [
        line.strip()
        for line in lines
        if line.strip()
        and not line.startswith("#")
        and not line.startswith(("set ", "cd "))
    ]


def test_readme_test_command_is_what_ci_runs():
    assert _ci_commands() == [readme_commands()["test"]]


def test_readme_demo_command_matches_the_test_install_and_runs_the_demo():
    commands = readme_commands()
    install, run = (part.strip() for part in commands["demo"].split("&&"))
    test_install, hub_install, test_run = (
        part.strip() for part in commands["test"].split("&&")
    )
    assert run == DEMO_RUN
    assert test_run == "bash scripts/test.sh"
    # KerasHub without its tensorflow-text requirement, which would install
    # a second TensorFlow distribution over tensorflow-cpu (README).
    assert hub_install == (
        "python -m pip install -c constraints.txt --no-deps keras-hub"
    )
    assert install == test_install.replace('".[all,test]"', '".[all]"')
    assert install != test_install


def test_demo_dependencies_are_in_the_extra_the_readme_installs():
    match = re.search(r'-e "\.\[(.*?)\]"', readme_commands()["demo"])
    extras = match.group(1).split(",")
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    project = config["project"]
    installed = set(project["dependencies"])
    for extra in extras:
        installed |= set(project["optional-dependencies"][extra])
    names = {re.split(r"[<>=!~ \[]", req)[0] for req in installed}
    # Everything the demo imports beyond the standard library, on every
    # backend a user may pick.
    needed = {"keras", "numpy", "scipy", "mnist1d", "matplotlib"}
    backends = {"tensorflow-cpu", "jax", "torch"}
    assert needed | backends <= names


def test_readme_commands_are_valid_shell():
    for command in readme_commands().values():
        assert shlex.split(command)


def test_ci_script_runs_the_test_command_from_the_repository_root():
    text = (ROOT / ".ci" / "run").read_text()
    assert 'cd "$(dirname "$0")/.."' in text
    assert "set -euo pipefail" in text


def test_readme_links_exist():
    text = README.read_text()
    for target in re.findall(r"\]\(([^)#]+)\)", text):
        if "://" in target:
            continue
        if target == "BENCHMARKS.md":
            continue  # rendered by `python -m benchmarks report`
        assert (ROOT / target).exists(), target


def _github_anchor(heading):
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def test_links_into_benchmarks_md_name_its_sections():
    headings = re.findall(
        r"^#+ (.+)$", (ROOT / "BENCHMARKS.md").read_text(), re.M
    )
    anchors = {_github_anchor(h) for h in headings}
    for path in [README, *sorted((ROOT / "docs").glob("*.md"))]:
        for anchor in re.findall(r"BENCHMARKS\.md#([\w-]+)", path.read_text()):
            assert anchor in anchors, (path.name, anchor)


def _python_blocks():
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


# The examples at a size that runs in seconds: fewer examples and epochs.
SHRINK = (
    (r"num_samples=\d+", "num_samples=1000"),
    (r"epochs=\d+", "epochs=2"),
)


def _shrunk(block):
    for pattern, small in SHRINK:
        block = re.sub(pattern, small, block)
    return block


def test_readme_opens_with_the_install_and_the_recommended_example():
    first_screen = "\n".join(README.read_text().splitlines()[:40])
    assert "pip install" in first_screen
    recommended = _python_blocks()[0]
    assert recommended in first_screen
    assert len(recommended.splitlines()) <= 25
    for call in (
        "load_mnist1d(",
        "search_coefficients(",
        "print(result.summary())",
        "student = result.student",
        "result.build_distiller(teacher, build_student())",
        "distiller.fit(",
    ):
        assert call in recommended, call


def test_readme_shows_the_other_ways_to_use_it():
    others = "\n".join(_python_blocks()[1:])
    for call in (
        "loss=PTLoss(",
        "Distiller(teacher, build_student(), result.loss)",
        "ReestimateCoefficients(",
        "select_coefficients(",
        "TopKPTLoss(",
        "precompute_top_k(",
        "KDDistillation(",
        "calibrate(",
    ):
        assert call in others, call


def test_readme_states_the_teacher_output_rule_once():
    text = README.read_text()
    assert text.count("teacher_from_logits=True") == 1
    assert "teacher_from_logits=False" in text


def test_readme_is_at_most_220_lines():
    assert len(README.read_text().splitlines()) <= 220


if keras.backend.backend() == "torch":

    def test_readme_python_examples_run(capsys):
        blocks = _python_blocks()
        namespace = {"__name__": "readme"}
        exec(compile(_shrunk(blocks[0]), str(README), "exec"), namespace)
        result, student = namespace["result"], namespace["student"]
        assert isinstance(result, SearchResult)
        assert result.cost["student_epochs"] <= 6 * 2
        assert isinstance(student, CalibratedModel)
        assert student.temperature == result.calibration["temperature"]
        retrained = namespace["distiller"]
        assert isinstance(retrained, Distiller)
        assert int(retrained.optimizer.iterations) > 0
        out = capsys.readouterr().out
        assert "Student-aware search" in out
        assert "calibrated: T = " in out
        for block in blocks[1:]:
            exec(compile(_shrunk(block), str(README), "exec"), namespace)
        assert namespace["selection"].coefficients.shape == (5,)
        assert tuple(namespace["distiller"].coefficients.shape) == (5,)
        assert isinstance(namespace["calibrated"], CalibratedModel)


def test_readme_states_the_default_backend():
    text = README.read_text()
    assert "KERAS_BACKEND" in text
    assert "default, `tensorflow`" in text


@pytest.mark.parametrize(
    "section",
    [
        "## What PTLoss is",
        "## When it helps",
        "## Other ways to use it",
        "## Cost",
        "## Documentation",
    ],
)
def test_readme_sections_present(section):
    assert section in README.read_text()
