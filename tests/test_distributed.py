"""Data-parallel distillation on 2 emulated CPU devices equals one device.

JAX: `keras.distribution.DataParallel` with
`XLA_FLAGS=--xla_force_host_platform_device_count=2`. TensorFlow:
`tf.distribute.MirroredStrategy` over two logical CPU devices. The device
count must be set before the backend starts, so one subprocess per test
session runs tests/distributed_check.py (the same Distiller, callback and
data on one device, then on two) and writes its numbers as JSON.

Keras has no multi-device CPU path for torch: these tests are defined only
under the JAX and TensorFlow backends (not skipped under torch; see
docs/distributed.md for what torch users do).
"""

import json
import os
from pathlib import Path

import keras
import numpy as np
import pytest

from tests.utils import run_program

SCRIPT = Path(__file__).with_name("distributed_check.py")
EPS_A, EPS_B = [0.4, -0.1], [-0.2, 0.15]
LOSS_KEYS = ("loss", "distillation_loss", "student_loss")


def _run_script(tmp_path_factory):
    out = tmp_path_factory.mktemp("distributed") / "result.json"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env["KERAS_BACKEND"] = keras.backend.backend()
    env["XLA_FLAGS"] = (
        env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2"
    ).strip()
    run_program(SCRIPT, out, env=env, timeout=300)
    return json.loads(out.read_text())


# Collected only where Keras has a CPU multi-device path (JAX, TensorFlow).
if keras.backend.backend() in ("jax", "tensorflow"):

    @pytest.fixture(scope="module")
    def result(tmp_path_factory):
        return _run_script(tmp_path_factory)

    def test_two_devices_are_used(result):
        assert result["num_devices"] == 2

    def test_losses_equal_the_single_device_run(result):
        for key in LOSS_KEYS:
            np.testing.assert_allclose(
                result["multi"]["history"][key],
                result["single"]["history"][key],
                rtol=1e-5,
                atol=1e-6,
                err_msg=key,
            )
            np.testing.assert_allclose(
                result["multi"]["evaluate"][key],
                result["single"]["evaluate"][key],
                rtol=1e-5,
                atol=1e-6,
                err_msg=key,
            )

    def test_weights_after_sgd_steps_equal_the_single_device_run(result):
        multi, single = result["multi"]["weights"], result["single"]["weights"]
        assert len(multi) == len(single)
        for a, b in zip(multi, single, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)

    def test_callback_coefficients_reach_every_replica(result):
        for run in ("single", "multi"):
            history = result[run]["history"]
            # Selected before epoch 1, re-selected before epoch 2.
            np.testing.assert_allclose(history["pt_eps_1"], [0.4, -0.2])
            np.testing.assert_allclose(history["pt_eps_2"], [-0.1, 0.15])
            np.testing.assert_allclose(result[run]["coefficients"], EPS_B)
        # The distributed loss after the last assignment equals the float64
        # numpy loss of the trained weights with EPS_B.
        for key in LOSS_KEYS:
            np.testing.assert_allclose(
                result["multi"]["evaluate"][key],
                result["multi"]["numpy"][key],
                rtol=1e-5,
                atol=1e-6,
                err_msg=key,
            )

    def test_indivisible_batches_are_rejected_with_sizes(result):
        errors = result["errors"]
        assert errors["uneven_last_batch"] is not None
        assert (
            "batch_size=8, num_examples=33, num_devices=2"
            in errors["uneven_last_batch"]
        )
        assert "gives a batch of 1" in errors["uneven_last_batch"]
        assert errors["odd_batch_size"] is not None
        assert (
            "batch_size=5, num_examples=32, num_devices=2"
            in errors["odd_batch_size"]
        )
