"""Saved objects load in safe mode; mixed-precision distillation stays finite.

Safe mode (`keras.saving.load_model(..., safe_mode=True)`) refuses lambdas
and pickled objects, so loading there proves a saved file holds neither.
"""

import zipfile

import keras
import numpy as np
import pytest

from keras_ptloss import Distiller
from keras_ptloss import DKDLoss
from keras_ptloss import KDCELoss
from keras_ptloss import KDLoss
from keras_ptloss import LSKDLoss
from keras_ptloss import Poly1Loss
from keras_ptloss import PTLoss
from keras_ptloss import PTLossDistillation
from tests.utils import assert_allclose
from tests.utils import np_mlp_logits
from tests.utils import np_pt_loss
from tests.utils import tiny_classifier
from tests.utils import to_numpy

N, F, K = 32, 5, 3
EPS_CLASSWISE = [[0.5, -0.1], [0.2, 0.0], [-0.3, 0.1]]


@pytest.fixture
def data(rng):
    x = rng.normal(size=(N, F)).astype("float32")
    y = rng.integers(0, K, size=N).astype("int32")
    return x, y


def _saved_config(path):
    with zipfile.ZipFile(path) as archive:
        return archive.read("config.json").decode()


def _save_and_load_safely(model, path):
    model.save(path)
    config = _saved_config(path)
    assert "__lambda__" not in config
    return keras.saving.load_model(path, safe_mode=True)


# --- safe-mode loading -------------------------------------------------------


def test_distiller_with_classwise_ptloss_loads_in_safe_mode(data, tmp_path):
    x, y = data
    distiller = Distiller(
        tiny_classifier(F, K, seed=0),
        tiny_classifier(F, K, hidden=6, seed=10),
        PTLoss(EPS_CLASSWISE, temperature=2.0, teacher_from_logits=True),
        student_loss_weight=0.3,
    )
    distiller.compile(
        optimizer=keras.optimizers.Adam(0.01),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["sparse_categorical_accuracy"],
    )
    distiller.fit(x, y, epochs=1, batch_size=16, verbose=0)
    restored = _save_and_load_safely(distiller, tmp_path / "d.keras")
    assert isinstance(restored, Distiller)
    assert isinstance(restored.distillation_loss, PTLoss)
    assert isinstance(restored.optimizer, keras.optimizers.Adam)
    assert not restored.teacher.trainable
    assert_allclose(restored.coefficients, EPS_CLASSWISE)
    assert_allclose(restored.temperature, 2.0)
    assert_allclose(restored.student_loss_weight, 0.3)
    assert_allclose(
        restored.predict(x, verbose=0), distiller.predict(x, verbose=0)
    )
    assert_allclose(
        restored.teacher.predict(x, verbose=0),
        distiller.teacher.predict(x, verbose=0),
    )


@pytest.mark.parametrize(
    "loss",
    [
        PTLoss([0.4, -0.1], temperature=3.0, teacher_from_logits=True),
        KDLoss(temperature=4.0),
        KDCELoss(label_weight=0.2, temperature=2.0),
        DKDLoss(alpha=0.5, beta=4.0, temperature=2.0),
        LSKDLoss(temperature=2.0, delta=1e-5),
        Poly1Loss(epsilon=0.5),
    ],
    ids=lambda loss: type(loss).__name__,
)
def test_student_compiled_with_each_loss_loads_in_safe_mode(loss, tmp_path):
    student = tiny_classifier(F, K, seed=3)
    student.compile(optimizer="sgd", loss=loss)
    restored = _save_and_load_safely(student, tmp_path / "s.keras")
    restored_loss = restored.loss
    assert type(restored_loss) is type(loss)
    assert restored_loss.get_config() == loss.get_config()


def test_keras_distiller_with_ptloss_adapter_loads_in_safe_mode(data, tmp_path):
    x, _ = data
    distiller = keras.distillation.Distiller(
        teacher=tiny_classifier(F, K, seed=0),
        student=tiny_classifier(F, K, hidden=6, seed=10),
        distillation_losses=PTLossDistillation(
            PTLoss([0.3, 0.0], temperature=2.0, teacher_from_logits=True)
        ),
        student_loss_weight=0.0,
    )
    distiller.compile(
        optimizer="sgd",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    restored = _save_and_load_safely(distiller, tmp_path / "k.keras")
    adapter = restored.distillation_losses[0]
    assert isinstance(adapter, PTLossDistillation)
    assert_allclose(adapter.loss.coefficients, [0.3, 0.0])
    assert_allclose(
        restored.predict(x, verbose=0), distiller.predict(x, verbose=0)
    )


# --- mixed precision ---------------------------------------------------------


def _half_distiller(policy, logit_scale):
    keras.config.set_dtype_policy(policy)
    teacher = tiny_classifier(F, K, seed=0)
    student = tiny_classifier(F, K, hidden=6, seed=10)
    weights = teacher.get_weights()
    # Extreme teacher logits (hundreds): exp() overflows in half precision.
    weights[2] = weights[2] * logit_scale
    teacher.set_weights(weights)
    distiller = Distiller(
        teacher,
        student,
        PTLoss([0.5, -0.1], temperature=2.0, teacher_from_logits=True),
        student_loss_weight=0.25,
    )
    distiller.compile(
        optimizer=keras.optimizers.Adam(0.01),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return distiller


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_loss_is_float32_and_matches_numpy(data, policy):
    x, _ = data
    distiller = _half_distiller(policy, logit_scale=200.0)
    half = "float16" if policy == "mixed_float16" else "bfloat16"
    t = distiller.teacher(x)
    z = distiller(x)
    assert keras.backend.standardize_dtype(t.dtype) == half
    assert keras.backend.standardize_dtype(z.dtype) == half
    t64 = to_numpy(keras.ops.cast(t, "float32")).astype("float64")
    z64 = to_numpy(keras.ops.cast(z, "float32")).astype("float64")
    assert np.abs(t64).max() > 100  # the extreme regime is reached
    loss = distiller.compute_loss(x=x, y=None, y_pred=z)
    assert keras.backend.standardize_dtype(loss.dtype) == "float32"
    expected = np.mean(np_pt_loss(t64, z64, [0.5, -0.1], 2.0, True))
    assert_allclose(loss, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_training_stays_finite(data, policy):
    x, y = data
    distiller = _half_distiller(policy, logit_scale=200.0)
    history = distiller.fit(x, y, epochs=3, batch_size=8, verbose=0)
    for key in ("loss", "distillation_loss", "student_loss"):
        assert np.all(np.isfinite(history.history[key])), key
    for weight in distiller.student.weights:
        assert keras.backend.standardize_dtype(weight.dtype) == "float32"
        assert np.all(np.isfinite(to_numpy(weight)))
    # The student's float32 weights moved; the teacher's did not.
    start = _half_distiller(policy, logit_scale=200.0)
    assert not np.allclose(
        to_numpy(distiller.student.weights[-1]),
        to_numpy(start.student.weights[-1]),
    )
    for a, b in zip(
        distiller.teacher.get_weights(),
        start.teacher.get_weights(),
        strict=True,
    ):
        np.testing.assert_array_equal(a, b)


# --- teacher-output cache faults ---------------------------------------------


def _offline_distiller(teacher_seed=0):
    distiller = Distiller(
        tiny_classifier(F, K, seed=teacher_seed),
        tiny_classifier(F, K, hidden=6, seed=10),
        PTLoss([0.3, 0.0], temperature=2.0, teacher_from_logits=True),
    )
    distiller.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return distiller


def test_cache_is_written_then_read_without_running_the_teacher(data, tmp_path):
    x, y = data
    path = str(tmp_path / "teacher.npz")
    distiller = _offline_distiller()
    first, _, _ = distiller.precompute_teacher(x, y, cache=path)
    expected = np_mlp_logits(distiller.teacher, x)
    assert_allclose(first["teacher_outputs"], expected, rtol=1e-5, atol=1e-5)

    def no_teacher(*args, **kwargs):
        raise AssertionError("the teacher ran although the cache is valid")

    distiller.teacher.predict = no_teacher
    second, y_off, _ = distiller.precompute_teacher(x, y, cache=path)
    np.testing.assert_array_equal(
        second["teacher_outputs"], first["teacher_outputs"]
    )
    history = distiller.fit(second, y_off, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def test_cache_from_another_teacher_is_rejected(data, tmp_path):
    x, y = data
    path = str(tmp_path / "teacher.npz")
    _offline_distiller(teacher_seed=0).precompute_teacher(x, y, cache=path)
    other = _offline_distiller(teacher_seed=5)
    with pytest.raises(ValueError, match="other weights.*teacher.npz"):
        other.precompute_teacher(x, y, cache=path)


def test_cache_for_other_or_partial_data_is_rejected(data, tmp_path):
    x, y = data
    path = str(tmp_path / "teacher.npz")
    distiller = _offline_distiller()
    distiller.precompute_teacher(x, y, cache=path)
    with pytest.raises(ValueError, match=r"other inputs than `x` \(32"):
        distiller.precompute_teacher(x + 1.0, y, cache=path)
    with pytest.raises(ValueError, match=r"other inputs than `x` \(16"):
        distiller.precompute_teacher(x[:16], y[:16], cache=path)


def test_truncated_or_tampered_cache_is_rejected(data, tmp_path):
    x, y = data
    path = tmp_path / "teacher.npz"
    distiller = _offline_distiller()
    distiller.precompute_teacher(x, y, cache=str(path))
    content = path.read_bytes()

    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(content[: len(content) // 2])
    with pytest.raises(ValueError, match="unreadable or incomplete"):
        distiller.precompute_teacher(x, y, cache=str(truncated))

    with np.load(path) as archive:
        stored = dict(archive)
    stored["teacher_outputs"] = stored["teacher_outputs"].copy()
    stored["teacher_outputs"][3, 1] += 0.5
    tampered = tmp_path / "tampered.npz"
    np.savez(tampered, **stored)
    with pytest.raises(ValueError, match="checksum.*corrupted"):
        distiller.precompute_teacher(x, y, cache=str(tampered))

    del stored["data_fingerprint"]
    incomplete = tmp_path / "incomplete.npz"
    np.savez(incomplete, **stored)
    with pytest.raises(ValueError, match="unreadable or incomplete"):
        distiller.precompute_teacher(x, y, cache=str(incomplete))


def test_offline_arrays_with_partial_or_corrupted_outputs_are_rejected(data):
    x, y = data
    distiller = _offline_distiller()
    offline, y_off, _ = distiller.precompute_teacher(x, y)
    partial = dict(offline, teacher_outputs=offline["teacher_outputs"][:20])
    with pytest.raises(
        ValueError, match=r"expected shape \(32, 3\).*\(20, 3\) for 32"
    ):
        distiller.fit(partial, y_off, epochs=1, verbose=0)
    wrong_classes = dict(
        offline, teacher_outputs=np.zeros((N, K + 1), "float32")
    )
    with pytest.raises(ValueError, match=r"\(32, 3\).*\(32, 4\)"):
        distiller.fit(wrong_classes, y_off, epochs=1, verbose=0)
    corrupted = dict(offline, teacher_outputs=offline["teacher_outputs"].copy())
    corrupted["teacher_outputs"][0, 0] = np.nan
    with pytest.raises(ValueError, match="finite.*1 non-finite"):
        distiller.fit(corrupted, y_off, epochs=1, verbose=0)


def test_cache_with_a_data_set_is_rejected(data, tmp_path):
    x, y = data

    class Batches(keras.utils.PyDataset):
        def __len__(self):
            return 2

        def __getitem__(self, index):
            return x[index * 16 : (index + 1) * 16], y[
                index * 16 : (index + 1) * 16
            ]

    with pytest.raises(ValueError, match="cache=.*PyDataset|Batches"):
        _offline_distiller().precompute_teacher(
            Batches(), cache=str(tmp_path / "t.npz")
        )
