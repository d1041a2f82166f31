"""Saved models and losses load in safe mode (no lambdas, no pickles).

Safe mode (`keras.saving.load_model(..., safe_mode=True)`) refuses lambdas
and pickled objects, so loading there proves a saved file holds neither.
"""

import zipfile

import keras
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
from tests.utils import tiny_classifier

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
