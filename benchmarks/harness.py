"""Runs benchmark cases in per-backend worker processes and stores them.

A case is a function `run(**size) -> list[dict]` listed in the `CASES`
table of one of `MODULES`; the harness runs it once per backend, each in a
fresh process (KERAS_BACKEND must be set before keras is imported), tags
its records with the backend and the run, and writes
`benchmarks/results/<case>.json`: `{"case", "runs": [stamp...],
"records": [...]}`. A stamp names the command, commit, machine, date, load
and duration of one run. Cases that re-run part of their grid (`--set`)
replace only the records with the same `merge` fields.
"""

import dataclasses
import datetime
import fcntl
import importlib
import json
import os
import platform
import random
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
QUICK_RESULTS = RESULTS / "tmp"  # git-ignored
BACKENDS = ("jax", "tensorflow", "torch")
MODULES = ("speed", "accuracy", "language")


@dataclasses.dataclass
class Case:
    """One benchmark: `run(**size)` returns plain records (dicts).

    `sizes` maps "full" and "quick" to `run`'s keyword arguments; `backends`
    is empty for a case that imports no backend; `merge` names the record
    fields that identify what a partial run replaces.
    """

    run: object
    sizes: dict
    backends: tuple = BACKENDS
    threads: int = 1
    merge: tuple = ()
    timeout: float = None
    description: str = ""


def cases():
    """All cases, by name, from the `CASES` tables of `MODULES`."""
    found = {}
    for module in MODULES:
        table = importlib.import_module(f"benchmarks.{module}").CASES
        for name, case in table.items():
            if name in found:
                raise ValueError(f"case {name!r} is defined twice")
            found[name] = case
    return found


def load_average():
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def cpu_model():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def commit():
    """The checkout's short commit, with `+` when tracked files differ."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
        return head + ("+" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def versions():
    from importlib import metadata

    found = {}
    for name in ("keras", "jax", "tensorflow-cpu", "tensorflow", "torch"):
        try:
            found[name.replace("-cpu", "")] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found


def stamp(command, started, load_before, revision):
    """What a run was: command, commit, machine, date, load, duration."""
    return {
        "command": command,
        "commit": revision,
        "machine": f"{cpu_model()}, {len(os.sched_getaffinity(0))} cores",
        "date": datetime.datetime.now(datetime.timezone.utc)
        .replace(microsecond=0)
        .isoformat(),
        "load": [load_before, load_average()],
        "seconds": round(time.perf_counter() - started, 1),
        "python": platform.python_version(),
        "versions": versions(),
    }


def worker_env(backend, threads):
    """Environment of a worker: the backend, `threads` intra-op threads."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT), env.get("PYTHONPATH", "")]
    ).rstrip(os.pathsep)
    if backend:
        env["KERAS_BACKEND"] = backend
    if threads > 0:
        env["OMP_NUM_THREADS"] = str(threads)
        env["TF_NUM_INTRAOP_THREADS"] = str(threads)
        env["TF_NUM_INTEROP_THREADS"] = str(threads)
        flags = env.get("XLA_FLAGS", "")
        if threads == 1 and "multi_thread_eigen" not in flags:
            flags += " --xla_cpu_multi_thread_eigen=false"
        env["XLA_FLAGS"] = flags.strip()
    return env


def pinned(backend, threads):
    """What keeps a one-thread JAX worker on one core (a `preexec_fn`), or
    `None`: XLA's CPU runtime has no thread setting and sizes its pool
    from the process's CPU affinity."""
    if backend != "jax" or threads != 1:
        return None
    if not hasattr(os, "sched_setaffinity"):  # Linux only
        return None
    core = min(os.sched_getaffinity(0))
    return lambda: os.sched_setaffinity(0, {core})


def run_worker(name, backend, size, timeout, threads):
    """Runs one case on one backend in a fresh process; its records."""
    with tempfile.TemporaryDirectory() as folder:
        output = Path(folder) / "records.json"
        command = [sys.executable, "-m", "benchmarks", "worker", name]
        command += ["--output", str(output), "--size", json.dumps(size)]
        print(f"== {name} on {backend or 'numpy'}", flush=True)
        completed = subprocess.run(
            command,
            env=worker_env(backend, threads),
            preexec_fn=pinned(backend, threads),
            cwd=ROOT,
            timeout=timeout,
        )
        if completed.returncode != 0:
            raise RuntimeError(
                f"case {name!r} failed on {backend or 'numpy'} "
                f"(exit status {completed.returncode})"
            )
        return json.loads(output.read_text())


def serve_worker(name, size_json, output):
    """The worker side: runs the case here and writes its records."""
    case = cases()[name]
    if os.environ.get("KERAS_BACKEND"):
        import keras

        keras.utils.set_random_seed(0)
    records = case.run(**json.loads(size_json))
    Path(output).write_text(json.dumps(records))


def merge(stored, records, keys):
    """`stored` less the records a partial run re-measured, then `records`."""
    if not keys:
        return list(records)
    redone = {tuple(r.get(k) for k in keys) for r in records}
    kept = [r for r in stored if tuple(r.get(k) for k in keys) not in redone]
    return kept + list(records)


def run(
    names, quick=False, backends=None, overrides=None, folder=None, threads=None
):
    """Runs the named cases; writes and returns their result files
    (`threads`: each worker's intra-op threads instead of the case's; 0
    leaves the backends' defaults)."""
    table = cases()
    unknown = sorted(set(names) - set(table))
    if unknown:
        raise SystemExit(f"unknown case(s) {unknown}; known: {sorted(table)}")
    folder = Path(folder or (QUICK_RESULTS if quick else RESULTS))
    command = shlex.join(["python", "-m", "benchmarks", *sys.argv[1:]])
    written = []
    for name in names:
        case = table[name]
        size = dict(case.sizes["quick" if quick else "full"])
        size.update(overrides or {})
        # `backends` overrides a case's own (a smoke run may take the
        # backend that starts fastest); a numpy case has none.
        chosen = list(backends or case.backends) if case.backends else []
        started, load_before = time.perf_counter(), load_average()
        revision = commit()  # what the workers run, whatever lands meanwhile
        records = []
        for backend in chosen or [None]:
            part = run_worker(
                name,
                backend,
                size,
                case.timeout,
                case.threads if threads is None else threads,
            )
            records += [{"backend": backend, **r} for r in part]
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{name}.json"
        # Runs of parts of a case (`--set`) may finish together.
        with open(folder / f".{name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            data = (
                json.loads(path.read_text())
                if path.exists()
                else {"case": name, "runs": [], "records": []}
            )
            run_id = max((r["id"] for r in data["runs"]), default=-1) + 1
            for record in records:
                record["run"] = run_id
            data["records"] = merge(data["records"], records, case.merge)
            live = {r["run"] for r in data["records"]}
            data["runs"] = [r for r in data["runs"] if r["id"] in live]
            data["runs"].append(
                {
                    "id": run_id,
                    "size": size,
                    **stamp(command, started, load_before, revision),
                }
            )
            write(path, data)
        print(f"wrote {path}", flush=True)
        written.append(path)
    return written


def compact(value):
    """`value` with floats rounded to 4 significant digits."""
    if isinstance(value, float):
        return float(f"{value:.4g}")
    if isinstance(value, dict):
        return {k: compact(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [compact(v) for v in value]
    return value


def write(path, data):
    """The result file: runs indented, one record per line (small diffs)."""
    records = ",\n  ".join(
        json.dumps(compact(r), sort_keys=True) for r in data["records"]
    )
    head = json.dumps(
        {k: v for k, v in data.items() if k != "records"}, indent=1
    )
    path.write_text(f'{head[:-2]},\n "records": [\n  {records}\n ]\n}}\n')


# Timing helpers for the speed cases.


def rounds(methods, repeats, seed=0):
    """Runs each method once per round, in a fresh random order.

    Args:
        methods: dict name -> callable returning `(wall_s, cpu_s)`.
        repeats: number of rounds.
        seed: seed of the order.

    Returns:
        dict name -> list of `(wall_s, cpu_s)` in round order.
    """
    samples = {name: [] for name in methods}
    names = list(methods)
    order = random.Random(seed)
    for _ in range(repeats):
        order.shuffle(names)
        for name in names:
            samples[name].append(tuple(methods[name]()))
    return samples


def clocked(fn, inner=1):
    """`fn` called `inner` times: `(wall_s, cpu_s)` per call."""
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(inner):
        fn()
    return (
        (time.perf_counter() - wall) / inner,
        (time.process_time() - cpu) / inner,
    )


def summary(samples, baseline=None):
    """Median wall/CPU seconds of `samples`; with `baseline` (samples of
    the same rounds), the median and quartiles of the within-round ratio."""
    out = {
        "wall": statistics.median(s[0] for s in samples),
        "cpu": statistics.median(s[1] for s in samples),
        "repeats": len(samples),
    }
    if baseline is not None:
        ratios = sorted(
            a[0] / b[0] for a, b in zip(samples, baseline, strict=True)
        )
        quartiles = (  # inclusive: within the ratios seen
            statistics.quantiles(ratios, n=4, method="inclusive")
            if len(ratios) > 1
            else []
        )
        out["ratio"] = statistics.median(ratios)
        out["ratio_q"] = [quartiles[0], quartiles[2]] if quartiles else None
        out["ratio_cpu"] = statistics.median(
            a[1] / b[1]
            for a, b in zip(samples, baseline, strict=True)
            if b[1] > 0
        )
    return out
