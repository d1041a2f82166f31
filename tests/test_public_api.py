"""The package's public API (`__all__`) and what `import keras_ptloss` does.

The library is `keras_ptloss` without its command line, data helpers and
demo: importing it loads none of `keras_ptloss.cli`, `keras_ptloss.datasets`
and `keras_ptloss.demo`, nor the optional packages they use, leaves
standard error alone, and registers the package's classes with Keras so
that a saved model loads (each checked in a fresh interpreter; the saved
model's on one backend, `FRESH_PROCESS_BACKEND`, under the others that test
is not defined, so nothing is skipped).
"""

import importlib
import inspect
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest

import keras_ptloss
from keras_ptloss.datasets import loaders

ROOT = Path(__file__).resolve().parent.parent
FRESH_PROCESS_BACKEND = "jax"
# Optional packages the data helpers and the demo use, never the library.
OPTIONAL = ("matplotlib", "mnist1d", "sklearn", "tensorflow_datasets")
OUTSIDE = ("keras_ptloss.cli", "keras_ptloss.datasets", "keras_ptloss.demo")


PUBLIC = [
    "PTLoss",
    "KDLoss",
    "pt_loss",
    "kd_loss",
    "DKDLoss",
    "LSKDLoss",
    "KDCELoss",
    "Poly1Loss",
    "TopKPTLoss",
    "precompute_top_k",
    "Distiller",
    "ReestimateCoefficients",
    "search_coefficients",
    "SearchResult",
    "select_coefficients",
    "SelectionResult",
    "calibrate",
    "CalibratedModel",
    "KDDistillation",
    "PTLossDistillation",
    "align_vocabulary",
]
# Documented, imported from their modules, not from the package.
ADVANCED = {
    "keras_ptloss.losses": ("lean_loss", "standardize_logits"),
    "keras_ptloss.baselines": (
        "dkd_loss",
        "dkd_terms",
        "kd_ce_loss",
        "lskd_loss",
        "pack_targets",
        "poly1_loss",
        "unpack_targets",
    ),
    "keras_ptloss.proxy": (
        "ProxyTeacherConvergenceError",
        "closeness",
        "proxy_teacher",
    ),
    "keras_ptloss.coefficients": ("convexity_margin",),
    "keras_ptloss.search": ("Candidate", "propose_candidates"),
    "keras_ptloss.population": ("StudentPopulation",),
    "keras_ptloss.top_k": (
        "pack_top_k",
        "select_top_k_coefficients",
        "top_k_proxy_teacher",
        "top_k_pt_loss",
        "unpack_top_k",
    ),
    "keras_ptloss.calibration": (
        "TemperatureScaling",
        "expected_calibration_error",
        "fit_temperature",
    ),
}


def test_all_is_exactly_the_public_surface():
    names = keras_ptloss.__all__
    assert names == PUBLIC
    assert len(names) <= 25
    assert len(names) == len(set(names))


@pytest.mark.parametrize(
    "module,name",
    [(module, name) for module, names in ADVANCED.items() for name in names],
)
def test_advanced_names_come_from_their_module_only(module, name):
    value = getattr(importlib.import_module(module), name)
    assert value.__module__.startswith("keras_ptloss.")
    assert name not in keras_ptloss.__all__
    assert name not in dir(keras_ptloss)
    with pytest.raises(AttributeError, match=name):
        getattr(keras_ptloss, name)


@pytest.mark.parametrize("name", keras_ptloss.__all__)
def test_every_name_in_all_is_importable(name):
    namespace = {}
    exec(f"from keras_ptloss import {name}", namespace)
    value = namespace[name]
    assert value is getattr(keras_ptloss, name)
    assert not inspect.ismodule(value)
    assert name in dir(keras_ptloss)


def test_every_name_comes_from_the_module_that_defines_it():
    # The lazy names resolve to the defining module's object, so a class
    # keeps one identity and one registered name however it is imported.
    for name in keras_ptloss.__all__:
        value = getattr(keras_ptloss, name)
        module = sys.modules[value.__module__]
        assert getattr(module, name) is value, name
        assert value.__module__.startswith("keras_ptloss."), name


def test_star_import_gives_exactly_all():
    namespace = {}
    exec("from keras_ptloss import *", namespace)
    del namespace["__builtins__"]
    assert sorted(namespace) == sorted(keras_ptloss.__all__)


def test_dir_lists_every_public_name_and_no_import_helper():
    listed = dir(keras_ptloss)
    assert listed == sorted(listed)
    assert set(keras_ptloss.__all__) <= set(listed)
    assert "__version__" in listed
    # What the package imports for its own use is private.
    assert "importlib" not in listed


def test_convergence_error_is_the_one_the_solver_raises():
    from keras_ptloss import _solver
    from keras_ptloss import proxy

    error = proxy.ProxyTeacherConvergenceError
    assert error is _solver.ProxyTeacherConvergenceError
    assert issubclass(error, RuntimeError)


def test_unknown_attribute_raises_attribute_error_naming_it():
    with pytest.raises(AttributeError, match="no_such_name") as info:
        keras_ptloss.no_such_name  # noqa: B018
    assert "keras_ptloss" in str(info.value)
    assert not hasattr(keras_ptloss, "no_such_name")
    with pytest.raises(ImportError, match="no_such_name"):
        exec("from keras_ptloss import no_such_name", {})


def test_data_helpers_live_in_their_subpackage_only():
    from keras_ptloss import datasets

    assert datasets.load_mnist1d is loaders.load_mnist1d
    for name in datasets.__all__:
        assert name not in keras_ptloss.__all__
        assert name not in dir(keras_ptloss)
        with pytest.raises(AttributeError, match=name):
            getattr(keras_ptloss, name)


def _defines_serializable(path):
    return "register_keras_serializable" in path.read_text()


def test_import_registers_every_module_that_defines_serializables():
    # A registration runs when its module is imported: a module that
    # registers classes and is left out of `_SERIALIZABLE` would make
    # `load_model` fail after `import keras_ptloss`.
    package = ROOT / "keras_ptloss"
    registering = sorted(
        f"keras_ptloss.{path.stem}"
        for path in package.glob("*.py")
        if _defines_serializable(path)
    )
    assert registering != []
    assert registering == sorted(keras_ptloss._SERIALIZABLE)
    # No subpackage (the data helpers, the demo) registers anything.
    nested = [
        path.relative_to(ROOT).as_posix()
        for path in package.glob("*/*.py")
        if _defines_serializable(path)
    ]
    assert nested == []


IMPORT_SCRIPT = textwrap.dedent(
    """
    import json
    import os
    import sys

    import keras


    def present():
        return {n for n, m in sys.modules.items() if m is not None}


    def fd2():
        info = os.fstat(2)
        return [info.st_dev, info.st_ino, info.st_mode]


    stderr, before_fd, before = sys.stderr, fd2(), present()
    import keras_ptloss

    added = sorted(present() - before)
    listed = [
        name
        for name in dir(keras_ptloss)
        if not name.startswith("_")
        and type(getattr(keras_ptloss, name)) is not type(keras_ptloss)
    ]
    same_stderr = sys.stderr is stderr and fd2() == before_fd
    registered = sorted(
        name
        for name in keras_ptloss.__all__
        if keras.saving.get_registered_object("keras_ptloss>" + name)
    )
    loss = keras_ptloss.PTLoss([0.5], temperature=2.0)
    value = float(loss([[0.2, 0.8]], [[0.0, 1.0]]))
    loaded = sorted(present())
    import keras_ptloss.datasets

    after_data = sorted(present())
    result = [added, listed, same_stderr, registered, loaded, after_data]
    result.append(value)
    print(json.dumps(result))
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


def _registered(names):
    return sorted(
        name
        for name in names
        if keras.saving.get_registered_object(f"keras_ptloss>{name}")
        is not None
    )


def test_import_loads_only_the_library_and_leaves_stderr_alone():
    added, listed, same_stderr, registered, loaded, after_data, value = _run(
        IMPORT_SCRIPT
    )
    assert value > 0
    # `dir` lists the public names, and no other name that is not a module
    # (the submodules the import loaded are attributes, as always).
    assert listed == sorted(keras_ptloss.__all__)
    assert "keras_ptloss.losses" in added
    assert same_stderr
    # Keras itself may load matplotlib and scikit-learn when they are
    # installed; keras_ptloss adds none of the optional packages.
    assert _top(added) & set(OPTIONAL) == set()
    assert _outside(loaded) == []
    # The import alone registers every public class that this process,
    # which has imported every module, has registered.
    assert registered == _registered(keras_ptloss.__all__)
    assert "PTLoss" in registered and "Distiller" in registered
    # The data helpers are a subpackage, imported on their own.
    assert "keras_ptloss.datasets.loaders" in after_data
    assert not any(n.startswith("keras_ptloss.demo") for n in after_data)
    assert "keras_ptloss.cli" not in after_data


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
    script = BLOCKED_SCRIPT.format(blocked=OPTIONAL) + IMPORT_SCRIPT
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    added, _, _, _, loaded, after_data, value = _run(script, env=env)
    assert value > 0
    assert _top(loaded) & set(OPTIONAL) == set()
    assert _outside(loaded) == []
    # The data package itself imports without its optional packages.
    assert "keras_ptloss.datasets.synthetic" in after_data


LOAD_SCRIPT = textwrap.dedent(
    """
    import json
    import sys

    import numpy as np

    {import_line}
    import keras

    model = keras.saving.load_model(sys.argv[1])
    x = np.load(sys.argv[2])
    config = model.loss.get_config()
    print(json.dumps([
        type(model.loss).__module__ + "." + type(model.loss).__name__,
        config["coefficients"],
        config["temperature"],
        keras.ops.convert_to_numpy(model.predict(x, verbose=0)).tolist(),
    ]))
    """
)


def _load_in_fresh_process(path, inputs, import_line):
    return subprocess.run(
        [
            sys.executable,
            "-c",
            LOAD_SCRIPT.format(import_line=import_line),
            str(path),
            str(inputs),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )


# Registration on import does not depend on the backend, and saving and
# loading these classes in one process is tested on every backend
# (tests/test_losses.py, tests/test_calibration.py): the fresh process that
# loads runs on one backend.
if keras.backend.backend() == FRESH_PROCESS_BACKEND:

    def test_saved_model_loads_in_a_fresh_process_after_import(tmp_path):
        """A `.keras` file compiled with a PTLoss and holding a registered layer
        loads after `import keras_ptloss` alone; without it, Keras cannot find
        the classes (so the import is what registers them)."""
        rng = np.random.default_rng(0)
        x = rng.normal(size=(5, 4)).astype("float32")
        model = keras.Sequential(
            [
                keras.Input((4,)),
                keras.layers.Dense(3),
                keras_ptloss.calibration.TemperatureScaling(1.5),
            ]
        )
        model.compile(
            optimizer="sgd",
            loss=keras_ptloss.PTLoss([0.5, 0.1], temperature=2.0),
        )
        # The outputs, computed here independently: (x @ W + b) / 1.5.
        kernel, bias = (np.asarray(w) for w in model.layers[0].get_weights())
        expected = (x @ kernel + bias) / 1.5
        path, inputs = tmp_path / "model.keras", tmp_path / "x.npy"
        model.save(path)
        np.save(inputs, x)

        done = _load_in_fresh_process(path, inputs, "import keras_ptloss")
        assert done.returncode == 0, done.stderr[-3000:]
        name, coefficients, temperature, outputs = json.loads(
            done.stdout.strip().splitlines()[-1]
        )
        assert name == "keras_ptloss.losses.PTLoss"
        np.testing.assert_allclose(coefficients, [0.5, 0.1])
        assert temperature == 2.0
        np.testing.assert_allclose(outputs, expected, rtol=1e-5, atol=1e-6)

        control = _load_in_fresh_process(path, inputs, "")
        assert control.returncode != 0
        assert re.search(
            r"Could not locate class '(TemperatureScaling|PTLoss)'",
            control.stderr,
        ), control.stderr[-3000:]
