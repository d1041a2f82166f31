"""The package's public API (`__all__`) and what `import keras_ptloss` loads.

The library is `keras_ptloss` without its data helpers and demo: importing
it loads neither `keras_ptloss.datasets` nor `keras_ptloss.demo`, nor the
optional packages they use (checked in a fresh interpreter).
"""

import inspect
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import keras_ptloss

ROOT = Path(__file__).resolve().parent.parent
# Optional packages the data helpers and the demo use, never the library.
OPTIONAL = ("matplotlib", "mnist1d", "sklearn", "tensorflow_datasets")
OUTSIDE = ("keras_ptloss.datasets", "keras_ptloss.demo")


def test_all_lists_unique_public_names_only():
    names = keras_ptloss.__all__
    assert len(names) == len(set(names))
    assert [name for name in names if name.startswith("_")] == []
    assert "ProxyTeacherConvergenceError" in names


@pytest.mark.parametrize("name", keras_ptloss.__all__)
def test_every_name_in_all_is_importable(name):
    namespace = {}
    exec(f"from keras_ptloss import {name}", namespace)
    value = namespace[name]
    assert value is getattr(keras_ptloss, name)
    assert not inspect.ismodule(value)
    assert name in dir(keras_ptloss)


def test_star_import_gives_exactly_all():
    namespace = {}
    exec("from keras_ptloss import *", namespace)
    del namespace["__builtins__"]
    assert sorted(namespace) == sorted(keras_ptloss.__all__)


def test_convergence_error_is_the_one_the_solver_raises():
    from keras_ptloss import proxy

    error = keras_ptloss.ProxyTeacherConvergenceError
    assert error is proxy.ProxyTeacherConvergenceError
    assert issubclass(error, RuntimeError)


def test_unknown_attribute_raises_attribute_error():
    with pytest.raises(AttributeError, match="no_such_name"):
        keras_ptloss.no_such_name  # noqa: B018
    assert not hasattr(keras_ptloss, "no_such_name")


def test_data_names_keep_their_old_import_paths():
    from keras_ptloss import datasets
    from keras_ptloss.datasets import loaders
    from keras_ptloss.datasets import synthetic

    for name in datasets.__all__:
        assert getattr(keras_ptloss, name) is getattr(datasets, name)
    assert keras_ptloss.load_mnist1d is loaders.load_mnist1d
    assert keras_ptloss.GaussianMixture is synthetic.GaussianMixture
    assert set(datasets.__all__) <= set(keras_ptloss.__all__)


IMPORT_SCRIPT = textwrap.dedent(
    """
    import json
    import sys

    import keras


    def present():
        return {n for n, m in sys.modules.items() if m is not None}


    before = present()
    import keras_ptloss

    loss = keras_ptloss.PTLoss([0.5], temperature=2.0)
    value = float(loss([[0.2, 0.8]], [[0.0, 1.0]]))
    added = sorted(present() - before)
    loaded = sorted(present())
    from keras_ptloss import load_digits

    after_lazy = sorted(present())
    print(json.dumps([added, loaded, after_lazy, value]))
    """
)


def _run(script, env=None):
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _top(names):
    return {name.split(".")[0] for name in names}


def _outside(names):
    return [n for n in names if n.startswith(OUTSIDE)]


def test_import_loads_neither_the_demo_nor_the_data_helpers():
    added, loaded, after_lazy, value = _run(IMPORT_SCRIPT)
    assert value > 0
    assert "keras_ptloss.losses" in added
    # Keras itself may load matplotlib and scikit-learn when they are
    # installed; keras_ptloss adds none of the optional packages.
    assert _top(added) & set(OPTIONAL) == set()
    assert _outside(loaded) == []
    # A data name loads the data package on first use.
    assert "keras_ptloss.datasets.loaders" in after_lazy
    assert not any(n.startswith("keras_ptloss.demo") for n in after_lazy)


# `None` in `sys.modules` is how Python marks a module as absent: importing
# it raises ModuleNotFoundError, `importlib.util.find_spec` returns None.
BLOCKED_SCRIPT = textwrap.dedent(
    """
    import sys

    for name in {blocked!r}:
        sys.modules[name] = None
    """
)


def test_library_imports_and_runs_without_the_optional_packages():
    script = BLOCKED_SCRIPT.format(blocked=OPTIONAL) + IMPORT_SCRIPT.replace(
        "from keras_ptloss import load_digits", "import keras_ptloss.datasets"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    added, loaded, after_lazy, value = _run(script, env=env)
    assert value > 0
    assert _top(loaded) & set(OPTIONAL) == set()
    assert _outside(loaded) == []
    # The data package itself imports without its optional packages.
    assert "keras_ptloss.datasets.synthetic" in after_lazy
