"""Speed cases: each times the product against its KD counterpart side by
side in one process (methods interleaved round by round, in a fresh random
order each round) and returns one record per method with medians and
within-round ratios.

    loss        loss + gradient: PTLoss vs KDLoss vs keras KLDivergence
    distiller   one Distiller epoch: PTLoss vs KDLoss vs keras's Distiller
    population  8 students as one StudentPopulation vs 8 separate fits
    search      search_coefficients vs KD tuned over a temperature grid
    selection   select_coefficients (numpy), and top-k at K = 32,000
    vocab       chunked PTLoss vs KDLoss at vocabulary scale
"""

import math
import time

import numpy as np

from benchmarks import harness
from benchmarks.harness import Case
from benchmarks.render import Table

COEFFICIENTS = [0.5, -0.05, 0.02, 0.01, 0.005]  # M = 5
FEATURES, CLASSES = 40, 10


# Shared helpers.


def loss_step(keras, loss, y_true, logits, mode):
    """A compiled loss + gradient step on `mode` ("jit", "tf.function",
    "xla", "eager"); calling it runs one step and waits for it."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        # The teacher is an argument: a closed-over array would be a
        # constant that XLA folds, for minutes at vocabulary scale.
        grad = jax.jit(jax.value_and_grad(lambda z, t: loss(t, z)))
        return lambda: jax.block_until_ready(grad(logits, y_true))
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


def mlp(keras, widths, seed=0):
    """A ReLU MLP with Dense layers `widths[0] -> ... -> widths[-1]`
    (logits), Glorot-initialised from `seed`."""
    layers = [keras.Input((widths[0],))]
    for i, width in enumerate(widths[1:]):
        layers.append(
            keras.layers.Dense(
                width,
                activation="relu" if i < len(widths) - 2 else None,
                kernel_initializer=keras.initializers.GlorotUniform(seed + i),
            )
        )
    return keras.Sequential(layers)


def macs(widths):
    """Multiply-accumulates per example of the Dense layers of `widths`."""
    return sum(a * b for a, b in zip(widths[:-1], widths[1:], strict=False))


def training_flops(widths, batch_size, members=1):
    """FLOPs of one training step of `members` MLPs on a batch: the Dense
    kernels' matrix products only, 2 FLOPs per multiply-accumulate in the
    forward pass and twice the forward's in the backward (the gradients of
    the inputs and of the kernels); biases, activations, loss and optimiser
    are left out."""
    return 6 * members * batch_size * macs(widths)


def epoch_runner(keras, model, x, y, batch_size):
    """A callable fitting `model` one epoch and returning `(wall, cpu)`
    seconds from `on_epoch_begin` to `on_epoch_end` (fit's per-call set-up
    is left out: a real training pays it once)."""

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter(), time.process_time()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds = (
                time.perf_counter() - self.start[0],
                time.process_time() - self.start[1],
            )

    timer = Timer()

    def run():
        model.fit(
            x, y, batch_size=batch_size, epochs=1, verbose=0, callbacks=[timer]
        )
        return timer.seconds

    return run


def timed(fn):
    """`fn` as a method of `harness.rounds`: one call, `(wall, cpu)`."""
    return lambda: harness.clocked(fn)


def compiled(keras, model, loss=None):
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss)
    return model


def cross_entropy(keras):
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def dashed(widths):
    return "-".join(map(str, widths))


# loss: forward + backward of the loss alone.

LOSS_MODES = {
    "jax": ["jit"],
    "tensorflow": ["tf.function", "xla"],
    "torch": ["eager"],
}


def loss(classes, batch_size, repeats, inner):
    """PTLoss (M = 1, 5; shared) against KDLoss and Keras's KLDivergence
    (on the teacher's softmax), forward + backward, teacher logits. A
    sample loops a step `inner` times at K <= 100, fewer above (same
    elements per sample, at least one step)."""
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
            t = keras.ops.convert_to_tensor(teacher)
            kl = keras.losses.KLDivergence()
            methods = {
                "KDLoss": (KDLoss(), t),
                "KLDivergence": (
                    lambda y, z, kl=kl: kl(y, keras.ops.softmax(z)),
                    keras.ops.softmax(t),
                ),
                "PTLoss M=1": (PTLoss(COEFFICIENTS[:1]), t),
                "PTLoss M=5": (PTLoss(COEFFICIENTS), t),
            }
            steps = {
                name: loss_step(keras, fn, y, logits, mode)
                for name, (fn, y) in methods.items()
            }
            for step in steps.values():  # compile and warm up
                step(), step()
            calls = max(1, inner * min(100, k) // k)
            samples = harness.rounds(
                {
                    n: (lambda s=s, c=calls: harness.clocked(s, c))
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
                        "inner": calls,
                        **harness.summary(samples[name], samples["KDLoss"]),
                    }
                )
    return records


# distiller: one fit epoch of a Distiller.


def teacher_widths(student, multiple):
    """Two equal hidden layers of width h whose MACs are about `multiple`
    times the student's: the positive root of F h + h^2 + h K = target."""
    b = FEATURES + CLASSES
    target = multiple * macs(student)
    hidden = max(1, round((-b + (b * b + 4 * target) ** 0.5) / 2))
    return (FEATURES, hidden, hidden, CLASSES)


def distiller(
    students, multiple, samples, batch_size, repeats, temperature=4.0, alpha=0.1
):
    """One epoch of `keras_ptloss.Distiller` with PTLoss (M = 5) and with
    KDLoss, online (teacher run every step) and on `precompute_teacher`
    data, and of `keras.distillation.Distiller` with
    `keras_ptloss.KDDistillation` (keras.io's pattern), per student."""
    import keras

    from keras_ptloss import Distiller
    from keras_ptloss import KDDistillation
    from keras_ptloss import KDLoss
    from keras_ptloss import PTLoss

    rng = np.random.default_rng(0)
    x = rng.normal(size=(samples, FEATURES)).astype("float32")
    y = rng.integers(0, CLASSES, size=samples).astype("int32")
    records = []
    for hidden in students:
        widths = (FEATURES, *hidden, CLASSES)
        teacher = teacher_widths(widths, multiple)
        losses = {
            "PTLoss": lambda: PTLoss(COEFFICIENTS, temperature),
            "KDLoss": lambda: KDLoss(temperature),
        }
        runs = {}
        for name, make in losses.items():
            for mode in ("online", "offline"):
                model = Distiller(
                    mlp(keras, teacher, 100),
                    mlp(keras, widths),
                    make(),
                    student_loss_weight=alpha,
                )
                compiled(keras, model, cross_entropy(keras))
                data = (x, y)
                if mode == "offline":
                    data = model.precompute_teacher(x, y, batch_size=1024)[:2]
                runs[name, mode] = epoch_runner(keras, model, *data, batch_size)
        model = keras.distillation.Distiller(
            mlp(keras, teacher, 100),
            mlp(keras, widths),
            KDDistillation(temperature),
            student_loss_weight=alpha,
        )
        compiled(keras, model, cross_entropy(keras))
        runs["keras Distiller", "online"] = epoch_runner(
            keras, model, x, y, batch_size
        )
        for run in runs.values():  # compile and warm up
            run()
        samples_ = harness.rounds(runs, repeats)
        for (name, mode), seconds in samples_.items():
            record = harness.summary(seconds, samples_["KDLoss", mode])
            if mode == "offline":
                online = harness.summary(samples_[name, "online"], seconds)
                record["offline_speedup"] = online["ratio"]
            records.append(
                {
                    "student": dashed(widths),
                    "teacher": dashed(teacher),
                    "macs_multiple": macs(teacher) / macs(widths),
                    "method": name,
                    "teacher_outputs": mode,
                    **record,
                }
            )
    return records


# population: N students in one compiled step.


def member_settings(count):
    """PTLoss coefficients `(count, 5)` and temperatures `(count,)`: first
    orders that sharpen and smooth, KD (eps = 0), T in 1..4."""
    strengths = [0.0, 8.0, -2.0, 2.0, -0.5, 0.5, 4.0, -1.0]
    coefficients = np.zeros((count, len(COEFFICIENTS)), "float32")
    coefficients[:, 0] = [strengths[i % 8] for i in range(count)]
    return coefficients, np.array(
        [(1.0, 2.0, 4.0)[i % 3] for i in range(count)]
    )


def population(members, samples, hidden, batch_size, repeats):
    """One epoch of `members` students as one `StudentPopulation` against
    one epoch of each of `members` students compiled with its own PTLoss
    (summed), on pre-computed teacher logits."""
    import keras

    from keras_ptloss import PTLoss
    from keras_ptloss.population import StudentPopulation

    rng = np.random.default_rng(0)
    x = rng.normal(size=(samples, FEATURES)).astype("float32")
    logits = 2 * rng.normal(size=(samples, CLASSES)).astype("float32")
    widths = (FEATURES, *hidden, CLASSES)
    coefficients, temperatures = member_settings(members)
    together = StudentPopulation(
        [mlp(keras, widths) for _ in range(members)], coefficients, temperatures
    )
    runs = {
        "population": epoch_runner(
            keras, compiled(keras, together), x, logits, batch_size
        )
    }
    alone = [
        epoch_runner(
            keras,
            compiled(keras, mlp(keras, widths), PTLoss(c, t)),
            x,
            logits,
            batch_size,
        )
        for c, t in zip(coefficients, temperatures, strict=True)
    ]
    runs["separate"] = lambda: tuple(
        map(sum, zip(*(run() for run in alone), strict=True))
    )
    runs["matrix products only (numpy)"] = matmul_epoch(
        widths, members, math.ceil(samples / batch_size), batch_size
    )
    if keras.backend.backend() == "jax":
        runs["same step in plain JAX"] = plain_jax_epoch(
            together, x, logits, batch_size, coefficients, temperatures
        )
    for run in runs.values():  # compile and warm up
        run()
    samples_ = harness.rounds(runs, repeats)
    flops = training_flops(widths, batch_size, members)
    steps = math.ceil(samples / batch_size)
    records = []
    for name, seconds in samples_.items():
        record = harness.summary(seconds, samples_["population"])
        records.append(
            {
                "method": name,
                "members": members,
                "student": dashed(widths),
                "batch_size": batch_size,
                "step_flops": flops,
                "flops_per_s": flops * steps / record["wall"],
                **record,
            }
        )
    return records


def matmul_epoch(widths, members, steps, batch_size):
    """An epoch of the population step's matrix products alone (those
    `training_flops` counts), batched over the members in numpy on the
    worker's one thread: what this CPU's BLAS makes of these shapes."""
    rng = np.random.default_rng(0)
    kernels = [
        rng.normal(size=(members, a, b)).astype("float32")
        for a, b in zip(widths[:-1], widths[1:], strict=False)
    ]
    x = rng.normal(size=(members, batch_size, widths[0])).astype("float32")

    def step():
        activations = [x]
        for kernel in kernels:
            activations.append(activations[-1] @ kernel)
        grad = activations[-1]
        for kernel, inputs in zip(
            kernels[::-1], activations[-2::-1], strict=True
        ):
            np.swapaxes(inputs, 1, 2) @ grad  # the kernel's gradient
            grad = grad @ np.swapaxes(kernel, 1, 2)

    return lambda: harness.clocked(lambda: [step() for _ in range(steps)])


def plain_jax_epoch(population, x, logits, batch_size, coefficients, temps):
    """An epoch of the population's step written in plain JAX, no Keras:
    the members' stacked weights (copied), Dense + ReLU, the members'
    PTLoss, Adam; what XLA makes of the step itself."""
    import jax
    import jax.numpy as jnp

    params = [
        jnp.stack([jnp.asarray(w) for w in weights])
        for weights in zip(
            *(m.get_weights() for m in population.members), strict=True
        )
    ]
    eps = jnp.asarray(coefficients)[:, None, None, :]
    temps = jnp.asarray(temps, "float32")[:, None, None]

    def forward(params, inputs):
        h = jnp.broadcast_to(inputs, (len(params[0]), *inputs.shape))
        for i in range(0, len(params), 2):
            h = jnp.einsum("nbi,nio->nbo", h, params[i])
            h = h + params[i + 1][:, None]
            h = jax.nn.relu(h) if i < len(params) - 2 else h
        return h

    def loss(params, inputs, teacher):
        log_p = jax.nn.log_softmax(teacher[None] / temps)
        log_q = jax.nn.log_softmax(forward(params, inputs) / temps)
        u = 1.0 - jnp.exp(log_q)
        inner = eps[..., -1]
        for m in range(eps.shape[-1] - 2, -1, -1):
            inner = eps[..., m] + u * inner
        terms = jnp.exp(log_p) * (log_p - log_q + u * inner)
        return jnp.sum(jnp.mean(jnp.sum(terms, -1), -1) * temps[:, 0, 0] ** 2)

    @jax.jit
    def step(params, moments, count, inputs, teacher):
        grads = jax.grad(loss)(params, inputs, teacher)
        count = count + 1
        lr = 1e-3 * jnp.sqrt(1 - 0.999**count) / (1 - 0.9**count)
        new = []
        for p, g, (m, v) in zip(params, grads, moments, strict=True):
            m, v = 0.9 * m + 0.1 * g, 0.999 * v + 0.001 * g * g
            new.append((p - lr * m / (jnp.sqrt(v) + 1e-7), (m, v)))
        return [p for p, _ in new], [mv for _, mv in new], count

    state = {
        "params": params,
        "moments": [(jnp.zeros_like(p), jnp.zeros_like(p)) for p in params],
        "count": jnp.zeros((), "float32"),
    }
    batches = [
        (
            jnp.asarray(x[i : i + batch_size]),
            jnp.asarray(logits[i : i + batch_size]),
        )
        for i in range(0, len(x), batch_size)
    ]

    def epoch():
        p, mv, c = state["params"], state["moments"], state["count"]
        for inputs, teacher in batches:
            p, mv, c = step(p, mv, c, inputs, teacher)
        jax.block_until_ready(p)
        state.update(params=p, moments=mv, count=c)

    return timed(epoch)


# search: the recommended path against tuning KD by hand.

KD_TEMPERATURES = (1.0, 2.0, 3.0, 4.0, 6.0, 8.0)


def kd_grid(trainings):
    """`trainings` temperatures evenly spread over KD's grid."""
    if trainings >= len(KD_TEMPERATURES):
        return list(KD_TEMPERATURES)
    index = np.round(np.linspace(0, len(KD_TEMPERATURES) - 1, trainings))
    return [KD_TEMPERATURES[int(i)] for i in np.unique(index)]


def search(problems, hidden, epochs, trainings, repeats):
    """`search_coefficients` with its defaults and a budget of `trainings`
    full trainings against `trainings` KDLoss students, one per KD
    temperature, each trained `epochs` epochs and scored on the validation
    split; both timed whole (building, compiling, calibrating included).
    `problems`: `[transfer examples, batch size]` pairs."""
    widths = (FEATURES, *hidden, CLASSES)
    records = []
    for examples, batch_size in problems:
        spent, methods = search_methods(
            examples, batch_size, widths, epochs, trainings
        )
        samples_ = harness.rounds(
            {n: timed(f) for n, f in methods.items()}, repeats
        )
        for name, seconds in samples_.items():
            records.append(
                {
                    "examples": examples,
                    "batch_size": batch_size,
                    "student": dashed(widths),
                    "epochs": epochs,
                    "method": name,
                    "student_epochs": spent[name],
                    **harness.summary(seconds, samples_["KD tuning"]),
                }
            )
    return records


def search_methods(examples, batch_size, widths, epochs, trainings):
    """The two ways of choosing a loss on one problem, and a dict that
    they fill with the student-epochs they spent."""
    import keras

    import keras_ptloss as kp

    rng = np.random.default_rng(examples)
    x, x_val = (
        rng.normal(size=(n, FEATURES)).astype("float32")
        for n in (examples, examples // 4)
    )
    teacher = mlp(keras, (FEATURES, 256, 256, CLASSES), 1000)
    logits = teacher.predict(x, batch_size=1024, verbose=0)
    val_logits = teacher.predict(x_val, batch_size=1024, verbose=0)
    y_val = (val_logits + rng.gumbel(size=val_logits.shape)).argmax(-1)
    spent = {}

    def searched():
        result = kp.search_coefficients(
            lambda: mlp(keras, widths),
            x,
            logits,
            (x_val, y_val.astype("int32")),
            epochs=epochs,
            budget=trainings * epochs,
            batch_size=batch_size,
            verbose=0,
        )
        spent["search_coefficients"] = result.cost["student_epochs"]

    def kd_tuning():
        scores = []
        for temperature in kd_grid(trainings):
            student = mlp(keras, widths)
            compiled(keras, student, kp.KDLoss(temperature))
            student.fit(
                x, logits, batch_size=batch_size, epochs=epochs, verbose=0
            )
            z = student.predict(x_val, batch_size=1024, verbose=0)
            scores.append(np.mean(z.argmax(-1) == y_val))
        spent["KD tuning"] = len(scores) * epochs

    return spent, {"search_coefficients": searched, "KD tuning": kd_tuning}


# selection: training-free coefficients (numpy).


def synthetic_task(examples, classes, seed=0, dim=32):
    """Teacher probabilities and labels of a task with known Bayes
    probabilities: x = mu_y + N(0, I) in R^dim, the teacher over-confident
    (logits / 0.6) with a bias per class and noise."""
    rng = np.random.default_rng(seed)
    means = rng.normal(
        scale=1.5 * (2 * np.log(classes) / dim) ** 0.5, size=(classes, dim)
    )
    labels = rng.integers(0, classes, size=examples)
    x = means[labels] + rng.normal(size=(examples, dim))
    bayes = x @ means.T - 0.5 * np.sum(means**2, axis=1)
    teacher = bayes / 0.6 + rng.normal(scale=0.3, size=classes)
    teacher += rng.normal(scale=0.3, size=teacher.shape)
    teacher = np.exp(teacher - teacher.max(axis=1, keepdims=True))
    return teacher / teacher.sum(axis=1, keepdims=True), labels


def vocab_task(tokens, classes, seed=0):
    """Teacher logits `(tokens, classes)` with a Zipf-like prior and labels
    drawn from the true distribution (the teacher is over-confident)."""
    rng = np.random.default_rng(seed)
    true = 2 * rng.standard_normal((tokens, classes), dtype="float32")
    true -= 1.1 * np.log(np.arange(1, classes + 1, dtype="float32"))
    noise = rng.random((tokens, classes), dtype="float32")
    noise += np.finfo("float32").tiny  # in (0, 1): finite logs
    for step in (np.log, np.negative, np.log, np.negative):
        step(noise, out=noise)  # Gumbel, in place (float32 throughout)
    labels = np.argmax(noise + true, axis=-1)
    noise[...] = rng.standard_normal((tokens, classes), dtype="float32")
    noise *= 0.5
    noise += true / 0.6
    return noise, labels


def selection(examples, classes, order, repeats, top_k):
    """Wall time of `select_coefficients` (shared and class-wise, order
    `order`) on `examples` validation examples per K in `classes`, after a
    warm-up on 400 examples; then, with `top_k = [tokens, K, k, dense
    tokens]`, `select_top_k_coefficients` on the top-k of a K-class teacher
    against `select_coefficients` on the dense teacher."""
    from scipy.special import softmax

    from keras_ptloss import select_coefficients
    from keras_ptloss.top_k import select_top_k_coefficients
    from keras_ptloss.top_k import top_k_log_probs

    records = []

    def timed_selection(select, args, mode="shared", **fields):
        """Times `select(*args, mode=mode)` `repeats` times; its record."""
        found = []
        call = lambda: found.append(  # noqa: E731
            select(*args, order=order, mode=mode, verbose=0)
        )
        seconds = harness.rounds({mode: timed(call)}, repeats)[mode]
        result = found[-1]
        brier = [result.holdout_teacher_score, result.holdout_proxy_score]
        records.append(
            {
                **fields,
                "mode": mode,
                "proxy_solves": result.num_example_solves,
                "brier": brier if None not in brier else None,
                **harness.summary(seconds),
            }
        )

    for k in classes:
        probs, labels = synthetic_task(examples, k)
        for mode in ("shared", "classwise"):
            select_coefficients(
                probs[:400], labels[:400], order=order, mode=mode, verbose=0
            )  # warm-up
            timed_selection(
                select_coefficients,
                (probs, labels),
                mode,
                classes=k,
                examples=examples,
                teacher="dense",
            )
    if top_k:
        tokens, k, kept, dense_tokens = top_k
        logits, labels = vocab_task(tokens, k)
        start = time.perf_counter()
        indices, log_probs = top_k_log_probs(logits, kept)
        prepare = time.perf_counter() - start
        timed_selection(
            select_top_k_coefficients,
            (indices, log_probs, labels),
            classes=k,
            examples=tokens,
            teacher=f"top-{kept}",
            prepare=prepare,
        )
        dense = softmax(logits[:dense_tokens], axis=-1)
        timed_selection(
            select_coefficients,
            (dense, labels[:dense_tokens]),
            classes=k,
            examples=dense_tokens,
            teacher="dense",
        )
    return records


# vocab: loss + gradient at vocabulary scale.


def chunk_rows(classes, elements):
    """The largest power of two `n` with `n * classes <= elements`."""
    return 2 ** max(0, int(math.log2(max(1, elements // classes))))


def peak_memory(keras, loss, t, z):
    """Peak bytes of one loss + gradient where the backend reports it:
    JAX's compiled temporaries + outputs, or the GPU allocator's peak."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        grad = jax.jit(jax.value_and_grad(lambda z, t: loss(t, z)))
        analysis = grad.lower(z, t).compile().memory_analysis()
        return analysis.temp_size_in_bytes + analysis.output_size_in_bytes
    if backend == "torch":
        import torch

        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
            loss_step(keras, loss, t, z, "eager")()
            return torch.cuda.max_memory_allocated()
    return None


def vocab(shapes, repeats, chunk_elements, temperature=2.0):
    """KDLoss (default path), PTLoss (M = 5, default path) and
    `PTLoss(chunk_size=n)` with `n * K <= chunk_elements`, loss + gradient
    on `(tokens, K)` logits for each `[tokens, K]` of `shapes`, compiled
    as the backend's fit compiles it."""
    import keras

    from keras_ptloss import KDLoss
    from keras_ptloss import PTLoss

    mode = LOSS_MODES[keras.backend.backend()][0]
    rng = np.random.default_rng(0)
    records = []
    for tokens, k in shapes:
        t, z = (
            keras.ops.convert_to_tensor(
                3 * rng.standard_normal((tokens, k), dtype="float32")
            )
            for _ in range(2)
        )
        chunk = chunk_rows(k, chunk_elements)
        losses = {
            "KDLoss": KDLoss(temperature),
            "PTLoss": PTLoss(COEFFICIENTS, temperature),
            "PTLoss chunked": PTLoss(
                COEFFICIENTS, temperature, chunk_size=chunk
            ),
        }
        steps = {n: loss_step(keras, f, t, z, mode) for n, f in losses.items()}
        for step in steps.values():  # compile and warm up
            step()
        samples_ = harness.rounds(
            {n: timed(s) for n, s in steps.items()}, repeats
        )
        for name, seconds in samples_.items():
            records.append(
                {
                    "tokens": tokens,
                    "classes": k,
                    "method": name,
                    "chunk_size": chunk if "chunked" in name else None,
                    "peak_bytes": peak_memory(keras, losses[name], t, z),
                    **harness.summary(seconds, samples_["KDLoss"]),
                }
            )
    return records


# Cases.

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
    "distiller": Case(
        run=distiller,
        sizes={
            "full": dict(
                students=[[64], [256], [256, 256]],
                multiple=4.5,
                samples=8192,
                batch_size=256,
                repeats=5,
            ),
            "quick": dict(
                students=[[8]],
                multiple=2,
                samples=64,
                batch_size=32,
                repeats=2,
            ),
        },
        merge=("backend", "student"),
        description="Distiller epoch: PTLoss vs KDLoss vs keras's Distiller",
    ),
    "population": Case(
        run=population,
        sizes={
            "full": dict(
                members=8,
                samples=4000,
                hidden=[100, 100],
                batch_size=64,
                repeats=5,
            ),
            "quick": dict(
                members=2, samples=64, hidden=[8], batch_size=32, repeats=2
            ),
        },
        merge=("backend",),
        description="8 students as one StudentPopulation vs 8 separate fits",
    ),
    "search": Case(
        run=search,
        sizes={
            "full": dict(
                problems=[[4000, 64], [6000, 128]],
                hidden=[100, 100],
                epochs=10,
                trainings=6,
                repeats=3,
            ),
            "quick": dict(
                problems=[[120, 32]],
                hidden=[8],
                epochs=1,
                trainings=2,
                repeats=1,
            ),
        },
        merge=("backend", "examples"),
        description="search_coefficients vs KD tuned over temperatures",
    ),
    "selection": Case(
        run=selection,
        sizes={
            "full": dict(
                examples=10000,
                classes=[10, 100, 1000],
                order=5,
                repeats=1,
                top_k=[1024, 32000, 32, 16],
            ),
            "quick": dict(
                examples=500,
                classes=[10],
                order=2,
                repeats=1,
                top_k=[64, 1000, 8, 16],
            ),
        },
        backends=(),
        merge=("classes", "mode", "teacher"),
        description="select_coefficients wall time; top-k vs dense",
    ),
    "vocab": Case(
        run=vocab,
        sizes={
            "full": dict(
                shapes=[[512, 32000], [128, 128000]],
                repeats=3,
                chunk_elements=2**18,
            ),
            "quick": dict(shapes=[[32, 1000]], repeats=1, chunk_elements=2**13),
        },
        merge=("backend", "classes"),
        description="chunked PTLoss vs KDLoss at vocabulary scale",
    ),
}


# Tables.


def _us(seconds):
    return f"{seconds * 1e6:,.0f}"


def _ms(seconds):
    return f"{seconds * 1e3:,.1f}"


def _s(seconds):
    return f"{seconds:,.2f}"


def _ratio(row):
    if row.get("ratio") is None:
        return "–"
    low, high = row["ratio_q"] or (row["ratio"], row["ratio"])
    return f"{row['ratio']:.2f} [{low:.2f}, {high:.2f}]"


def _mib(size):
    return f"{size / 2**20:,.1f}"


TABLES = {
    "loss": Table(
        case="loss",
        columns=[
            ("backend", "backend", "{}"),
            ("compiled", "mode", "{}"),
            ("K", "classes", "{:,}"),
            ("method", "method", "{}"),
            ("µs (wall)", "wall", _us),
            ("µs (CPU)", "cpu", _us),
            ("× KDLoss [quartiles]", _ratio, "{}"),
        ],
    ),
    "distiller": Table(
        case="distiller",
        columns=[
            ("backend", "backend", "{}"),
            ("student", "student", "{}"),
            ("teacher", "teacher", "{}"),
            ("method", "method", "{}"),
            ("teacher outputs", "teacher_outputs", "{}"),
            ("ms/epoch (wall)", "wall", _ms),
            ("ms/epoch (CPU)", "cpu", _ms),
            ("× KDLoss [quartiles]", _ratio, "{}"),
            ("online ÷ offline", "offline_speedup", "{:.2f}"),
        ],
    ),
    "population": Table(
        case="population",
        columns=[
            ("backend", "backend", "{}"),
            ("students", lambda r: f"{r['members']} × {r['student']}", "{}"),
            ("trained as", "method", "{}"),
            ("ms/epoch (wall)", "wall", _ms),
            ("ms/epoch (CPU)", "cpu", _ms),
            ("time ÷ population [quartiles]", _ratio, "{}"),
            ("FLOP/step", "step_flops", "{:,}"),
            ("GFLOP/s", "flops_per_s", lambda v: f"{v / 1e9:.2f}"),
        ],
    ),
    "search": Table(
        case="search",
        columns=[
            ("backend", "backend", "{}"),
            ("examples", "examples", "{:,}"),
            ("batch", "batch_size", "{}"),
            ("method", "method", "{}"),
            ("student-epochs", "student_epochs", "{}"),
            ("s (wall)", "wall", _s),
            ("s (CPU)", "cpu", _s),
            ("× KD tuning [quartiles]", _ratio, "{}"),
        ],
    ),
    "selection": Table(
        case="selection",
        columns=[
            ("K", "classes", "{:,}"),
            ("N", "examples", "{:,}"),
            ("mode", "mode", "{}"),
            ("teacher", "teacher", "{}"),
            ("s (wall)", "wall", _s),
            ("s (CPU)", "cpu", _s),
            ("proxy solves", "proxy_solves", "{:,}"),
            (
                "Brier teacher → proxy (held out)",
                "brier",
                lambda b: f"{b[0]:.4f} → {b[1]:.4f}",
            ),
            ("top-k prepare s", "prepare", _s),
        ],
    ),
    "vocab": Table(
        case="vocab",
        columns=[
            ("backend", "backend", "{}"),
            ("K", "classes", "{:,}"),
            ("tokens", "tokens", "{:,}"),
            ("method", "method", "{}"),
            ("chunk", "chunk_size", "{}"),
            ("ms (wall)", "wall", _ms),
            ("ms (CPU)", "cpu", _ms),
            ("× KDLoss [quartiles]", _ratio, "{}"),
            ("peak MiB", "peak_bytes", _mib),
        ],
    ),
}
