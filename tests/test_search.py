"""The student population and the student-aware coefficient search."""

import json
import warnings

import keras
import numpy as np
import pytest

from keras_ptloss import KDLoss
from keras_ptloss import PTLoss
from keras_ptloss import pt_loss
from keras_ptloss.calibration import calibrate
from keras_ptloss.losses import standardize_logits
from keras_ptloss.population import StudentPopulation
from keras_ptloss.search import Candidate
from keras_ptloss.search import SearchResult
from keras_ptloss.search import halving_schedule
from keras_ptloss.search import propose_candidates
from keras_ptloss.search import schedule_cost
from keras_ptloss.search import search_coefficients
from tests.utils import assert_allclose
from tests.utils import np_mlp_logits
from tests.utils import np_pt_loss
from tests.utils import np_softmax
from tests.utils import np_sparse_ce
from tests.utils import np_standardize
from tests.utils import tiny_classifier
from tests.utils import to_numpy

NUM_FEATURES, NUM_CLASSES = 6, 3


@pytest.fixture
def data():
    """Transfer inputs, teacher logits (a noisy linear teacher), validation."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, NUM_FEATURES)).astype("float32")
    weights = rng.normal(size=(NUM_FEATURES, NUM_CLASSES))
    clean = x @ weights
    teacher = (2.0 * clean + rng.normal(size=clean.shape)).astype("float32")
    labels = clean.argmax(axis=1).astype("int32")
    return {
        "x": x[:240],
        "teacher": teacher[:240],
        "labels": labels[:240],
        "x_val": x[240:],
        "y_val": labels[240:],
        "teacher_val": teacher[240:],
    }


def build_student():
    return tiny_classifier(NUM_FEATURES, NUM_CLASSES, hidden=8, seed=3)


def train_alone(loss, x, targets, epochs, batch_size, seed, build=None):
    """A separate student trained as the search trains its members: the
    same initial weights (seed) and each epoch's batch order drawn from
    `numpy.random.default_rng(seed)`. `x` is an array or a dict of arrays
    (for `build`'s multi-input student; default `build_student`)."""
    keras.utils.set_random_seed(seed)
    alone = (build or build_student)()
    alone.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss)
    order_rng = np.random.default_rng(seed)
    num_examples = len(keras.tree.flatten(x)[0])
    for _ in range(epochs):
        order = order_rng.permutation(num_examples)
        alone.fit(
            keras.tree.map_structure(lambda v, o=order: v[o], x),
            targets[order],
            batch_size=batch_size,
            epochs=1,
            shuffle=False,
            verbose=0,
        )
    return alone


def assert_same_weights(model, other):
    for got, want in zip(model.get_weights(), other.get_weights(), strict=True):
        assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def same_start(count):
    """`count` students with identical initial weights."""
    students = [build_student() for _ in range(count)]
    for student in students[1:]:
        student.set_weights(students[0].get_weights())
    return students


EPS_A = np.array([0.5, -0.05])
EPS_B = np.array([[2.0, 0.1], [-1.0, 0.0], [0.3, -0.1]])


def test_member_losses_equal_numpy_ptloss_per_member(data):
    coefficients = np.stack([np.broadcast_to(EPS_A, (3, 2)), EPS_B, 0 * EPS_B])
    population = StudentPopulation(
        same_start(3), coefficients, [2.0, 1.0, 4.0], [False, False, True]
    )
    x, t = data["x"][:16], data["teacher"][:16]
    z = to_numpy(population(x))
    losses = to_numpy(population.member_losses(t, z))
    assert losses.shape == (16, 3)
    assert_allclose(
        losses[:, 0], np_pt_loss(t, z[:, 0], EPS_A, 2.0, True), rtol=1e-4
    )
    assert_allclose(
        losses[:, 1], np_pt_loss(t, z[:, 1], EPS_B, 1.0, True), rtol=1e-4
    )
    expected = np_pt_loss(
        np_standardize(t), np_standardize(z[:, 2]), np.zeros(2), 4.0, True
    )
    assert_allclose(losses[:, 2], expected, rtol=1e-4, atol=1e-5)


def test_hard_label_weight_mixes_cross_entropy(data):
    population = StudentPopulation(
        same_start(2),
        np.stack([EPS_A, 0 * EPS_A]),
        [2.0, 1.0],
        student_loss_weight=0.3,
    )
    x, t, y = data["x"][:16], data["teacher"][:16], data["labels"][:16]
    targets = np.concatenate([t, np.eye(NUM_CLASSES)[y]], axis=-1)
    z = to_numpy(population(x))
    losses = to_numpy(population.member_losses(targets, z))
    for j, (eps, temperature) in enumerate([(EPS_A, 2.0), (0 * EPS_A, 1.0)]):
        expected = 0.7 * np_pt_loss(
            t, z[:, j], eps, temperature, True
        ) + 0.3 * np_sparse_ce(z[:, j], y)
        assert_allclose(losses[:, j], expected, rtol=1e-4)


def test_population_equals_separate_trainings(data):
    """N members trained as one model = N separate trainings (same batches)."""
    configs = [
        (np.broadcast_to(EPS_A, (3, 2)), 2.0, False),
        (EPS_B, 1.0, False),
        (np.broadcast_to(EPS_A, (3, 2)), 3.0, True),
    ]
    students = same_start(3)
    start = students[0].get_weights()
    population = StudentPopulation(
        students,
        np.stack([c[0] for c in configs]),
        [c[1] for c in configs],
        [c[2] for c in configs],
    )
    population.compile(optimizer=keras.optimizers.Adam(0.01))
    fit = dict(batch_size=32, epochs=2, shuffle=False, verbose=0)
    population.fit(data["x"], data["teacher"], **fit)
    for member, (eps, temperature, standardize) in zip(
        students, configs, strict=True
    ):
        alone = build_student()
        alone.set_weights(start)
        if standardize:

            def loss(y, z, eps=eps, temperature=temperature):
                return pt_loss(
                    standardize_logits(y),
                    standardize_logits(z),
                    eps,
                    temperature,
                    teacher_from_logits=True,
                )

        else:
            loss = PTLoss(eps, temperature, teacher_from_logits=True)
        alone.compile(optimizer=keras.optimizers.Adam(0.01), loss=loss)
        alone.fit(data["x"], data["teacher"], **fit)
        moved = np.abs(alone.get_weights()[0] - start[0]).max()
        assert moved > 1e-2  # lr > 0 and the weights did move
        for got, want in zip(
            member.get_weights(), alone.get_weights(), strict=True
        ):
            assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_zero_coefficient_member_trains_exactly_as_kd(data):
    students = same_start(2)
    start = students[0].get_weights()
    population = StudentPopulation(
        students, np.stack([np.zeros(3), [4.0, 0.0, 0.0]]), [2.0, 2.0]
    )
    population.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9))
    fit = dict(batch_size=48, epochs=2, shuffle=False, verbose=0)
    population.fit(data["x"], data["teacher"], **fit)
    kd = build_student()
    kd.set_weights(start)
    kd.compile(
        optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
        loss=KDLoss(temperature=2.0, teacher_from_logits=True),
    )
    kd.fit(data["x"], data["teacher"], **fit)
    for got, want in zip(
        students[0].get_weights(), kd.get_weights(), strict=True
    ):
        assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # The sharpening member did not train as KD.
    assert not np.allclose(
        students[1].get_weights()[0], kd.get_weights()[0], atol=1e-3
    )


def test_winner_equals_its_separate_full_training(data):
    """Across rungs the survivors keep weights, Adam slots and step count."""
    candidates = [
        Candidate(np.zeros(2), 2.0),
        Candidate(np.array([2.0, 0.0]), 2.0),
        Candidate(np.array([-0.5, 0.0]), 1.0),
        Candidate(np.array([8.0, 0.0]), 4.0),
    ]
    result = search_coefficients(
        build_student,
        data["x"],
        data["teacher"],
        (data["x_val"], data["y_val"]),
        order=2,
        epochs=4,
        candidates=candidates,
        eta=2,
        keep_kd=False,
        batch_size=32,
        seed=5,
        verbose=0,
    )
    assert len(result.ranking) >= 2  # survivors were carried over
    loss = PTLoss(
        result.coefficients, result.temperature, teacher_from_logits=True
    )
    alone = train_alone(loss, data["x"], data["teacher"], 4, 32, seed=5)
    assert_same_weights(result.uncalibrated_student, alone)


def test_standardized_winner_comes_with_a_standardized_loss(data):
    """A winner on z-scored logits trains like `PTLoss(standardize=True)`."""
    candidates = [
        Candidate(np.array([1.0, 0.0]), 2.0, standardize=True),
        Candidate(np.array([-0.5, 0.0]), 2.0, standardize=True),
    ]
    result = search_coefficients(
        build_student,
        data["x"],
        data["teacher"],
        (data["x_val"], data["y_val"]),
        order=2,
        epochs=2,
        candidates=candidates,
        eta=2,
        keep_kd=False,
        batch_size=32,
        seed=2,
        verbose=0,
    )
    assert result.standardize and result.loss.standardize
    alone = train_alone(result.loss, data["x"], data["teacher"], 2, 32, seed=2)
    assert_same_weights(result.uncalibrated_student, alone)


def test_search_mixes_hard_labels_into_every_member(data):
    """`student_loss_weight` gives (1 - w) * PTLoss + w * cross-entropy."""
    eps = np.array([2.0, 0.0])
    result = search_coefficients(
        build_student,
        data["x"],
        data["teacher"],
        (data["x_val"], data["y_val"]),
        order=2,
        epochs=2,
        candidates=[Candidate(eps, 2.0)],
        labels=data["labels"],
        student_loss_weight=0.4,
        batch_size=40,
        seed=2,
        verbose=0,
    )
    distill = PTLoss(eps, 2.0, teacher_from_logits=True)
    hard = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def mixed(y, z):
        labels = keras.ops.argmax(y[:, NUM_CLASSES:], axis=-1)
        return 0.6 * distill(y[:, :NUM_CLASSES], z) + 0.4 * hard(labels, z)

    targets = np.concatenate(
        [data["teacher"], np.eye(NUM_CLASSES)[data["labels"]]], axis=-1
    ).astype("float32")
    alone = train_alone(mixed, data["x"], targets, 2, 40, seed=2)
    assert_same_weights(result.uncalibrated_student, alone)


def biased_to(cls):
    """Class-wise eps that moves the proxy's argmax towards class `cls`."""
    eps = np.full((NUM_CLASSES, 2), 0.0)
    eps[:, 0] = -20.0
    eps[cls, 0] = 20.0
    return eps


def test_halving_keeps_the_best_members(data):
    good = [Candidate(np.zeros(2), t) for t in (1.0, 2.0)]
    bad = [Candidate(biased_to(c), 1.0) for c in range(NUM_CLASSES)]
    candidates = bad[:2] + good + bad[2:]
    result = search_coefficients(
        build_student,
        data["x"],
        data["teacher"],
        (data["x_val"], data["y_val"]),
        order=2,
        epochs=9,
        candidates=candidates,
        keep_kd=False,
        optimizer=keras.optimizers.Adam(0.02),
        batch_size=32,
        verbose=0,
    )
    first = result.ranking[0]["members"]
    assert {m["candidate"] for m in first[:2]} == {2, 3}
    # Each rung's survivors are the best of the rung before.
    for before, after in zip(result.ranking, result.ranking[1:], strict=False):
        kept = {m["candidate"] for m in after["members"]}
        best = {m["candidate"] for m in before["members"][: len(kept)]}
        assert kept == best
    assert result.winner in (2, 3)
    # The biased students predict one class: about chance accuracy.
    best_bad = max(m["score"] for m in first if m["candidate"] not in (2, 3))
    assert result.score > best_bad + 0.2


def test_kd_is_kept_to_the_end_and_never_beaten(data):
    result = search_coefficients(
        build_student,
        data["x"],
        data["teacher"],
        (data["x_val"], data["y_val"]),
        order=2,
        epochs=3,
        temperatures=(1.0, 4.0),
        strengths=(-1.0, 4.0),
        batch_size=32,
        verbose=0,
    )
    last = result.ranking[-1]["members"]
    assert any(result.candidates[m["candidate"]].is_kd for m in last)
    assert result.kd_score is not None
    assert result.score >= result.kd_score


def test_halving_schedule_and_its_cost():
    assert halving_schedule(9, 9, eta=3) == [
        {"members": 9, "epochs": 1},
        {"members": 3, "epochs": 3},
        {"members": 1, "epochs": 9},
    ]
    assert schedule_cost(halving_schedule(9, 9, eta=3)) == 9 + 3 * 2 + 6
    # Too few epochs for four rungs: fewer rungs, each cutting more.
    assert halving_schedule(27, 2, eta=3) == [
        {"members": 27, "epochs": 1},
        {"members": 1, "epochs": 2},
    ]
    assert halving_schedule(1, 5) == [{"members": 1, "epochs": 5}]
    # A later first cut: epochs grow geometrically from 6 to 9
    # (6 * 1.5**0.5 = 7.3 -> 7).
    assert halving_schedule(4, 9, eta=3, first_epochs=6) == [
        {"members": 4, "epochs": 6},
        {"members": 2, "epochs": 7},
        {"members": 1, "epochs": 9},
    ]
    assert schedule_cost(halving_schedule(4, 9, first_epochs=6)) == 28


def test_budget_accounting(data):
    candidates = [Candidate(np.array([s, 0.0]), 2.0) for s in range(9)]
    # Full schedule for 9 candidates over 3 epochs: 9@1, 3@2 (cut by 3),
    # 1@3: 9 + 3 + 1 = 13 student-epochs; a budget of 8 fits 5 candidates
    # (5@1, 2@2, 1@3: 5 + 2 + 1).
    result = search_coefficients(
        build_student,
        data["x"],
        data["teacher"],
        (data["x_val"], data["y_val"]),
        order=2,
        epochs=3,
        budget=8,
        candidates=candidates,
        keep_kd=False,
        batch_size=60,
        verbose=0,
    )
    assert len(result.candidates) == 5
    trained, previous = 0, 0
    for rung in result.ranking:
        trained += len(rung["members"]) * (rung["epochs"] - previous)
        previous = rung["epochs"]
    assert result.cost["student_epochs"] == trained == 8
    assert result.cost["budget"] == 8
    assert result.cost["seconds"] >= result.cost["training_seconds"] > 0
    assert result.ranking[-1]["epochs"] == 3


def test_spare_budget_goes_to_a_later_first_cut(data):
    candidates = [Candidate(np.array([s, 0.0]), 2.0) for s in range(4)]
    result = search_coefficients(
        build_student,
        data["x"][:120],
        data["teacher"][:120],
        (data["x_val"], data["y_val"]),
        order=2,
        epochs=9,
        budget=30,
        candidates=candidates,
        keep_kd=False,
        batch_size=60,
        verbose=0,
    )
    # 4@1, 2@3, 1@9 costs 14; the latest first cut within 30 is at epoch
    # 6 (4@6, 2@7, 1@9: 24 + 2 + 2 = 28; at 7 it would cost 31).
    assert [r["epochs"] for r in result.ranking] == [6, 7, 9]
    assert result.cost["student_epochs"] == 28


def test_time_budget_skips_to_the_last_rung(data):
    candidates = [Candidate(np.array([s, 0.0]), 2.0) for s in range(9)]
    result = search_coefficients(
        build_student,
        data["x"],
        data["teacher"],
        (data["x_val"], data["y_val"]),
        order=2,
        epochs=3,
        time_budget=1e-3,
        candidates=candidates,
        keep_kd=False,
        batch_size=60,
        verbose=0,
    )
    # Planned 9@1, 3@2, 1@3; the first rung already overran the budget.
    assert [len(r["members"]) for r in result.ranking] == [9, 1]
    assert [r["epochs"] for r in result.ranking] == [1, 3]
    assert result.winner == result.ranking[0]["members"][0]["candidate"]
    assert result.cost["student_epochs"] == 9 + 2
    assert result.cost["time_budget"] == 1e-3


def test_result_is_ready_to_use(data, tmp_path):
    result = search_coefficients(
        build_student,
        data["x"],
        data["teacher"],
        (data["x_val"], data["y_val"]),
        order=2,
        epochs=2,
        temperatures=(2.0,),
        strengths=(3.0,),
        metric="nll",
        batch_size=60,
        verbose=0,
    )
    assert isinstance(result, SearchResult)
    assert isinstance(result.loss, PTLoss)
    assert result.loss.temperature == result.temperature
    assert_allclose(result.loss.coefficients, result.coefficients)
    assert not result.higher_is_better
    # The reported score is the student's own validation NLL.
    probs = np_softmax(
        np_mlp_logits(result.uncalibrated_student, data["x_val"])
    )
    nll = -np.mean(np.log(probs[np.arange(60), data["y_val"]]))
    assert result.score == pytest.approx(nll, rel=1e-4)
    encoded = json.loads(json.dumps(result.to_dict()))
    assert encoded["winner"] == result.winner
    assert result.candidates[result.winner].label in result.summary()
    path = tmp_path / "search.png"
    result.plot(path)
    assert path.stat().st_size > 0


def test_teacher_model_equals_its_precomputed_logits(data):
    teacher = tiny_classifier(NUM_FEATURES, NUM_CLASSES, hidden=16, seed=9)
    logits = to_numpy(teacher(data["x"]))
    kwargs = dict(
        order=2,
        epochs=2,
        temperatures=(2.0,),
        strengths=(2.0,),
        batch_size=60,
        verbose=0,
    )
    validation = (data["x_val"], data["y_val"])
    from_model = search_coefficients(
        build_student, data["x"], teacher, validation, **kwargs
    )
    from_logits = search_coefficients(
        build_student,
        data["x"],
        logits,
        validation,
        validation_teacher=to_numpy(teacher(data["x_val"])),
        **kwargs,
    )
    assert [c.label for c in from_model.candidates] == [
        c.label for c in from_logits.candidates
    ]
    for got, want in zip(
        from_model.student.get_weights(),
        from_logits.student.get_weights(),
        strict=True,
    ):
        assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_proposal_always_includes_kd_and_the_training_free_pick(data):
    probs = np_softmax(data["teacher_val"])
    candidates = propose_candidates(
        probs,
        data["y_val"],
        order=2,
        temperatures=(1.0, 3.0),
        strengths=(2.0, -1.0),
        mode="classwise",
        standardize="search",
        standardized_temperatures=(0.5, 1.0),
    )
    plain = [c for c in candidates if not c.standardize]
    scored = [c for c in candidates if c.standardize]
    # z-scored: LS-KD and the directions at their own temperatures, no picks.
    assert [c.label for c in scored] == [
        "KD T=0.5 LS",
        "KD T=1 LS",
        "eps1=+2 T=0.5 LS",
        "eps1=+2 T=1 LS",
        "eps1=-1 T=0.5 LS",
        "eps1=-1 T=1 LS",
    ]
    kd = [c for c in plain if c.source == "kd"]
    assert [c.temperature for c in kd] == [1.0, 3.0]
    assert all(np.array_equal(c.coefficients, np.zeros(2)) for c in kd)
    picks = [c for c in plain if c.source == "selection"]
    assert sorted(c.coefficients.shape for c in picks) == [
        (2,),
        (2,),
        (3, 2),
        (3, 2),
    ]
    directions = [
        c.coefficients.tolist() for c in plain if c.source == "direction"
    ]
    # Largest perturbation first.
    assert directions == [[2.0, 0.0]] * 2 + [[-1.0, 0.0]] * 2


def different_widths():
    widths = iter([8, 9])
    return lambda: tiny_classifier(NUM_FEATURES, NUM_CLASSES, next(widths))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"candidates": []}, "candidates"),
        ({"budget": 0.5}, "budget"),
        ({"budget": 2}, "budget"),
        ({"time_budget": 0}, "time_budget"),
        ({"build_student": different_widths()}, "build_student"),
        ({"build_student": lambda: "not a model"}, "build_student"),
        ({"metric": "f1"}, "metric"),
        ({"metric": lambda y, p: 0.0}, "higher_is_better"),
        ({"student_loss_weight": 0.5}, "labels"),
        ({"standardize": "yes"}, "standardize"),
        ({"strengths": (0.0,)}, "strengths"),
        ({"temperatures": ()}, "temperatures"),
        ({"eta": 1}, "eta"),
        ({"epochs": 0}, "epochs"),
        ({"validation_data": "val"}, "validation_data"),
        ({"optimizer": keras.optimizers.Adam(global_clipnorm=1.0)}, "global"),
        ({"candidates": [Candidate(np.zeros(3), 1.0)]}, "coefficients"),
        ({"teacher": np.zeros((5, 3))}, "teacher"),
    ],
)
def test_bad_input_is_refused_clearly(data, kwargs, match):
    arguments = dict(
        build_student=build_student,
        x=data["x"],
        teacher=data["teacher"],
        validation_data=(data["x_val"], data["y_val"]),
        order=2,
        epochs=3,
        temperatures=(1.0,),
        strengths=(2.0,),
        verbose=0,
    )
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=match):
        search_coefficients(**arguments)


def test_population_refuses_members_of_different_shapes():
    members = [tiny_classifier(4, 3, 8), tiny_classifier(4, 3, 9)]
    with pytest.raises(ValueError, match="same weight shapes"):
        StudentPopulation(members, np.zeros((2, 1)), [1.0, 1.0])


def test_population_config_round_trips():
    population = StudentPopulation(
        same_start(2),
        np.stack([EPS_A, 0 * EPS_A]),
        [2.0, 1.0],
        [True, False],
        student_loss_weight=0.25,
    )
    restored = StudentPopulation.from_config(population.get_config())
    assert restored.size == 2
    for name in ("coefficients", "temperatures", "standardize"):
        assert_allclose(getattr(restored, name), getattr(population, name))
    assert float(to_numpy(restored.student_loss_weight)) == 0.25
    x = np.zeros((4, NUM_FEATURES), "float32")
    assert tuple(restored(x).shape) == (4, 2, NUM_CLASSES)


SEQ_VOCAB, SEQ_LENGTH = 7, 5


def build_sequence_student():
    """A tiny causal sequence model: logits `(batch, S, K)` per position."""
    initializer = keras.initializers.GlorotUniform(seed=4)
    inputs = keras.Input((SEQ_LENGTH,), dtype="int32")
    h = keras.layers.Embedding(
        SEQ_VOCAB, 4, embeddings_initializer=initializer
    )(inputs)
    h = keras.layers.Conv1D(
        6,
        2,
        padding="causal",
        activation="tanh",
        kernel_initializer=initializer,
    )(h)
    outputs = keras.layers.Dense(SEQ_VOCAB, kernel_initializer=initializer)(h)
    return keras.Model(inputs, outputs)


@pytest.fixture
def sequences():
    rng = np.random.default_rng(1)
    tokens = rng.integers(0, SEQ_VOCAB, size=(120, SEQ_LENGTH + 1))
    shift = rng.normal(size=(SEQ_VOCAB, SEQ_VOCAB)) * 2.0
    teacher = shift[tokens[:, :-1]].astype("float32")
    return {
        "x": tokens[:96, :-1].astype("int32"),
        "teacher": teacher[:96],
        "x_val": tokens[96:, :-1].astype("int32"),
        "y_val": tokens[96:, 1:].astype("int32"),
    }


def test_sequence_member_losses_are_the_mean_over_positions(sequences):
    students = [build_sequence_student() for _ in range(2)]
    population = StudentPopulation(
        students, np.stack([EPS_A, 0 * EPS_A]), [2.0, 1.0], [False, True]
    )
    x, t = sequences["x"][:8], sequences["teacher"][:8]
    z = to_numpy(population(x))
    assert z.shape == (8, 2, SEQ_LENGTH, SEQ_VOCAB)
    losses = to_numpy(population.member_losses(t, z))
    assert losses.shape == (8, 2)
    flat_t = t.reshape(-1, SEQ_VOCAB)
    first = np_pt_loss(flat_t, z[:, 0].reshape(-1, SEQ_VOCAB), EPS_A, 2.0, True)
    assert_allclose(losses[:, 0], first.reshape(8, -1).mean(1), rtol=1e-4)
    second = np_pt_loss(
        np_standardize(flat_t),
        np_standardize(z[:, 1].reshape(-1, SEQ_VOCAB)),
        np.zeros(2),
        1.0,
        True,
    )
    assert_allclose(
        losses[:, 1], second.reshape(8, -1).mean(1), rtol=1e-4, atol=1e-5
    )


def test_sequence_search_winner_equals_its_separate_training(sequences):
    """Language-model students: (batch, S, K) outputs, labels (N_val, S).

    SGD, whose update is linear in the gradient: TensorFlow's Adam squares
    an embedding's sparse gradient per occurrence of a token, the
    population's stacked (dense) gradient once per token.
    """
    candidates = [
        Candidate(np.zeros(2), 2.0),
        Candidate(np.array([2.0, 0.0]), 1.0),
        Candidate(np.array([-0.5, 0.0]), 2.0),
    ]
    # The validation tokens are random: the fitted temperature may run to
    # its bound (it says so, depending on the backend's random streams).
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*upper bound.*")
        result = search_coefficients(
            build_sequence_student,
            sequences["x"],
            sequences["teacher"],
            (sequences["x_val"], sequences["y_val"]),
            order=2,
            epochs=3,
            candidates=candidates,
            eta=2,
            keep_kd=False,
            metric="nll",
            batch_size=16,
            optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
            seed=2,
            verbose=0,
        )
    # Calibrated per token: one position per validation label.
    assert result.calibration["num_examples"] == sequences["y_val"].size
    assert to_numpy(result.student(sequences["x_val"][:2])).shape == (
        2,
        SEQ_LENGTH,
        SEQ_VOCAB,
    )
    assert len(result.ranking) >= 2
    keras.utils.set_random_seed(2)
    alone = build_sequence_student()
    alone.compile(
        optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
        loss=PTLoss(
            result.coefficients, result.temperature, teacher_from_logits=True
        ),
    )
    order_rng = np.random.default_rng(2)
    for _ in range(3):
        order = order_rng.permutation(len(sequences["x"]))
        alone.fit(
            sequences["x"][order],
            sequences["teacher"][order],
            batch_size=16,
            epochs=1,
            shuffle=False,
            verbose=0,
        )
    assert_same_weights(result.uncalibrated_student, alone)
    # The reported score is the validation NLL over every position.
    probs = np_softmax(to_numpy(alone(sequences["x_val"])))
    picked = np.take_along_axis(probs, sequences["y_val"][..., None], -1)
    assert_allclose(result.score, -np.mean(np.log(picked)), rtol=1e-4)


def test_sequence_labels_of_the_wrong_shape_are_refused(sequences):
    with pytest.raises(ValueError, match="validation_data"):
        search_coefficients(
            build_sequence_student,
            sequences["x"],
            sequences["teacher"],
            (sequences["x_val"], sequences["y_val"][:, 0]),
            order=2,
            epochs=1,
            verbose=0,
        )


# --------------------------------------------------------------------------
# The default pipeline: logits and z-scored logits, KD and LS-KD anchors,
# ties by NLL, a calibrated winner.


def _default_search(data, **kwargs):
    arguments = dict(
        order=2,
        epochs=3,
        strengths=(2.0,),
        batch_size=60,
        verbose=0,
    )
    arguments.update(kwargs)
    return search_coefficients(
        build_student,
        data["x"],
        data["teacher"],
        (data["x_val"], data["y_val"]),
        **arguments,
    )


def test_default_proposal_covers_both_logits_and_both_grids(data):
    probs = np_softmax(data["teacher_val"])
    candidates = propose_candidates(
        probs, data["y_val"], order=2, strengths=(2.0,), standardize="search"
    )
    # The eps = 0 anchors first: KD at KD's temperatures, then LS-KD at
    # lower ones (z-scored logits have unit spread).
    assert [c.label for c in candidates[:8]] == [
        "KD T=1",
        "KD T=2",
        "KD T=4",
        "KD T=8",
        "KD T=0.5 LS",
        "KD T=1 LS",
        "KD T=2 LS",
        "KD T=4 LS",
    ]
    assert all(c.is_kd for c in candidates[:4])
    assert all(c.is_lskd for c in candidates[4:8])
    # The training-free picks (for the teacher's own probabilities) on the
    # logits only, one per temperature.
    picks = [c for c in candidates if c.source == "selection"]
    assert [c.temperature for c in picks] == [1.0, 2.0, 4.0, 8.0]
    assert not any(c.standardize for c in picks)
    # Then each direction on the logits beside its z-scored twin.
    directions = [c.label for c in candidates if c.source == "direction"]
    assert directions == [
        "eps1=+2 T=1",
        "eps1=+2 T=0.5 LS",
        "eps1=+2 T=2",
        "eps1=+2 T=1 LS",
        "eps1=+2 T=4",
        "eps1=+2 T=2 LS",
        "eps1=+2 T=8",
        "eps1=+2 T=4 LS",
    ]


def test_kd_and_lskd_are_kept_to_the_last_rung_and_never_beaten(data):
    result = _default_search(data, budget=40, calibrate=False)
    plain = {c.temperature for c in result.candidates if not c.standardize}
    scored = {c.temperature for c in result.candidates if c.standardize}
    assert plain == {1.0, 2.0, 4.0, 8.0} and scored == {0.5, 1.0, 2.0, 4.0}
    last = [
        result.candidates[m["candidate"]] for m in result.ranking[-1]["members"]
    ]
    assert any(c.is_kd for c in last) and any(c.is_lskd for c in last)
    assert len(last) == 3
    assert result.score >= result.kd_score
    assert result.score >= result.lskd_score
    summary = result.summary()
    assert "LS-KD (eps = 0, z-scored logits) at the same epochs" in summary


def test_even_a_budget_for_two_candidates_keeps_both_anchors(data):
    candidates = [Candidate(np.array([s, 0.0]), 2.0) for s in (1.0, 2.0)]
    candidates += [
        Candidate(np.zeros(2), 2.0),
        Candidate(np.zeros(2), 2.0, standardize=True),
    ]
    result = _default_search(
        data, candidates=candidates, epochs=2, budget=5, calibrate=False
    )
    # 3 candidates fit (3@1, 2 kept... ): the two anchors always among them.
    kinds = [(c.is_kd, c.is_lskd) for c in result.candidates]
    assert (True, False) in kinds and (False, True) in kinds


def test_ties_on_the_metric_go_to_the_lower_validation_nll(data):
    """With a metric on which every member ties, the ranking is by NLL."""

    def constant(y_true, probs):
        return 0.5

    result = _default_search(
        data,
        metric=constant,
        higher_is_better=True,
        temperatures=(1.0, 4.0),
        calibrate=False,
    )
    for rung in result.ranking:
        nlls = [m["nll"] for m in rung["members"]]
        assert nlls == sorted(nlls)
    # The recorded NLL is the student's, computed independently.
    member = result.ranking[-1]["members"][0]
    logits = to_numpy(result.uncalibrated_student(data["x_val"]))
    probs = np_softmax(logits)
    expected = -np.mean(np.log(probs[np.arange(len(probs)), data["y_val"]]))
    np.testing.assert_allclose(member["nll"], expected, rtol=1e-4)


def test_the_winner_comes_calibrated_on_the_validation_split(data):
    import scipy.optimize
    import scipy.special

    result = _default_search(data, budget=20)
    raw = to_numpy(result.uncalibrated_student(data["x_val"])).astype("float64")
    y = data["y_val"]

    def nll(log_t):
        log_q = scipy.special.log_softmax(raw / np.exp(log_t), axis=-1)
        return -np.mean(log_q[np.arange(len(y)), y])

    best = scipy.optimize.minimize_scalar(
        nll, bounds=(np.log(0.05), np.log(20.0)), method="bounded"
    )
    np.testing.assert_allclose(
        result.calibration["temperature"], np.exp(best.x), rtol=2e-3
    )
    calibrated = to_numpy(result.student(data["x_val"]))
    np.testing.assert_allclose(
        calibrated, raw / result.calibration["temperature"], rtol=1e-4
    )
    assert np.array_equal(calibrated.argmax(-1), raw.argmax(-1))
    assert result.calibration["nll_after"] <= result.calibration["nll_before"]
    assert "calibrated: T = " in result.summary()
    assert result.to_dict()["calibration"] == result.calibration


def test_the_calibration_reuses_the_logits_the_last_rung_scored(
    data, monkeypatch
):
    # One `predict` per rung, on the population: the calibration fits the
    # winner's logits from the last rung's scoring, no second pass, and
    # gives the fit of calibrating the winner afresh.
    predicted = []
    predict = keras.Model.predict

    def counting_predict(self, *args, **kwargs):
        predicted.append(type(self).__name__)
        return predict(self, *args, **kwargs)

    monkeypatch.setattr(keras.Model, "predict", counting_predict)
    result = _default_search(data, budget=20)
    assert predicted == ["StudentPopulation"] * len(result.ranking)
    monkeypatch.undo()
    fresh = calibrate(
        result.uncalibrated_student, (data["x_val"], data["y_val"])
    )
    # The population's batched matmuls round apart from the winner's own.
    assert fresh.calibration == pytest.approx(result.calibration, rel=1e-5)


def test_calibrate_false_returns_the_student_as_trained(data):
    result = _default_search(data, budget=20, calibrate=False)
    assert result.student is result.uncalibrated_student
    assert result.calibration == {}
    assert "calibrated" not in result.summary()


def two_class_data(data):
    binary = dict(data)
    binary["teacher"] = data["teacher"][:, :2]
    binary["y_val"] = data["teacher_val"][:, :2].argmax(-1)
    return binary


def test_two_classes_search_the_logits_only_by_default(data):
    binary = two_class_data(data)

    def build_binary():
        return tiny_classifier(NUM_FEATURES, 2, hidden=8, seed=3)

    result = search_coefficients(
        build_binary,
        binary["x"],
        binary["teacher"],
        (binary["x_val"], binary["y_val"]),
        order=2,
        epochs=2,
        strengths=(2.0,),
        batch_size=60,
        calibrate=False,
        verbose=0,
    )
    assert not any(c.standardize for c in result.candidates)
    assert result.lskd_score is None and result.kd_score is not None


@pytest.mark.parametrize("standardize", [True, "search"])
def test_two_classes_refuse_standardised_logits(data, standardize):
    binary = two_class_data(data)
    with pytest.raises(ValueError, match="at least 3 classes.*Received: .*2"):
        search_coefficients(
            lambda: tiny_classifier(NUM_FEATURES, 2, hidden=8, seed=3),
            binary["x"],
            binary["teacher"],
            (binary["x_val"], binary["y_val"]),
            order=2,
            epochs=2,
            standardize=standardize,
            verbose=0,
        )
