"""Teacher and student vocabularies that differ by padding or by order.

Every expected loss is computed in float64 numpy on the teacher cropped (or
permuted) by hand, never through `align_vocabulary`. Sizes follow the
Qwen2.5 case in miniature: V = 10 real token ids, a teacher padded to 12
logits, a student padded to 11.
"""

import keras
import numpy as np
import pytest
import scipy.special

from keras_ptloss import Distiller
from keras_ptloss import KDLoss
from keras_ptloss import LSKDLoss
from keras_ptloss import PTLoss
from keras_ptloss import align_vocabulary
from keras_ptloss import kd_loss
from keras_ptloss.top_k import TopKPTLoss
from keras_ptloss.top_k import pack_top_k
from keras_ptloss.top_k import precompute_top_k
from tests.utils import assert_allclose
from tests.utils import np_mlp_logits
from tests.utils import np_pt_loss
from tests.utils import tiny_classifier
from tests.utils import to_numpy

V, V_TEACHER, V_STUDENT = 10, 12, 11
B, S, F = 4, 3, 5
T = 2.0
EPS = [0.3, -0.05]
# A padded id's logit: the tokenizer never produces it, so the teacher
# learned to give it (almost) no probability.
PAD_LOGIT = -30.0
CROSS_TOKENIZER = "GOLD"


def padded_logits(rng, shape, size, scale=2.0):
    """Logits of `V` real ids, then `size - V` padding ids."""
    real = scale * rng.normal(size=shape + (V,))
    pad = np.full(shape + (size - V,), PAD_LOGIT)
    return np.concatenate([real, pad], axis=-1).astype("float32")


def np_loss_on_real_ids(teacher_real, student, eps, temperature):
    """PTLoss (KD for eps = 0) when only the student's first ids are real.

    `teacher_real`: teacher logits on the real ids, shape (..., n);
    `student`: student logits (..., V_s), V_s >= n, normalised over all
    V_s (its padding included).
    """
    t = np.asarray(teacher_real, "float64") / temperature
    log_p = scipy.special.log_softmax(t, axis=-1)
    log_q = scipy.special.log_softmax(
        np.asarray(student, "float64") / temperature, axis=-1
    )[..., : t.shape[-1]]
    p = np.exp(log_p)
    eps = np.asarray(eps, "float64")
    u = -np.expm1(log_q)
    series = sum(eps[m] * u ** (m + 1) for m in range(eps.size))
    return temperature**2 * np.sum(p * (log_p - log_q + series), axis=-1)


LOSSES = {
    "kd": lambda: KDLoss(T, teacher_from_logits=True),
    "pt": lambda: PTLoss(EPS, T, teacher_from_logits=True),
    "pt_chunked": lambda: PTLoss(
        EPS, T, teacher_from_logits=True, chunk_size=5
    ),
}
LOSS_EPS = {"kd": [0.0], "pt": EPS, "pt_chunked": EPS}


@pytest.mark.parametrize("kind", sorted(LOSSES))
@pytest.mark.parametrize("as_tensor", [False, True])
def test_teacher_padding_dropped_gives_the_cropped_teachers_loss(
    rng, kind, as_tensor
):
    teacher = padded_logits(rng, (B, S), V_TEACHER)
    student = rng.normal(size=(B, S, V)).astype("float32")
    inputs = keras.ops.convert_to_tensor(teacher) if as_tensor else teacher
    aligned = align_vocabulary(inputs, V, vocab_size=V)
    assert tuple(aligned.shape) == (B, S, V)
    assert isinstance(aligned, np.ndarray) is not as_tensor
    expected = np_pt_loss(teacher[..., :V], student, LOSS_EPS[kind], T, True)
    assert_allclose(LOSSES[kind]()(aligned, student), expected.mean())


@pytest.mark.parametrize("kind", sorted(LOSSES))
def test_student_padding_gets_no_teacher_mass(rng, kind):
    # The Qwen2.5 case: both padded, to different sizes.
    teacher = padded_logits(rng, (B, S), V_TEACHER)
    student = rng.normal(size=(B, S, V_STUDENT)).astype("float32")
    aligned = align_vocabulary(teacher, V_STUDENT, vocab_size=V)
    assert aligned.shape == (B, S, V_STUDENT)
    np.testing.assert_array_equal(aligned[..., :V], teacher[..., :V])
    probs = scipy.special.softmax(aligned.astype("float64") / T, axis=-1)
    assert np.all(probs[..., V:] == 0.0)
    expected = np_loss_on_real_ids(teacher[..., :V], student, LOSS_EPS[kind], T)
    assert_allclose(LOSSES[kind]()(aligned, student), expected.mean())
    # A teacher without padding is padded with masked ids.
    unpadded = align_vocabulary(teacher[..., :V], V_STUDENT, vocab_size=V)
    np.testing.assert_array_equal(unpadded, aligned)


def test_teacher_probabilities_are_aligned_with_zeros(rng):
    teacher = scipy.special.softmax(padded_logits(rng, (B,), V_TEACHER), -1)
    student = rng.normal(size=(B, V_STUDENT)).astype("float32")
    aligned = align_vocabulary(
        teacher, V_STUDENT, vocab_size=V, from_logits=False
    )
    np.testing.assert_array_equal(aligned[..., V:], 0.0)
    expected = np_loss_on_real_ids(np.log(teacher[..., :V]), student, [0], T)
    loss = KDLoss(T, teacher_from_logits=False)
    assert_allclose(loss(aligned, student), expected.mean(), rtol=1e-4)


def test_id_map_permutation_gives_the_permuted_result(rng):
    teacher = rng.normal(size=(B, S, V)).astype("float32")
    student = rng.normal(size=(B, S, V)).astype("float32")
    id_map = rng.permutation(V)
    aligned = align_vocabulary(teacher, V, id_map=id_map)
    np.testing.assert_array_equal(aligned, teacher[..., id_map])
    loss = PTLoss(EPS, T, teacher_from_logits=True)
    expected = np_pt_loss(teacher[..., id_map], student, EPS, T, True)
    assert_allclose(loss(aligned, student), expected.mean())
    # A student that orders its ids by the map learns the same thing.
    assert_allclose(loss(aligned, student[..., id_map]), loss(teacher, student))
    tensor = align_vocabulary(
        keras.ops.convert_to_tensor(teacher), V, id_map=id_map
    )
    assert_allclose(tensor, teacher[..., id_map])


def test_id_map_of_the_real_ids_drops_padding_and_masks_the_rest(rng):
    teacher = padded_logits(rng, (B,), V_TEACHER)
    student = rng.normal(size=(B, V_STUDENT)).astype("float32")
    id_map = rng.permutation(V)  # teacher ids 10, 11 (padding) unmapped
    aligned = align_vocabulary(teacher, V_STUDENT, id_map=id_map)
    np.testing.assert_array_equal(aligned[..., :V], teacher[..., id_map])
    assert np.all(aligned[..., V:] <= -1e30)
    expected = np_loss_on_real_ids(teacher[..., id_map], student, [0], T)
    assert_allclose(
        KDLoss(T, teacher_from_logits=True)(aligned, student), expected.mean()
    )


def test_teacher_with_real_mass_on_a_dropped_id_is_refused(rng):
    teacher = padded_logits(rng, (B, S), V_TEACHER)
    teacher[2, 1, V + 1] = 5.0  # a "padding" id the teacher predicts
    with pytest.raises(ValueError, match=r"probability .* id 11.*\[2, 1\]"):
        align_vocabulary(teacher, V_STUDENT, vocab_size=V)
    id_map = np.arange(V_TEACHER)[np.arange(V_TEACHER) != 3]
    with pytest.raises(ValueError, match=r"id 3.*id_map of length 11"):
        align_vocabulary(teacher[:, 0], V_STUDENT, id_map=id_map)


@pytest.mark.parametrize(
    "call, match",
    [
        (
            lambda t: align_vocabulary(t, V_STUDENT),
            r"teacher has 12 logits and the student 11.*vocab_size.*id_map"
            r".*GOLD.*student_vocab_size=11, vocab_size=None",
        ),
        (
            lambda t: align_vocabulary(t, V, vocab_size=V_STUDENT),
            r"vocab_size.*at most.*GOLD.*student_vocab_size=10, "
            r"vocab_size=11",
        ),
        (
            lambda t: align_vocabulary(t, V_STUDENT, vocab_size=13),
            r"vocab_size.*teacher vocabulary size 12.*vocab_size=13",
        ),
        (
            lambda t: align_vocabulary(t, V, vocab_size=V, id_map=range(V)),
            "either `vocab_size` or `id_map`",
        ),
        (
            lambda t: align_vocabulary(t, V, id_map=[0, 1, 1]),
            r"distinct.*teacher id 1 at student ids \[1, 2\]",
        ),
        (
            lambda t: align_vocabulary(t, V, id_map=[0, 12]),
            r"id_map.*\[0, 12\).*teacher id 12",
        ),
        (
            lambda t: align_vocabulary(t, V, id_map=np.arange(V_STUDENT)),
            "maps 11 student ids, more than the student's 10",
        ),
        (
            lambda t: align_vocabulary(t, V, id_map=[0.5, 1.0]),
            "id_map.*integer",
        ),
        (
            lambda t: kd_loss(t, np.zeros((B, V_STUDENT)), 1.0, True, True),
            r"same shape.*teacher has 12 classes and the student 11.*"
            r"align_vocabulary",
        ),
        (
            lambda t: KDLoss(T, teacher_from_logits=True)(
                keras.ops.convert_to_tensor(t), np.zeros((B, V))
            ),
            r"same shape.*align_vocabulary\(teacher_outputs, 10",
        ),
    ],
)
def test_real_mismatch_is_refused_with_what_to_pass(rng, call, match):
    with pytest.raises(ValueError, match=match):
        call(padded_logits(rng, (B,), V_TEACHER))


# --- the top-k cache ---------------------------------------------------------


def padded_teacher(padding=V_TEACHER - V, pad_logit=PAD_LOGIT):
    """Token ids -> logits over V real ids and `padding` padded ids."""
    teacher = keras.Sequential(
        [
            keras.Input((S,), dtype="int32"),
            keras.layers.Embedding(9, 6),
            keras.layers.Dense(V + padding),
        ]
    )
    kernel, bias = teacher.layers[-1].get_weights()
    kernel[:, V:] = 0.0
    bias[V:] = pad_logit
    teacher.layers[-1].set_weights([kernel, bias])
    return teacher


def test_top_k_cache_never_returns_a_padded_id(rng, tmp_path):
    teacher = padded_teacher(pad_logit=3.0)  # padding above some real ids
    x = rng.integers(0, 9, size=(6, S))
    # Without alignment the top 9 of 12 contain padding ids; refused here
    # since the padding carries real mass.
    unaligned = precompute_top_k(teacher, x, 9, temperature=T)
    assert unaligned[..., :9].max() >= V
    with pytest.raises(ValueError, match="alignment drops"):
        precompute_top_k(teacher, x, 9, temperature=T, vocab_size=V)

    teacher = padded_teacher()
    logits = to_numpy(teacher(x)).astype("float64")
    cache = str(tmp_path / "top_k.npz")
    packed = precompute_top_k(
        teacher, x, V, temperature=T, cache=cache, vocab_size=V
    )
    assert packed.shape == (6, S, 2 * V)
    indices = packed[..., :V].astype("int64")
    assert indices.max() < V
    full = scipy.special.log_softmax(logits[..., :V] / T, axis=-1)
    np.testing.assert_allclose(
        packed[..., V:], np.take_along_axis(full, indices, -1), atol=1e-5
    )
    again = precompute_top_k(
        teacher, x, V, temperature=T, cache=cache, vocab_size=V
    )
    np.testing.assert_array_equal(again, packed)
    with pytest.raises(ValueError, match="top-k.*another vocabulary"):
        precompute_top_k(teacher, x, V, temperature=T, cache=cache)
    with pytest.raises(ValueError, match=r"`k` must be <= 10"):
        precompute_top_k(teacher, x, V + 1, temperature=T, vocab_size=V)


def test_top_k_cache_with_an_id_map_keeps_student_ids(rng):
    teacher = padded_teacher()
    x = rng.integers(0, 9, size=(5, S))
    logits = to_numpy(teacher(x)).astype("float64")
    id_map = rng.permutation(V)
    packed = precompute_top_k(teacher, x, 4, temperature=T, id_map=id_map)
    indices = packed[..., :4].astype("int64")  # student ids
    expected = scipy.special.log_softmax(logits[..., id_map] / T, axis=-1)
    np.testing.assert_array_equal(
        indices, np.argsort(-expected, axis=-1, kind="stable")[..., :4]
    )
    np.testing.assert_allclose(
        packed[..., 4:], np.take_along_axis(expected, indices, -1), atol=1e-5
    )


def test_top_k_targets_with_ids_beyond_the_student_are_refused():
    packed = pack_top_k([[V + 1, 0]], np.log([[0.5, 0.3]]))
    with pytest.raises(ValueError, match=r"id 11.*10 classes.*vocab_size"):
        TopKPTLoss()(packed, np.zeros((1, V)))


# --- the Distiller -----------------------------------------------------------


def padded_classifier(size, seed):
    """`tiny_classifier` with ids >= V padded (zero weights, low bias)."""
    model = tiny_classifier(F, size, seed=seed)
    kernel, bias = model.layers[-1].get_weights()
    kernel[:, V:] = 0.0
    bias[V:] = PAD_LOGIT
    model.layers[-1].set_weights([kernel, bias])
    return model


def test_distiller_aligns_padded_vocabularies(rng, tmp_path):
    x = rng.normal(size=(32, F)).astype("float32")
    teacher = padded_classifier(V_TEACHER, seed=0)
    student = tiny_classifier(F, V_STUDENT, seed=3)
    loss = PTLoss(EPS, T)
    distiller = Distiller(
        teacher, student, loss, student_loss_weight=0.0, vocab_size=V
    )
    distiller.compile(optimizer=keras.optimizers.SGD(0.0))
    history = distiller.fit(x, epochs=1, batch_size=16, verbose=0).history
    expected = np_loss_on_real_ids(
        np_mlp_logits(teacher, x)[..., :V], np_mlp_logits(student, x), EPS, T
    )
    assert_allclose(history["distillation_loss"][0], expected.mean(), 1e-5)
    # Cached teacher outputs are aligned the same way.
    x_off, _, _ = distiller.precompute_teacher(x)
    logs = distiller.evaluate(x_off, batch_size=16, verbose=0, return_dict=True)
    assert_allclose(logs["distillation_loss"], expected.mean(), 1e-5)
    restored = Distiller.from_config(distiller.get_config())
    assert restored.vocab_size == V and restored.id_map is None
    # Real mass on a padded id is refused where the cached outputs are
    # made.
    kernel, bias = teacher.layers[-1].get_weights()
    bias[V] = 50.0
    teacher.layers[-1].set_weights([kernel, bias])
    with pytest.raises(ValueError, match=r"alignment drops.*row \[0\]"):
        distiller.precompute_teacher(x)


@pytest.mark.parametrize(
    "build, match",
    [
        (
            lambda t, s: Distiller(t, s, KDLoss(T)),
            r"same shape.*teacher has 12 classes and the student 11.*"
            r"vocab_size",
        ),
        (
            lambda t, s: Distiller(t, s, KDLoss(T), vocab_size=V_TEACHER),
            r"vocab_size.*at most.*GOLD.*vocab_size=12",
        ),
        (
            lambda t, s: Distiller(t, s, LSKDLoss(), vocab_size=V),
            r"standardize=True.*ids 10..10",
        ),
        (
            lambda t, s: Distiller(t, s, KDLoss(T), id_map=[0, 0]),
            "distinct",
        ),
    ],
)
def test_distiller_refuses_what_padding_cannot_explain(build, match):
    teacher = padded_classifier(V_TEACHER, seed=0)
    student = tiny_classifier(F, V_STUDENT, seed=3)
    with pytest.raises(ValueError, match=match):
        build(teacher, student)
