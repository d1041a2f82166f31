"""Shared helpers for the benchmark scripts: timing, machine, output files.

Import it from a script in `benchmarks/` with `from timing import ...`
(scripts run as `python benchmarks/<name>.py`, so this folder is on
`sys.path`). It imports no backend itself; pass backend objects in. The
speed benchmarks' shared command line and worker prologue are in
`harness.py`.

Timing (`interleaved_timings`): each callable is warmed up, then given an
inner loop count so that one sample lasts at least `min_time` seconds; the
samples are taken round-robin (one sample of every callable per round, in a
fresh random order each round), so that load from other processes on a
shared machine hits all the compared callables alike. Each sample is read
on the wall clock and on the process's CPU-time clock. Report medians
(`summarize`), and compare two callables with `paired_ratio`: the median
over rounds of their ratio within the round.

Output (`write_json`, `write_markdown`, `markdown_table`): every benchmark
writes `benchmarks/results/<name>.json`, then its markdown section generated
from that JSON, naming the command (`command_line`), the machine
(`describe_machine`) and the date (`utc_now`); `benchmarks/report.py` joins
the sections into BENCHMARKS.md.
"""

import datetime
import importlib.metadata
import json
import os
import platform
import random
import shlex
import statistics
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
# Git-ignored: where smoke runs (`--quick`) write, so that they never
# overwrite the published sections.
QUICK_RESULTS = RESULTS / "tmp"


def interleaved_timings(callables, repeats, warmup=3, min_time=0.02, seed=0):
    """Times callables round-robin; returns seconds per call for each round.

    Every sample is measured on two clocks: wall time (`time.perf_counter`,
    the primary measure) and this process's CPU time
    (`time.process_time`, all threads), which leaves out the time the
    process waited for a core on a busy machine. CPU time means nothing for
    work done on a GPU.

    Args:
        callables: dict name -> zero-argument callable doing one full unit of
            work *and waiting for it* (block until ready / synchronize).
        repeats: number of rounds (samples per callable).
        warmup: calls of each callable before timing (compilation, caches).
        min_time: wall seconds one sample should last at least; short
            callables are looped `inner` times per sample and the time
            divided.
        seed: seed of the per-round shuffling of the order.

    Returns:
        A dict with `"wall"` and `"cpu"`, each mapping name -> list of
        `repeats` seconds per call in round order (so that rounds can be
        paired across names), and `"inner"`: name -> loop count.
    """
    names = list(callables)
    for name in names:
        for _ in range(warmup):
            callables[name]()
    inner = {name: _calibrate(callables[name], min_time) for name in names}
    wall = {name: [] for name in names}
    cpu = {name: [] for name in names}
    order = random.Random(seed)
    for _ in range(repeats):
        order.shuffle(names)
        for name in names:
            fn, count = callables[name], inner[name]
            start_cpu, start = time.process_time(), time.perf_counter()
            for _ in range(count):
                fn()
            end, end_cpu = time.perf_counter(), time.process_time()
            wall[name].append((end - start) / count)
            cpu[name].append((end_cpu - start_cpu) / count)
    return {"wall": wall, "cpu": cpu, "inner": inner}


def _calibrate(fn, min_time):
    """Loop count so that one sample lasts about `min_time` (at least 1)."""
    count = 1
    while True:
        start = time.perf_counter()
        for _ in range(count):
            fn()
        elapsed = time.perf_counter() - start
        if elapsed >= min_time or count >= 1 << 20:
            return count
        # Aim a little past min_time; grow at most 10x per try.
        guess = int(count * 1.2 * min_time / max(elapsed, 1e-9)) + 1
        count = min(max(guess, count + 1), count * 10)


def summarize(values):
    """Median and quartiles of a list of numbers, as a dict."""
    values = sorted(values)
    if len(values) == 1:
        q1 = q3 = values[0]
    else:
        q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return {
        "median": statistics.median(values),
        "q1": q1,
        "q3": q3,
        "n": len(values),
    }


def paired_ratio(samples, numerator, denominator):
    """Median (and quartiles) over rounds of `numerator / denominator`."""
    ratios = [
        a / b
        for a, b in zip(samples[numerator], samples[denominator], strict=True)
    ]
    return summarize(ratios)


def utc_now():
    """The current UTC time, ISO format to the second."""
    now = datetime.datetime.now(datetime.timezone.utc)
    return now.replace(microsecond=0).isoformat()


def cpu_description():
    """The CPU model and the number of cores this process may use."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count()
    return f"{model}, {cores} core(s)"


def package_versions(names=("keras", "jax", "jaxlib", "tensorflow", "torch")):
    """Installed versions of the named distributions (None if absent)."""
    versions = {}
    for name in names:
        candidates = [name]
        if name == "tensorflow":
            candidates.append("tensorflow-cpu")
        versions[name] = None
        for candidate in candidates:
            try:
                versions[name] = importlib.metadata.version(candidate)
                break
            except importlib.metadata.PackageNotFoundError:
                continue
    return versions


def describe_machine():
    """A dict describing the host: CPU, OS, Python and package versions."""
    return {
        "cpu": cpu_description(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "packages": package_versions(),
    }


def command_line(script=None, argv=None):
    """The command that reproduces this run, as one shell-quoted string."""
    script = Path(script or sys.argv[0]).resolve()
    try:
        script = script.relative_to(ROOT)
    except ValueError:
        pass
    argv = sys.argv[1:] if argv is None else argv
    return shlex.join(["python", str(script), *argv])


def write_json(path, data):
    """Writes `data` as indented JSON, creating the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    return path


def read_json(path):
    return json.loads(Path(path).read_text())


def write_markdown(path, text):
    """Writes a markdown section (ensuring one trailing newline)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text.strip() + "\n")
    return path


def describe_threads(threads):
    """A thread count as the results sections write it."""
    return "backend default" if threads <= 0 else str(threads)


def results_header(name, script, argv):
    """The fields every results JSON starts with: what, how, when, where."""
    return {
        "name": name,
        "command": command_line(script, argv),
        "date": utc_now(),
        "machine": describe_machine(),
    }


def write_results(folder, name, data, to_markdown):
    """Writes `<name>.json` and its markdown section `<name>.md`."""
    json_path = write_json(Path(folder) / f"{name}.json", data)
    md_path = write_markdown(Path(folder) / f"{name}.md", to_markdown(data))
    print(f"wrote {json_path} and {md_path}")


def rewrite_markdown(folder, name, to_markdown):
    """Regenerates `<name>.md` from the stored `<name>.json`."""
    data = read_json(Path(folder) / f"{name}.json")
    path = write_markdown(Path(folder) / f"{name}.md", to_markdown(data))
    print(f"wrote {path}")


def serve_worker(args, run_backend):
    """Measures one backend when this process is a worker.

    Returns:
        True when `args.worker_output` is set (the result was written
        there), False in the parent process.
    """
    if not args.worker_output:
        return False
    try:
        result = run_backend(args)
    except Exception:
        # The parent shows only the tail of stderr; print the whole trace.
        traceback.print_exc()
        raise
    write_json(args.worker_output, result)
    return True


def markdown_table(headers, rows, align=None):
    """A GitHub markdown table; `align` is a string of `l`/`r` per column."""
    align = align or "l" + "r" * (len(headers) - 1)
    rule = ["---:" if a == "r" else "---" for a in align]
    lines = [
        "| " + " | ".join(str(h) for h in headers) + " |",
        "| " + " | ".join(rule) + " |",
    ]
    for row in rows:
        lines.append("| " + " | ".join(str(c) for c in row) + " |")
    return "\n".join(lines)


def measured(results, lines):
    """The measured backends' results; appends a "not measured" line to
    `lines` for each skipped one."""
    kept = []
    for result in results:
        if result.get("skipped"):
            lines.append(
                f"- **{result['backend']} not measured**: {result['skipped']}"
            )
        else:
            kept.append(result)
    return kept


def format_us(seconds):
    """Seconds as microseconds: `1,234`, `56.7` or `8.90`."""
    us = seconds * 1e6
    if us >= 100:
        return f"{us:,.0f}"
    if us >= 10:
        return f"{us:.1f}"
    return f"{us:.2f}"


def configure_threads(backend, threads):
    """Limits CPU threads; must run before the backend is imported."""
    if threads <= 0:
        return
    os.environ["OMP_NUM_THREADS"] = str(threads)
    if backend == "jax":
        flags = os.environ.get("XLA_FLAGS", "")
        extra = f"intra_op_parallelism_threads={threads}"
        if threads == 1:
            extra = "--xla_cpu_multi_thread_eigen=false " + extra
        os.environ["XLA_FLAGS"] = f"{flags} {extra}".strip()
    elif backend == "tensorflow":
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    elif backend == "torch":
        import torch

        torch.set_num_threads(threads)


def run_backend_worker(script, backend, worker_argv, timeout=None):
    """Runs `script --backend B --worker-output F` in a fresh process.

    KERAS_BACKEND must be set before keras is imported, so each backend of
    a benchmark runs in its own subprocess that writes its result as JSON.

    Returns:
        `(result, None)` with the worker's JSON, or `(None, reason)` when it
        timed out or failed (the tail of its stderr is echoed).
    """
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        output = Path(folder) / f"{backend}.json"
        command = [
            sys.executable,
            str(Path(script).resolve()),
            *worker_argv,
            "--backend",
            backend,
            "--worker-output",
            str(output),
        ]
        env = dict(os.environ, KERAS_BACKEND=backend)
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        print(f"== {backend}", flush=True)
        try:
            completed = subprocess.run(
                command,
                env=env,
                timeout=timeout,
                stderr=subprocess.PIPE,
                text=True,
            )
        except subprocess.TimeoutExpired:
            return None, f"stopped after {timeout:.0f} s"
        if completed.returncode != 0 or not output.exists():
            lines = [ln for ln in completed.stderr.splitlines() if ln.strip()]
            sys.stderr.write("\n".join(lines[-20:]) + "\n")
            reason = lines[-1] if lines else f"exit {completed.returncode}"
            return None, f"failed: {reason}"
        return read_json(output), None


def drop_options(argv, names):
    """`argv` without the named options and the values that follow them."""
    kept, skipping = [], False
    for arg in argv:
        if skipping and not arg.startswith("--"):
            continue
        skipping = False
        if arg.split("=", 1)[0] in names:
            skipping = "=" not in arg
            continue
        kept.append(arg)
    return kept
