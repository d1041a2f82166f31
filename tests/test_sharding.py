"""The search and a model-parallel teacher on 8 emulated CPU devices.

One subprocess (the device count must be set before JAX starts) runs
tests/sharding_check.py: the same `search_coefficients` on one device,
under `keras.distribution.DataParallel` and with the population's member
axis sharded (`member_axis="model"` on a (2, 4) ("batch", "model") mesh),
and a `Distiller` whose KerasHub GPT-2 teacher is laid out by
`ModelParallel` on that mesh, trained on one device and on eight.

`keras.distribution` is implemented for JAX only: these tests are defined
only under the JAX backend (not skipped elsewhere; tests/test_member_axis.py
checks the argument on every backend, tests/test_distributed.py covers
TensorFlow's `MirroredStrategy`).
"""

import json
import os
from pathlib import Path

import keras
import numpy as np
import pytest

from tests.utils import run_program

SCRIPT = Path(__file__).with_name("sharding_check.py")
# Float32 sums taken in another order on another split of the work.
RTOL, ATOL = 1e-5, 1e-6


def _run_script(tmp_path_factory):
    out = tmp_path_factory.mktemp("sharding") / "result.json"
    env = dict(os.environ, KERAS_BACKEND="jax", TF_CPP_MIN_LOG_LEVEL="2")
    env["XLA_FLAGS"] = (
        env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
    ).strip()
    run_program(SCRIPT, "check", out, env=env, timeout=900)
    return json.loads(out.read_text())


def _assert_same_search(run, single):
    assert run["winner"] == single["winner"]
    assert run["schedule"] == single["schedule"]
    for rung, rung_single in zip(run["scores"], single["scores"], strict=True):
        # The same members, ranked in the same order ...
        assert [m[0] for m in rung] == [m[0] for m in rung_single]
        # ... with the same accuracy and validation NLL.
        np.testing.assert_allclose(
            [m[1:] for m in rung],
            [m[1:] for m in rung_single],
            rtol=RTOL,
            atol=ATOL,
        )
    for a, b in zip(run["weights"], single["weights"], strict=True):
        np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL)


if keras.backend.backend() == "jax":

    @pytest.fixture(scope="module")
    def result(tmp_path_factory):
        return _run_script(tmp_path_factory)

    def test_eight_devices_are_used(result):
        assert result["num_devices"] == 8

    def test_the_single_device_search_ranks_on_distinct_scores(result):
        # The runs are compared on a search whose members differ.
        scores = [m[2] for m in result["single"]["scores"][0]]
        assert len(set(scores)) == len(scores)

    def test_search_under_data_parallel_equals_one_device(result):
        _assert_same_search(result["data_parallel"], result["single"])

    def test_search_with_sharded_members_equals_one_device(result):
        _assert_same_search(result["member_sharded"], result["single"])

    def test_member_axis_is_laid_out_on_the_model_axis(result):
        layouts = result["member_layouts"]
        # 4 members on the 4 devices of "model", 8 examples on 2 of "batch".
        assert layouts["even_spec"] == ["batch", "model"]
        assert layouts["even_shards"] == 8
        assert layouts["even_shard_shape"] == [4, 1, 4]
        # 6 members do not divide by 4: the compiled step still constrains.
        assert layouts["uneven_constraint"]

    def test_model_parallel_teacher_is_sharded(result):
        run = result["gpt2_model_parallel"]
        assert run["embedding_spec"] == ["model", "None"]
        assert run["query_spec"] == ["None", "model", "None"]
        # 4 heads over the 4 devices of "model": one head per device.
        assert run["query_shard_shape"] == [32, 1, 8]
        assert result["gpt2_single"]["query_spec"] is None

    def test_distiller_with_model_parallel_teacher_equals_one_device(result):
        run, single = result["gpt2_model_parallel"], result["gpt2_single"]
        np.testing.assert_allclose(
            run["teacher_logits"],
            single["teacher_logits"],
            rtol=RTOL,
            atol=ATOL,
        )
        assert run["history"].keys() == single["history"].keys()
        for key, values in run["history"].items():
            np.testing.assert_allclose(
                values,
                single["history"][key],
                rtol=RTOL,
                atol=ATOL,
                err_msg=key,
            )
        for a, b in zip(
            run["student_weights"], single["student_weights"], strict=True
        ):
            np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL)
        # The student trained: its weights moved from the shared start.
        moved = [
            np.abs(np.asarray(a) - np.asarray(b)).max()
            for a, b in zip(
                single["student_weights"],
                single["initial_student"],
                strict=True,
            )
        ]
        assert max(moved) > 1e-3
