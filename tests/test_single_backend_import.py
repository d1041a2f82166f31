"""The package imports and works with only the current backend available."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras

from tests.utils import BACKEND

ROOT = Path(__file__).resolve().parent.parent

# Top-level names of the other backends' distributions (and their helpers).
OTHERS = {
    "tensorflow": [
        "jax",
        "jaxlib",
        "jax_plugins",
        "torch",
        "torchgen",
        "functorch",
    ],
    "jax": [
        "tensorflow",
        "tensorflow_datasets",
        "tf_keras",
        "torch",
        "torchgen",
        "functorch",
    ],
    "torch": [
        "tensorflow",
        "tensorflow_datasets",
        "tf_keras",
        "jax",
        "jaxlib",
        "jax_plugins",
    ],
}[BACKEND]

SCRIPT = textwrap.dedent(
    """
    import numpy as np

    import keras_ptloss
    from keras_ptloss import Distiller
    from keras_ptloss import PTLoss
    from keras_ptloss import select_coefficients

    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(3), size=64)
    labels = rng.integers(0, 3, size=64)
    result = select_coefficients(probs, labels, order=2, verbose=0)
    loss = PTLoss(result.coefficients)
    value = float(loss(probs, np.zeros((64, 3))))
    import keras

    def mlp():
        return keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])

    distiller = Distiller(
        mlp(), mlp(), PTLoss(teacher_from_logits=True), student_loss_weight=0
    )
    distiller.compile(optimizer="sgd")
    distiller.fit(rng.normal(size=(8, 4)), epochs=1, verbose=0)
    import sys

    loaded = {{name.split(".")[0] for name in sys.modules}}
    assert not loaded & set({others!r}), loaded & set({others!r})
    print("ok", keras.backend.backend(), np.isfinite(value))
    """
)


def _is_other_backend(entry):
    """Whether a site-packages entry belongs to another backend."""
    name = entry.name.lower().replace("-", "_")
    return any(
        name == other
        or name.startswith(other + "_")
        or name.startswith(other + ".")
        or name.startswith(other + "-")
        for other in OTHERS
    )


def test_imports_with_only_the_current_backend_installed(tmp_path):
    # A site-packages view without the other backends: links to every other
    # entry, used by an interpreter started without its own site (-S).
    site_packages = Path(keras.__file__).resolve().parent.parent
    view = tmp_path / "site-packages"
    view.mkdir()
    for entry in site_packages.iterdir():
        if not _is_other_backend(entry):
            (view / entry.name).symlink_to(entry)
    env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{view}")
    script = SCRIPT.format(others=OTHERS)
    done = subprocess.run(
        [sys.executable, "-S", "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"ok {BACKEND} True" in done.stdout
