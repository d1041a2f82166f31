"""Precomputed teacher outputs: the cache file and offline arrays, faults.

Everything goes through the public `Distiller.precompute_teacher` and
`Distiller.fit`: a cache is reused only for the same teacher weights and the
same inputs, and a truncated, tampered, partial or non-finite one is
rejected with a `ValueError` saying why.
"""

import keras
import numpy as np
import pytest

from keras_ptloss import Distiller
from keras_ptloss import PTLoss
from tests.utils import assert_allclose
from tests.utils import np_mlp_logits
from tests.utils import tiny_classifier

N, F, K = 32, 5, 3


@pytest.fixture
def data(rng):
    x = rng.normal(size=(N, F)).astype("float32")
    y = rng.integers(0, K, size=N).astype("int32")
    return x, y


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
    # A teacher whose outputs are not finite: refused where they are made.
    teacher = distiller.teacher
    kernel, bias = teacher.layers[-1].get_weights()
    bias[1] = np.nan
    teacher.layers[-1].set_weights([kernel, bias])
    with pytest.raises(ValueError, match=r"teacher_outputs.*finite.*nan"):
        distiller.precompute_teacher(x, y)
    # Outputs of another shape in a data set: refused in the traced step
    # (tested last: on JAX, an error raised there empties the variables).
    import tensorflow as tf

    batches = tf.data.Dataset.from_tensor_slices((wrong_classes, y_off))
    with pytest.raises(ValueError, match=r"\(None, 3\).*\(\w+, 4\)"):
        distiller.evaluate(batches.batch(16), verbose=0)


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
