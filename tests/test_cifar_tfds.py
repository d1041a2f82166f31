"""examples/cifar_tfds.py on `tfds.testing.mock_data` (random images).

The real `tfds.load` code path runs with TFDS's mock data, tiny sizes and
tiny models: this checks the data loading, the models, the tf.data
pipeline and the whole teacher -> selection -> student comparison on every
backend, not the accuracy (mock images are noise).
"""

import importlib.util
import json
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow_datasets as tfds

ROOT = Path(__file__).resolve().parent.parent


def _load_example():
    path = ROOT / "examples" / "cifar_tfds.py"
    spec = importlib.util.spec_from_file_location("cifar_tfds", path)
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


def test_whole_comparison_runs_on_mock_cifar100(tmp_path):
    output = tmp_path / "results.json"
    with tfds.testing.mock_data(num_examples=48):
        results = cifar_tfds.main(
            ["--dataset", "cifar100", *TINY, "--output", str(output)]
        )
    assert json.loads(output.read_text()) == json.loads(json.dumps(results))
    assert results["backend"] == keras.backend.backend()
    assert results["num_classes"] == 100
    assert results["input_shape"] == [32, 32, 3]
    assert results["num_examples"] == dict(train=32, validation=16, test=16)
    assert sorted(results["test_accuracy"]) == sorted(
        ["teacher", "student alone", "KD", "PTLoss"]
    )
    for value in results["test_accuracy"].values():
        assert 0.0 <= value <= 1.0
    coefficients = np.asarray(results["selection"]["coefficients"])
    assert coefficients.shape == (5,) and np.all(np.isfinite(coefficients))


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
