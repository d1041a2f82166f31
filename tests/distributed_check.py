"""Runs one Distiller on 1 device and on 2 emulated CPU devices; writes JSON.

Not a test module: tests/test_distributed.py runs it in a subprocess,
because the device count must be fixed before JAX or TensorFlow starts
(`XLA_FLAGS=--xla_force_host_platform_device_count=2` for JAX, set by the
caller; two logical CPU devices for TensorFlow, configured below).

Usage: KERAS_BACKEND=jax|tensorflow python tests/distributed_check.py OUT
"""

import json
import os
import sys

BACKEND = os.environ["KERAS_BACKEND"]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

if BACKEND == "tensorflow":
    import tensorflow as tf

    _cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        _cpu, [tf.config.LogicalDeviceConfiguration()] * 2
    )

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_ptloss import Distiller  # noqa: E402
from keras_ptloss import PTLoss  # noqa: E402
from keras_ptloss import ReestimateCoefficients  # noqa: E402
from tests.utils import FixedSelector  # noqa: E402
from tests.utils import np_mlp_logits  # noqa: E402
from tests.utils import np_pt_loss  # noqa: E402
from tests.utils import np_sparse_ce  # noqa: E402
from tests.utils import tiny_classifier  # noqa: E402

N, F, K, T, W = 32, 5, 3, 2.0, 0.25
# The callback assigns EPS_A before epoch 1 and EPS_B before epoch 2.
EPS_A, EPS_B = [0.4, -0.1], [-0.2, 0.15]

rng = np.random.default_rng(0)
X = rng.normal(size=(N + 1, F)).astype("float32")
Y = rng.integers(0, K, size=N + 1).astype("int32")
VAL_PROBS = rng.dirichlet(np.ones(K), size=12)
VAL_LABELS = rng.integers(0, K, size=12)
TEACHER_WEIGHTS = tiny_classifier(F, K, hidden=8, seed=0).get_weights()
STUDENT_WEIGHTS = tiny_classifier(F, K, hidden=6, seed=10).get_weights()


def build():
    teacher = tiny_classifier(F, K, hidden=8, seed=0)
    student = tiny_classifier(F, K, hidden=6, seed=10)
    teacher.set_weights(TEACHER_WEIGHTS)
    student.set_weights(STUDENT_WEIGHTS)
    loss = PTLoss([0.0, 0.0], temperature=T, teacher_from_logits=True)
    distiller = Distiller(teacher, student, loss, student_loss_weight=W)
    distiller.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return distiller


def train():
    distiller = build()
    probs = VAL_PROBS.copy()
    # A changed validation split before epoch 2 makes the callback select
    # again (it skips a selection on unchanged teacher and data).
    change = keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda epoch, logs: (
            epoch == 1 and probs.__setitem__(slice(None), probs[::-1].copy())
        )
    )
    callback = ReestimateCoefficients(
        (None, VAL_LABELS),
        teacher_probs=probs,
        selector=FixedSelector((EPS_A, T), (EPS_B, T)),
        verbose=0,
    )
    history = distiller.fit(
        X[:N],
        Y[:N],
        batch_size=8,
        epochs=2,
        shuffle=False,
        callbacks=[change, callback],
        verbose=0,
    )
    evaluated = distiller.evaluate(
        X[:N], Y[:N], batch_size=8, return_dict=True, verbose=0
    )
    return distiller, history.history, evaluated


def numpy_losses(distiller):
    """Independent float64 losses of the trained models on X[:N]."""
    t = np_mlp_logits(distiller.teacher, X[:N])
    z = np_mlp_logits(distiller.student, X[:N])
    eps = np.asarray(keras.ops.convert_to_numpy(distiller.coefficients))
    distill = float(np.mean(np_pt_loss(t, z, eps, T, True)))
    student = float(np.mean(np_sparse_ce(z, Y[:N])))
    return {
        "loss": W * student + (1 - W) * distill,
        "distillation_loss": distill,
        "student_loss": student,
    }


def summary(distiller, history, evaluated):
    return {
        "history": {k: [float(v) for v in vs] for k, vs in history.items()},
        "evaluate": {k: float(v) for k, v in evaluated.items()},
        "numpy": numpy_losses(distiller),
        "weights": [np.asarray(w).tolist() for w in distiller.get_weights()],
        "coefficients": np.asarray(
            keras.ops.convert_to_numpy(distiller.coefficients)
        ).tolist(),
    }


def bad_batches():
    """The error message of each fit whose batches do not divide by 2."""
    errors = {}
    for name, num_examples, batch_size in (
        ("uneven_last_batch", N + 1, 8),
        ("odd_batch_size", N, 5),
    ):
        distiller = build()
        try:
            distiller.fit(
                X[:num_examples],
                Y[:num_examples],
                batch_size=batch_size,
                epochs=1,
                verbose=0,
            )
            errors[name] = None
        except ValueError as e:
            errors[name] = str(e)
    return errors


def main(out):
    result = {"backend": BACKEND, "single": summary(*train())}
    if BACKEND == "jax":
        keras.distribution.set_distribution(keras.distribution.DataParallel())
        result["num_devices"] = len(keras.distribution.list_devices())
        result["multi"] = summary(*train())
        result["errors"] = bad_batches()
    else:
        import tensorflow as tf

        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        result["num_devices"] = strategy.num_replicas_in_sync
        with strategy.scope():
            result["multi"] = summary(*train())
            result["errors"] = bad_batches()
    with open(out, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main(sys.argv[1])
