"""docs/api.md is generated from the live docstrings and must be current."""

import doctest
import importlib.util
import inspect
from pathlib import Path

import pytest

import keras_ptloss

ROOT = Path(__file__).resolve().parent.parent


def _load_generator():
    path = ROOT / "docs" / "generate_api.py"
    spec = importlib.util.spec_from_file_location("generate_api", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


generate_api = _load_generator()
PUBLIC = generate_api.public_names(keras_ptloss)


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
        for name in PUBLIC
        if not inspect.getdoc(getattr(keras_ptloss, name))
    ]
    assert missing_doc == []
    for name in PUBLIC:
        assert f"\n## {name}\n" in text


def test_public_names_exclude_submodules_and_private_names():
    assert "PTLoss" in PUBLIC
    assert "losses" not in PUBLIC
    assert all(not name.startswith("_") for name in PUBLIC)


def test_guide_and_readme_link_the_api_reference():
    readme = (ROOT / "README.md").read_text()
    assert "docs/api.md" in readme
    assert "docs/guide.md" in readme
    assert "api.md" in (ROOT / "docs" / "guide.md").read_text()


def _docstring_examples():
    finder = doctest.DocTestFinder(recurse=False)
    cases = []
    for name in PUBLIC:
        obj = getattr(keras_ptloss, name)
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
