"""The example notebooks: stored without outputs, and they run.

Executing them (nbclient, a real Jupyter kernel) is done on one backend
only, JAX, to keep the three-backend suite fast: under the other backends
the execution tests are not defined at all (so nothing is skipped), and the
suite reports them once. The KerasHub notebook is the exception: it runs on
every backend, since what it checks (KerasHub's dict inputs, the padding
mask, saving) goes through each backend's own code. The kernel inherits
`KERAS_BACKEND`, and each notebook's first cell only sets it when it is
unset.
"""

import copy
import os
from pathlib import Path

import keras
import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
EXECUTION_BACKEND = "jax"

# Small sizes injected after each notebook's `parameters` cell.
FAST_PARAMETERS = {
    "01_quickstart.ipynb": dict(
        NUM_SAMPLES=600, TEACHER_EPOCHS=2, STUDENT_EPOCHS=2
    ),
    "02_choosing_coefficients.ipynb": dict(
        NUM_SAMPLES=1000, TEACHER_EPOCHS=3, GRID=6, NUM_CANDIDATES=16
    ),
    "03_compile_with_precomputed_teacher.ipynb": dict(
        EPOCHS=2, NUM_CANDIDATES=16
    ),
    "04_token_distillation_top_k.ipynb": dict(
        NUM_SEQUENCES=100,
        LENGTH=8,
        VOCAB_SIZE=64,
        TEACHER_EPOCHS=1,
        STUDENT_EPOCHS=1,
        TOP_K=8,
        NUM_CANDIDATES=16,
    ),
}
# Run on every backend, at these sizes.
EVERY_BACKEND_PARAMETERS = {
    "05_kerashub_distillation.ipynb": dict(
        NUM_SEQUENCES=200,
        LENGTH=12,
        MIN_LENGTH=4,
        VOCAB_SIZE=64,
        TEACHER_EPOCHS=2,
        STUDENT_EPOCHS=1,
        BATCH_SIZE=20,
        SEARCH_TRAININGS=2,
        TOP_K=8,
        NUM_CANDIDATES=16,
    ),
}
NOTEBOOKS = sorted(FAST_PARAMETERS | EVERY_BACKEND_PARAMETERS)


def _read(name):
    return nbformat.read(EXAMPLES / name, as_version=4)


def _parameter_index(nb):
    tagged = [
        i
        for i, cell in enumerate(nb.cells)
        if "parameters" in cell.get("metadata", {}).get("tags", [])
    ]
    assert len(tagged) == 1, "exactly one cell must be tagged `parameters`"
    return tagged[0]


def with_parameters(nb, values):
    """A copy of `nb` with a cell assigning `values` after `parameters`."""
    nb = copy.deepcopy(nb)
    index = _parameter_index(nb)
    declared = {}
    exec(nb.cells[index].source, {}, declared)
    unknown = set(values) - set(declared)
    assert not unknown, f"not in the parameters cell: {sorted(unknown)}"
    source = "\n".join(f"{k} = {v!r}" for k, v in values.items())
    cell = nbformat.v4.new_code_cell(source)
    cell.metadata["tags"] = ["injected-parameters"]
    nb.cells.insert(index + 1, cell)
    return nb


def test_every_notebook_in_examples_is_tested():
    assert sorted(p.name for p in EXAMPLES.glob("*.ipynb")) == NOTEBOOKS


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_is_stored_without_outputs(name):
    nb = _read(name)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == []
            assert cell.execution_count is None
    _parameter_index(nb)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_selects_backend_only_when_unset(name):
    """The first code cell sets KERAS_BACKEND before anything imports Keras."""
    code = [c.source for c in _read(name).cells if c.cell_type == "code"]
    assert 'os.environ.setdefault("KERAS_BACKEND"' in code[0]
    assert "import keras" not in code[0]


def _execute(name, parameters, tmp_path):
    """Runs a notebook in a kernel on the current backend; its text out."""
    from nbclient import NotebookClient

    nb = with_parameters(_read(name), parameters)
    backend = keras.backend.backend()
    # What the notebook's first cell picks: the kernel inherits the variable.
    assert os.environ.get("KERAS_BACKEND", EXECUTION_BACKEND) == backend
    client = NotebookClient(
        nb,
        timeout=120,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()
    outputs = [
        out
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.outputs
    ]
    text = "".join(o.get("text", "") for o in outputs)
    assert f"backend: {backend}" in text
    assert not [o for o in outputs if o.output_type == "error"]
    return text


if keras.backend.backend() == EXECUTION_BACKEND:

    @pytest.mark.parametrize("name", sorted(FAST_PARAMETERS))
    def test_notebook_runs(name, tmp_path):
        _execute(name, FAST_PARAMETERS[name], tmp_path)


@pytest.mark.parametrize("name", sorted(EVERY_BACKEND_PARAMETERS))
def test_notebook_runs_on_every_backend(name, tmp_path):
    _execute(name, EVERY_BACKEND_PARAMETERS[name], tmp_path)
