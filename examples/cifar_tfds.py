"""CIFAR-10 / CIFAR-100 distillation with PTLoss, through tensorflow_datasets.

For a machine with a GPU and network access: loads CIFAR with the real
`tensorflow_datasets` code (`tfds.load`, downloading and preparing the data
on first use), trains a ResNet-style teacher, and distils it into a small
CNN student. PTLoss's coefficients come from the recommended path,
`keras_ptloss.search_coefficients`: candidate students (KD among them) are
trained together on the training images and the best on a labelled
validation split cut from the training set wins; `result.summary()`
reports the search, `result.student` is its winner (calibrated), and
`result.build_distiller(teacher, student)` trains the winner's
configuration again, here on the augmented pipeline for the full
`--student-epochs`. The same student is also trained alone, with KD, and
with the training-free option (`select_coefficients` with the
`ReestimateCoefficients` callback, which trains no student to choose; it
lost 0.57 test-accuracy points to tuned KD on average over 5 settings in
BENCHMARKS.md, "Accuracy: PTLoss against tuned distillation baselines").
The script prints a table of test accuracies and writes the numbers to
JSON.

Training inputs are augmented (random horizontal flip, and a random 32x32
crop of the image padded by 4 pixels) in a `tf.data` pipeline, so the teacher
and the student see the same augmented batch. `tf.data` feeds every Keras
backend; pick one with `KERAS_BACKEND`.

Examples:

    KERAS_BACKEND=jax python examples/cifar_tfds.py --dataset cifar100
    python examples/cifar_tfds.py --dataset cifar10 --teacher-epochs 30 \\
        --student-epochs 30 --output cifar10.json

The defaults are a starting point on one GPU, not a tuned recipe, and no
result of this script is published in BENCHMARKS.md. The tests run it on
`tfds.testing.mock_data` (random images) with tiny sizes, which checks the
code path, not the accuracy.
"""

import argparse
import json
import time
from pathlib import Path

import keras
import numpy as np

from keras_ptloss import Distiller
from keras_ptloss import KDLoss
from keras_ptloss import PTLoss
from keras_ptloss import ReestimateCoefficients
from keras_ptloss import search_coefficients
from keras_ptloss import select_coefficients
from keras_ptloss.datasets import load_tfds

NUM_CLASSES = {"cifar10": 10, "cifar100": 100}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--dataset", choices=sorted(NUM_CLASSES), default="cifar100"
    )
    parser.add_argument(
        "--data-dir",
        default=None,
        help="TFDS data directory (TFDS's default if unset)",
    )
    parser.add_argument(
        "--no-download",
        action="store_true",
        help="use only data already prepared in --data-dir",
    )
    parser.add_argument(
        "--train-examples",
        type=int,
        default=None,
        help="use only the first N training examples "
        "(validation included); all when unset",
    )
    parser.add_argument(
        "--validation-examples",
        type=int,
        default=5000,
        help="labelled validation split cut from the "
        "training set (chooses the coefficients; no model "
        "trains on it)",
    )
    parser.add_argument(
        "--test-examples",
        type=int,
        default=None,
        help="use only the first N test examples",
    )
    parser.add_argument("--teacher-epochs", type=int, default=30)
    parser.add_argument("--student-epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument(
        "--teacher-width",
        type=int,
        default=32,
        help="filters of the teacher's first stage "
        "(doubled at each of its 3 stages)",
    )
    parser.add_argument(
        "--teacher-blocks",
        type=int,
        default=3,
        help="residual blocks per stage (3: a ResNet-20)",
    )
    parser.add_argument(
        "--student-width",
        type=int,
        default=16,
        help="filters of the student's first conv layer",
    )
    parser.add_argument("--order", type=int, default=5, help="PTLoss order M")
    parser.add_argument(
        "--mode", choices=("shared", "classwise"), default="shared"
    )
    parser.add_argument("--temperature", type=float, default=4.0)
    parser.add_argument("--student-loss-weight", type=float, default=0.5)
    parser.add_argument(
        "--num-candidates",
        type=int,
        default=256,
        help="coefficient sets sampled by the training-free selection",
    )
    parser.add_argument(
        "--no-augment",
        action="store_true",
        help="train without flips and crops",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--verbose", type=int, choices=(0, 1, 2), default=1)
    parser.add_argument(
        "--output", default=None, help="write the results as JSON to this file"
    )
    args = parser.parse_args(argv)
    for name in (
        "teacher_epochs",
        "student_epochs",
        "batch_size",
        "validation_examples",
        "teacher_width",
        "teacher_blocks",
        "student_width",
        "order",
        "num_candidates",
    ):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    return args


def load_cifar(
    name, data_dir=None, download=True, train_examples=None, test_examples=None
):
    """CIFAR train and test splits as arrays, via `tfds.load`.

    Returns `((x_train, y_train), (x_test, y_test))`, images float32 in
    `[0, 1]` of shape `(n, 32, 32, 3)`, labels int32.
    """
    train = load_tfds(
        name,
        "train",
        data_dir=data_dir,
        download=download,
        max_examples=train_examples,
    )
    test = load_tfds(
        name,
        "test",
        data_dir=data_dir,
        download=download,
        max_examples=test_examples,
    )
    return train, test


def split_validation(x, y, num_validation, seed):
    """Cuts a labelled validation split off the training set."""
    if num_validation >= len(x):
        raise ValueError(
            f"--validation-examples ({num_validation}) must be smaller than "
            f"the training set ({len(x)} examples)"
        )
    order = np.random.default_rng(seed).permutation(len(x))
    val, train = order[:num_validation], order[num_validation:]
    return (x[train], y[train]), (x[val], y[val])


def channel_statistics(x_train):
    """Per-channel mean and variance of the training images."""
    return x_train.mean(axis=(0, 1, 2)), x_train.var(axis=(0, 1, 2))


def normalizer(x_train=None, statistics=None):
    """A new per-channel standardisation layer for the training images.

    Its mean and variance are constants (no weights), so every model gets
    its own layer: `statistics` (from `channel_statistics`) or those of
    `x_train`.
    """
    mean, variance = statistics or channel_statistics(x_train)
    return keras.layers.Normalization(
        axis=-1, mean=mean, variance=variance, name="normalize"
    )


def _residual_block(x, filters, stride, name):
    shortcut = x
    y = keras.layers.Conv2D(
        filters,
        3,
        strides=stride,
        padding="same",
        use_bias=False,
        name=f"{name}_conv1",
    )(x)
    y = keras.layers.BatchNormalization(name=f"{name}_bn1")(y)
    y = keras.layers.Activation("relu")(y)
    y = keras.layers.Conv2D(
        filters, 3, padding="same", use_bias=False, name=f"{name}_conv2"
    )(y)
    y = keras.layers.BatchNormalization(name=f"{name}_bn2")(y)
    if stride != 1 or shortcut.shape[-1] != filters:
        # A 1x1 convolution with stride s is a 1x1 convolution of every s-th
        # pixel: written so, because torch 2.13's CPU build crashes in the
        # backward of a strided 1x1 channels-last convolution with fewer
        # than 8 input channels on processors without AVX-512 (oneDNN's
        # AVX2 kernels; reproduced with ONEDNN_MAX_CPU_ISA=AVX2). Same
        # weights, same outputs, on every backend.
        if stride != 1:
            shortcut = keras.layers.AveragePooling2D(
                pool_size=1, strides=stride, name=f"{name}_subsample"
            )(shortcut)
        shortcut = keras.layers.Conv2D(
            filters, 1, use_bias=False, name=f"{name}_proj"
        )(shortcut)
        shortcut = keras.layers.BatchNormalization(name=f"{name}_proj_bn")(
            shortcut
        )
    y = keras.layers.Add()([y, shortcut])
    return keras.layers.Activation("relu")(y)


def make_teacher(num_classes, norm, width=32, blocks=3):
    """A CIFAR ResNet (He et al. 2016, section 4.2): 3 stages of blocks.

    `blocks=3` is a ResNet-20, `blocks=5` a ResNet-32; the output is logits.
    """
    inputs = keras.Input((32, 32, 3))
    x = norm(inputs)
    x = keras.layers.Conv2D(
        width, 3, padding="same", use_bias=False, name="stem"
    )(x)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    x = keras.layers.Activation("relu")(x)
    for stage in range(3):
        for block in range(blocks):
            stride = 2 if stage > 0 and block == 0 else 1
            x = _residual_block(
                x, width * 2**stage, stride, name=f"stage{stage}_block{block}"
            )
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name="teacher")


def make_student(num_classes, norm, width=16):
    """A small plain CNN (3 conv layers), much weaker than the teacher."""
    inputs = keras.Input((32, 32, 3))
    x = norm(inputs)
    for i, filters in enumerate((width, 2 * width, 4 * width)):
        x = keras.layers.Conv2D(
            filters, 3, padding="same", activation="relu", name=f"conv{i}"
        )(x)
        x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name="student")


def training_pipeline(x, y, batch_size, augment, seed):
    """A shuffled, batched `tf.data` pipeline, with flips and crops."""
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((x, y))
    ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    if augment:

        def augment_fn(image, label):
            image = tf.image.random_flip_left_right(image)
            image = tf.image.pad_to_bounding_box(image, 4, 4, 40, 40)
            image = tf.image.random_crop(image, (32, 32, 3))
            return image, label

        ds = ds.map(augment_fn, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def _softmax(logits):
    z = np.asarray(logits, dtype="float64")
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def _accuracy(model, x, y, batch_size):
    logits = model.predict(x, batch_size=batch_size, verbose=0)
    return float(np.mean(np.argmax(logits, axis=-1) == y))


def _compile(model, learning_rate, metrics=True):
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"] if metrics else None,
    )


def run(args):
    """Runs the comparison; returns the results as a dict."""
    start = time.perf_counter()
    keras.utils.set_random_seed(args.seed)
    num_classes = NUM_CLASSES[args.dataset]
    (x, y), (x_test, y_test) = load_cifar(
        args.dataset,
        data_dir=args.data_dir,
        download=not args.no_download,
        train_examples=args.train_examples,
        test_examples=args.test_examples,
    )
    (x_train, y_train), (x_val, y_val) = split_validation(
        x, y, args.validation_examples, args.seed
    )
    print(
        f"{args.dataset} on {keras.backend.backend()}: {len(x_train)} "
        f"train, {len(x_val)} validation, {len(x_test)} test",
        flush=True,
    )
    statistics = channel_statistics(x_train)
    augment = not args.no_augment

    def pipeline():
        return training_pipeline(
            x_train, y_train, args.batch_size, augment, args.seed
        )

    def build_student():
        return make_student(
            num_classes, normalizer(statistics=statistics), args.student_width
        )

    fit_kwargs = dict(validation_data=(x_val, y_val), verbose=args.verbose)
    accuracy = {}

    print("\n=== teacher (ResNet)", flush=True)
    teacher = make_teacher(
        num_classes,
        normalizer(statistics=statistics),
        args.teacher_width,
        args.teacher_blocks,
    )
    _compile(teacher, args.learning_rate)
    teacher.fit(pipeline(), epochs=args.teacher_epochs, **fit_kwargs)
    accuracy["teacher"] = _accuracy(teacher, x_test, y_test, args.batch_size)

    print("\n=== coefficient search on the validation split", flush=True)
    search = search_coefficients(
        build_student,
        x_train,
        teacher,
        (x_val, y_val),
        order=args.order,
        epochs=args.student_epochs,
        mode=args.mode,
        labels=y_train,
        student_loss_weight=args.student_loss_weight,
        optimizer=keras.optimizers.Adam(args.learning_rate),
        batch_size=args.batch_size,
        seed=args.seed,
        verbose=0,
    )
    print(search.summary())
    search_accuracy = _accuracy(search.student, x_test, y_test, args.batch_size)
    print(
        f"search's student (no augmentation, calibrated): test accuracy "
        f"{100 * search_accuracy:.2f} %",
        flush=True,
    )

    # Every student below starts from the search's initial weights.
    print("\n=== student alone", flush=True)
    student = build_student()
    student.set_weights(search.initial_weights)
    _compile(student, args.learning_rate)
    student.fit(pipeline(), epochs=args.student_epochs, **fit_kwargs)
    accuracy["student alone"] = _accuracy(
        student, x_test, y_test, args.batch_size
    )

    def distill(distiller, callbacks=()):
        distiller.fit(
            pipeline(),
            epochs=args.student_epochs,
            callbacks=list(callbacks),
            **fit_kwargs,
        )
        return _accuracy(distiller.student, x_test, y_test, args.batch_size)

    def distiller_for(loss):
        model = build_student()
        model.set_weights(search.initial_weights)
        distiller = Distiller(
            teacher,
            model,
            distillation_loss=loss,
            student_loss_weight=args.student_loss_weight,
        )
        _compile(distiller, args.learning_rate)
        return distiller

    print("\n=== KD", flush=True)
    accuracy["KD"] = distill(
        distiller_for(KDLoss(temperature=args.temperature))
    )

    print("\n=== PTLoss, searched (the winner retrained)", flush=True)
    # The winner's loss, optimizer and initial weights, on the augmented
    # pipeline (`search.fit_kwargs(x_train, y_train)` would replay the
    # search's own batches instead).
    accuracy["PTLoss (searched)"] = distill(
        search.build_distiller(teacher, build_student())
    )

    print("\n=== PTLoss, training-free selection", flush=True)
    val_probs = _softmax(
        teacher.predict(x_val, batch_size=args.batch_size, verbose=0)
    )
    selection = select_coefficients(
        val_probs,
        y_val,
        order=args.order,
        mode=args.mode,
        temperature=args.temperature,
        seed=args.seed,
        num_candidates=args.num_candidates,
        verbose=1,
    )
    reestimate = ReestimateCoefficients(
        (x_val, y_val),
        seed=args.seed,
        selector_kwargs={"num_candidates": args.num_candidates},
        verbose=1,
    )
    accuracy["PTLoss (training-free)"] = distill(
        distiller_for(
            PTLoss(selection.coefficients, temperature=selection.temperature)
        ),
        [reestimate],
    )

    print("\n| model | test accuracy |\n|---|---:|")
    for name, value in accuracy.items():
        print(f"| {name} | {100 * value:.2f} % |")
    results = dict(
        dataset=args.dataset,
        backend=keras.backend.backend(),
        num_classes=num_classes,
        num_examples=dict(
            train=len(x_train), validation=len(x_val), test=len(x_test)
        ),
        input_shape=list(x_train.shape[1:]),
        teacher_parameters=teacher.count_params(),
        student_parameters=build_student().count_params(),
        test_accuracy=accuracy,
        search=dict(search.to_dict(), student_test_accuracy=search_accuracy),
        selection=selection.to_dict(),
        options=vars(args),
        seconds=time.perf_counter() - start,
    )
    if args.output:
        Path(args.output).write_text(json.dumps(results, indent=2) + "\n")
        print(f"results: {args.output}")
    return results


def main(argv=None):
    return run(parse_args(argv))


if __name__ == "__main__":
    main()
