"""The example notebooks: stored with the outputs of a real run, and they run.

Each notebook is stored executed once, top to bottom, at the sizes of its
`parameters` cell, on JAX (outputs kept, execution timings stripped). The
tests check those stored outputs, and execute an in-memory copy of each
notebook (its stored outputs cleared) with small sizes injected after its
`parameters` cell; the file on disk is never written.

Executing them (nbclient, a real Jupyter kernel) is done on one backend
only, PyTorch (which compiles nothing, so it runs them fastest), to keep
the three-backend suite fast: under the other backends the execution tests
are not defined at all (so nothing is skipped), and the suite reports them
once. What the KerasHub notebook goes through in each backend's own code
(KerasHub's dict inputs, the padding mask, saving, the top-k loss) is
tested on every backend in tests/test_kerashub_models.py. The kernel
inherits `KERAS_BACKEND`, and no notebook sets it: unset, Keras's default
(TensorFlow) applies.
"""

import copy
import hashlib
import re
from pathlib import Path

import keras
import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
EXECUTION_BACKEND = "torch"

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
NOTEBOOKS = sorted(FAST_PARAMETERS)


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


# Most bytes a stored notebook, and one stored image, may take.
MAX_NOTEBOOK_BYTES = 400_000
MAX_IMAGE_BYTES = 60_000
# A code cell whose source matches this shows something when it runs.
SHOWS_OUTPUT = re.compile(r"\bprint\(|plt\.show\(\)|verbose=[12]\b")


def _code_cells(nb):
    return [cell for cell in nb.cells if cell.cell_type == "code"]


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_is_stored_with_the_outputs_of_a_run(name):
    nb = _read(name)
    nbformat.validate(nb)
    _parameter_index(nb)
    cells = _code_cells(nb)
    # Run once, top to bottom, at the sizes of its own parameters cell.
    assert [c.execution_count for c in cells] == list(range(1, len(cells) + 1))
    assert not [c for c in cells if "injected-parameters" in str(c.metadata)]
    for cell in cells:
        assert not [o for o in cell.outputs if o.output_type == "error"]
        assert "execution" not in cell.metadata  # no volatile timings
        if SHOWS_OUTPUT.search(cell.source):
            assert cell.outputs, f"no stored output for:\n{cell.source}"
        if "plt.show()" in cell.source:
            assert any("image/png" in o.get("data", {}) for o in cell.outputs)
        for out in cell.outputs:
            # No object's memory address: a rerun would change it.
            assert " at 0x" not in out.get("data", {}).get("text/plain", "")
            image = out.get("data", {}).get("image/png", "")
            assert len(image) * 3 // 4 < MAX_IMAGE_BYTES  # base64 to bytes
    text = "".join(o.get("text", "") for c in cells for o in c.outputs)
    assert "backend: jax" in text
    assert (EXAMPLES / name).stat().st_size < MAX_NOTEBOOK_BYTES


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_leaves_the_backend_to_the_environment(name):
    """The first code cell shows KERAS_BACKEND; it sets it nowhere."""
    first = _code_cells(_read(name))[0].source
    live = "\n".join(
        line for line in first.splitlines() if not line.lstrip().startswith("#")
    )
    assert "KERAS_BACKEND" in live
    assert "environ[" not in live and "setdefault" not in live
    assert "import keras" not in first


def _execute(name, parameters, tmp_path):
    """Runs a copy of a notebook on the current backend; its text out."""
    from nbclient import NotebookClient

    path = EXAMPLES / name
    stored = hashlib.sha256(path.read_bytes()).hexdigest()
    nb = with_parameters(_read(name), parameters)
    for cell in _code_cells(nb):
        cell.outputs, cell.execution_count = [], None
    client = NotebookClient(
        nb,
        timeout=120,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()
    outputs = [out for cell in _code_cells(nb) for out in cell.outputs]
    text = "".join(o.get("text", "") for o in outputs)
    # The kernel inherits the environment, so it runs this backend.
    assert f"backend: {keras.backend.backend()}" in text
    assert not [o for o in outputs if o.output_type == "error"]
    assert hashlib.sha256(path.read_bytes()).hexdigest() == stored
    return text


if keras.backend.backend() == EXECUTION_BACKEND:

    @pytest.mark.parametrize("name", sorted(FAST_PARAMETERS))
    def test_notebook_runs(name, tmp_path):
        _execute(name, FAST_PARAMETERS[name], tmp_path)
