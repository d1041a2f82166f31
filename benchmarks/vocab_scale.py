"""Memory and time of loss + gradient at vocabulary scale: chunked PTLoss vs KD.

For K classes in {1k, 32k, 128k} and 4,096 tokens, on each backend, this
measures the loss plus its gradient with respect to the student logits for
`KDLoss` (the reference), `PTLoss` on its default autodiff path and
`PTLoss(chunk_size=...)` (the memory-lean path: token chunks and a
closed-form gradient). Targets: the chunked PTLoss's peak memory <= 1.2x and
time <= 1.3x KD's.

Peak memory is measured in a fresh subprocess per configuration: the growth
of `resource.getrusage(RUSAGE_SELF).ru_maxrss` over a baseline taken after
imports and input creation, across one loss + gradient call. On JAX the
compiled step's `memory_analysis()` (temporary + output bytes, without
running it) is reported too. Time: one warm-up, then the median of repeats,
the methods interleaved in one subprocess per backend and K, reported as
ratios to KD. On the shared 2-core machine the runs use 1,024 tokens
(512 and fewer repeats at 128k) to fit in minutes; the JAX compile-time
analysis, which runs nothing, keeps the 4,096 tokens of the target.

Usage:
    python benchmarks/vocab_scale.py            # the published table
    python benchmarks/vocab_scale.py --quick    # small, for a smoke test
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

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
BACKENDS = ("jax", "tensorflow", "torch")
METHODS = ("kd", "pt", "pt_chunked")
COEFFICIENTS = [0.5, -0.1, 0.05, 0.0, 0.01]
TEMPERATURE = 2.0
MEMORY_TARGET = 1.2
TIME_TARGET = 1.3


def _make_loss(method, chunk_size):
    from keras_ptloss.losses import KDLoss
    from keras_ptloss.losses import PTLoss

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
    """Peak RSS growth (MiB) of one loss + gradient; JAX: compiled bytes."""
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
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    _block(step(z, t))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result["rss_mib"] = (peak - base) / 1024
    return result


def worker_time(backend, tokens, classes, chunk_size, repeats):
    """Median seconds per loss + gradient, methods interleaved."""
    import numpy as np

    z, t = _inputs(backend, tokens, classes)
    steps = {}
    for method in METHODS:
        steps[method], _ = _step_fn(backend, _make_loss(method, chunk_size))
        _block(steps[method](z, t))  # warm-up (and compile)
    times = {m: [] for m in METHODS}
    for _ in range(repeats):
        for method in METHODS:
            start = time.perf_counter()
            _block(steps[method](z, t))
            times[method].append(time.perf_counter() - start)
    return {m: float(np.median(v)) for m, v in times.items()}


def _run_worker(backend, args):
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2")
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run(
        [sys.executable, __file__, "--worker", json.dumps(args)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"worker {args} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _worker_main(spec):
    args = json.loads(spec)
    backend = os.environ["KERAS_BACKEND"]
    if args["kind"] == "memory":
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
            args["chunk_size"],
            args["repeats"],
        )
    print(json.dumps(result))


def measure(config, log=print):
    rows = []
    for backend in config["backends"]:
        for classes in config["classes"]:
            big = classes >= 100_000
            tokens = config["tokens_128k"] if big else config["tokens"]
            repeats = config["repeats_128k"] if big else config["repeats"]
            common = dict(
                tokens=tokens, classes=classes, chunk_size=config["chunk_size"]
            )
            row = dict(backend=backend, **common)
            for method in METHODS:
                memory = _run_worker(
                    backend, dict(kind="memory", method=method, **common)
                )
                row[f"{method}_rss_mib"] = memory["rss_mib"]
                if "compiled_mib" in memory:
                    row[f"{method}_compiled_mib"] = memory["compiled_mib"]
            times = _run_worker(
                backend, dict(kind="time", repeats=repeats, **common)
            )
            for method in METHODS:
                row[f"{method}_s"] = times[method]
            row["repeats"] = repeats
            if backend == "jax" and tokens != config["analysis_tokens"]:
                full = dict(common, tokens=config["analysis_tokens"])
                for method in METHODS:
                    memory = _run_worker(
                        backend,
                        dict(
                            kind="memory",
                            method=method,
                            compiled_only=1,
                            **full,
                        ),
                    )
                    row[f"{method}_compiled_mib_full"] = memory["compiled_mib"]
            log(json.dumps(row))
            rows.append(row)
    return rows


def _ratio(row, method, key):
    return row[f"{method}_{key}"] / max(row[f"kd_{key}"], 1e-12)


def markdown(payload):
    config = payload["config"]
    lines = [
        "## Vocabulary scale: chunked PTLoss vs KD",
        "",
        "Loss + gradient w.r.t. the student logits, "
        f"{config['tokens']:,} tokens "
        + (
            f"({config['tokens_128k']:,} at 128k; "
            if any(c >= 100_000 for c in config["classes"])
            else "("
        )
        + "the JAX compile-time analysis below keeps "
        f"{config['analysis_tokens']:,}), M = 5 coefficients, T = 2, "
        f"`PTLoss(chunk_size={config['chunk_size']})` vs `KDLoss` and the "
        "default autodiff `PTLoss`. Peak memory: growth of the process's "
        "max RSS over a baseline after inputs are built, one fresh process "
        "per cell; JAX also by `compile().memory_analysis()` (temporary + "
        "output bytes). Time: median of "
        f"{config['repeats']} repeats ({config['repeats_128k']} at 128k) "
        "after a warm-up, methods interleaved. Targets: chunked PTLoss "
        f"memory <= {MEMORY_TARGET}x KD, time <= {TIME_TARGET}x KD.",
        "",
        "| backend | K | tokens | KD MiB | PT MiB (x KD) | chunked MiB "
        "(x KD) | KD s | PT s (x KD) | chunked s (x KD) | targets |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in payload["rows"]:
        mem = _ratio(row, "pt_chunked", "rss_mib")
        speed = _ratio(row, "pt_chunked", "s")
        met = (
            "met"
            if mem <= MEMORY_TARGET and speed <= TIME_TARGET
            else "missed: "
            + ", ".join(
                name
                for name, bad in (
                    ("memory", mem > MEMORY_TARGET),
                    ("time", speed > TIME_TARGET),
                )
                if bad
            )
        )
        lines.append(
            f"| {row['backend']} | {row['classes']:,} | {row['tokens']:,} | "
            f"{row['kd_rss_mib']:.0f} | {row['pt_rss_mib']:.0f} "
            f"({_ratio(row, 'pt', 'rss_mib'):.2f}) | "
            f"{row['pt_chunked_rss_mib']:.0f} ({mem:.2f}) | "
            f"{row['kd_s']:.3f} | {row['pt_s']:.3f} "
            f"({_ratio(row, 'pt', 's'):.2f}) | {row['pt_chunked_s']:.3f} "
            f"({speed:.2f}) | {met} |"
        )
    jax_rows = [r for r in payload["rows"] if "kd_compiled_mib" in r]
    if jax_rows:
        lines += [
            "",
            "JAX compiled memory (`memory_analysis`, temporary + output "
            "bytes, MiB):",
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
                    f"{row[f'kd_{key}']:.0f} | {row[f'pt_{key}']:.0f} "
                    f"({_ratio(row, 'pt', key):.2f}) | "
                    f"{row[f'pt_chunked_{key}']:.0f} "
                    f"({_ratio(row, 'pt_chunked', key):.2f}) |"
                )
    lines += [
        "",
        f"Machine: {payload['machine']}. Regenerate with "
        f"`{payload['command']}`.",
    ]
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes")
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--classes", default="1000,32000,128000")
    parser.add_argument("--tokens", type=int, default=1024)
    parser.add_argument("--tokens-128k", type=int, default=512)
    parser.add_argument("--analysis-tokens", type=int, default=4096)
    parser.add_argument("--chunk-size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--repeats-128k", type=int, default=2)
    parser.add_argument("--output", default=str(RESULTS / "vocab_scale"))
    parser.add_argument(
        "--markdown-only",
        action="store_true",
        help="rewrite the .md from the existing .json, measuring nothing",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return _worker_main(args.worker)
    output = Path(args.output)
    if args.markdown_only:
        payload = json.loads(output.with_suffix(".json").read_text())
        output.with_suffix(".md").write_text(markdown(payload))
        return print(markdown(payload))
    config = dict(
        backends=args.backends.split(","),
        classes=[int(c) for c in args.classes.split(",")],
        tokens=args.tokens,
        tokens_128k=args.tokens_128k,
        analysis_tokens=args.analysis_tokens,
        chunk_size=args.chunk_size,
        repeats=args.repeats,
        repeats_128k=args.repeats_128k,
    )
    if args.quick:
        config.update(
            classes=[1000, 8000], tokens=512, chunk_size=128, repeats=2
        )
    given = sys.argv[1:] if argv is None else list(argv)
    command = " ".join(["python benchmarks/vocab_scale.py", *given])
    rows = measure(config)
    payload = dict(
        config=config,
        rows=rows,
        command=command,
        machine=f"{platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPU cores",
    )
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.with_suffix(".json").write_text(json.dumps(payload, indent=1))
    text = markdown(payload)
    output.with_suffix(".md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
