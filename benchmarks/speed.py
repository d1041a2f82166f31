"""Speed cases: each times the product against its KD counterpart side by
side in one process (methods interleaved round by round) and returns one
record per method with medians and within-round ratios."""

import numpy as np

from benchmarks import harness
from benchmarks.harness import Case
from benchmarks.render import Table


def loss_step(keras, loss, y_true, logits, mode):
    """A compiled loss + gradient step on `mode` ("jit", "tf.function",
    "xla", "eager"); calling it runs one step and waits for it."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        grad = jax.jit(jax.value_and_grad(lambda z: loss(y_true, z)))
        return lambda: jax.block_until_ready(grad(logits))
    if backend == "tensorflow":
        import tensorflow as tf

        @tf.function(jit_compile=mode == "xla")
        def step(z):
            with tf.GradientTape() as tape:
                tape.watch(z)
                value = loss(y_true, z)
            return value, tape.gradient(value, z)

        return lambda: step(logits)[0].numpy()
    import torch

    leaf = logits.detach().requires_grad_(True)
    return lambda: torch.autograd.grad(loss(y_true, leaf), leaf)


LOSS_MODES = {
    "jax": ["jit"],
    "tensorflow": ["tf.function", "xla"],
    "torch": ["eager"],
}


def loss(classes, batch_size, repeats, inner):
    """PTLoss (M = 1, 5; shared) against KDLoss and Keras's KLDivergence
    (on the teacher's softmax), forward + backward, teacher logits."""
    import keras

    from keras_ptloss import KDLoss
    from keras_ptloss import PTLoss

    rng = np.random.default_rng(0)
    records = []
    for mode in LOSS_MODES[keras.backend.backend()]:
        for k in classes:
            teacher = rng.normal(size=(batch_size, k)).astype("float32")
            logits = keras.ops.convert_to_tensor(
                rng.normal(size=(batch_size, k)).astype("float32")
            )
            softmax = keras.ops.softmax(keras.ops.convert_to_tensor(teacher))
            kl = keras.losses.KLDivergence()
            methods = {
                "KDLoss": (KDLoss(), keras.ops.convert_to_tensor(teacher)),
                "KLDivergence": (
                    lambda y, z, kl=kl: kl(y, keras.ops.softmax(z)),
                    softmax,
                ),
                "PTLoss M=1": (
                    PTLoss([0.3]),
                    keras.ops.convert_to_tensor(teacher),
                ),
                "PTLoss M=5": (
                    PTLoss([0.3, 0.2, 0.1, 0.05, 0.02]),
                    keras.ops.convert_to_tensor(teacher),
                ),
            }
            steps = {
                name: loss_step(keras, fn, y, logits, mode)
                for name, (fn, y) in methods.items()
            }
            for step in steps.values():  # compile and warm up
                step(), step()
            samples = harness.rounds(
                {
                    n: (lambda s=s: harness.clocked(s, inner))
                    for n, s in steps.items()
                },
                repeats,
            )
            for name in steps:
                records.append(
                    {
                        "mode": mode,
                        "classes": k,
                        "method": name,
                        **harness.summary(samples[name], samples["KDLoss"]),
                    }
                )
    return records


def _us(seconds):
    return f"{seconds * 1e6:,.0f}"


def _ratio(row):
    low, high = row["ratio_q"] or (row["ratio"], row["ratio"])
    return f"{row['ratio']:.2f} [{low:.2f}, {high:.2f}]"


CASES = {
    "loss": Case(
        run=loss,
        sizes={
            "full": dict(
                classes=[10, 100, 1000, 10000],
                batch_size=256,
                repeats=21,
                inner=20,
            ),
            "quick": dict(classes=[10], batch_size=8, repeats=2, inner=1),
        },
        merge=("backend", "mode", "classes"),
        description="loss + gradient: PTLoss vs KDLoss vs KLDivergence",
    ),
}

TABLES = {
    "loss": Table(
        case="loss",
        columns=[
            ("backend", "backend", "{}"),
            ("mode", "mode", "{}"),
            ("K", "classes", "{:,}"),
            ("method", "method", "{}"),
            ("µs (wall)", "wall", _us),
            ("µs (CPU)", "cpu", _us),
            ("× KDLoss [quartiles]", _ratio, "{}"),
        ],
    ),
}
