"""keras-hub installed without its dependencies, as the test command does.

keras-hub requires tensorflow-text, which requires the full `tensorflow`
beside the project's `tensorflow-cpu`; the test install therefore adds
keras-hub with `--no-deps` and lists in the `test` extra what its models
need. This checks that choice against the installed keras-hub: what it
requires and neither the `test` extra nor Keras provides is exactly the
known set, and a GPT-2 causal LM builds, trains and predicts with those
packages unimportable. Backend-independent: run under PyTorch only (under
the other backends the test is not defined, so nothing is skipped).
"""

import importlib.metadata
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import tomllib

ROOT = Path(__file__).resolve().parent.parent
# Needed by keras-hub's tokenizers (tensorflow-text, sentencepiece) and its
# preset downloads (kagglehub, kagglesdk), not by its models.
LEFT_OUT = {"kagglehub", "kagglesdk", "sentencepiece", "tensorflow-text"}

SCRIPT = """
import importlib.abc
import sys

BLOCKED = set(sys.argv[1].split(","))


class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"blocked: {name}", name=name)


sys.meta_path.insert(0, Block())
import keras
import keras_hub
import numpy as np

backbone = keras_hub.models.GPT2Backbone(
    vocabulary_size=50, num_layers=1, num_heads=2, hidden_dim=16,
    intermediate_dim=32, max_sequence_length=16,
)
model = keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None)
x = {"token_ids": np.ones((4, 8), "int32"),
     "padding_mask": np.ones((4, 8), "bool")}
model.compile(optimizer="adam")
model.fit(x, np.ones((4, 8), "int32"), epochs=1, verbose=0)
print("logits", tuple(model.predict(x, verbose=0).shape))
"""


def _names(requirements):
    """Distribution names of requirement strings, markers of extras out."""
    names = set()
    for requirement in requirements:
        if "extra ==" in requirement:
            continue
        name = re.split(r"[<>=!~ ;\[]", requirement, maxsplit=1)[0]
        names.add(name.lower().replace("_", "-"))
    return names


def _left_out():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    provided = _names(extras["dependencies"])
    provided |= _names(extras["optional-dependencies"]["test"])
    provided |= _names(importlib.metadata.requires("keras"))
    return _names(importlib.metadata.requires("keras-hub")) - provided


def test_keras_hub_needs_nothing_else_outside_the_test_extra():
    assert _left_out() == LEFT_OUT


if keras.backend.backend() == "torch":

    def test_keras_hub_models_run_without_the_left_out_packages():
        modules = sorted(name.replace("-", "_") for name in LEFT_OUT)
        env = dict(os.environ, KERAS_BACKEND="torch")
        proc = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(SCRIPT), ",".join(modules)],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "logits (4, 8, 50)" in proc.stdout
