"""`member_axis` of the population and the search, on one device.

A search is bitwise reproducible on a fixed seed (winner, every score,
the winner's weights). On JAX, `member_axis` on a one-device mesh gives
bitwise the same search as without it, and bad values are refused; on
TensorFlow and torch any name is refused with an error naming the JAX
backend (`keras.distribution` is implemented for JAX only). The sharded
runs on 8 emulated devices are in tests/test_sharding.py.
"""

import keras
import numpy as np
import pytest

from keras_ptloss.population import StudentPopulation
from keras_ptloss.search import search_coefficients

F, K = 5, 3


def _data():
    rng = np.random.default_rng(0)
    weights = rng.normal(size=(F, K))
    x = rng.normal(size=(96, F)).astype("float32")
    x_val = rng.normal(size=(40, F)).astype("float32")
    return x, (2.0 * x @ weights).astype("float32"), x_val, x_val @ weights


def _build():
    return keras.Sequential(
        [
            keras.Input((F,)),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.Dense(K),
        ]
    )


def _search(**kwargs):
    x, teacher, x_val, val_logits = _data()
    return search_coefficients(
        _build,
        x,
        teacher,
        (x_val, val_logits.argmax(1)),
        order=2,
        epochs=2,
        temperatures=(1.0,),
        strengths=(2.0, -0.5),
        standardize=False,
        batch_size=16,
        calibrate=False,
        verbose=0,
        **kwargs,
    )


def _members(count=2):
    members = [_build() for _ in range(count)]
    for member in members:
        member(np.zeros((1, F), "float32"))
    return members


def _assert_same_search(a, b):
    assert a.winner == b.winner
    assert a.schedule == b.schedule
    for rung_a, rung_b in zip(a.ranking, b.ranking, strict=True):
        assert [
            (m["candidate"], m["score"], m["nll"]) for m in rung_a["members"]
        ] == [(m["candidate"], m["score"], m["nll"]) for m in rung_b["members"]]
    for u, v in zip(
        a.uncalibrated_student.get_weights(),
        b.uncalibrated_student.get_weights(),
        strict=True,
    ):
        assert np.array_equal(u, v)


@pytest.fixture(scope="module")
def plain():
    """One search without `member_axis`, shared by the comparisons."""
    return _search()


def test_search_is_bitwise_reproducible_on_a_fixed_seed(plain):
    first = _search()
    _assert_same_search(first, plain)
    # The winner trained: its weights left the shared initial ones.
    assert any(
        not np.array_equal(u, v)
        for u, v in zip(
            first.uncalibrated_student.get_weights(),
            first.initial_weights,
            strict=True,
        )
    )


def test_member_axis_must_be_a_name():
    with pytest.raises(ValueError, match="`member_axis` must be the name"):
        StudentPopulation(
            _members(), np.zeros((2, 2)), [1.0, 1.0], member_axis=1
        )
    with pytest.raises(ValueError, match="`member_axis` must be the name"):
        _search(member_axis=("model",))


if keras.backend.backend() == "jax":

    @pytest.fixture
    def one_device_mesh():
        mesh = keras.distribution.DeviceMesh(
            (1, 1), ("batch", "model"), keras.distribution.list_devices()[:1]
        )
        keras.distribution.set_distribution(
            keras.distribution.ModelParallel(
                layout_map=keras.distribution.LayoutMap(mesh),
                batch_dim_name="batch",
            )
        )
        yield
        keras.distribution.set_distribution(None)

    def test_member_axis_on_one_device_is_bitwise_the_plain_search(
        plain, one_device_mesh
    ):
        _assert_same_search(_search(member_axis="model"), plain)

    def test_member_axis_round_trips_through_get_config(one_device_mesh):
        population = StudentPopulation(
            _members(), np.zeros((2, 2)), [1.0, 2.0], member_axis="model"
        )
        config = population.get_config()
        assert config["member_axis"] == "model"
        assert StudentPopulation.from_config(config).member_axis == "model"

    def test_member_axis_needs_a_distribution():
        with pytest.raises(ValueError, match="with no distribution set"):
            StudentPopulation(
                _members(), np.zeros((2, 2)), [1.0, 1.0], member_axis="model"
            )
        with pytest.raises(ValueError, match="with no distribution set"):
            _search(member_axis="model")

    def test_member_axis_must_be_a_mesh_axis_other_than_the_batch(
        one_device_mesh,
    ):
        for name in ("members", "batch"):
            with pytest.raises(
                ValueError,
                match=(
                    "other than its batch axis 'batch'. Received: "
                    f"member_axis='{name}', mesh axes \\('batch', 'model'\\)"
                ),
            ):
                StudentPopulation(
                    _members(), np.zeros((2, 2)), [1.0, 1.0], member_axis=name
                )

else:

    def test_member_axis_is_refused_off_jax():
        backend = keras.backend.backend()
        message = (
            "for the JAX backend only. Received: member_axis='model' on the "
            f"{backend} backend"
        )
        with pytest.raises(ValueError, match=message):
            StudentPopulation(
                _members(), np.zeros((2, 2)), [1.0, 1.0], member_axis="model"
            )
        with pytest.raises(ValueError, match=message):
            _search(member_axis="model")
