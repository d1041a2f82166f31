"""docs/api.md is generated from the live docstrings and must be current."""

import ast
import doctest
import importlib.util
import inspect
import re
import subprocess
from pathlib import Path

import pytest

import keras_ptloss
from keras_ptloss import datasets

ROOT = Path(__file__).resolve().parent.parent


def _load_generator():
    path = ROOT / "docs" / "generate_api.py"
    spec = importlib.util.spec_from_file_location("generate_api", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


generate_api = _load_generator()
PUBLIC = generate_api.public_names(keras_ptloss)
DATA = generate_api.public_names(datasets)
ADVANCED = generate_api.advanced_names()
# Each documented name with the module that exports it.
DOCUMENTED = (
    [(keras_ptloss, name) for name in PUBLIC]
    + ADVANCED
    + [(datasets, name) for name in DATA]
)


def test_api_reference_is_current():
    expected = generate_api.render(keras_ptloss)
    current = (ROOT / "docs" / "api.md").read_text()
    assert current == expected, (
        "docs/api.md is stale: run `python docs/generate_api.py`"
    )


def test_every_public_name_has_a_docstring_and_a_section():
    text = (ROOT / "docs" / "api.md").read_text()
    missing_doc = [
        name
        for module, name in DOCUMENTED
        if not inspect.getdoc(getattr(module, name))
    ]
    assert missing_doc == []
    for _, name in DOCUMENTED:
        assert f"\n## {name}\n" in text
    # The data helpers are documented under their subpackage.
    data_part = text.split(f"\n# {generate_api.DATA_TITLE}\n", 1)[1]
    for name in DATA:
        assert f"keras_ptloss.datasets.{name}(" in data_part
    # The advanced names are documented under their modules, apart.
    advanced_part = text.split(f"\n# {generate_api.ADVANCED_TITLE}\n", 1)[1]
    advanced_part = advanced_part.split(f"\n# {generate_api.DATA_TITLE}\n")[0]
    for module, name in ADVANCED:
        assert name not in keras_ptloss.__all__
        assert f"{module.__name__}.{name}" in advanced_part


def test_public_names_exclude_submodules_and_private_names():
    assert "PTLoss" in PUBLIC
    assert "losses" not in PUBLIC
    assert all(not name.startswith("_") for name in PUBLIC + DATA)
    assert "load_mnist1d" in DATA
    assert set(PUBLIC).isdisjoint(DATA)


def test_guide_and_readme_link_the_api_reference():
    readme = (ROOT / "README.md").read_text()
    assert "docs/api.md" in readme
    assert "docs/guide.md" in readme
    assert "api.md" in (ROOT / "docs" / "guide.md").read_text()


def _docstring_examples():
    finder = doctest.DocTestFinder(recurse=False)
    cases = []
    for owner, name in DOCUMENTED:
        obj = getattr(owner, name)
        targets = [(name, obj)]
        if inspect.isclass(obj):
            for member, _, value in generate_api._own_members(obj):
                targets.append((f"{name}.{member}", value))
        for label, target in targets:
            module = inspect.getmodule(obj)
            globs = dict(vars(module)) if module else {}
            for test in finder.find(target, label, globs=globs):
                if test.examples:
                    cases.append(pytest.param(test, id=label))
    return cases


@pytest.mark.parametrize("test", _docstring_examples())
def test_docstring_example_runs(test):
    runner = doctest.DocTestRunner(
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    )
    runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{test.name}: {result.failed} example(s) failed"


# --- docs/design.md and the pointers to it -----------------------------------

DESIGN_SECTIONS = [
    "The loss",
    "The proxy teacher",
    "Choosing the coefficients",
    "The student-aware search",
    "Vocabulary scale",
    "Keras traps",
    "Baselines",
]
# Built from pieces so that this file does not match itself.
OUTSIDE_REFERENCES = ("DESIGN" + ".md", ".." + "/shared", "/work" + "/shared")


def _tracked_files():
    done = subprocess.run(
        ["git", "ls-files", "-z"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    )
    names = [name for name in done.stdout.decode().split("\0") if name]
    assert "README.md" in names
    return [ROOT / name for name in names if (ROOT / name).is_file()]


def test_design_document_has_exactly_its_sections():
    text = (ROOT / "docs" / "design.md").read_text()
    titles = re.findall(r"^## (.+)$", text, flags=re.M)
    assert titles == DESIGN_SECTIONS


def test_no_tracked_file_refers_outside_the_repository():
    offenders = []
    for path in _tracked_files():
        if path.relative_to(ROOT).as_posix() == "CHANGELOG.md":
            continue
        data = path.read_bytes()
        for reference in OUTSIDE_REFERENCES:
            if reference.encode() in data:
                offenders.append(f"{path.relative_to(ROOT)}: {reference}")
    assert offenders == []


def test_pointers_into_the_design_document_name_its_sections():
    # `docs/design.md, "The loss"`, `[design.md](design.md), "Keras traps"`.
    pointer = re.compile(
        r'design\.md\)?(?:,\s+|\s+\(|,\s+section\s+)"([^"\n]+)"'
    )
    found, wrong = 0, []
    for path in _tracked_files():
        if path.suffix not in (".py", ".md", ".ipynb"):
            continue
        if path.name == "design.md":
            continue
        for title in pointer.findall(path.read_text()):
            found += 1
            if title not in DESIGN_SECTIONS:
                wrong.append(f"{path.relative_to(ROOT)}: {title!r}")
    assert found > 0
    assert wrong == []


def test_readme_and_guide_link_the_design_document():
    assert "docs/design.md" in (ROOT / "README.md").read_text()
    assert "(design.md)" in (ROOT / "docs" / "guide.md").read_text()


def _documentation_and_code_lines(path):
    """Non-blank docstring-or-comment lines and code lines of one file."""
    source = path.read_text()
    lines = source.splitlines()
    docstring_lines = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(
            node,
            (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef),
        ):
            first = node.body[0] if node.body else None
            if (
                isinstance(first, ast.Expr)
                and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)
            ):
                docstring_lines.update(
                    range(first.lineno, first.end_lineno + 1)
                )
    documentation = code = 0
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if not text:
            continue
        if number in docstring_lines or text.startswith("#"):
            documentation += 1
        else:
            code += 1
    return documentation, code


def test_library_prose_is_at_most_035_of_its_code():
    counts = [
        _documentation_and_code_lines(path)
        for path in sorted((ROOT / "keras_ptloss").rglob("*.py"))
    ]
    documentation = sum(d for d, _ in counts)
    code = sum(c for _, c in counts)
    assert code > 5000, code  # the package was found and read
    assert documentation / code <= 0.35, (documentation, code)
