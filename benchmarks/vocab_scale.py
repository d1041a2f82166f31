"""Memory and time of loss + gradient at vocabulary scale: chunked PTLoss vs KD.

For K classes in {1k, 32k, 128k} and 4,096 tokens (1,024 at 128k, where the
default PTLoss is not run: the shared machine has no room for it), on each
backend, this measures the loss plus its gradient with respect to the
student logits for `KDLoss` (the reference, default autodiff path, not
chunked), `PTLoss` on its default path and `PTLoss(chunk_size=n)` (the
memory-lean path) with `n` the largest power of two with `n * K <= 2**18`.
Targets: the chunked PTLoss's peak memory <= 1.2x and time <= 1.3x KD's.

Peak memory is measured in a fresh subprocess per configuration: the growth
of `resource.getrusage(RUSAGE_SELF).ru_maxrss` over a baseline taken after
the inputs are built and the step is compiled (JAX) or traced (TensorFlow),
across one loss + gradient call. On JAX the compiled step's
`memory_analysis()` (temporary + output bytes) is reported too, also at
4,096 tokens where fewer were run. Time: one warm-up, then the median of
repeats, the methods interleaved in one subprocess per backend and K, one
intra-op thread for every method (the 2-core machine is shared), with the
load average beside it.

`--selection` measures instead the time of choosing shared coefficients at
K = 32,000 on a top-k teacher (`select_top_k_coefficients`) and on the
dense teacher, and adds that table to the results.

Usage:
    python benchmarks/vocab_scale.py              # the published table
    python benchmarks/vocab_scale.py --selection  # the selection table
    python benchmarks/vocab_scale.py --quick      # small, for a smoke test
    python benchmarks/vocab_scale.py --help
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
BACKENDS = ("jax", "tensorflow", "torch")
METHODS = ("kd", "pt", "pt_chunked")
COEFFICIENTS = [0.5, -0.1, 0.05, 0.0, 0.01]
TEMPERATURE = 2.0
MEMORY_TARGET = 1.2
TIME_TARGET = 1.3


def chunk_rows(classes, elements):
    """Rows per chunk: the largest power of two with `rows * K <= elements`."""
    rows = 1
    while rows * 2 * classes <= elements:
        rows *= 2
    return rows


def _limit_threads(backend, threads):
    """One setting of intra-op threads for every method (a fair comparison)."""
    if backend == "torch":
        import torch

        torch.set_num_threads(threads)
    elif backend == "tensorflow":
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)


def _make_loss(method, chunk_size):
    from keras_ptloss import KDLoss
    from keras_ptloss import PTLoss

    flags = dict(temperature=TEMPERATURE, teacher_from_logits=True)
    if method == "kd":
        return KDLoss(**flags)
    if method == "pt":
        return PTLoss(COEFFICIENTS, **flags)
    return PTLoss(COEFFICIENTS, chunk_size=chunk_size, **flags)


def _step_fn(backend, loss):
    """A compiled function `(t, z) -> (loss, dloss/dz)` for the backend."""
    if backend == "jax":
        import jax

        return jax.jit(jax.value_and_grad(lambda z, t: loss(t, z))), True
    if backend == "tensorflow":
        import tensorflow as tf

        @tf.function
        def step(z, t):
            with tf.GradientTape() as tape:
                tape.watch(z)
                value = loss(t, z)
            return value, tape.gradient(value, z)

        return step, True

    def step(z, t):
        z = z.detach().requires_grad_(True)
        value = loss(t, z)
        value.backward()
        return value.detach(), z.grad

    return step, False


def _inputs(backend, tokens, classes):
    import numpy as np
    from keras import ops

    # float32 draws scaled in place: no float64 temporary raises the
    # max-RSS baseline above what the step itself needs.
    rng = np.random.default_rng(0)
    arrays = []
    for _ in range(2):
        values = rng.standard_normal((tokens, classes), dtype=np.float32)
        values *= 3.0
        arrays.append(ops.convert_to_tensor(values))
        del values
    z, t = arrays
    return z, t


def _block(value):
    from keras import ops

    return float(ops.convert_to_numpy(ops.sum(value[1][:1])))


def worker_memory(
    backend, method, tokens, classes, chunk_size, compiled_only=False
):
    """Peak RSS growth (MiB) of one loss + gradient; JAX: compiled bytes.

    Compilation (JAX) and tracing (TensorFlow) happen before the baseline,
    so both losses are measured on their step alone.
    """
    import resource

    import keras  # noqa: F401

    loss = _make_loss(method, chunk_size)
    step, _ = _step_fn(backend, loss)
    result = {}
    if compiled_only:  # JAX, shapes only: nothing of that size is built
        import jax

        spec = jax.ShapeDtypeStruct((tokens, classes), "float32")
        z = t = spec
    else:
        z, t = _inputs(backend, tokens, classes)
    if backend == "jax":
        compiled = step.lower(z, t).compile()
        analysis = compiled.memory_analysis()
        result["compiled_mib"] = (
            analysis.temp_size_in_bytes + analysis.output_size_in_bytes
        ) / 2**20
    if compiled_only:
        return result
    if backend == "tensorflow":
        step.get_concrete_function(z, t)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    _block(step(z, t))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result["rss_mib"] = (peak - base) / 1024
    return result


def worker_time(backend, tokens, classes, methods, repeats):
    """Median seconds per loss + gradient, methods interleaved.

    `methods`: `(name, chunk_size)` pairs. The load average of the machine
    (1 minute) is read before and after the timed repeats.
    """
    import numpy as np

    z, t = _inputs(backend, tokens, classes)
    steps = {}
    for name, chunk_size in methods:
        steps[name], _ = _step_fn(backend, _make_loss(name, chunk_size))
        _block(steps[name](z, t))  # warm-up (and compile)
    load = [os.getloadavg()[0]]
    times = {name: [] for name in steps}
    for _ in range(repeats):
        for name in steps:
            start = time.perf_counter()
            _block(steps[name](z, t))
            times[name].append(time.perf_counter() - start)
    load.append(os.getloadavg()[0])
    result = {name: float(np.median(v)) for name, v in times.items()}
    result["load"] = load
    return result


def selection_task(tokens, classes, seed=0):
    """A synthetic validation split at vocabulary scale (numpy, float32).

    True logits `s` are Gaussian with a Zipf-like class prior
    (`-1.1 log(rank)`), labels are drawn from `softmax(s)` (Gumbel-max),
    and the teacher is over-confident and noisy: `s / 0.6 + N(0, 0.5^2)`.

    Returns:
        `(teacher_logits, labels)`.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    prior = (-1.1 * np.log(np.arange(1, classes + 1))).astype("float32")
    true = rng.standard_normal((tokens, classes), dtype=np.float32)
    true *= 2.0
    true += prior
    gumbel = rng.random((tokens, classes), dtype=np.float32)
    for step in (np.log, np.negative, np.log, np.negative):
        step(gumbel, out=gumbel)  # -log(-log(uniform)), in place
    gumbel += true
    labels = np.argmax(gumbel, axis=-1)
    del gumbel
    noise = rng.standard_normal((tokens, classes), dtype=np.float32)
    noise *= 0.5
    teacher = true / 0.6 + noise
    return teacher, labels


def top_k(logits, k):
    """Top-k classes (by decreasing probability) and their log-softmax
    probabilities, as int32 and float32 arrays of shape `(N, k)`."""
    import numpy as np
    import scipy.special

    indices = np.argpartition(-logits, k - 1, axis=-1)[:, :k]
    top = np.take_along_axis(logits, indices, -1)
    indices = np.take_along_axis(indices, np.argsort(-top, axis=-1), -1)
    log_probs = scipy.special.log_softmax(logits, axis=-1)
    return (
        indices.astype("int32"),
        np.take_along_axis(log_probs, indices, -1).astype("float32"),
    )


def worker_selection(tokens, classes, k, repeats, dense):
    """Wall and CPU seconds of a shared-coefficient selection (median).

    `dense`: `select_coefficients` on the full K-class teacher; otherwise
    `select_top_k_coefficients` on its top-k classes plus the tail.
    """
    import numpy as np
    import scipy.special

    from keras_ptloss import select_coefficients
    from keras_ptloss.top_k import select_top_k_coefficients

    teacher, labels = selection_task(tokens, classes)
    start = time.perf_counter()
    if dense:
        probs = scipy.special.softmax(teacher, axis=-1)
        del teacher
    else:
        indices, log_probs = top_k(teacher, k)
        del teacher
    prepare = time.perf_counter() - start
    walls, cpus, results = [], [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        if dense:
            result = select_coefficients(probs, labels, order=5, verbose=0)
        else:
            result = select_top_k_coefficients(
                indices, log_probs, labels, order=5, verbose=0
            )
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
        results.append(result)
    return dict(
        wall_s=float(np.median(walls)),
        cpu_s=float(np.median(cpus)),
        prepare_s=prepare,
        coefficients=np.asarray(results[-1].coefficients).tolist(),
        load=os.getloadavg()[0],
    )


def _run_worker(backend, args, threads, timeout=None):
    out = subprocess.run(
        [sys.executable, __file__, "--worker", json.dumps(args)],
        env=harness.worker_env(backend, threads),
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )
    if out.returncode != 0:
        raise RuntimeError(f"worker {args} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _worker_main(spec):
    args = json.loads(spec)
    backend = os.environ["KERAS_BACKEND"]
    _limit_threads(backend, args["threads"])
    if args["kind"] == "selection":
        result = worker_selection(
            args["tokens"],
            args["classes"],
            args["k"],
            args["repeats"],
            bool(args["dense"]),
        )
    elif args["kind"] == "memory":
        result = worker_memory(
            backend,
            args["method"],
            args["tokens"],
            args["classes"],
            args["chunk_size"],
            bool(args.get("compiled_only")),
        )
    else:
        result = worker_time(
            backend,
            args["tokens"],
            args["classes"],
            args["methods"],
            args["repeats"],
        )
    print(json.dumps(result))


def methods_for(classes, config):
    """The methods run at `classes`: the default PTLoss is left out at
    128k (its several `(N, K)` intermediates do not fit the shared machine).
    """
    if classes >= 100_000:
        return [m for m in METHODS if m != "pt"]
    return list(METHODS)


def _memory(backend, method, chunk_size, common, **extra):
    """Peak memory of one method's loss + gradient, in a fresh process."""
    spec = dict(kind="memory", method=method, chunk_size=chunk_size)
    return _run_worker(backend, {**spec, **common, **extra}, common["threads"])


def measure(config, log=print, save=None):
    rows = []
    threads = config["threads"]
    for backend in config["backends"]:
        for classes in config["classes"]:
            big = classes >= 100_000
            tokens = config["tokens_128k"] if big else config["tokens"]
            repeats = config["repeats_128k"] if big else config["repeats"]
            chunk_size = chunk_rows(classes, config["chunk_elements"])
            methods = methods_for(classes, config)
            common = dict(tokens=tokens, classes=classes, threads=threads)
            row = dict(backend=backend, chunk_size=chunk_size, **common)
            for method in methods:
                memory = _memory(backend, method, chunk_size, common)
                row[f"{method}_rss_mib"] = memory["rss_mib"]
                if "compiled_mib" in memory:
                    row[f"{method}_compiled_mib"] = memory["compiled_mib"]
            times = _run_worker(
                backend,
                dict(
                    kind="time",
                    repeats=repeats,
                    methods=[[m, chunk_size] for m in methods],
                    **common,
                ),
                threads,
            )
            for method in methods:
                row[f"{method}_s"] = times[method]
            row["load"] = times["load"]
            row["repeats"] = repeats
            if backend == "jax" and tokens != config["analysis_tokens"]:
                full = dict(common, tokens=config["analysis_tokens"])
                for method in methods:
                    memory = _memory(
                        backend, method, chunk_size, full, compiled_only=1
                    )
                    row[f"{method}_compiled_mib_full"] = memory["compiled_mib"]
            log(json.dumps(row))
            rows.append(row)
            if save is not None:
                save(rows)
    return rows


def measure_selection(config, log=print):
    """Selection times at K = `classes`: top-k (two sizes) and dense."""
    rows = []
    plan = [
        (config["selection_tokens"], False),
        (config["dense_tokens"], False),
        (config["dense_tokens"], True),
    ]
    for tokens, dense in plan:
        row = dict(
            tokens=tokens,
            classes=config["selection_classes"],
            k=None if dense else config["selection_k"],
            dense=dense,
        )
        spec = dict(
            kind="selection",
            tokens=tokens,
            classes=config["selection_classes"],
            k=config["selection_k"],
            repeats=1 if dense else config["selection_repeats"],
            dense=int(dense),
            threads=config["threads"],
        )
        try:
            row.update(
                _run_worker(
                    "jax",
                    spec,
                    config["threads"],
                    timeout=config["dense_timeout"] if dense else None,
                )
            )
        except subprocess.TimeoutExpired:
            row["timeout_s"] = config["dense_timeout"]
        log(json.dumps(row))
        rows.append(row)
    return rows


def selection_markdown(selection):
    config = selection["config"]
    lines = [
        "",
        "### Selection at K = "
        f"{config['selection_classes']:,}: top-k support vs dense",
        "",
        'Shared coefficients (M = 5, `mode="shared"`, default search) '
        "chosen on a synthetic validation split at K = "
        f"{config['selection_classes']:,} (Zipf-like prior, labels drawn "
        "from the true distribution, an over-confident noisy teacher; "
        "`selection_task`): `select_top_k_coefficients` on the teacher's "
        f"top-{config['selection_k']} classes plus the tail bucket, and "
        "`select_coefficients` on the full dense teacher for reference. "
        "Wall and CPU time of the selection call (median of "
        f"{config['selection_repeats']} runs for top-k, one dense run); "
        "preparing the inputs (top-k or softmax of the logits) is shown "
        "apart. Numpy, one thread; load = 1-minute load average.",
        "",
        "| teacher | tokens | selection wall s | CPU s | prepare s | "
        "coefficients | load |",
        "|---|---:|---:|---:|---:|---|---:|",
    ]
    for row in selection["rows"]:
        name = "dense" if row["dense"] else f"top-{row['k']} + tail"
        if "timeout_s" in row:
            lines.append(
                f"| {name} | {row['tokens']:,} | not finished in "
                f"{row['timeout_s']:,} s | | | | |"
            )
            continue
        coeffs = ", ".join(f"{c:.3g}" for c in row["coefficients"])
        lines.append(
            f"| {name} | {row['tokens']:,} | {row['wall_s']:.2f} | "
            f"{row['cpu_s']:.2f} | {row['prepare_s']:.2f} | [{coeffs}] | "
            f"{row['load']:.1f} |"
        )
    lines += ["", f"Regenerate with `{selection['command']}`."]
    return lines


def _ratio(row, method, key):
    return row[f"{method}_{key}"] / max(row[f"kd_{key}"], 1e-12)


def _cell(row, method, key, digits):
    if f"{method}_{key}" not in row:
        return "not run"
    return (
        f"{row[f'{method}_{key}']:.{digits}f} ({_ratio(row, method, key):.2f})"
    )


def _verdict(row):
    mem = _ratio(row, "pt_chunked", "rss_mib")
    speed = _ratio(row, "pt_chunked", "s")
    missed = [
        name
        for name, bad in (
            ("memory", mem > MEMORY_TARGET),
            ("time", speed > TIME_TARGET),
        )
        if bad
    ]
    return "met" if not missed else "missed: " + ", ".join(missed)


def _measured_row(row):
    """One (backend, K) row of the memory and time table."""
    load = "/".join(f"{v:.1f}" for v in row.get("load", []))
    return (
        f"| {row['backend']} | {row['classes']:,} | {row['tokens']:,} | "
        f"{row['chunk_size']} | {row['kd_rss_mib']:.0f} | "
        f"{_cell(row, 'pt', 'rss_mib', 0)} | "
        f"{_cell(row, 'pt_chunked', 'rss_mib', 0)} | "
        f"{row['kd_s']:.3f} | {_cell(row, 'pt', 's', 3)} | "
        f"{_cell(row, 'pt_chunked', 's', 3)} | {load} | "
        f"{_verdict(row)} |"
    )


def _compiled_table(rows, config):
    """JAX's compiled memory of each method (empty without JAX rows)."""
    lines = []
    jax_rows = [r for r in rows if "kd_compiled_mib" in r]
    if jax_rows:
        lines += [
            "",
            "JAX compiled memory (`memory_analysis`, temporary + output "
            "bytes, MiB; runs nothing):",
            "",
            "| K | tokens | KD | PT (x KD) | chunked (x KD) |",
            "|---:|---:|---:|---:|---:|",
        ]
        for row in jax_rows:
            suffixes = [("compiled_mib", row["tokens"])]
            if "kd_compiled_mib_full" in row:
                suffixes.append(
                    ("compiled_mib_full", config["analysis_tokens"])
                )
            for key, tokens in suffixes:
                lines.append(
                    f"| {row['classes']:,} | {tokens:,} | "
                    f"{row[f'kd_{key}']:.0f} | {_cell(row, 'pt', key, 0)} | "
                    f"{_cell(row, 'pt_chunked', key, 0)} |"
                )
    return lines


def markdown(payload):
    config = payload["config"]
    big = any(c >= 100_000 for c in config["classes"])
    lines = [
        "## Vocabulary scale: chunked PTLoss vs KD",
        "",
        "Loss + gradient w.r.t. the student logits (teacher and student "
        f"logits `(tokens, K)`, float32), {config['tokens']:,} tokens"
        + (f" ({config['tokens_128k']:,} at K = 128k)" if big else "")
        + f", M = 5 coefficients, T = 2. KD is `KDLoss` on its default "
        "autodiff path (not chunked); PT is `PTLoss` on its default path; "
        "chunked is `PTLoss(chunk_size=n)` with n the largest power of two "
        f"with n K <= {config['chunk_elements']:,} (a chunk's temporaries "
        "stay in cache). Peak memory: growth of the process's max RSS over "
        "a baseline taken after the inputs are built and the step is "
        "compiled (JAX) or traced (TensorFlow), one fresh process per "
        "cell; max RSS is a high-water mark, so a step that peaks below the "
        "transient peak of building the inputs (up to one input array) "
        "shows less growth than it allocates, for every method alike. On "
        "JAX also `compile().memory_analysis()` (temporary + output "
        "bytes), which counts every allocation. Time: median of "
        f"{config['repeats']} repeats"
        + (f" ({config['repeats_128k']} at 128k)" if big else "")
        + " after a warm-up, the methods interleaved in one process, "
        f"{config['threads']} intra-op thread(s) for every backend and "
        "method (the 2-core machine is shared; load = 1-minute load "
        "average before/after the timed repeats). Targets: chunked PTLoss "
        f"memory <= {MEMORY_TARGET}x KD, time <= {TIME_TARGET}x KD.",
        "",
        "| backend | K | tokens | chunk | KD MiB | PT MiB (x KD) | chunked "
        "MiB (x KD) | KD s | PT s (x KD) | chunked s (x KD) | load | "
        "targets |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    lines += [_measured_row(row) for row in payload["rows"]]
    lines += _compiled_table(payload["rows"], config)
    lines += [
        "",
        "The default PTLoss is not run at K = 128k: its several `(N, K)` "
        "intermediates do not fit beside the other jobs of the shared "
        "machine."
        if big
        else "",
        "",
        f"Machine: {payload['machine']}. Regenerate with "
        f"`{payload['command']}`.",
    ]
    if "selection" in payload:
        lines += selection_markdown(payload["selection"])
    return "\n".join(lines).replace("\n\n\n", "\n\n") + "\n"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes")
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--classes", default="1000,32000,128000")
    harness.add_options(
        parser,
        [
            ("--tokens", 4096, None),
            ("--tokens-128k", 1024, None),
            ("--analysis-tokens", 4096, None),
            ("--chunk-elements", 2**18, None),
            ("--threads", 1, None),
            ("--repeats", 3, None),
            ("--repeats-128k", 2, None),
            ("--output", str(RESULTS / "vocab_scale"), None),
            ("--selection-classes", 32000, None),
            ("--selection-tokens", 4096, None),
            ("--selection-k", 32, None),
            ("--selection-repeats", 3, None),
            ("--dense-tokens", 64, None),
            ("--dense-timeout", 900, None),
        ],
    )
    parser.add_argument(
        "--markdown-only",
        action="store_true",
        help="rewrite the .md from the existing .json, measuring nothing",
    )
    parser.add_argument(
        "--selection",
        action="store_true",
        help="measure only the selection times and add them to the results",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# The measurement's settings, as the results record them.
CONFIG = ["tokens", "tokens_128k", "analysis_tokens", "chunk_elements"]
CONFIG += ["threads", "repeats", "repeats_128k"]
SELECTION_CONFIG = ["threads", "selection_classes", "selection_tokens"]
SELECTION_CONFIG += ["selection_k", "selection_repeats", "dense_tokens"]
SELECTION_CONFIG += ["dense_timeout"]


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        return _worker_main(args.worker)
    output = Path(args.output)
    json_path, md_path = output.with_suffix(".json"), output.with_suffix(".md")
    if args.markdown_only:
        payload = json.loads(json_path.read_text())
        md_path.write_text(markdown(payload))
        return print(markdown(payload))
    given = sys.argv[1:] if argv is None else list(argv)
    command = " ".join(["python benchmarks/vocab_scale.py", *given])
    previous = {}
    if json_path.exists():
        previous = json.loads(json_path.read_text())
    if args.selection:
        selection_config = harness.settings(args, SELECTION_CONFIG)
        previous["selection"] = dict(
            config=selection_config,
            rows=measure_selection(selection_config),
            command=command,
        )
        json_path.write_text(json.dumps(previous, indent=1))
        md_path.write_text(markdown(previous))
        return print(markdown(previous))
    config = dict(
        backends=args.backends.split(","),
        classes=[int(c) for c in args.classes.split(",")],
        **harness.settings(args, CONFIG),
    )
    if args.quick:
        config.update(classes=[1000, 8000], tokens=512, repeats=2)
    payload = dict(
        config=config,
        rows=[],
        command=command,
        machine=f"{platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPU cores",
    )
    if "selection" in previous:  # measured apart (--selection): kept
        payload["selection"] = previous["selection"]
    output.parent.mkdir(parents=True, exist_ok=True)

    def save(rows):  # after every row: a long run keeps what it measured
        payload["rows"] = rows
        json_path.write_text(json.dumps(payload, indent=1))
        md_path.write_text(markdown(payload))

    measure(config, save=save)
    print(markdown(payload))


if __name__ == "__main__":
    main()
