"""Why do the backends disagree in the accuracy cross-check?

The accuracy benchmark's cross-check trains, on each backend, its own
teacher and students (each backend's own initialisation and shuffling), and
TensorFlow differed from JAX by more than 2 standard errors in 6 of 8
cells, the student alone (which never sees a teacher) included. This
script separates the possible causes on the two small settings of that
check (`digits`, `gaussian`, same sizes, models and epochs):

- one teacher, trained once here (on the backend running this script),
  its logits saved and given to every backend;
- "controlled" runs: identical initial weights (drawn once in numpy,
  Glorot-uniform kernels and zero biases, loaded with `set_weights`),
  identical batches (explicit index permutations per epoch, `shuffle=False`)
  and the same optimiser (Adam, lr 3e-3) on every backend; the weights are
  recorded after 1, 10 and 100 steps and at the end, and compared between
  backends (largest absolute difference and relative L2 distance);
- "own" runs: each backend's own initialisation (`keras.utils.
  set_random_seed(seed)`) and `fit(shuffle=True)`, as in the cross-check;
- both for the student alone (cross-entropy on labels) and for KD (T = 4,
  the cross-check's), over seeds 0..4; accuracy differences from JAX are
  reported in standard errors (paired over seeds in the controlled runs,
  where seed s is the same initial weights and batches on every backend).

Each backend runs in its own process (`timing.run_backend_worker`).

Usage:
    python benchmarks/cross_backend.py            # ~10 min on 2 cores
    python benchmarks/cross_backend.py --quick    # tiny, for a smoke test
    python benchmarks/cross_backend.py --markdown-only  # md from the JSON
"""

import argparse
import platform
import sys
import tempfile
import time
from datetime import datetime
from datetime import timezone
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from accuracy_data import digits_splits  # noqa: E402
from accuracy_data import gaussian_splits  # noqa: E402
from timing import read_json  # noqa: E402
from timing import run_backend_worker  # noqa: E402
from timing import write_json  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
BACKENDS = ("jax", "tensorflow", "torch")
METHODS = ("alone", "kd")
SNAPSHOTS = (1, 10, 100)
PROFILE = dict(
    settings=("digits", "gaussian"),
    seeds=5,
    student_epochs={"digits": 100, "gaussian": 40},
    teacher_epochs=40,
    student_hidden={"digits": [16], "gaussian": [16]},
    teacher_hidden={"digits": [256, 256], "gaussian": [128, 128]},
    gaussian_samples=12000,
    batch_size=128,
    learning_rate=3e-3,
    temperature=4.0,
)
QUICK = dict(
    seeds=2,
    student_epochs={"digits": 3, "gaussian": 2},
    teacher_epochs=2,
    gaussian_samples=2000,
)


# --------------------------------------------------------------------------
# Data and the shared teacher (main process).


def load_setting(name, profile):
    """`{"alone": (x, y), "transfer": x, "test": (x, y), "teacher": (x, y)}`
    of the accuracy benchmark's setting `name` (same splits and seeds)."""
    if name == "digits":
        data = digits_splits()
        return dict(
            teacher=data["train"],
            alone=data["train"],
            transfer=data["train"][0],
            test=data["test"],
        )
    splits, _ = gaussian_splits(profile["gaussian_samples"])
    return dict(
        teacher=splits["train"],
        alone=splits["train"],
        transfer=splits["transfer"][0],
        test=splits["test"],
    )


def mlp(num_features, hidden, num_classes):
    import keras

    layers = [keras.Input((num_features,))]
    layers += [keras.layers.Dense(h, activation="relu") for h in hidden]
    layers.append(keras.layers.Dense(num_classes))
    return keras.Sequential(layers)


def prepare(profile, folder):
    """Trains each setting's teacher once; saves data, teacher logits,
    initial weights and batch orders to `folder/<setting>.npz`."""
    import keras

    info = {}
    for name in profile["settings"]:
        data = load_setting(name, profile)
        x_t, y_t = data["teacher"]
        keras.utils.set_random_seed(0)
        teacher = mlp(x_t.shape[1], profile["teacher_hidden"][name], 10)
        teacher.compile(
            keras.optimizers.Adam(profile["learning_rate"]),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        teacher.fit(
            x_t,
            y_t,
            epochs=profile["teacher_epochs"],
            batch_size=profile["batch_size"],
            verbose=0,
        )
        logits = np.asarray(
            keras.ops.convert_to_numpy(teacher(data["transfer"])),
            dtype="float32",
        )
        test_acc = float(
            np.mean(
                np.argmax(
                    keras.ops.convert_to_numpy(teacher(data["test"][0])), 1
                )
                == data["test"][1]
            )
        )
        arrays = dict(
            x_alone=data["alone"][0],
            y_alone=data["alone"][1],
            x_transfer=data["transfer"],
            teacher_logits=logits,
            x_test=data["test"][0],
            y_test=data["test"][1],
        )
        epochs = profile["student_epochs"][name]
        shapes = [
            data["alone"][0].shape[1],
            *profile["student_hidden"][name],
            10,
        ]
        for seed in range(profile["seeds"]):
            rng = np.random.default_rng(1000 + seed)
            for i, (fan_in, fan_out) in enumerate(
                zip(shapes[:-1], shapes[1:], strict=False)
            ):
                limit = np.sqrt(6.0 / (fan_in + fan_out))
                arrays[f"w{seed}_{i}"] = rng.uniform(
                    -limit, limit, (fan_in, fan_out)
                ).astype("float32")
                arrays[f"b{seed}_{i}"] = np.zeros(fan_out, "float32")
            for method, n in (
                ("alone", len(data["alone"][0])),
                ("kd", len(data["transfer"])),
            ):
                arrays[f"order{seed}_{method}"] = np.concatenate(
                    [rng.permutation(n) for _ in range(epochs)]
                ).astype("int64")
        np.savez(Path(folder) / f"{name}.npz", **arrays)
        # Every backend distils from this teacher (its outputs pre-computed
        # above; the Distiller checks them against its output shape).
        teacher.save(Path(folder) / f"{name}_teacher.keras")
        info[name] = dict(
            teacher_test_accuracy=test_acc,
            sizes={
                k: int(len(v[0] if isinstance(v, tuple) else v))
                for k, v in data.items()
            },
        )
    return info


# --------------------------------------------------------------------------
# One backend (worker process).


class Snapshots:
    """Records the student's weights after the given training steps."""

    def __init__(self, steps):
        import keras

        outer = self

        class Callback(keras.callbacks.Callback):
            def on_train_batch_end(self, batch, logs=None):
                outer.step += 1
                if outer.step in steps:
                    # The trained model: the Distiller (its student) or the
                    # student itself; `self.model` syncs it on JAX.
                    student = getattr(self.model, "student", self.model)
                    outer.taken[outer.step] = student.get_weights()

        self.step, self.taken, self.callback = 0, {}, Callback()


class Trainer:
    """One compiled model per (setting, method), reused for every run (the
    optimizer's state is reset and the student's weights loaded before
    each). KD trains through `keras_ptloss.Distiller` on the shared
    teacher's pre-computed logits (`{"student_inputs", "teacher_outputs"}`
    batches, no label term); the student alone is a plain Keras model on
    the labels."""

    def __init__(self, name, arrays, profile, method, teacher_path):
        import keras

        import keras_ptloss as kp

        self.name, self.arrays, self.profile = name, arrays, profile
        self.method = method
        self.hidden = profile["student_hidden"][name]
        optimizer = keras.optimizers.Adam(profile["learning_rate"])
        if method == "alone":
            self.x, self.y = arrays["x_alone"], arrays["y_alone"]
            self.student = mlp(self.x.shape[1], self.hidden, 10)
            self.model = self.student
            self.model.compile(
                optimizer,
                keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            )
        else:
            self.x, self.y = arrays["x_transfer"], arrays["teacher_logits"]
            self.student = mlp(self.x.shape[1], self.hidden, 10)
            self.model = kp.Distiller(
                keras.saving.load_model(teacher_path),
                self.student,
                kp.KDLoss(
                    temperature=profile["temperature"],
                    teacher_from_logits=True,
                ),
                student_loss_weight=0.0,
            )
            self.model.compile(optimizer)
        self.model.optimizer.build(self.model.trainable_variables)

    def _data(self, x, y):
        """`fit`'s `(x, y)`: the Distiller's offline batches for KD."""
        if self.method == "alone":
            return x, y
        return {"student_inputs": x, "teacher_outputs": y}, None

    def _reset_optimizer(self):
        optimizer = self.model.optimizer
        for variable in optimizer.variables:
            if "learning_rate" in variable.path:
                continue
            variable.assign(np.zeros(variable.shape, variable.dtype))

    def run(self, seed, controlled):
        import keras

        arrays, profile = self.arrays, self.profile
        epochs = profile["student_epochs"][self.name]
        keras.utils.set_random_seed(seed)
        if controlled:
            weights = []
            for i in range(len(self.hidden) + 1):
                weights += [arrays[f"w{seed}_{i}"], arrays[f"b{seed}_{i}"]]
            order = arrays[f"order{seed}_{self.method}"]
            # The epochs' permutations back to back, in one ordered pass.
            fit_x, fit_y, fit_epochs, shuffle = (
                self.x[order],
                self.y[order],
                1,
                False,
            )
        else:
            # This backend's own seeded initialisation and shuffling.
            weights = mlp(self.x.shape[1], self.hidden, 10).get_weights()
            fit_x, fit_y, fit_epochs, shuffle = self.x, self.y, epochs, True
        self.student.set_weights(weights)
        self._reset_optimizer()
        snaps = Snapshots(set(SNAPSHOTS))
        self.model.fit(
            *self._data(fit_x, fit_y),
            epochs=fit_epochs,
            batch_size=profile["batch_size"],
            shuffle=shuffle,
            verbose=0,
            callbacks=[snaps.callback],
        )
        logits = keras.ops.convert_to_numpy(self.student(arrays["x_test"]))
        preds = np.argmax(logits, 1)
        accuracy = float(np.mean(preds == arrays["y_test"]))
        snaps.taken["final"] = self.student.get_weights()
        return accuracy, preds, snaps.taken


def worker(args, profile):
    import keras

    folder = Path(args.folder)
    out = {"backend": keras.backend.backend(), "runs": []}
    for name in profile["settings"]:
        arrays = dict(np.load(folder / f"{name}.npz"))
        saved = {}
        teacher = folder / f"{name}_teacher.keras"
        trainers = {
            m: Trainer(name, arrays, profile, m, teacher) for m in METHODS
        }
        for controlled in (True, False):
            for method in METHODS:
                for seed in range(profile["seeds"]):
                    start = time.perf_counter()
                    accuracy, preds, snaps = trainers[method].run(
                        seed, controlled
                    )
                    mode = "controlled" if controlled else "own"
                    out["runs"].append(
                        dict(
                            setting=name,
                            mode=mode,
                            method=method,
                            seed=seed,
                            accuracy=accuracy,
                            seconds=time.perf_counter() - start,
                        )
                    )
                    key = f"{name}_{mode}_{method}_{seed}"
                    saved[f"{key}_preds"] = preds
                    for step, weights in snaps.items():
                        for i, w in enumerate(weights):
                            saved[f"{key}_{step}_{i}"] = w
        np.savez(folder / f"{args.backend}_{name}.npz", **saved)
    write_json(args.worker_output, out)


# --------------------------------------------------------------------------
# Comparison (main process).


def weight_distance(a, b):
    flat_a = np.concatenate([w.ravel() for w in a]).astype("float64")
    flat_b = np.concatenate([w.ravel() for w in b]).astype("float64")
    return dict(
        max_abs=float(np.max(np.abs(flat_a - flat_b))),
        relative_l2=float(
            np.linalg.norm(flat_a - flat_b) / np.linalg.norm(flat_a)
        ),
    )


def compare(profile, folder, results):
    """Weight distances and accuracy differences of each backend vs jax."""
    comparison = []
    steps = [*SNAPSHOTS, "final"]
    for name in profile["settings"]:
        saved = {
            b: dict(np.load(Path(folder) / f"{b}_{name}.npz")) for b in results
        }
        n_layers = 2 * (len(profile["student_hidden"][name]) + 1)
        for other in [b for b in results if b != "jax"]:
            for mode in ("controlled", "own"):
                for method in METHODS:
                    cell = (name, mode, method)
                    a = _accuracies(results, "jax", cell)
                    b = _accuracies(results, other, cell)
                    diff = float(b.mean() - a.mean())
                    n = len(a)
                    if mode == "controlled" and n > 1:
                        d = b - a
                        se = float(d.std(ddof=1) / np.sqrt(n))
                    elif n > 1:
                        se = float(
                            np.sqrt(a.var(ddof=1) / n + b.var(ddof=1) / n)
                        )
                    else:
                        se = float("nan")
                    row = dict(
                        setting=name,
                        backend=other,
                        mode=mode,
                        method=method,
                        jax_mean=float(a.mean()),
                        jax_std=_std(a),
                        other_mean=float(b.mean()),
                        other_std=_std(b),
                        difference=diff,
                        standard_error=se,
                        in_se=diff / se if se > 0 else float("nan"),
                    )
                    agree, dists = [], {s: [] for s in steps}
                    for seed in range(profile["seeds"]):
                        key = f"{name}_{mode}_{method}_{seed}"
                        agree.append(
                            float(
                                np.mean(
                                    saved["jax"][f"{key}_preds"]
                                    == saved[other][f"{key}_preds"]
                                )
                            )
                        )
                        for s in steps:
                            if f"{key}_{s}_0" not in saved["jax"]:
                                continue
                            dists[s].append(
                                weight_distance(
                                    [
                                        saved["jax"][f"{key}_{s}_{i}"]
                                        for i in range(n_layers)
                                    ],
                                    [
                                        saved[other][f"{key}_{s}_{i}"]
                                        for i in range(n_layers)
                                    ],
                                )
                            )
                    row["prediction_agreement"] = float(np.mean(agree))
                    row["weights"] = {
                        str(s): dict(
                            max_abs=float(np.median([d["max_abs"] for d in v])),
                            relative_l2=float(
                                np.median([d["relative_l2"] for d in v])
                            ),
                        )
                        for s, v in dists.items()
                        if v
                    }
                    comparison.append(row)
    return comparison


def _accuracies(results, backend, cell):
    return np.array(
        [
            r["accuracy"]
            for r in results[backend]["runs"]
            if (r["setting"], r["mode"], r["method"]) == cell
        ]
    )


def _std(values):
    return float(values.std(ddof=1)) if len(values) > 1 else 0.0


def seed_noise(profile, results):
    """Within one backend: how far apart are two seeds' accuracies?

    The standard deviation over seeds of the controlled runs, per backend,
    setting and method (the scale any cross-backend difference is measured
    against)."""
    rows = []
    for backend, result in results.items():
        for name in profile["settings"]:
            for mode in ("controlled", "own"):
                for method in METHODS:
                    acc = np.array(
                        [
                            r["accuracy"]
                            for r in result["runs"]
                            if (r["setting"], r["mode"], r["method"])
                            == (name, mode, method)
                        ]
                    )
                    rows.append(
                        dict(
                            backend=backend,
                            setting=name,
                            mode=mode,
                            method=method,
                            std=_std(acc),
                        )
                    )
    return rows


def markdown(report):
    lines = [
        "## Cross-backend differences: initialisation, data order or numerics?",
        "",
        f"- Command: `{report['command']}`, then `python benchmarks/"
        "report.py`.",
        f"- Machine: {report['machine']}; date {report['date']}, "
        f"{report['minutes']:.1f} min.",
        "- One teacher per setting (trained once, on "
        f"{report['teacher_backend']}, its logits shared by all "
        "backends); students as in the accuracy cross-check (digits: MLP "
        "64-16-10, 100 epochs; gaussian: MLP 16-16-10, 40 epochs; Adam lr "
        "3e-3, batch 128; KD at T = 4). *Controlled*: same initial weights "
        "(numpy) and the same batches on every backend; *own*: each "
        "backend's seeded initialisation and `fit(shuffle=True)`. Seeds "
        f"0..{report['profile']['seeds'] - 1}.",
        "- Weight distance: median over seeds of the relative L2 distance "
        "`|w_backend - w_jax| / |w_jax|` (all weights) after 1, 10, 100 "
        "steps and at the end; accuracy difference from jax in standard "
        "errors (paired over seeds when controlled).",
        "",
        "| setting | method | backend | mode | jax acc (%) | backend acc (%)"
        " | diff (points) | diff / SE | test predictions equal | rel. L2 "
        "after 1 / 10 / 100 steps / end |",
        "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in report["comparison"]:
        w = r["weights"]
        dist = " / ".join(
            f"{w[s]['relative_l2']:.1e}" if s in w else "-"
            for s in ("1", "10", "100", "final")
        )
        lines.append(
            f"| {r['setting']} | {r['method']} | {r['backend']} | "
            f"{r['mode']} | {100 * r['jax_mean']:.1f} ± "
            f"{100 * r['jax_std']:.1f} | {100 * r['other_mean']:.1f} ± "
            f"{100 * r['other_std']:.1f} | {100 * r['difference']:+.2f} | "
            f"{r['in_se']:+.1f} | {100 * r['prediction_agreement']:.1f} % | "
            f"{dist} |"
        )
    lines += ["", "### Conclusion", "", report["conclusion"], ""]
    return "\n".join(lines)


def conclude(comparison):
    """A conclusion computed from the numbers (no hand-written verdict)."""
    ctrl = [r for r in comparison if r["mode"] == "controlled"]
    own = [r for r in comparison if r["mode"] == "own"]
    first = max(r["weights"].get("1", {}).get("relative_l2", 0) for r in ctrl)
    final = [
        r["weights"]["final"]["relative_l2"]
        for r in ctrl
        if "final" in r["weights"]
    ]
    big_ctrl = [r for r in ctrl if abs(r["in_se"]) > 2]
    big_own = [r for r in own if abs(r["in_se"]) > 2]
    max_ctrl = max(abs(r["difference"]) for r in ctrl)
    worst = max(own, key=lambda r: abs(r["in_se"]))
    agree = min(r["prediction_agreement"] for r in ctrl)
    return (
        f"With identical initial weights and batches, the backends' weights "
        f"after one step differ by at most {first:.1e} (relative L2: float32 "
        f"rounding), and at the end by a median relative L2 of "
        f"{np.median(final):.1e} (largest {max(final):.1e}); test "
        f"predictions agree on at least {100 * agree:.1f} % of the examples "
        f"and accuracies differ by at most {100 * max_ctrl:.2f} points; "
        f"{len(big_ctrl)} of {len(ctrl)} controlled cells differ from jax "
        f"by more than 2 (paired) standard errors. So the backends' "
        f"arithmetic (optimiser steps, float32 reductions) does not cause "
        f"the differences. With each backend's own initialisation and "
        f"shuffling, {len(big_own)} of {len(own)} cells differ by more than "
        f"2 standard errors (largest {worst['difference'] * 100:+.2f} points, "
        f"{worst['in_se']:+.1f} SE: {worst['setting']} {worst['method']} on "
        f"{worst['backend']}): the difference lies in what each backend's "
        f"random streams draw for the same seed (initial weights and batch "
        f"order, which this run does not separate) and in how `fit` cuts "
        f"the epochs into batches (the own runs have a short last batch per "
        f"epoch, the controlled runs one continuous pass). With 5 seeds a "
        f"{abs(worst['in_se']):.1f}-SE gap is not plain seed noise; more "
        f"seeds, or the controlled protocol, are needed to compare backends."
    )


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--output", default=str(RESULTS / "cross_backend"))
    parser.add_argument("--backend", help=argparse.SUPPRESS)
    parser.add_argument("--worker-output", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument(
        "--markdown-only",
        action="store_true",
        help="rewrite the markdown section from the saved JSON",
    )
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    output = Path(args.output)
    json_path, md_path = output.with_suffix(".json"), output.with_suffix(".md")
    if args.markdown_only:
        report = read_json(json_path)
        report["conclusion"] = conclude(report["comparison"])
        write_json(json_path, report)
        md_path.write_text(markdown(report))
        return 0
    profile = dict(PROFILE)
    if args.quick:
        profile.update(QUICK)
    if args.worker_output:
        return worker(args, profile)
    report = run(args, profile)
    write_json(json_path, report)
    md_path.write_text(markdown(report))
    print(markdown(report))
    return 0


def run(args, profile):
    """The shared teachers, every backend's runs and their comparison."""
    start = time.time()
    with tempfile.TemporaryDirectory() as folder:
        info = prepare(profile, folder)
        results = {}
        script = Path(__file__).resolve()
        for backend in args.backends.split(","):
            extra = ["--folder", folder] + (["--quick"] if args.quick else [])
            result, reason = run_backend_worker(script, backend, extra)
            if result is None:
                raise SystemExit(f"{backend} failed: {reason}")
            results[backend] = result
        comparison = compare(profile, folder, results)
    import keras

    report = dict(
        command="python benchmarks/cross_backend.py"
        + (" --quick" if args.quick else ""),
        machine=_machine(),
        teacher_backend=keras.backend.backend(),
        date=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        minutes=(time.time() - start) / 60,
        profile={k: v for k, v in profile.items()},
        settings=info,
        runs={b: r["runs"] for b, r in results.items()},
        comparison=comparison,
        seed_noise=seed_noise(profile, results),
    )
    report["conclusion"] = conclude(comparison)
    return report


def _machine():
    versions = {}
    for module in ("jax", "tensorflow", "torch", "keras"):
        try:
            versions[module] = __import__(module).__version__
        except ImportError:
            pass
    return (
        f"{platform.processor() or platform.machine()}, "
        f"Python {platform.python_version()}, "
        + ", ".join(f"{k} {v}" for k, v in versions.items())
    )


if __name__ == "__main__":
    sys.exit(main())
