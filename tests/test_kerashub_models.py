"""KerasHub task models as teacher and student, on every backend.

A GPT-2 causal LM built from a config (nothing downloaded) takes dict
inputs with a padding mask; the mask is the sample weight, so only real
positions count. The Distiller's loss and the top-k loss are checked
against numpy on the models' own logits. The notebook
`examples/05_kerashub_distillation.ipynb` runs the whole workflow (search,
calibration, caches) under PyTorch in tests/test_notebooks.py.
"""

import warnings

import keras
import keras_hub
import numpy as np
import pytest
import scipy.special

from keras_ptloss import Distiller
from keras_ptloss import PTLoss
from keras_ptloss import TopKPTLoss
from keras_ptloss import precompute_top_k
from keras_ptloss.top_k import unpack_top_k
from tests.utils import assert_allclose
from tests.utils import np_pt_loss
from tests.utils import to_numpy

VOCAB, LENGTH = 16, 6
COEFFICIENTS = [0.3, 0.1]


def gpt2(seed):
    keras.utils.set_random_seed(seed)
    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=VOCAB,
        num_layers=1,
        num_heads=2,
        hidden_dim=8,
        intermediate_dim=16,
        dropout=0.0,
        max_sequence_length=LENGTH,
    )
    return keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None)


@pytest.fixture
def tokens():
    """Padded token ids, the padding mask and next-token labels."""
    rng = np.random.default_rng(0)
    mask = np.arange(LENGTH) < rng.integers(3, LENGTH + 1, (8, 1))
    ids = np.where(mask, rng.integers(1, VOCAB, (8, LENGTH)), 0)
    x = {"token_ids": ids.astype("int32"), "padding_mask": mask}
    labels = np.roll(ids, -1, axis=1).astype("int32")
    return x, labels, mask


def logits_of(model, x):
    return to_numpy(model(x, training=False)).astype("float64")


def test_distiller_loss_counts_the_real_positions(tokens, tmp_path):
    x, labels, mask = tokens
    teacher, student = gpt2(0), gpt2(1)
    loss = PTLoss(
        COEFFICIENTS,
        temperature=2.0,
        teacher_from_logits=True,
        reduction="mean_with_sample_weight",
    )
    distiller = Distiller(teacher, student, loss)
    distiller.compile(optimizer=keras.optimizers.Adam(1e-2))
    before = logits_of(student, x)
    distiller.fit(x, labels, sample_weight=mask, batch_size=4, verbose=0)
    assert not np.allclose(logits_of(student, x), before)

    logs = distiller.evaluate(
        x, labels, sample_weight=mask, batch_size=8, return_dict=True, verbose=0
    )
    per_position = np_pt_loss(
        logits_of(teacher, x),
        logits_of(student, x),
        COEFFICIENTS,
        2.0,
        teacher_from_logits=True,
    )
    assert_allclose(logs["distillation_loss"], per_position[mask].mean(), 1e-4)

    path = tmp_path / "student.keras"
    distiller.export_student(path)
    with warnings.catch_warnings():
        # The exported task model was never compiled; KerasHub says so.
        warnings.filterwarnings("ignore", message=".*compile\\(\\)")
        reloaded = keras.saving.load_model(path)
    assert_allclose(logits_of(reloaded, x), logits_of(student, x), atol=1e-5)


def test_top_k_loss_is_ptloss_on_the_top_k_and_the_tail(tokens):
    x, labels, mask = tokens
    teacher, student = gpt2(0), gpt2(1)
    packed = precompute_top_k(teacher, x, k=4, batch_size=4)
    indices, log_p = (to_numpy(a) for a in unpack_top_k(packed))
    student.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=TopKPTLoss(COEFFICIENTS, reduction="mean_with_sample_weight"),
        weighted_metrics=[],
    )
    student.fit(x, packed, sample_weight=mask, batch_size=4, verbose=0)
    got = student.evaluate(
        x, packed, sample_weight=mask, batch_size=8, verbose=0
    )

    log_q = scipy.special.log_softmax(logits_of(student, x), axis=-1)
    q_top = np.exp(np.take_along_axis(log_q, indices.astype(int), -1))
    p_top = np.exp(log_p.astype("float64"))
    teacher_buckets = np.concatenate(
        [p_top, 1 - p_top.sum(-1, keepdims=True)], -1
    )
    student_buckets = np.concatenate(
        [q_top, 1 - q_top.sum(-1, keepdims=True)], -1
    )
    per_position = np_pt_loss(
        teacher_buckets, np.log(student_buckets), COEFFICIENTS
    )
    assert_allclose(got, per_position[mask].mean(), 1e-4)
