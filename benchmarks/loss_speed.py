"""Forward + backward time of PTLoss against KDLoss and KLDivergence.

For each backend, batch size and number of classes K, times one loss value
plus its gradient with respect to the student logits, compiled the way
`Model.fit` compiles its train step by default:

- jax: `jax.jit(jax.value_and_grad(...))` (fit's `jit_compile="auto"` is
  XLA on JAX);
- tensorflow: `tf.function` around a `GradientTape`, both without XLA
  (fit's default on a CPU-only machine) and with `jit_compile=True` (fit's
  default when a GPU is visible);
- torch: eager autograd (fit's `jit_compile="auto"` is eager on torch).

Variants: `keras.losses.KLDivergence` fed `softmax(z)`, our `KDLoss`, and
`PTLoss` of orders M (shared `(M,)` and class-wise `(K, M)` coefficients),
each called as a `keras.losses.Loss` object with its default reduction, as
`fit` calls it. The coefficients are traced inputs (as for a model-tracked
variable), never constants the compiler could fold.

Each backend runs in its own subprocess (`KERAS_BACKEND` must be set before
keras is imported); without `--backend` the script runs all of them and
merges the results into `benchmarks/results/<output-name>.json` and `.md`.
All variants of one (backend, mode, K) are timed round-robin in the same
process, and ratios are medians over rounds of the within-round ratio.
"""

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402
import timing  # noqa: E402

TARGET_ORDER = 5
TARGET_RATIO = 1.3
REFERENCE = "KDLoss"
BASELINE = "KLDivergence"
MODE_LABELS = {
    "jit": "jax.jit",
    "graph": "tf.function",
    "xla": "tf.function(jit_compile=True)",
    "eager": "eager autograd",
}


def parse_args(argv=None):
    parser = harness.speed_parser(
        __doc__,
        "K in {10, 100}, 5 rounds, short samples",
        backend_help="time only this backend (default: every backend of "
        "--backends); each backend runs in its own subprocess",
    )
    harness.add_options(
        parser,
        [
            ("--batch-size", 256, None),
            ("--classes", [10, 100, 1000], None),
            ("--orders", [1, 2, 5], None),
            ("--repeats", 40, "timed rounds per case"),
            ("--warmup", 3, "untimed calls per variant"),
            (
                "--min-time",
                0.02,
                "seconds one timed sample lasts at least (calls are looped)",
            ),
            (
                "--device-label",
                None,
                "hardware named in the section title (default: the CPU)",
            ),
            (
                "--output-name",
                "loss_speed",
                "results file stem: <results-dir>/<output-name>.json and .md",
            ),
            (
                "--backend-budget",
                None,
                "seconds after which a backend starts no new (mode, K) case; "
                "the cases left out are listed in the results",
                float,
            ),
            (
                "--total-budget",
                None,
                "seconds for all backends together: each backend gets an "
                "equal share of the time left as its --backend-budget (less "
                "15 s for start-up), and is stopped 45 s after its share",
                float,
            ),
        ],
    )
    parser.add_argument(
        "--tf-modes",
        nargs="+",
        choices=("graph", "xla"),
        default=["graph", "xla"],
        help="tensorflow compilation: tf.function without / with XLA",
    )
    parser.add_argument(
        "--require-gpu",
        action="store_true",
        help="skip (with a note) any backend that sees no GPU",
    )
    return harness.parse(parser, argv, quick=_quick)


def _quick(args):
    args.classes = [k for k in args.classes if k <= 100] or [10]
    args.repeats = min(args.repeats, 5)
    args.warmup = min(args.warmup, 2)
    args.min_time = min(args.min_time, 0.005)


# --------------------------------------------------------------------------
# Worker: one backend, in this process.


def describe_device(backend):
    """(description, is_gpu) of the device the backend computes on."""
    if backend == "jax":
        import jax

        device = jax.devices()[0]
        if device.platform == "cpu":
            return "cpu", False
        return f"{device.platform}: {device.device_kind}", True
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        if not gpus:
            return "cpu", False
        details = tf.config.experimental.get_device_details(gpus[0])
        return f"gpu: {details.get('device_name', gpus[0].name)}", True
    import torch

    if torch.cuda.is_available():
        return f"cuda: {torch.cuda.get_device_name(0)}", True
    return "cpu", False


def make_variants(keras, rng, num_classes, orders):
    """(name, loss object, feeds softmax) for every compared variant."""
    from keras_ptloss import KDLoss
    from keras_ptloss import PTLoss

    variants = [
        (BASELINE, keras.losses.KLDivergence(), True),
        (REFERENCE, KDLoss(teacher_from_logits=False), False),
    ]
    for order in orders:
        # Positive coefficients are always in the convex region.
        shared = rng.uniform(0.0, 0.5, size=(order,))
        classwise = rng.uniform(0.0, 0.5, size=(num_classes, order))
        variants.append(
            (
                f"PTLoss M={order}",
                PTLoss(shared, teacher_from_logits=False),
                False,
            )
        )
        variants.append(
            (
                f"PTLoss M={order} class-wise",
                PTLoss(classwise, teacher_from_logits=False),
                False,
            )
        )
    return variants


def jax_step(keras, loss, softmax, y_true, logits):
    import jax
    from keras import ops

    variable = getattr(loss, "coefficients", None)
    coefficients = variable.value if variable is not None else ops.zeros(())

    def value(z, y, c):
        y_pred = ops.softmax(z) if softmax else z
        if variable is None:
            return loss(y, y_pred)
        with keras.StatelessScope(state_mapping=[(variable, c)]):
            return loss(y, y_pred)

    step = jax.jit(jax.value_and_grad(value))

    def run():
        jax.block_until_ready(step(logits, y_true, coefficients))

    return run


def tf_step(keras, loss, softmax, y_true, logits, xla, is_gpu):
    import tensorflow as tf
    from keras import ops

    @tf.function(jit_compile=xla, reduce_retracing=True)
    def step(y, z):
        with tf.GradientTape() as tape:
            tape.watch(z)
            value = loss(y, ops.softmax(z) if softmax else z)
        return value, tape.gradient(value, z)

    # Waits for the GPU's queue; older TF lacks sync_devices, and then
    # reading the loss value waits for the step's kernels instead.
    sync = getattr(tf.test.experimental, "sync_devices", None)

    def run():
        value, _ = step(y_true, logits)
        if is_gpu:
            sync() if sync is not None else value.numpy()

    return run


def torch_step(keras, loss, softmax, y_true, logits, is_gpu):
    import torch
    from keras import ops

    logits = logits.detach().requires_grad_(True)

    def run():
        value = loss(y_true, ops.softmax(logits) if softmax else logits)
        torch.autograd.grad(value, logits)
        if is_gpu:
            torch.cuda.synchronize()

    return run


def run_backend(args):
    """Times every case on `args.backend`; returns a JSON-able dict."""
    backend = args.backend
    keras = harness.start_backend(backend, args.threads)
    device, is_gpu = describe_device(backend)
    result = {
        "backend": backend,
        "device": device,
        "gpu": is_gpu,
        "threads": args.threads,
        "cases": [],
    }
    if args.require_gpu and not is_gpu:
        result["skipped"] = f"no GPU visible to {backend} (device: {device})"
        return result
    modes = {"jax": ["jit"], "tensorflow": args.tf_modes, "torch": ["eager"]}
    start = time.perf_counter()
    for mode in modes[backend]:
        for num_classes in args.classes:
            elapsed = time.perf_counter() - start
            if args.backend_budget and elapsed > args.backend_budget:
                result.setdefault("left_out", []).append(
                    f"{MODE_LABELS[mode]}, K={num_classes}: over the "
                    f"{args.backend_budget:g} s budget"
                )
                continue
            cases = time_case(keras, args, mode, num_classes, is_gpu)
            result["cases"] += cases
            print(
                f"[{backend}/{mode}] K={num_classes}: "
                + ", ".join(
                    f"{c['variant']} {c['vs_kd']['median']:.2f}x" for c in cases
                ),
                flush=True,
            )
    return result


def time_case(keras, args, mode, num_classes, is_gpu):
    """Every variant's loss + gradient step at K = `num_classes`, timed
    round-robin; one case record per variant."""
    import numpy as np

    rng = np.random.default_rng(args.seed + num_classes)
    shape = (args.batch_size, num_classes)
    teacher = rng.dirichlet(np.ones(num_classes), size=shape[0])
    y_true = keras.ops.convert_to_tensor(teacher.astype("float32"))
    logits = keras.ops.convert_to_tensor(
        rng.normal(size=shape).astype("float32")
    )
    backend = keras.backend.backend()
    runs = {}
    for name, loss, softmax in make_variants(
        keras, rng, num_classes, args.orders
    ):
        step = (keras, loss, softmax, y_true, logits)
        if backend == "jax":
            runs[name] = jax_step(*step)
        elif backend == "tensorflow":
            runs[name] = tf_step(*step, mode == "xla", is_gpu)
        else:
            runs[name] = torch_step(*step, is_gpu)
    timings = timing.interleaved_timings(
        runs,
        repeats=args.repeats,
        warmup=args.warmup,
        min_time=args.min_time,
        seed=args.seed,
    )
    wall, cpu = timings["wall"], timings["cpu"]
    cases = []
    for name in runs:
        case = {
            "mode": mode,
            "classes": num_classes,
            "variant": name,
            "inner_loops": timings["inner"][name],
            "seconds": timing.summarize(wall[name]),
            "vs_kd": timing.paired_ratio(wall, name, REFERENCE),
            "vs_kl": timing.paired_ratio(wall, name, BASELINE),
        }
        if not is_gpu:
            case["cpu_seconds"] = timing.summarize(cpu[name])
            case["cpu_vs_kd"] = timing.paired_ratio(cpu, name, REFERENCE)
            case["cpu_vs_kl"] = timing.paired_ratio(cpu, name, BASELINE)
        cases.append(case)
    return cases


# --------------------------------------------------------------------------
# Parent: one subprocess per backend, then the JSON and the markdown.


# Options the parent consumes; the per-backend workers never see them.
PARENT_ONLY = harness.PARENT_ONLY | {"--total-budget"}


def settings(args):
    return {
        "batch_size": args.batch_size,
        "classes": args.classes,
        "orders": args.orders,
        "repeats": args.repeats,
        "warmup": args.warmup,
        "min_time_s": args.min_time,
        "threads": args.threads,
        "tf_modes": args.tf_modes,
        "total_budget_s": args.total_budget,
        "backend_budget_s": args.backend_budget,
        "quick": args.quick,
        "seed": args.seed,
    }


def to_markdown(data):
    """The BENCHMARKS.md section, generated from the results JSON."""
    label = data["device_label"]
    lines = [
        f"## Loss speed ({label})",
        "",
        "Forward + backward time of one loss value and its gradient with "
        "respect to the student logits (batch "
        f"{data['settings']['batch_size']}), compiled as `Model.fit` "
        "compiles its train step by default: `jax.jit(value_and_grad)`; "
        "`tf.function` + `GradientTape` without XLA (fit's default without "
        "a GPU) and with `jit_compile=True` (fit's default with one); "
        "eager autograd on torch. Each loss is called as a "
        "`keras.losses.Loss` object (default reduction); "
        "`KLDivergence` is fed `softmax(z)`. PTLoss coefficients are "
        "positive random values, shared `(M,)` or class-wise `(K, M)`, "
        "passed as traced inputs.",
        "",
        f"- Command: `{data['command']}`",
        f"- Date: {data['date']}",
        f"- Machine: {data['machine']['cpu']}; {data['machine']['platform']}"
        f"; Python {data['machine']['python']}",
        "- Packages: "
        + ", ".join(
            f"{k} {v}" for k, v in data["machine"]["packages"].items() if v
        ),
        "- Threads per backend: "
        f"{timing.describe_threads(data['settings']['threads'])}; "
        f"{data['settings']['repeats']} rounds after "
        f"{data['settings']['warmup']} warm-up calls, each sample looping "
        f"a variant for at least {data['settings']['min_time_s'] * 1e3:g} "
        "ms; all variants of one table column timed round-robin in one "
        "process, in a new random order every round.",
        "- Times are medians in µs per forward + backward, on the wall "
        "clock (and, on CPU, the process's CPU-time clock). Ratios are the "
        "median over rounds of the within-round wall-time ratio to "
        "`KDLoss` (×KD) and to `KLDivergence` (×KL).",
    ]
    if data["settings"]["quick"]:
        lines.append("- **Quick smoke run: not for publication.**")
    for result in data["results"]:
        if result.get("skipped"):
            lines.append(
                f"- **{result['backend']} not measured**: {result['skipped']}"
            )
        for note in result.get("left_out", []):
            lines.append(f"- **{result['backend']} left out** {note}")
    lines += ["", _target_summary(data), "", WHY, ""]
    for result in data["results"]:
        if result.get("skipped"):
            continue
        modes = dict.fromkeys(c["mode"] for c in result["cases"])
        for mode in modes:
            cases = [c for c in result["cases"] if c["mode"] == mode]
            lines += [
                f"### {result['backend']}, {MODE_LABELS[mode]} "
                f"({result['device']})",
                "",
                _mode_table(cases),
                "",
            ]
    return "\n".join(lines)


WHY = (
    "Where the cost comes from: on top of KDLoss's work, PTLoss computes "
    "`1 - q = -expm1(log q)` and an order-M Horner polynomial per class, "
    "and differentiates both. Under XLA (`jax.jit`, "
    "`jit_compile=True`) these fuse into the loops KDLoss already runs, so "
    "the extra cost is mostly the `expm1` and the arithmetic. Executed op "
    "by op (`tf.function` without XLA, eager torch) every Horner step is "
    "a separate full-size (batch × K) kernel: two forward and about three "
    "backward per order, plus `expm1` and its gradient, against roughly "
    "fifteen such kernels for all of KDLoss; once K is large enough for "
    "memory traffic to dominate, the ratio grows with M accordingly. At "
    "small K on XLA's CPU backend, the fused backward polynomial is also "
    "split across threads, and the hand-off costs more than the "
    "arithmetic."
)


def _target_summary(data):
    """PTLoss M=5 against KDLoss: the issue's target of at most 1.3x."""
    measured = [r for r in data["results"] if not r.get("skipped")]
    with_cpu = any("cpu_vs_kd" in c for r in measured for c in r["cases"])
    keys = [("vs_kd", "")] + ([("cpu_vs_kd", ", CPU time")] if with_cpu else [])
    rows = []
    for result in measured:
        modes = dict.fromkeys(c["mode"] for c in result["cases"])
        for mode in modes:
            classes = dict.fromkeys(
                c["classes"] for c in result["cases"] if c["mode"] == mode
            )
            for num_classes in classes:
                row = [f"{result['backend']}, {MODE_LABELS[mode]}"]
                row.append(str(num_classes))
                for key, _ in keys:
                    for suffix in ("", " class-wise"):
                        case = _find(
                            result["cases"],
                            mode,
                            num_classes,
                            f"PTLoss M={TARGET_ORDER}{suffix}",
                        )
                        if case is None or key not in case:
                            row.append("–")
                        else:
                            row.append(_ratio_with_quartiles(case[key]))
                rows.append(row)
    if not rows:
        return "No backend was measured."
    headers = ["backend, compilation", "K"] + [
        f"{kind}{label}"
        for _, label in keys
        for kind in ("shared", "class-wise")
    ]
    note = (
        " The CPU-time columns read the same rounds on the process's "
        "CPU-time clock, which leaves out waiting for a core on a busy "
        "machine."
        if with_cpu
        else ""
    )
    return "\n".join(
        [
            f"**Target: PTLoss M={TARGET_ORDER} at most {TARGET_RATIO}× "
            "KDLoss.** PTLoss / KDLoss: median over rounds (quartiles), "
            "shared or class-wise coefficients; bold: median over the "
            f"target.{note}",
            "",
            timing.markdown_table(headers, rows, "lr" + "r" * 2 * len(keys)),
        ]
    )


def _ratio_with_quartiles(summary):
    quartiles = f"({summary['q1']:.2f}–{summary['q3']:.2f})"
    return f"{_ratio(summary, True)} {quartiles}"


def _find(cases, mode, num_classes, variant):
    for case in cases:
        if (case["mode"], case["classes"], case["variant"]) == (
            mode,
            num_classes,
            variant,
        ):
            return case
    return None


def _ratio(summary, flag=False):
    text = f"{summary['median']:.2f}"
    if flag and float(text) > TARGET_RATIO:
        return f"**{text}**"
    return text


def _mode_table(cases):
    classes = list(dict.fromkeys(c["classes"] for c in cases))
    variants = list(dict.fromkeys(c["variant"] for c in cases))
    with_cpu = all("cpu_seconds" in c for c in cases)
    headers = ["variant"]
    for k in classes:
        headers += [f"K={k} µs"]
        headers += ["CPU µs"] if with_cpu else []
        headers += ["×KD", "×KL"]
    rows = []
    for variant in variants:
        row = [variant]
        for k in classes:
            case = _find(cases, cases[0]["mode"], k, variant)
            row.append(timing.format_us(case["seconds"]["median"]))
            if with_cpu:
                row.append(timing.format_us(case["cpu_seconds"]["median"]))
            row += [_ratio(case["vs_kd"]), _ratio(case["vs_kl"])]
        rows.append(row)
    return timing.markdown_table(headers, rows)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)

    def schedule(index, count, elapsed):
        """An equal share of what is left of `--total-budget`."""
        if not args.total_budget:
            return [], args.backend_timeout
        share = max(args.total_budget - elapsed, 0.0) / (count - index)
        extra = ["--backend-budget", f"{max(share - 15.0, 1.0):.0f}"]
        return extra, share + 45.0

    def make_data(results):
        return {
            "device_label": args.device_label or timing.cpu_description(),
            "settings": settings(args),
            "target": {"order": TARGET_ORDER, "max_ratio_vs_kd": TARGET_RATIO},
            # A backend that was not measured has no cases.
            "results": [{**r, "cases": r.get("cases", [])} for r in results],
        }

    steps = (run_backend, to_markdown, make_data)
    name = args.output_name
    data = harness.run_parent(
        __file__, name, argv, args, steps, PARENT_ONLY, schedule
    )
    if data is not None:
        print(_target_summary(data))


if __name__ == "__main__":
    main()
