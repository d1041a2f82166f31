"""The search and a model-parallel teacher on many devices; writes JSON.

Not a test module: tests/test_sharding.py runs `check` in a subprocess,
because the device count must be fixed before JAX starts
(`XLA_FLAGS=--xla_force_host_platform_device_count=8` on a CPU; a GPU
machine shows its own devices). JAX backend only (`keras.distribution`).

Usage:
  KERAS_BACKEND=jax python tests/sharding_check.py check OUT.json
      the same search on 1 device, under `DataParallel` and with the
      member axis sharded; a Distiller whose GPT-2 teacher is laid out by
      `ModelParallel`, on 1 device and on all.
  KERAS_BACKEND=jax python tests/sharding_check.py time OUT.json \
      [--scale S] [--hidden H] [--epochs E] [--batch-size B]
      the wall time of one search (compilation included) on 1 device,
      under `DataParallel` and with the members on 2 devices of each
      (batch, model) row, when there are several devices (the sharded-search
      rows of scripts/gpu_rows.sh; `--scale` multiplies the 128 examples).
"""

import argparse
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import jax  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_ptloss import Distiller  # noqa: E402
from keras_ptloss import PTLoss  # noqa: E402
from keras_ptloss import search_coefficients  # noqa: E402
from keras_ptloss.population import StudentPopulation  # noqa: E402

F, K = 6, 4
VOCAB, LENGTH = 64, 8


def search_data(scale=1):
    rng = np.random.default_rng(0)
    weights = rng.normal(size=(F, K))
    x = rng.normal(size=(128 * scale, F)).astype("float32")
    x_val = rng.normal(size=(64 * scale, F)).astype("float32")
    teacher = (2.0 * x @ weights).astype("float32")
    return x, teacher, (x_val, (x_val @ weights).argmax(1))


def build_student(hidden=8):
    return keras.Sequential(
        [
            keras.Input((F,)),
            keras.layers.Dense(hidden, activation="relu"),
            keras.layers.Dense(K),
        ]
    )


def search(member_axis=None, scale=1, hidden=8, epochs=2, batch_size=32):
    x, teacher, validation = search_data(scale)
    return search_coefficients(
        lambda: build_student(hidden),
        x,
        teacher,
        validation,
        order=2,
        epochs=epochs,
        temperatures=(1.0,),
        strengths=(2.0, -0.5),
        standardize=False,
        batch_size=batch_size,
        optimizer=keras.optimizers.Adam(0.02),
        calibrate=False,
        verbose=0,
        member_axis=member_axis,
    )


def search_summary(result):
    return {
        "winner": int(result.winner),
        "schedule": [dict(r) for r in result.schedule],
        "scores": [
            [[m["candidate"], m["score"], m["nll"]] for m in rung["members"]]
            for rung in result.ranking
        ],
        "weights": [
            w.tolist() for w in result.uncalibrated_student.get_weights()
        ],
    }


def member_mesh(shape=(2, 4)):
    """`ModelParallel` on a ("batch", "model") mesh with no variable rules."""
    mesh = keras.distribution.DeviceMesh(
        shape, ("batch", "model"), keras.distribution.list_devices()
    )
    layout_map = keras.distribution.LayoutMap(mesh)
    return keras.distribution.ModelParallel(
        layout_map=layout_map, batch_dim_name="batch"
    )


def member_layouts():
    """How `shard_members` lays out 4 members (even) and 6 (uneven)."""
    students = [build_student() for _ in range(6)]
    for student in students:
        student(np.zeros((1, F), "float32"))
    population = StudentPopulation(
        students, np.zeros((6, 2)), np.ones(6), member_axis="model"
    )
    even = jax.jit(population.shard_members)(np.zeros((8, 4, K), "float32"))
    uneven = (
        jax.jit(population.shard_members)
        .lower(np.zeros((8, 6, K), "float32"))
        .as_text()
    )
    return {
        "even_spec": [str(a) for a in even.sharding.spec],
        "even_shards": len({s.device for s in even.addressable_shards}),
        "even_shard_shape": list(even.addressable_shards[0].data.shape),
        # Shardy's or GSPMD's spelling of a (2, 4, 1) tiling.
        "uneven_constraint": (
            '[{"batch"}, {"model"}, {}]' in uneven
            or "devices=[2,4,1]" in uneven
        ),
    }


def gpt2_layout_map(mesh):
    """Megatron-style rules for a KerasHub GPT-2 backbone's variables."""
    layout_map = keras.distribution.LayoutMap(mesh)
    layout_map["token_embedding/embeddings"] = ("model", None)
    layout_map["position_embedding/embeddings"] = (None, "model")
    layout_map[".*self_attention/(query|key|value)/kernel"] = (
        None,
        "model",
        None,
    )
    layout_map[".*self_attention/(query|key|value)/bias"] = ("model", None)
    layout_map[".*attention_output/kernel"] = ("model", None, None)
    layout_map[".*feedforward_intermediate_dense/kernel"] = (None, "model")
    layout_map[".*feedforward_intermediate_dense/bias"] = ("model",)
    layout_map[".*feedforward_output_dense/kernel"] = ("model", None)
    return layout_map


def gpt2_teacher():
    import keras_hub

    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=VOCAB,
        num_layers=1,
        num_heads=4,
        hidden_dim=32,
        intermediate_dim=64,
        dropout=0.0,
        max_sequence_length=LENGTH,
    )
    return keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None)


def lm_student():
    """A small next-token model on the same inputs (no GPT-2 layer names)."""
    token_ids = keras.Input((LENGTH,), dtype="int32", name="token_ids")
    padding_mask = keras.Input((LENGTH,), dtype="bool", name="padding_mask")
    hidden = keras.layers.Embedding(VOCAB, 16, name="student_embedding")(
        token_ids
    )
    hidden = keras.layers.Dense(16, activation="relu", name="student_hidden")(
        hidden
    )
    logits = keras.layers.Dense(VOCAB, name="student_logits")(hidden)
    return keras.Model(
        {"token_ids": token_ids, "padding_mask": padding_mask}, logits
    )


def lm_data():
    rng = np.random.default_rng(1)
    tokens = rng.integers(0, VOCAB, size=(16, LENGTH + 1)).astype("int32")
    x = {
        "token_ids": tokens[:, :-1],
        "padding_mask": np.ones((16, LENGTH), bool),
    }
    return x, tokens[:, 1:]


def distil(teacher_weights, student_weights):
    """Builds the models (under the current distribution) and trains."""
    teacher, student = gpt2_teacher(), lm_student()
    teacher.set_weights(teacher_weights)
    student.set_weights(student_weights)
    distiller = Distiller(
        teacher,
        student,
        PTLoss([0.5, -0.1], temperature=2.0),
        student_loss_weight=0.25,
    )
    distiller.compile(
        optimizer=keras.optimizers.Adam(0.01),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    x, y = lm_data()
    history = distiller.fit(
        x, y, batch_size=8, epochs=2, shuffle=False, verbose=0
    )
    embeddings = teacher.backbone.get_layer("token_embedding").embeddings
    query = teacher.backbone.get_layer(
        "transformer_layer_0"
    )._self_attention_layer._query_dense.kernel
    return {
        "history": {
            k: [float(v) for v in vs] for k, vs in history.history.items()
        },
        "student_weights": [w.tolist() for w in student.get_weights()],
        "initial_student": [np.asarray(w).tolist() for w in student_weights],
        "teacher_logits": np.asarray(
            keras.ops.convert_to_numpy(teacher(x))
        ).tolist(),
        "embedding_spec": _spec(embeddings),
        "query_spec": _spec(query),
        "query_shard_shape": list(query.value.addressable_shards[0].data.shape),
    }


def _spec(variable):
    """A variable's partition spec as strings (`None` on one device)."""
    spec = getattr(variable.value.sharding, "spec", None)
    return None if spec is None else [str(a) for a in spec]


def check(out):
    devices = len(keras.distribution.list_devices())
    result = {"num_devices": devices, "seconds": {}}
    start = time.perf_counter()

    def lap(name):
        result["seconds"][name] = time.perf_counter() - start

    keras.utils.set_random_seed(0)
    teacher_weights = gpt2_teacher().get_weights()
    student_weights = lm_student().get_weights()
    result["single"] = search_summary(search())
    lap("single")
    result["gpt2_single"] = distil(teacher_weights, student_weights)
    lap("gpt2_single")
    keras.distribution.set_distribution(keras.distribution.DataParallel())
    result["data_parallel"] = search_summary(search())
    lap("data_parallel")
    keras.distribution.set_distribution(member_mesh())
    result["member_sharded"] = search_summary(search(member_axis="model"))
    lap("member_sharded")
    result["member_layouts"] = member_layouts()
    mesh = keras.distribution.DeviceMesh(
        (2, 4), ("batch", "model"), keras.distribution.list_devices()
    )
    keras.distribution.set_distribution(
        keras.distribution.ModelParallel(
            layout_map=gpt2_layout_map(mesh), batch_dim_name="batch"
        )
    )
    result["gpt2_model_parallel"] = distil(teacher_weights, student_weights)
    lap("gpt2_model_parallel")
    with open(out, "w") as f:
        json.dump(result, f)


def timed_search(member_axis, settings):
    """One search's wall time (its populations' compilation included)."""
    start = time.perf_counter()
    result = search(member_axis, **settings)
    return {
        "seconds": time.perf_counter() - start,
        "training_seconds": result.cost["training_seconds"],
        "winner": int(result.winner),
        "score": result.score,
    }


def time_searches(out, settings):
    """The search on 1 device, under DataParallel, with sharded members."""
    devices = keras.distribution.list_devices()
    # Untimed: the first search pays the one-time start-up of the backend.
    search(None, hidden=settings["hidden"], epochs=1)
    rows = {
        "backend": keras.backend.backend(),
        "devices": [str(d) for d in devices],
        "settings": settings,
        "one_device": timed_search(None, settings),
    }
    if len(devices) > 1:
        keras.distribution.set_distribution(keras.distribution.DataParallel())
        rows["data_parallel"] = timed_search(None, settings)
        if len(devices) % 2 == 0:
            # Members over 2 devices, the batch over the rest.
            keras.distribution.set_distribution(
                member_mesh((len(devices) // 2, 2))
            )
            rows["member_sharded"] = timed_search("model", settings)
        keras.distribution.set_distribution(None)
    for name in ("data_parallel", "member_sharded"):
        if name in rows:
            rows[name]["speedup"] = (
                rows["one_device"]["seconds"] / rows[name]["seconds"]
            )
    with open(out, "w") as f:
        json.dump(rows, f, indent=1)
    print(json.dumps(rows, indent=1))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=("check", "time"))
    parser.add_argument("out")
    parser.add_argument("--scale", type=int, default=1)
    parser.add_argument("--hidden", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    if args.mode == "check":
        check(args.out)
    else:
        settings = {
            "scale": args.scale,
            "hidden": args.hidden,
            "epochs": args.epochs,
            "batch_size": args.batch_size,
        }
        time_searches(args.out, settings)


if __name__ == "__main__":
    main()
