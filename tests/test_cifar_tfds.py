"""examples/cifar_tfds.py on `tfds.testing.mock_data` (random images).

The real `tfds.load` code path runs with TFDS's mock data, tiny sizes and
tiny models: this checks the data loading, the models and the tf.data
pipeline on every backend, and the whole teacher -> selection -> student
comparison on torch (`PROGRAM_BACKEND`; under the other backends that
test is not defined, so nothing is skipped), not the accuracy (mock
images are noise).
"""

import importlib.util
import json
import os
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow_datasets as tfds

from tests.utils import run_program

ROOT = Path(__file__).resolve().parent.parent
PROGRAM_BACKEND = "torch"


EXAMPLE = ROOT / "examples" / "cifar_tfds.py"


def _load_example():
    spec = importlib.util.spec_from_file_location("cifar_tfds", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


cifar_tfds = _load_example()
TINY = [
    "--train-examples", "48",
    "--validation-examples", "16",
    "--test-examples", "16",
    "--teacher-epochs", "1",
    "--student-epochs", "1",
    "--teacher-width", "4",
    "--teacher-blocks", "1",
    "--student-width", "4",
    "--batch-size", "16",
    "--num-candidates", "4",
    "--verbose", "0",
]  # fmt: skip


@pytest.mark.parametrize("name, classes", [("cifar10", 10), ("cifar100", 100)])
def test_load_cifar_reads_both_datasets_through_tfds(name, classes):
    with tfds.testing.mock_data(num_examples=24):
        (x, y), (x_test, y_test) = cifar_tfds.load_cifar(
            name, download=False, train_examples=20, test_examples=12
        )
    assert x.shape == (20, 32, 32, 3) and x_test.shape == (12, 32, 32, 3)
    assert x.dtype == np.float32 and 0.0 <= x.min() and x.max() <= 1.0
    assert y.dtype == np.int32 and 0 <= y.min() and y.max() < classes
    teacher = cifar_tfds.make_teacher(
        classes, cifar_tfds.normalizer(x), width=4, blocks=1
    )
    student = cifar_tfds.make_student(
        classes, cifar_tfds.normalizer(x), width=4
    )
    assert teacher.output.shape == (None, classes)
    assert student.output.shape == (None, classes)
    assert any(isinstance(x, keras.layers.Add) for x in teacher.layers)
    assert teacher.count_params() > student.count_params()


# The whole program runs in a child process, so that a crash inside a
# backend (a segfault, an abort) fails this test alone instead of ending
# the whole backend's pytest run. `ONEDNN_MAX_CPU_ISA=AVX2` makes oneDNN
# take the kernels of processors without AVX-512 (many AMD EPYCs), where
# torch 2.13's strided 1x1 convolution backward used to crash.
WHOLE_RUN = """
import importlib.util, sys
import tensorflow_datasets as tfds

from tests.utils import run_program
spec = importlib.util.spec_from_file_location("cifar_tfds", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
with tfds.testing.mock_data(num_examples=48):
    module.main(sys.argv[2:])
"""


def test_strided_projection_is_a_strided_one_by_one_convolution(rng):
    """The teacher's shortcut (every other pixel, then a 1x1 convolution)
    computes what a 1x1 convolution with stride 2 computes."""
    x = rng.normal(size=(2, 8, 8, 3)).astype("float32")
    inputs = keras.Input((8, 8, 3))
    block = keras.Model(
        inputs, cifar_tfds._residual_block(inputs, 5, 2, name="b")
    )
    kernel = block.get_layer("b_proj").kernel
    kernel.assign(rng.normal(size=(1, 1, 3, 5)).astype("float32"))
    shortcut = keras.Model(inputs, block.get_layer("b_proj").output).predict(
        x, verbose=0
    )
    expected = x[:, ::2, ::2, :] @ keras.ops.convert_to_numpy(kernel)[0, 0]
    np.testing.assert_allclose(shortcut, expected, rtol=1e-5, atol=1e-5)


def test_augmentation_keeps_shapes_and_labels():
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(8, 32, 32, 3)).astype("float32")
    y = np.arange(8, dtype="int32")
    batches = list(cifar_tfds.training_pipeline(x, y, 4, augment=True, seed=0))
    assert [tuple(b[0].shape) for b in batches] == [(4, 32, 32, 3)] * 2
    labels = np.concatenate([np.asarray(b[1]) for b in batches])
    assert sorted(labels.tolist()) == y.tolist()
    # Each augmented image is a flip and/or a shifted crop of its source:
    # every source pixel value it keeps comes from that image.
    for images, ids in batches:
        for image, i in zip(np.asarray(images), np.asarray(ids), strict=True):
            kept = image[image > 0]
            assert np.isin(kept, x[i]).all()


def test_bad_arguments_are_rejected():
    with pytest.raises(SystemExit):
        cifar_tfds.parse_args(["--teacher-epochs", "0"])
    with pytest.raises(ValueError, match="validation-examples"):
        cifar_tfds.split_validation(
            np.zeros((4, 32, 32, 3)), np.zeros(4), 4, seed=0
        )


# The whole program runs on one backend, torch, the one where it crashed
# (see WHOLE_RUN); the models, the data loading and the tf.data pipeline
# are tested above on every backend, and the library calls it makes in
# their own files.
if keras.backend.backend() == PROGRAM_BACKEND:

    def test_whole_comparison_runs_on_mock_cifar100(tmp_path):
        output = tmp_path / "results.json"
        args = ["--dataset", "cifar100", *TINY, "--output", str(output)]
        env = dict(os.environ, ONEDNN_MAX_CPU_ISA="AVX2")
        run_program("-c", WHOLE_RUN, EXAMPLE, *args, env=env)
        results = json.loads(output.read_text())
        assert results["backend"] == keras.backend.backend()
        assert results["num_classes"] == 100
        assert results["input_shape"] == [32, 32, 3]
        assert results["num_examples"] == dict(train=32, validation=16, test=16)
        assert list(results["test_accuracy"]) == [
            "teacher",
            "student alone",
            "KD",
            "PTLoss (searched)",
            "PTLoss (training-free)",
        ]
        for value in results["test_accuracy"].values():
            assert 0.0 <= value <= 1.0
        search = results["search"]
        assert 0.0 <= search["student_test_accuracy"] <= 1.0
        assert search["training"]["epochs"] == 1
        assert search["training"]["num_examples"] == 32
        assert search["training"]["student_loss_weight"] == 0.5
        for key in ("search", "selection"):
            coefficients = np.asarray(results[key]["coefficients"])
            assert coefficients.shape == (5,)
            assert np.all(np.isfinite(coefficients))
