"""Accuracy benchmark: summaries, tables, the selection plot and targets.

Everything here reads the JSON store only (never trains), so the markdown
section can be regenerated with `--report-only`.
"""

import math
from pathlib import Path

import numpy as np
import scipy.stats
import timing
from accuracy_harness import Store
from accuracy_harness import record_key
from accuracy_settings import BACKENDS
from accuracy_settings import CROSS
from accuracy_settings import FAMILY_DATA
from accuracy_settings import FULL
from accuracy_settings import GRIDS
from accuracy_settings import HEADLINE
from accuracy_settings import MAIN_SETTINGS
from accuracy_settings import METHODS
from accuracy_settings import NAME
from accuracy_settings import PIPELINE
from accuracy_settings import PROFILES
from accuracy_settings import ROOT
from accuracy_settings import SEARCH_STANDARDIZE
from accuracy_settings import SEARCHED
from accuracy_settings import SWEEP_ADDED
from accuracy_settings import SWEEP_METHODS
from accuracy_settings import TEACHER_SWEEP
from accuracy_settings import TUNE_SEED
from accuracy_settings import TUNED_BASELINES
from accuracy_settings import family_hyperparameters
from accuracy_settings import hp_key
from accuracy_settings import subsample_grid

from keras_ptloss.calibration import DEFAULT_BOUNDS as CALIBRATION_BOUNDS

# --------------------------------------------------------------------------
# Report: summaries and markdown from the JSON.
# --------------------------------------------------------------------------


def _mean_std(values):
    values = np.asarray(values, dtype="float64")
    if values.size == 0:
        return float("nan"), float("nan")
    std = float(values.std(ddof=1)) if values.size > 1 else 0.0
    return float(values.mean()), std


def run_parts(method, hp):
    """The record-key parts of a method's runs: family, data, hp key."""
    family = METHODS[method][1]
    harness_hp = family_hyperparameters(method, hp)
    return family, FAMILY_DATA[family], hp_key(harness_hp)


def legacy_run_parts(method, hp):
    """Key parts of the earlier harness (CODE_VERSION 1, its own training
    loop): still read for the cross-check records it wrote."""
    family = {"ce": "poly", "lskd": "lskd"}.get(method, METHODS[method][1])
    data = "alone" if method == "ce" else "transfer"
    harness_hp = {"epsilon": 0.0} if method == "ce" else None
    if harness_hp is None:
        harness_hp = family_hyperparameters(method, hp)
    return family, data, hp_key(harness_hp)


def summarize(records, profile_name, backend, profile):
    """Per setting: teacher, chosen hyper-parameters, seeds' metrics."""

    def get(*parts):
        return records.get(record_key(profile_name, backend, *parts))

    def runs_of(name, method, hp, seeds):
        """`({seed: record}, legacy)` of the seeds that ran."""
        if method == PIPELINE:
            parts = [("pipeline", PIPELINE)]
        else:
            parts = [("run", *run_parts(method, hp))]
            parts.append(("run", *legacy_run_parts(method, hp)))
        for legacy, key in enumerate(parts):
            runs = {s: get(name, *key, f"seed={s}") for s in seeds}
            runs = {s: r for s, r in runs.items() if r is not None}
            if runs:
                return runs, bool(legacy)
        return {}, False

    out = {}
    for name in profile["settings"]:
        teacher = get(name, "teacher")
        chosen = get(name, "chosen")
        if teacher is None or chosen is None:
            continue
        rows = {}
        seeds = list(range(profile["seeds"]))
        for method in sorted(chosen, key=list(METHODS).index):
            hp = chosen[method]
            by_seed, legacy = runs_of(name, method, hp, seeds)
            runs = list(by_seed.values())
            rows[method] = {
                "hp": hp,
                "runs": runs,
                "by_seed": by_seed,
                "legacy": legacy,
                "test": _mean_std([r["test_accuracy"] for r in runs]),
                "nll": _mean_std(
                    [r["test_nll"] for r in runs if "test_nll" in r]
                ),
                "ece": _mean_std(
                    [r["test_ece"] for r in runs if "test_ece" in r]
                ),
                # After temperature scaling on the validation split (only
                # when every run recorded it).
                "nll_calibrated": _all_or_nothing(runs, "test_nll_calibrated"),
                "ece_calibrated": _all_or_nothing(runs, "test_ece_calibrated"),
                "pipeline": [r["search"] for r in runs]
                if method == PIPELINE
                else None,
                "selection": get(
                    name,
                    "selection",
                    method,
                    f"T={chosen.get('kd', {}).get('temperature', 1.0)}",
                )
                if method.startswith("pt_") and method not in SEARCH_STANDARDIZE
                else None,
                "search": get(name, "search", method)
                if method in SEARCH_STANDARDIZE
                else None,
            }
        tuning = {
            m: get(name, "tuning", m) for m in GRIDS if get(name, "tuning", m)
        }
        tuning_seconds = {}
        for method, entry in tuning.items():
            seconds = []
            for hp in entry["grid"]:
                runs, _ = runs_of(name, method, hp, [TUNE_SEED])
                seconds += [r["seconds"] for r in runs.values()]
            if len(seconds) == len(entry["grid"]):
                tuning_seconds[method] = float(np.sum(seconds))
        out[name] = {
            "setting": get(name, "setting"),
            "teacher": teacher,
            "rows": rows,
            "not_applicable": {
                m: record["reason"]
                for m in METHODS
                if (record := get(name, "not_applicable", m))
            },
            "grid": get(name, "grid"),
            "tuning": tuning,
            "tuning_seconds": tuning_seconds,
            "study": {
                m: get(name, "study", m)
                for m in SEARCH_STANDARDIZE
                if get(name, "study", m)
            },
        }
    return out


def _all_or_nothing(runs, field):
    """Mean and std of `field` over `runs`; NaNs unless every run has it."""
    if not runs or any(field not in r for r in runs):
        return float("nan"), float("nan")
    return _mean_std([r[field] for r in runs])


def _pct(mean_std, digits=1):
    mean, std = mean_std
    if not math.isfinite(mean):
        return "-"
    return f"{100 * mean:.{digits}f} ± {100 * std:.{digits}f}"


def _pipeline_winners(row):
    """The pipeline's winners, one per seed (`"KD T=4 (seeds 0, 2); ..."`)."""
    winners = {}
    for seed, run in row["by_seed"].items():
        search = run["search"]
        label = search["candidates"][search["winner"]]["label"]
        winners.setdefault(label, []).append(str(seed))
    return "; ".join(
        f"{label} (seed{'s' if len(s) > 1 else ''} {', '.join(s)})"
        for label, s in winners.items()
    )


def _hp_text(method, hp):
    if method == "ce":
        return "-"
    if "coefficients" in hp:
        eps = np.asarray(hp["coefficients"], dtype="float64")
        if eps.ndim == 2:
            text = "class-wise, mean " + ", ".join(
                f"{v:.2g}" for v in eps.mean(0)
            )
        else:
            text = "ε = " + ", ".join(f"{v:.2g}" for v in eps)
        return f"{text}; T = {hp['temperature']:.3g}"
    names = {
        "temperature": "T",
        "label_weight": "w",
        "alpha": "α",
        "beta": "β",
        "epsilon": "ε",
    }
    return ", ".join(f"{names.get(k, k)} = {v:g}" for k, v in hp.items())


def selection_quality(entry):
    """Selected M = 1 coefficient vs the grid oracle, and Spearman rho."""
    grid = entry["grid"]
    rows = entry["rows"]
    if not grid or "pt_m1_shared" not in rows:
        return None
    seeds = grid["seeds"]
    grid_means = [float(np.mean(r["test_accuracy"])) for r in grid["rows"]]
    brier = [r["validation_brier"] for r in grid["rows"]]
    best = int(np.argmax(grid_means))
    runs = rows["pt_m1_shared"]["runs"][: len(seeds)]
    selected = float(np.mean([r["test_accuracy"] for r in runs]))
    rho, p_value = scipy.stats.spearmanr(brier, grid_means)
    selection = rows["pt_m1_shared"]["hp"]
    result = {
        "selected_epsilon": float(np.ravel(selection["coefficients"])[0]),
        "selected_accuracy": selected,
        "oracle_epsilon": grid["rows"][best]["epsilon"],
        "oracle_accuracy": grid_means[best],
        "gap": grid_means[best] - selected,
        "spearman": float(rho),
        "p_value": float(p_value),
        "num_seeds": len(seeds),
        "num_points": len(grid_means),
    }
    if "sq_dist_to_bayes" in grid["rows"][0]:
        exact = [r["sq_dist_to_bayes"] for r in grid["rows"]]
        result["spearman_exact"] = float(
            scipy.stats.spearmanr(exact, grid_means)[0]
        )
    return result


def plot_selection(summary, path):
    """Per setting: student accuracy and proxy Brier across the grid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n, e in summary.items() if e["grid"]]
    if not names:
        return None
    columns = min(3, len(names))
    rows = math.ceil(len(names) / columns)
    fig, axes = plt.subplots(
        rows, columns, figsize=(4.6 * columns, 3.4 * rows), squeeze=False
    )
    for ax in axes.ravel()[len(names) :]:
        ax.set_visible(False)
    for ax, name in zip(axes.ravel(), names, strict=False):
        grid = summary[name]["grid"]
        eps = [r["epsilon"] for r in grid["rows"]]
        # Evenly spaced positions labelled with the grid values.
        position = np.arange(len(eps))
        acc = [100 * np.mean(r["test_accuracy"]) for r in grid["rows"]]
        err = [100 * np.std(r["test_accuracy"]) for r in grid["rows"]]
        brier = [r["validation_brier"] for r in grid["rows"]]
        ax.errorbar(
            position,
            acc,
            yerr=err,
            color="C0",
            marker="o",
            capsize=2,
            label="student test accuracy",
        )
        ax.set_xticks(position, [f"{e:g}" for e in eps])
        ax.set_xlabel(f"ε (M = 1, shared), T = {grid['temperature']:g}")
        ax.set_ylabel("student test accuracy (%)", color="C0")
        twin = ax.twinx()
        twin.plot(
            position,
            brier,
            color="C1",
            marker="s",
            linestyle="--",
            label="proxy validation Brier",
        )
        twin.set_ylabel("proxy val. Brier (lower = closer)", color="C1")
        quality = selection_quality(summary[name])
        title = name
        if quality:
            selected = float(
                np.interp(quality["selected_epsilon"], eps, position)
            )
            ax.axvline(selected, color="C2", linestyle=":")
            title += (
                f": Spearman ρ = {quality['spearman']:.2f}; "
                f"selected ε = {quality['selected_epsilon']:.2g} (green)"
            )
        ax.set_title(title, fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def _cross_check_section(records, meta):
    backends = [
        b for b in BACKENDS if record_key("cross", b, "meta") in records
    ]
    if not backends:
        return []
    profile = CROSS
    summaries = {b: summarize(records, "cross", b, profile) for b in backends}
    reference = "jax" if "jax" in backends else backends[0]
    lines = [
        "### Cross-check on the other backends",
        "",
        "Same settings, fixed hyper-parameters (KD T = 4; DKD α = 1, β = 4, "
        "T = 4; PTLoss M = 5 shared at T = 4, coefficients selected on each "
        "backend's own teacher), "
        f"{profile['seeds']} seeds, the full run's epochs and sizes. "
        "Each backend trains its own teacher. A cell agrees when the "
        f"difference from {reference} is within 2 standard errors "
        "(sqrt(s1²/n1 + s2²/n2)).",
        "",
    ]
    legacy = sorted(
        b
        for b in backends
        for entry in summaries[b].values()
        for row in entry["rows"].values()
        if row["legacy"]
    )
    if legacy:
        lines += [
            "**Note:** the numbers of "
            + ", ".join(f"`{b}`" for b in dict.fromkeys(legacy))
            + " below come from the earlier harness (its own training "
            "loop with the same losses, before every method trained "
            "through `keras_ptloss.Distiller`); this cross-check was not "
            "rerun with the Distiller path.",
            "",
        ]
    for b in backends:
        key = record_key("cross", b, "meta")
        entry = records[key].get(f"cross|{b}", {})
        lines.append(
            f"- `{b}`: `{entry.get('command', '?')}` ({entry.get('date', '?')})"
        )
    lines.append("")
    headers = ["setting", "method"] + [f"{b} test acc (%)" for b in backends]
    headers += [
        f"{b} − {reference} (agree?)" for b in backends if b != reference
    ]
    rows = []
    agree_all = True
    for name in profile["settings"]:
        for method in profile["methods"]:
            cells, stats = [], {}
            for b in backends:
                entry = summaries[b].get(name)
                row = entry["rows"].get(method) if entry else None
                if row is None or not row["runs"]:
                    cells.append("-")
                    continue
                accs = [r["test_accuracy"] for r in row["runs"]]
                stats[b] = accs
                cells.append(_pct(_mean_std(accs)))
            diffs = []
            for b in backends:
                if b == reference:
                    continue
                if b not in stats or reference not in stats:
                    diffs.append("-")
                    continue
                a, r = np.asarray(stats[b]), np.asarray(stats[reference])
                diff = a.mean() - r.mean()
                se = math.sqrt(a.var(ddof=1) / a.size + r.var(ddof=1) / r.size)
                ok = abs(diff) <= 2 * se + 1e-12
                agree_all &= ok
                diffs.append(f"{100 * diff:+.1f} ({'yes' if ok else 'NO'})")
            rows.append([name, METHODS[method][0]] + cells + diffs)
        rows.append(
            [name, "teacher"]
            + [
                f"{100 * summaries[b][name]['teacher']['test_accuracy']:.1f}"
                if name in summaries[b]
                else "-"
                for b in backends
            ]
            + ["" for b in backends if b != reference]
        )
    lines.append(
        timing.markdown_table(headers, rows, "ll" + "r" * (len(headers) - 2))
    )
    lines.append("")
    lines.append(
        "All cells agree within seed noise."
        if agree_all
        else "Some cells differ by more than 2 standard errors (marked NO)."
    )
    return lines


def write_report(json_path, md_path, png_path, profile_name, backend):
    data = Store(json_path).data()
    records = data.get("records", {})
    profile = PROFILES[profile_name]
    meta_record = records.get(record_key(profile_name, backend, "meta"), {})
    meta = meta_record.get(f"{profile_name}|{backend}", {})
    # The settings and seeds of the code's profile, in its order, so that a
    # run of `--settings` subsets still reports every finished setting.
    profile = dict(meta.get("profile", profile))
    profile["settings"] = PROFILES[profile_name]["settings"]
    everything = summarize(records, profile_name, backend, profile)
    # The main tables: the five main settings (the teacher-scale sweep has
    # its own section).
    summary = {n: e for n, e in everything.items() if n in MAIN_SETTINGS}
    finished = records.get(record_key(profile_name, backend, "finished"))
    png = plot_selection(summary, png_path)
    study_path = png_path.with_name(f"{NAME}_search.png")
    study_png = plot_study(summary, study_path)
    machine = meta.get("machine", {})
    canonical = f"KERAS_BACKEND={backend} python benchmarks/accuracy.py" + (
        " --quick" if profile_name == "quick" else ""
    )
    last = meta.get("command", "?")
    try:
        png_link = png_path.resolve().relative_to(ROOT)
    except ValueError:
        png_link = png_path
    lines = [
        "## Accuracy: PTLoss against tuned distillation baselines",
        "",
        f"Generated by `python benchmarks/accuracy.py` from `{_rel(json_path)}`"
        " (never edited by hand).",
        "",
        f"- Command: `{canonical}` (it resumes from the JSON"
        + ("" if last == canonical else f"; the last pass ran `{last}`")
        + "), then `python benchmarks/report.py`; other backends: "
        "`KERAS_BACKEND=torch python benchmarks/accuracy.py --cross-check` "
        "(and tensorflow, jax).",
        f"- Backend: `{backend}`; machine: {machine.get('cpu', '?')}, "
        f"{machine.get('platform', '?')}, Python "
        f"{machine.get('python', '?')}, "
        + ", ".join(
            f"{k} {v}" for k, v in machine.get("packages", {}).items() if v
        ),
        f"- Date: {meta.get('date', '?')}"
        + (
            f"; last (resumed) pass finished {finished['date']} after "
            f"{finished['seconds'] / 60:.1f} min."
            if finished
            else "; **run not finished** (partial results below)."
        ),
        "- Compute: " + _compute_text(records, profile_name, backend),
        "",
        "### Protocol",
        "",
        f"- Students: Adam (lr {profile['learning_rate']}), batch "
        f"{profile['batch_size']}, a fixed number of epochs per setting "
        "(table below), no early stopping. Every method trains through "
        "`keras_ptloss.Distiller` on teacher outputs pre-computed with "
        "`Distiller.precompute_teacher`: one Distiller (one compiled step) "
        "per setting and loss family, whose loss holds the "
        "hyper-parameters in variables the Distiller tracks; each run "
        "re-initialises the student from its seed's stored initial weights "
        "and zeroes the optimizer state. Losses: KD and the PTLoss rows = "
        "`PTLoss` (KD: zero coefficients); LS-KD = `PTLoss(standardize="
        "True)` with zero coefficients (= `KDLoss(standardize=True)`); "
        "KD + CE = `KDCELoss`, DKD = `DKDLoss`, Poly-1 = `Poly1Loss`, which "
        "receive the labels from the Distiller (`needs_labels`); the "
        "student alone = the Distiller with `student_loss_weight=1` and the "
        "compiled sparse cross-entropy. "
        "Teachers: same optimiser, seed 0, cross-entropy. One intra-op "
        "thread for torch.",
        "- Test accuracy: mean ± std (sample) over seeds "
        f"0..{profile['seeds'] - 1} (student initialisation and batch "
        "order; same teacher).",
        f"- Tuning: each baseline trains {profile['tune_budget']} "
        "configurations (one tuning seed, evenly spaced over its grid) and "
        "keeps the best validation accuracy. Grids: "
        + "; ".join(
            f"{METHODS[m][0]} {_grid_text(m, profile['tune_budget'])}"
            for m in GRIDS
        )
        + ". The student alone (CE) has nothing to tune.",
        "- PTLoss: temperature = KD's tuned T (so it costs no extra "
        "training), coefficients from `select_coefficients` (Brier "
        "closeness of the proxy teacher on the same validation split, "
        "20% of it held out by the selector) — no student is trained to "
        "choose them. 'T by proxy' also picks T that way. 'Searched': "
        "coefficients and T from `search_coefficients` (students trained; "
        "section below).",
        "- Unlabelled transfer settings: hard-label terms (KD + CE, DKD, "
        "Poly-1) use the teacher's argmax; the student alone trains on the "
        "teacher's labelled training split.",
        "",
    ]
    if not summary:
        lines.append("No finished setting yet.")
    else:
        lines += _accuracy_table(summary)
        lines += _settings_table(summary)
        lines += _hp_table(summary)
        lines += _bayes_table(summary)
        lines += _quality_table(summary, png_link if png else None)
        lines += _calibration_table(summary)
        lines += _calibrated_table(summary)
        lines += _search_table(summary)
        lines += _study_table(summary, _link(study_path) if study_png else None)
        lines += _targets(summary)
        lines += _search_targets(summary)
    lines += sweep_section(everything, profile)
    if profile_name == "full":
        lines += [""] + _cross_check_section(records, meta)
        lines += pipeline_section(records, backend)
    timing.write_markdown(md_path, "\n".join(lines))
    return summary


def _best(cells_means):
    """Index of the largest finite mean (None if none)."""
    finite = [(m, i) for i, m in enumerate(cells_means) if math.isfinite(m)]
    return max(finite)[1] if finite else None


def sweep_summary(everything):
    """The teacher-scale sweep's settings present in the summary, in
    order from the weakest teacher to the strongest."""
    if not any(n in everything for n in SWEEP_ADDED):
        return {}
    return {n: everything[n] for n in TEACHER_SWEEP if n in everything}


def sweep_section(everything, profile):
    sweep = sweep_summary(everything)
    if not sweep:
        return []
    names = list(sweep)
    columns = [f"`{n}`" for n in names]
    teachers = [sweep[n]["teacher"] for n in names]

    def percent(v):
        return f"{100 * v:.1f}"

    teacher_fields = [
        ("test accuracy (%)", "test_accuracy", percent),
        (
            "test mean confidence (mean max prob)",
            "test_mean_confidence",
            "{:.3f}".format,
        ),
        ("test NLL", "test_nll", "{:.3f}".format),
        ("test ECE (%)", "test_ece", percent),
        ("train accuracy (%)", "train_accuracy", percent),
        ("training time (s)", "seconds", "{:.0f}".format),
    ]
    teacher_rows = [
        ["teacher"] + [sweep[n]["setting"]["teacher"] for n in names]
    ] + [
        [label] + [fmt(t[key]) if key in t else "-" for t in teachers]
        for label, key, fmt in teacher_fields
    ]
    methods = [
        m for m in SWEEP_METHODS if any(m in sweep[n]["rows"] for n in names)
    ]
    acc_rows, cal_rows = [], []
    means = {
        n: [
            sweep[n]["rows"][m]["test"][0]
            if m in sweep[n]["rows"] and sweep[n]["rows"][m]["runs"]
            else float("nan")
            for m in methods
        ]
        for n in names
    }
    best = {n: _best(means[n]) for n in names}
    for i, method in enumerate(methods):
        cells, cal = [], []
        for n in names:
            row = sweep[n]["rows"].get(method)
            if row is None or not row["runs"]:
                cells.append("-")
                cal.append("-")
                continue
            text = _pct(row["test"])
            kd = sweep[n]["rows"].get("kd")
            if method != "kd" and method != "ce" and kd and kd["runs"]:
                text += f" ({100 * (row['test'][0] - kd['test'][0]):+.1f})"
            if best[n] == i:
                text = f"**{text}**"
            cells.append(text)
            cal.append(
                f"{row['nll'][0]:.3f} ± {row['nll'][1]:.3f} / "
                f"{100 * row['ece'][0]:.1f} ± {100 * row['ece'][1]:.1f}"
            )
        label = METHODS[method][0]
        if method == HEADLINE:
            label += " (training-free)"
        acc_rows.append([label] + cells)
        cal_rows.append([label] + cal)
    cost_rows = []
    for n in names:
        e = sweep[n]
        epochs = e["setting"]["student_epochs"]
        cells = [f"`{n}`"]
        kd_tuning = e["tuning"].get("kd")
        kd_seconds = e["tuning_seconds"].get("kd")
        cells.append(
            "-"
            if kd_tuning is None
            else f"{len(kd_tuning['grid']) * epochs} / "
            + ("-" if kd_seconds is None else f"{kd_seconds:.0f}")
        )
        selection = (e["rows"].get(HEADLINE) or {}).get("selection")
        cells.append(
            "-" if not selection else f"0 / {selection['wall_time']:.1f}"
        )
        for method in SEARCH_STANDARDIZE:
            row = e["rows"].get(method)
            result = row and row["search"]
            if not result:
                cells.append("-")
                continue
            winner = result["candidates"][result["winner"]]["label"]
            cells.append(
                f"{result['cost']['student_epochs']:g} / "
                f"{result['seconds']:.0f} ({winner})"
            )
        cost_rows.append(cells)
    gap_rows = []
    for n in names:
        rows = sweep[n]["rows"]
        pt = [m for m in (HEADLINE, *SEARCH_STANDARDIZE) if m in rows]
        base = [m for m in TUNED_BASELINES if m in rows]
        if not pt or not base or not all(rows[m]["runs"] for m in pt + base):
            continue
        best_pt = max(pt, key=lambda m: rows[m]["test"][0])
        best_base = max(base, key=lambda m: rows[m]["test"][0])
        a = [r["test_accuracy"] for r in rows[best_pt]["runs"]]
        b = [r["test_accuracy"] for r in rows[best_base]["runs"]]
        se = math.sqrt(np.var(a, ddof=1) / len(a) + np.var(b, ddof=1) / len(b))
        kd = rows.get("kd")
        gap_rows.append(
            [
                f"`{n}`",
                f"{METHODS[best_pt][0]} {_pct(rows[best_pt]['test'])}",
                f"{METHODS[best_base][0]} {_pct(rows[best_base]['test'])}",
                f"{100 * (np.mean(a) - np.mean(b)):+.2f} ± {100 * se:.2f}",
                "-"
                if not kd
                else f"{100 * (rows[HEADLINE]['test'][0] - kd['test'][0]):+.2f}"
                if HEADLINE in rows
                else "-",
                f"{100 * (rows['ce']['test'][0]):.1f}"
                if "ce" in rows and rows["ce"]["runs"]
                else "-",
            ]
        )
    seeds = profile["seeds"]
    align = "l" + "r" * len(names)
    lines = [
        "### Teacher-scale sweep (MNIST-1D, unlabelled transfer)",
        "",
        "The same data splits (labelled teacher split / unlabelled transfer "
        "split / validation / test), the same student and budgets as "
        "`mnist1d_unlabelled`; only the teacher changes (columns in order "
        "of the teacher's test accuracy; `mnist1d_unlabelled` is the main "
        "tables' CNN; all trained alike on the labelled split). Hard-label "
        "terms use the teacher's argmax on the transfer split; the student "
        "alone trains on the labelled teacher split. Every baseline is "
        f"tuned with the same budget ({profile['tune_budget']} trainings on "
        "the validation split); 'training-free' PTLoss takes KD's tuned T "
        "and coefficients from `select_coefficients`; 'searched' = "
        "`search_coefficients` with the same budget in student-epochs. "
        "Regenerate: "
        "`KERAS_BACKEND=jax python benchmarks/accuracy.py --settings "
        + " ".join(names)
        + "` (resumes from the JSON), then `python benchmarks/report.py`.",
        "",
        "#### Teachers",
        "",
        timing.markdown_table([""] + columns, teacher_rows, align),
        "",
        f"#### Student test accuracy (%), mean ± std over {seeds} seeds",
        "",
        "In brackets: the difference from tuned KD; bold: the best mean of "
        "the column.",
        "",
        timing.markdown_table(["method"] + columns, acc_rows, align),
        "",
        "#### Student test NLL / ECE (%), mean ± std over seeds",
        "",
        timing.markdown_table(["method"] + columns, cal_rows, align),
        "",
        "#### Best PTLoss row against the best tuned baseline",
        "",
        "Difference of mean test accuracy (points) ± its standard error "
        "(the two rows' seed spreads); 'training-free − KD' is PTLoss M=5 "
        "shared minus tuned KD.",
        "",
        timing.markdown_table(
            [
                "teacher",
                "best PTLoss",
                "best tuned baseline",
                "difference",
                "training-free − KD",
                "student alone",
            ],
            gap_rows,
            "lllrrr",
        ),
        "",
        "#### Cost of choosing the hyper-parameters",
        "",
        "Student-epochs / wall seconds (measured in the same run on the "
        "shared machine; they include compiling the training steps). "
        "KD's tuning trains its grid fully on one tuning seed; every other "
        "tuned baseline costs the same student-epochs. The training-free "
        "selection trains no student (it reuses KD's tuned T). The "
        "searches' winners are in brackets.",
        "",
        timing.markdown_table(
            [
                "teacher",
                "KD tuning",
                "PTLoss training-free",
                "PTLoss searched",
                "PTLoss searched, standardized",
            ],
            cost_rows,
            "lrrrr",
        ),
        "",
    ]
    return lines


def _compute_text(records, profile_name, backend):
    """Summed stored training times: robust to resumed or split runs."""
    prefix = record_key(profile_name, backend, "")
    students, teachers, searches, count = 0.0, 0.0, 0.0, 0
    pipelines, calls = 0.0, 0
    for key, record in records.items():
        if not key.startswith(prefix):
            continue
        if "|run|" in key:
            students += record["seconds"]
            count += 1
        elif key.endswith("|teacher"):
            teachers += record["seconds"]
        elif "|search|" in key:
            searches += record["seconds"]
        elif "|pipeline|" in key:
            pipelines += record["seconds"]
            calls += 1
    pipeline_text = (
        f"{calls} pipeline calls ({pipelines / 60:.1f} min), " if calls else ""
    )
    return (
        f"{count} student trainings ({students / 60:.1f} min), teachers "
        f"({teachers / 60:.1f} min), searches ({searches / 60:.1f} min), "
        + pipeline_text
        + "summed over the stored records (the run resumes from the JSON and "
        "may be split over processes with `--settings`; a shared 2-core "
        "machine)."
    )


def _grid_text(method, budget):
    """A tuning grid as `(w, T) in {(0.1, 1), ...}`."""
    grid = subsample_grid(GRIDS[method], budget)
    names = {
        "temperature": "T",
        "label_weight": "w",
        "alpha": "α",
        "beta": "β",
        "epsilon": "ε",
    }
    keys = [k for k in grid[0] if len({hp[k] for hp in grid}) > 1]
    fixed = [k for k in grid[0] if k not in keys]
    label = ", ".join(names[k] for k in keys)
    values = ", ".join(
        "(" + ", ".join(f"{hp[k]:g}" for k in keys) + ")"
        if len(keys) > 1
        else f"{hp[keys[0]]:g}"
        for hp in grid
    )
    text = f"{'(' + label + ')' if len(keys) > 1 else label} ∈ {{{values}}}"
    if fixed:
        text += ", " + ", ".join(f"{names[k]} = {grid[0][k]:g}" for k in fixed)
    return text


def _rel(path):
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def _accuracy_table(summary):
    names = list(summary)
    headers = ["method"] + names
    rows = [
        ["Teacher"]
        + [f"{100 * summary[n]['teacher']['test_accuracy']:.1f}" for n in names]
    ]
    methods = []
    for n in names:
        methods += [m for m in summary[n]["rows"] if m not in methods]
    for method in methods:
        cells = []
        for n in names:
            row = summary[n]["rows"].get(method)
            if row is None:
                cells.append("-")
                continue
            text = _pct(row["test"])
            kd = summary[n]["rows"].get("kd")
            if method.startswith("pt_") and kd is not None:
                text += f" ({100 * (row['test'][0] - kd['test'][0]):+.1f})"
            cells.append(text)
        rows.append([METHODS[method][0]] + cells)
    return [
        "### Test accuracy (%), mean ± std over seeds",
        "",
        "PTLoss rows show the difference from tuned KD in brackets.",
        "",
        timing.markdown_table(headers, rows, "l" + "r" * len(names)),
        "",
    ]


def _settings_table(summary):
    headers = [
        "setting",
        "teacher → student (epochs)",
        "teacher train / transfer / val / test",
        "transfer labels",
        "teacher train acc",
        "teacher mean confidence (transfer / val)",
    ]
    rows = []
    for n, e in summary.items():
        s, t = e["setting"], e["teacher"]
        rows.append(
            [
                f"`{n}`: {s['title']}",
                f"{s['teacher']} ({s['teacher_epochs']}) → {s['student']} "
                f"({s['student_epochs']})",
                f"{s['teacher_train_size']} / {s['transfer_size']} / "
                f"{s['validation_size']} / {s['test_size']}",
                s["transfer_labels"],
                f"{100 * t['train_accuracy']:.1f}",
                f"{t['transfer_mean_confidence']:.3f} / "
                f"{t['validation_mean_confidence']:.3f}",
            ]
        )
    return [
        "### Settings",
        "",
        timing.markdown_table(headers, rows, "llllrr"),
        "",
    ]


def _hp_table(summary):
    headers = [
        "setting",
        "method",
        "chosen hyper-parameters",
        "selection time (s)",
        "proxy / teacher val Brier",
    ]
    rows = []
    for n, e in summary.items():
        for method, row in e["rows"].items():
            sel = row["selection"]
            rows.append(
                [
                    n,
                    METHODS[method][0],
                    _pipeline_winners(row)
                    if method == PIPELINE
                    else _hp_text(method, row["hp"]),
                    f"{sel['wall_time']:.2f}" if sel else "",
                    f"{sel['proxy_score']:.4f} / {sel['teacher_score']:.4f}"
                    if sel
                    else "",
                ]
            )
    return [
        "### Chosen hyper-parameters and selection cost",
        "",
        "Selection time is the wall time of `select_coefficients` "
        "(no student training); the baselines' tuning cost is "
        "their tuning budget of full student trainings.",
        "",
        timing.markdown_table(headers, rows, "lllrr"),
        "",
    ]


def _bayes_table(summary):
    lines = []
    for n, e in summary.items():
        if e["setting"].get("gaussian") is None:
            continue
        t = e["teacher"]
        headers = [
            "model",
            "test acc (%)",
            "excess 0-1 risk (%)",
            "KL(p* ‖ q)",
            "E‖q − p*‖²",
        ]
        rows = [
            [
                "Bayes classifier",
                f"{100 * t['bayes_accuracy']:.1f}",
                "0",
                "0",
                "0",
            ]
        ]
        rows.append(
            [
                "Teacher",
                f"{100 * t['test_accuracy']:.1f}",
                f"{100 * t['excess_risk']:.2f}",
                f"{t['kl_to_bayes']:.4f}",
                f"{t['sq_dist_to_bayes']:.4f}",
            ]
        )
        for method, row in e["rows"].items():
            runs = row["runs"]
            if not runs:
                continue
            rows.append(
                [
                    METHODS[method][0],
                    _pct(row["test"]),
                    _pct(_mean_std([r["excess_risk"] for r in runs]), 2),
                    "{:.4f} ± {:.4f}".format(
                        *_mean_std([r["kl_to_bayes"] for r in runs])
                    ),
                    "{:.4f} ± {:.4f}".format(
                        *_mean_std([r["sq_dist_to_bayes"] for r in runs])
                    ),
                ]
            )
        lines += [
            f"### `{n}`: exact closeness to p* and excess risk",
            "",
            "Measured on the test inputs with the exact Bayes posterior p*; "
            "excess risk = E[max p* − p*(student's class)].",
            "",
            timing.markdown_table(headers, rows, "lrrrr"),
            "",
        ]
    return lines


def _quality_table(summary, png):
    headers = [
        "setting",
        "T",
        "selected ε (test acc)",
        "oracle ε (test acc)",
        "gap (points)",
        "Spearman ρ (Brier, acc)",
        "p-value",
    ]
    rows = []
    extra = []
    for n, e in summary.items():
        q = selection_quality(e)
        if q is None:
            continue
        rows.append(
            [
                n,
                f"{e['grid']['temperature']:g}",
                f"{q['selected_epsilon']:.3g} "
                f"({100 * q['selected_accuracy']:.1f})",
                f"{q['oracle_epsilon']:g} ({100 * q['oracle_accuracy']:.1f})",
                f"{100 * q['gap']:.1f}",
                f"{q['spearman']:.2f}",
                f"{q['p_value']:.2g}",
            ]
        )
        if "spearman_exact" in q:
            extra.append(
                f"On `{n}` the Spearman correlation between the proxy's "
                f"exact squared distance to p* (validation inputs) and "
                f"accuracy is {q['spearman_exact']:.2f}."
            )
    if not rows:
        return []
    first = next(e for e in summary.values() if e["grid"])
    grid_text = ", ".join(f"{r['epsilon']:g}" for r in first["grid"]["rows"])
    lines = [
        "### Selection quality (M = 1, shared)",
        "",
        f"Grid ε ∈ {{{grid_text}}} "
        f"at KD's tuned T, each trained with seeds "
        f"0..{len(first['grid']['seeds']) - 1}; the oracle is the grid "
        "point with the best mean test accuracy; the selected ε is compared "
        "on the same seeds. Spearman ρ is between the proxy teacher's "
        "validation Brier score and the student's mean test accuracy across "
        "the grid (target ≤ −0.7: a closer proxy gives a better student).",
        "",
        timing.markdown_table(headers, rows, "lrrrrrr"),
        "",
    ]
    lines += extra + ([""] if extra else [])
    if png:
        lines += [f"![selection quality]({png})", ""]
    return lines


def _targets(summary):
    diffs, misses = [], []
    for n, e in summary.items():
        kd, pt = e["rows"].get("kd"), e["rows"].get(HEADLINE)
        if not kd or not pt or not kd["runs"] or not pt["runs"]:
            continue
        diff = pt["test"][0] - kd["test"][0]
        diffs.append(diff)
        if diff < -kd["test"][1]:
            misses.append(
                f"`{n}` ({100 * diff:+.1f} vs std {100 * kd['test'][1]:.1f})"
            )
    qualities = [q for q in map(selection_quality, summary.values()) if q]
    lines = ["### Targets of issue 5", ""]
    if diffs:
        mean = float(np.mean(diffs))
        lines.append(
            f"- PTLoss (M = 5, shared, selected) − tuned KD, averaged over "
            f"{len(diffs)} settings: {100 * mean:+.2f} points (target ≥ "
            f"+1.0): **{'met' if mean >= 0.01 else 'missed'}**."
        )
        lines.append(
            "- Never below tuned KD by more than one KD standard deviation: "
            + (
                "**met**."
                if not misses
                else "**missed** in " + ", ".join(misses) + "."
            )
        )
    if qualities:
        gaps = [q["gap"] for q in qualities]
        rhos = [q["spearman"] for q in qualities]
        lines.append(
            "- Selected within 0.5 points of the grid oracle: "
            f"{sum(g <= 0.005 for g in gaps)}/{len(gaps)} settings (gaps "
            + ", ".join(f"{100 * g:.1f}" for g in gaps)
            + f"): **{'met' if max(gaps) <= 0.005 else 'missed'}**."
        )
        lines.append(
            "- Spearman(closeness, accuracy) ≤ −0.7: "
            f"{sum(r <= -0.7 for r in rhos)}/{len(rhos)} settings (ρ = "
            + ", ".join(f"{r:.2f}" for r in rhos)
            + f"): **{'met' if max(rhos) <= -0.7 else 'missed'}**."
        )
    lines.append("")
    return lines


def _calibration_table(summary):
    names = list(summary)
    headers = ["method"] + names
    rows = [
        ["Teacher"]
        + [
            f"{summary[n]['teacher']['test_nll']:.3f} / "
            f"{100 * summary[n]['teacher']['test_ece']:.1f}"
            if "test_nll" in summary[n]["teacher"]
            else "-"
            for n in names
        ]
    ]
    methods = []
    for n in names:
        methods += [m for m in summary[n]["rows"] if m not in methods]
    for method in methods:
        cells = []
        for n in names:
            row = summary[n]["rows"].get(method)
            if row is None or not math.isfinite(row["nll"][0]):
                cells.append("-")
                continue
            cells.append(
                f"{row['nll'][0]:.3f} ± {row['nll'][1]:.3f} / "
                f"{100 * row['ece'][0]:.1f}"
            )
        rows.append([METHODS[method][0]] + cells)
    return [
        "### Test NLL and ECE, mean over seeds",
        "",
        "Each cell: negative log-likelihood (nats, mean ± std over seeds) / "
        "expected calibration error in % (15 equal-width confidence bins, "
        "mean over seeds), on the test split.",
        "",
        timing.markdown_table(headers, rows, "l" + "r" * len(names)),
        "",
    ]


def _calibrated_table(
    summary,
    title="### Test NLL and ECE after temperature scaling, mean over seeds",
):
    """NLL / ECE before → after `keras_ptloss.calibrate` (empty when no
    run recorded them)."""
    names = list(summary)
    methods = []
    for n in names:
        methods += [m for m in summary[n]["rows"] if m not in methods]
    rows, any_value = [], False
    for method in methods:
        cells = []
        for n in names:
            row = summary[n]["rows"].get(method)
            if row is None and method in summary[n].get("not_applicable", {}):
                cells.append("n/a")
                continue
            if row is None or not math.isfinite(row["nll_calibrated"][0]):
                cells.append("-")
                continue
            any_value = True
            cells.append(
                f"{row['nll'][0]:.3f} → {row['nll_calibrated'][0]:.3f} / "
                f"{100 * row['ece'][0]:.1f} → "
                f"{100 * row['ece_calibrated'][0]:.1f}"
            )
        rows.append([METHODS[method][0]] + cells)
    if not any_value:
        return []
    at_bound = [
        f"{METHODS[method][0]} on `{n}` seed {seed} (T = {t:.3g})"
        for n, e in summary.items()
        for method, row in e["rows"].items()
        for seed, run in row["by_seed"].items()
        if "calibration" in run
        for t in [run["calibration"]["temperature"]]
        if any(abs(t - b) <= 1e-3 * b for b in CALIBRATION_BOUNDS)
    ]
    note = []
    if at_bound:
        note = [
            "Temperatures at a bound of `calibrate`'s search "
            f"{CALIBRATION_BOUNDS} (the NLL may still fall beyond it): "
            + "; ".join(at_bound)
            + ".",
            "",
        ]
    return [
        title,
        "",
        "Each cell: test NLL (nats) before → after, then test ECE (%, 15 "
        "bins) before → after, means over seeds. Every student is "
        "calibrated the same way: `keras_ptloss.calibrate(student, "
        "(x_val, y_val))`, one temperature fitted by NLL on the validation "
        "split (accuracy unchanged); the pipeline's student is its own "
        "calibrated `result.student` (the same function, inside "
        "`search_coefficients`).",
        "",
        timing.markdown_table(["method"] + names, rows, "l" + "r" * len(names)),
        "",
        *note,
    ]


def search_quality(entry, method):
    """The search's short runs vs full runs, and its pick vs the oracles."""
    study = entry["study"].get(method)
    row = entry["rows"].get(method)
    if not study or not row or not row["search"]:
        return None
    rows = study["rows"]
    short = [r["short_score"] for r in rows]
    full_val = [r["validation_accuracy"] for r in rows]
    full_test = [r["test_accuracy"] for r in rows]
    pick = next(r for r in rows if r["candidate"] == study["winner"])
    best = int(np.argmax(full_test))
    result = {
        "num_candidates": len(rows),
        "short_epochs": study["short_epochs"],
        "spearman_validation": _spearman(short, full_val),
        "spearman_test": _spearman(short, full_test),
        "pick_label": pick["label"],
        "pick_test": pick["test_accuracy"],
        "candidate_oracle_label": rows[best]["label"],
        "candidate_oracle_test": full_test[best],
    }
    grid = entry["grid"]
    if grid and row["runs"]:
        seeds = len(grid["seeds"])
        means = [float(np.mean(r["test_accuracy"])) for r in grid["rows"]]
        oracle = int(np.argmax(means))
        picked = [r["test_accuracy"] for r in row["runs"][:seeds]]
        result.update(
            grid_oracle_epsilon=grid["rows"][oracle]["epsilon"],
            grid_oracle_test=means[oracle],
            pick_seeds_test=float(np.mean(picked)),
            grid_seeds=seeds,
        )
    return result


def _spearman(a, b):
    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(scipy.stats.spearmanr(a, b)[0])


def _search_table(summary):
    headers = [
        "setting",
        "method",
        "winner (coefficients; T)",
        "val acc: winner / KD (search)",
        "student-epochs / budget",
        "search wall time (s)",
        "KD tuning wall time (s)",
        "test acc − tuned KD",
    ]
    rows = []
    for n, e in summary.items():
        kd = e["rows"].get("kd")
        for method in SEARCH_STANDARDIZE:
            row = e["rows"].get(method)
            if not row or not row["search"]:
                continue
            result = row["search"]
            winner = result["candidates"][result["winner"]]
            kd_score = result["kd_score"]
            diff = (
                f"{100 * (row['test'][0] - kd['test'][0]):+.1f}"
                if kd and kd["runs"] and row["runs"]
                else "-"
            )
            kd_seconds = e["tuning_seconds"].get("kd")
            rows.append(
                [
                    n,
                    METHODS[method][0],
                    f"{winner['label']}: " + _hp_text(method, row["hp"]),
                    f"{100 * result['score']:.1f} / "
                    + ("-" if kd_score is None else f"{100 * kd_score:.1f}"),
                    f"{result['cost']['student_epochs']:g} / "
                    f"{result['cost']['budget']:g}",
                    f"{result['seconds']:.1f}",
                    "-" if kd_seconds is None else f"{kd_seconds:.1f}",
                    diff,
                ]
            )
    if not rows:
        return []
    return [
        "### Student-aware search (`search_coefficients`)",
        "",
        "One search per setting on the tuning seed: candidates (KD, the "
        "training-free pick and first-order directions at each temperature) "
        "trained together as one population of students, halved on the "
        "validation split, with a budget of the baselines' tuning budget in "
        "student-epochs (each baseline's tuning trains that many full "
        "students). The winner's configuration is then trained with "
        "the same seeds as every method. 'KD tuning wall time' sums the "
        "tuning trainings' times of KD; 'search wall time' is the whole "
        "call (proposal, population training, validation scoring). Both "
        "include compiling their training steps (KD's first tuning run "
        "compiles the family's step; the search compiles one population "
        "per rung) and were measured in the same run on the shared "
        "machine, under the load of that moment.",
        "",
        timing.markdown_table(headers, rows, "lllrrrrr"),
        "",
    ]


def _link(path):
    try:
        return path.resolve().relative_to(ROOT)
    except ValueError:
        return path


def plot_study(summary, path):
    """Per setting: each candidate's short-run vs full-run accuracy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [
        n for n, e in summary.items() if search_quality(e, SEARCHED) is not None
    ]
    if not names:
        return None
    columns = min(3, len(names))
    rows = math.ceil(len(names) / columns)
    fig, axes = plt.subplots(
        rows, columns, figsize=(4.6 * columns, 3.6 * rows), squeeze=False
    )
    for ax in axes.ravel()[len(names) :]:
        ax.set_visible(False)
    for ax, name in zip(axes.ravel(), names, strict=False):
        study = summary[name]["study"][SEARCHED]
        quality = search_quality(summary[name], SEARCHED)
        for row in study["rows"]:
            winner = row["candidate"] == study["winner"]
            kd = row["label"].startswith("KD")
            ax.scatter(
                100 * row["short_score"],
                100 * row["test_accuracy"],
                marker="*" if winner else ("s" if kd else "o"),
                s=140 if winner else 30,
                color="C3" if winner else ("C1" if kd else "C0"),
                zorder=3 if winner else 2,
            )
        ax.set_xlabel(
            f"validation acc. after {study['short_epochs']} epoch(s) "
            "(population, %)"
        )
        ax.set_ylabel("full-run test acc. (%)")
        ax.set_title(
            f"{name}: Spearman ρ = {quality['spearman_test']:.2f} "
            "(star: pick, squares: KD)",
            fontsize=8,
        )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def _study_table(summary, png=None):
    headers = [
        "setting",
        "candidates",
        "short run (epochs)",
        "Spearman short vs full (val / test)",
        "pick: full-run test acc",
        "best candidate: full-run test acc",
        "pick (seeds) vs M = 1 grid oracle",
    ]
    rows = []
    for n, e in summary.items():
        for method in SEARCH_STANDARDIZE:
            q = search_quality(e, method)
            if q is None:
                continue
            grid = "-"
            if "grid_oracle_test" in q:
                gap = q["pick_seeds_test"] - q["grid_oracle_test"]
                grid = (
                    f"{100 * q['pick_seeds_test']:.1f} vs "
                    f"{100 * q['grid_oracle_test']:.1f} (ε = "
                    f"{q['grid_oracle_epsilon']:g}): {100 * gap:+.1f}"
                )
            rows.append(
                [
                    n if len(e["study"]) == 1 else f"{n} ({method})",
                    str(q["num_candidates"]),
                    str(q["short_epochs"]),
                    f"{q['spearman_validation']:.2f} / "
                    f"{q['spearman_test']:.2f}",
                    f"{100 * q['pick_test']:.1f} ({q['pick_label']})",
                    f"{100 * q['candidate_oracle_test']:.1f} "
                    f"({q['candidate_oracle_label']})",
                    grid,
                ]
            )
    if not rows:
        return []
    return [
        "### Study: does the search's short run predict the full run?",
        "",
        "Every candidate of the search's first rung trained fully (the "
        "method's epochs, tuning seed, through the Distiller); Spearman "
        "rank correlation between its first-rung validation accuracy "
        "(short run, in the population) and its full-run validation / test "
        "accuracy. 'Pick' is the search's winner trained fully on the same "
        "seed; 'best candidate' the candidate with the best full-run test "
        "accuracy (an oracle). The last column compares the winner's mean "
        "test accuracy over the grid's seeds with the best point of the "
        "trained M = 1 grid (selection-quality section; test accuracy, "
        "same seeds).",
        "",
        timing.markdown_table(headers, rows, "lrrrrrr"),
        "",
    ] + ([f"![search study]({png})", ""] if png else [])


def _search_targets(summary):
    """Targets of the student-aware search, met or missed with numbers."""
    lines = []
    for method in SEARCH_STANDARDIZE:
        diffs, misses, wins, seconds = [], [], [], []
        for n, e in summary.items():
            kd, pt = e["rows"].get("kd"), e["rows"].get(method)
            if not kd or not pt or not kd["runs"] or not pt["runs"]:
                continue
            diff = pt["test"][0] - kd["test"][0]
            diffs.append(diff)
            if diff < -kd["test"][1]:
                misses.append(
                    f"`{n}` ({100 * diff:+.1f} vs std "
                    f"{100 * kd['test'][1]:.1f})"
                )
            baselines = {
                m: e["rows"][m]["test"][0]
                for m in TUNED_BASELINES
                if m in e["rows"] and e["rows"][m]["runs"]
            }
            best = max(baselines, key=baselines.get)
            wins.append(
                (n, pt["test"][0] >= baselines[best], best, baselines[best])
            )
            if pt["search"] and "kd" in e["tuning_seconds"]:
                seconds.append(
                    (n, pt["search"]["seconds"], e["tuning_seconds"]["kd"])
                )
        if not diffs:
            continue
        label = METHODS[method][0]
        mean = float(np.mean(diffs))
        lines += [
            f"#### {label}",
            "",
            "- Never below tuned KD by more than one KD standard deviation: "
            + (
                "**met** (differences "
                + ", ".join(f"{100 * d:+.1f}" for d in diffs)
                + ")."
                if not misses
                else "**missed** in " + ", ".join(misses) + "."
            ),
            f"- At least +1.0 point over tuned KD on average over "
            f"{len(diffs)} settings: {100 * mean:+.2f}: "
            f"**{'met' if mean >= 0.01 else 'missed'}**.",
        ]
        count = sum(w for _, w, _, _ in wins)
        lines.append(
            f"- At least the best tuned baseline in at least half the "
            f"settings: {count}/{len(wins)} ("
            + ", ".join(
                f"`{n}` {'≥' if w else '<'} {METHODS[b][0]} {100 * v:.1f}"
                for n, w, b, v in wins
            )
            + f"): **{'met' if 2 * count >= len(wins) else 'missed'}**."
        )
        if seconds:
            within = all(s <= k for _, s, k in seconds)
            lines.append(
                "- Search wall time no larger than KD's tuning: "
                + ", ".join(
                    f"`{n}` {s:.0f} s vs {k:.0f} s" for n, s, k in seconds
                )
                + f": **{'met' if within else 'missed'}**."
            )
        lines.append("")
    if not lines:
        return []
    return [
        "### Targets of the student-aware search",
        "",
        "Differences are in test-accuracy points (means over seeds); the "
        "baselines are the tuned KD, KD + CE, DKD, LS-KD and Poly-1.",
        "",
    ] + lines


# --------------------------------------------------------------------------
# The default pipeline profile (`--profile pipeline`).
# --------------------------------------------------------------------------

# Sizes and budgets a profile may cut (compared with the full profile's).
SIZE_KEYS = (
    "mnist1d_samples",
    "mnist1d_fractions",
    "student_hidden",
    "student_epochs",
    "teacher_epochs",
    "batch_size",
    "tune_budget",
)
# Tolerance of the targets' comparisons (floating-point noise only).
TOLERANCE = 1e-12


def paired_difference(row, other):
    """Seed-by-seed test-accuracy difference `row - other` over the seeds
    both have: `(mean, standard error of the mean, number of seeds)`; the
    standard error is `std(d, ddof=1) / sqrt(n)` (NaN with one seed)."""
    seeds = sorted(set(row["by_seed"]) & set(other["by_seed"]))
    d = np.array(
        [
            row["by_seed"][s]["test_accuracy"]
            - other["by_seed"][s]["test_accuracy"]
            for s in seeds
        ]
    )
    if d.size == 0:
        return float("nan"), float("nan"), 0
    se = float(d.std(ddof=1) / math.sqrt(d.size)) if d.size > 1 else math.nan
    return float(d.mean()), se, int(d.size)


def pipeline_targets(summary):
    """The issue's targets for the default pipeline, from the numbers.

    Per setting with both the pipeline and tuned KD: the best tuned
    baseline (highest mean test accuracy among KD, KD + CE, DKD, LS-KD and
    Poly-1, those that ran), the paired differences from it and from KD,
    and the calibrated test ECE of the pipeline and of KD. Targets:

    - `never_below_best`: in every setting the pipeline is not below the
      best tuned baseline by more than one standard error of the paired
      difference (`mean(d) >= -SE(d)`);
    - `over_kd`: the mean over settings of `mean(pipeline) - mean(KD)`
      (paired seeds) is at least +1.0 point;
    - `ece`: in every setting the pipeline's calibrated test ECE is at most
      calibrated KD's + 1 point.

    Returns:
        None if no setting has both rows, else a dict with `settings`
        (per setting: `best`, `vs_best` and `vs_kd` as `(mean, se, n)`,
        `within_se`, `ece` = `(pipeline, KD)`, `ece_ok`), the overall
        `mean_over_kd` and the verdicts `never_below_best`, `over_kd` and
        `ece` (booleans).
    """
    settings = {}
    for name, entry in summary.items():
        rows = entry["rows"]
        pipe, kd = rows.get(PIPELINE), rows.get("kd")
        if not pipe or not pipe["runs"] or not kd or not kd["runs"]:
            continue
        baselines = {
            m: rows[m]["test"][0]
            for m in TUNED_BASELINES
            if m in rows and rows[m]["runs"]
        }
        best = max(baselines, key=baselines.get)
        vs_best = paired_difference(pipe, rows[best])
        se = vs_best[1] if math.isfinite(vs_best[1]) else 0.0
        ece = (pipe["ece_calibrated"][0], kd["ece_calibrated"][0])
        settings[name] = {
            "best": best,
            "vs_best": vs_best,
            "vs_kd": paired_difference(pipe, kd),
            "within_se": vs_best[0] >= -se - TOLERANCE,
            "ece": ece,
            "ece_ok": ece[0] <= ece[1] + 0.01 + TOLERANCE,
        }
    if not settings:
        return None
    mean_over_kd = float(np.mean([e["vs_kd"][0] for e in settings.values()]))
    return {
        "settings": settings,
        "mean_over_kd": mean_over_kd,
        "never_below_best": all(e["within_se"] for e in settings.values()),
        "over_kd": mean_over_kd >= 0.01 - TOLERANCE,
        "ece": all(e["ece_ok"] for e in settings.values()),
    }


def _verdict(met):
    return "**met**" if met else "**missed**"


def _points(mean_se_n):
    mean, se, n = mean_se_n
    if n == 0:
        return "-"
    se_text = f"{100 * se:.2f}" if math.isfinite(se) else "-"
    return f"{100 * mean:+.2f} ± {se_text}"


def pipeline_section(records, backend):
    """The `pipeline` profile's section (empty when it has not run)."""
    meta_record = records.get(record_key("pipeline", backend, "meta"))
    if meta_record is None:
        return []
    meta = meta_record.get(f"pipeline|{backend}", {})
    profile = dict(meta.get("profile", PROFILES["pipeline"]))
    profile["settings"] = PROFILES["pipeline"]["settings"]
    summary = summarize(records, "pipeline", backend, profile)
    finished = records.get(record_key("pipeline", backend, "finished"))
    names = list(profile["settings"])
    done = [n for n in names if n in summary]
    command = (
        f"KERAS_BACKEND={backend} python benchmarks/accuracy.py "
        "--profile pipeline"
    )
    last = meta.get("command", "?")
    cuts = [
        f"{key} {profile[key]} (full: {FULL[key]})"
        for key in SIZE_KEYS
        if profile.get(key) != FULL.get(key)
    ]
    lines = [
        "",
        "## Accuracy: the default pipeline at K = 10, 2 and 3",
        "",
        "The default `search_coefficients` pipeline (candidates on the "
        "logits at T ∈ {1, 2, 4, 8} and, with K ≥ 3, on z-scored logits at "
        "T ∈ {0.5, 1, 2, 4}; KD and LS-KD kept to the last rung; winner by "
        "validation accuracy, "
        "ties by NLL; returned calibrated) against the tuned baselines and "
        "the plain search, with every student also calibrated the same way "
        "(profile `pipeline`, in the same JSON as the tables above).",
        "",
        f"- Command: `{command}` (it resumes from the JSON"
        + ("" if last == command else f"; the last pass ran `{last}`")
        + "), then `python benchmarks/report.py`.",
        f"- Backend: `{backend}`; machine: "
        f"{meta.get('machine', {}).get('cpu', '?')} (shared with other "
        "jobs); date: "
        + meta.get("date", "?")
        + (
            f"; last (resumed) pass finished {finished['date']} after "
            f"{finished['seconds'] / 60:.1f} min."
            if finished
            else "; **run not finished** (partial results below)."
        ),
        "- Compute: " + _compute_text(records, "pipeline", backend),
        "- Settings finished: "
        + (
            f"all {len(names)}."
            if len(done) == len(names)
            else f"{len(done)} of {len(names)}; **missing: "
            + ", ".join(f"`{n}`" for n in names if n not in done)
            + "**."
        ),
    ]
    if cuts:
        lines.append(
            "- **Cut for this profile only** (the published `full` profile "
            "is unchanged): " + "; ".join(cuts) + "."
        )
    lines += [
        "",
        "### Protocol",
        "",
        "- Methods: the student alone; KD, KD + CE, DKD and LS-KD, each "
        f"tuned with {profile['tune_budget']} full trainings on the "
        "validation split (tuning seed) and then trained with seeds "
        f"0..{profile['seeds'] - 1}; PTLoss M=5 searched = the plain "
        "search (logits only, T ∈ {"
        + ", ".join(f"{t:g}" for t in profile["search"].get("temperatures", []))
        + "}) on the tuning seed, its winner's configuration then trained "
        "with every seed; the pipeline = one `search_coefficients` call "
        "per seed (`seed=s`: the same initial weights as every method's "
        "seed s) with its defaults and a budget of "
        f"{profile['tune_budget']} full trainings in student-epochs, which "
        "includes the training of its own winner (each baseline spends its "
        "budget on tuning and then one more training per seed); its "
        "student is the call's. Paired differences pair seed s with seed "
        "s.",
        "- Calibration: every student, of every method, gets "
        "`keras_ptloss.calibrate(student, (x_val, y_val))` (one "
        "temperature fitted by NLL on the validation split; accuracy "
        "unchanged); test NLL and ECE are reported before and after.",
        "- K = 2 / K = 3: MNIST-1D digits grouped into super-classes "
        "(K · digit) // 10: {0-4, 5-9} and {0-3, 4-6, 7-9}; every split, "
        "the student, the budgets and the unlabelled transfer are those of "
        "`mnist1d_unlabelled`; `_noisy`: the teacher is trained on "
        "super-class labels with 40% symmetric noise, as `mnist1d_noisy`. "
        "Hard-label terms (KD + CE, DKD) use the teacher's argmax on the "
        "transfer split.",
        "",
    ]
    if not summary:
        return lines + ["No finished setting yet.", ""]
    lines += _pipeline_settings_table(summary)
    lines += _pipeline_accuracy_table(summary, profile)
    lines += _pipeline_difference_table(summary)
    lines += _calibrated_table(
        summary, "### Test NLL and ECE before → after temperature scaling"
    )
    lines += _pipeline_choice_table(summary, profile)
    lines += _small_k_notes(summary)
    lines += _pipeline_target_lines(summary)
    return lines


def _pipeline_settings_table(summary):
    rows = []
    for n, e in summary.items():
        s, t = e["setting"], e["teacher"]
        k = _num_classes(e)
        rows.append(
            [
                f"`{n}`",
                str(k),
                s["title"],
                f"{100 * t['test_accuracy']:.1f}",
                f"{100 * t['test_ece']:.1f}",
                f"{s['teacher_train_size']} / {s['transfer_size']} / "
                f"{s['validation_size']} / {s['test_size']}",
                f"{s['student']} ({s['student_epochs']})",
            ]
        )
    return [
        "### Settings",
        "",
        timing.markdown_table(
            [
                "setting",
                "K",
                "description",
                "teacher test acc (%)",
                "teacher test ECE (%)",
                "teacher train / transfer / val / test",
                "student (epochs)",
            ],
            rows,
            "lrlrrll",
        ),
        "",
    ]


def _num_classes(entry):
    """K of a setting, read from its student (`MLP 40-64-64-K`)."""
    return int(entry["setting"]["student"].rsplit("-", 1)[-1])


def _pipeline_methods(summary):
    methods = []
    for e in summary.values():
        for m in list(e["rows"]) + list(e["not_applicable"]):
            if m not in methods:
                methods.append(m)
    return sorted(methods, key=list(METHODS).index)


def _pipeline_accuracy_table(summary, profile):
    names = list(summary)
    rows = [
        ["Teacher"]
        + [f"{100 * summary[n]['teacher']['test_accuracy']:.1f}" for n in names]
    ]
    notes = []
    for method in _pipeline_methods(summary):
        cells = []
        for n in names:
            e = summary[n]
            row = e["rows"].get(method)
            if method in e["not_applicable"]:
                cells.append("n/a¹")
                continue
            if row is None or not row["runs"]:
                cells.append("-")
                continue
            text = _pct(row["test"])
            if method == "dkd" and _num_classes(e) == 2:
                text += "²"
            best = _best(
                [
                    r["test"][0] if r["runs"] else float("nan")
                    for r in e["rows"].values()
                ]
            )
            if best is not None and list(e["rows"])[best] == method:
                text = f"**{text}**"
            cells.append(text)
        rows.append([METHODS[method][0]] + cells)
    reasons = {
        reason
        for e in summary.values()
        for reason in e["not_applicable"].values()
    }
    if reasons:
        notes.append(
            "¹ Not applicable (the library refuses it, nothing was "
            "trained): " + " / ".join(sorted(reasons))
        )
    if any(
        _num_classes(e) == 2 and "dkd" in e["rows"] for e in summary.values()
    ):
        notes.append(
            "² DKD at K = 2: with one non-target class NCKD is 0, so "
            "DKD = α · KD (here α = 1): β changes the gradients only at "
            "rounding level and its tuning explores T only (see 'K = 2 "
            "and K = 3' below)."
        )
    return [
        f"### Test accuracy (%), mean ± std over {profile['seeds']} seeds",
        "",
        "Bold: the best mean of the column.",
        "",
        timing.markdown_table(["method"] + names, rows, "l" + "r" * len(names)),
        "",
    ] + [note + "\n" for note in notes]


def _pipeline_difference_table(summary):
    targets = pipeline_targets(summary)
    if targets is None:
        return []
    rows = []
    for n, t in targets["settings"].items():
        rows.append(
            [
                f"`{n}`",
                _points(t["vs_kd"]),
                METHODS[t["best"]][0],
                _points(t["vs_best"]),
                "yes" if t["within_se"] else "**no**",
            ]
        )
    return [
        "### The pipeline against tuned KD and the best tuned baseline",
        "",
        "Paired (seed-by-seed) differences of test accuracy in points: "
        "mean ± standard error of the paired differences (std / √n). The "
        "best tuned baseline is the one with the highest mean test "
        "accuracy in that setting (chosen after the fact, in the "
        "baselines' favour). 'Within 1 SE': mean ≥ −SE.",
        "",
        timing.markdown_table(
            [
                "setting",
                "pipeline − KD",
                "best tuned baseline",
                "pipeline − best",
                "within 1 SE",
            ],
            rows,
            "lrlrl",
        ),
        "",
    ]


def _pipeline_choice_table(summary, profile):
    rows = []
    for n, e in summary.items():
        pipe = e["rows"].get(PIPELINE)
        if not pipe or not pipe["runs"]:
            continue
        searches = pipe["pipeline"]
        standardised = sum(
            s["candidates"][s["winner"]]["standardize"] for s in searches
        )
        kinds = {c["standardize"] for s in searches for c in s["candidates"]}
        epochs = [s["cost"]["student_epochs"] for s in searches]
        seconds = [s["seconds"] for s in searches]
        temperatures = [r["calibration"]["temperature"] for r in pipe["runs"]]
        kd_seconds = e["tuning_seconds"].get("kd")
        rows.append(
            [
                f"`{n}`",
                _pipeline_winners(pipe),
                "logits + z-scored"
                if kinds == {False, True}
                else "z-scored"
                if kinds == {True}
                else "logits only",
                f"{standardised}/{len(searches)}",
                f"{min(temperatures):.2f}–{max(temperatures):.2f}",
                f"{np.mean(epochs):g} / {searches[0]['cost']['budget']:g}",
                f"{np.mean(seconds):.0f}",
                "-" if kd_seconds is None else f"{kd_seconds:.0f}",
            ]
        )
    if not rows:
        return []
    return [
        "### The pipeline's choices and cost",
        "",
        "Per seed: the winner (coefficients; T; 'LS' = z-scored logits), "
        'the kinds of logits the candidates used (`standardize="auto"`), '
        "how many winners are z-scored, the calibration temperature fitted "
        "on the validation split, student-epochs spent / budget, and the "
        "mean wall time of one call (training, scoring, calibration; "
        "compilation included) beside KD's tuning (its trainings' summed "
        "times), both measured in this run on the shared machine.",
        "",
        timing.markdown_table(
            [
                "setting",
                "winners (seeds)",
                "logits searched",
                "z-scored winners",
                "calibration T",
                "student-epochs / budget",
                "pipeline s / call",
                "KD tuning s",
            ],
            rows,
            "lllrrrrr",
        ),
        "",
    ]


def _small_k_notes(summary):
    """What happens at K = 2 and K = 3, read from the records."""
    lines = []
    for n, e in summary.items():
        k = _num_classes(e)
        if k not in (2, 3):
            continue
        rows = e["rows"]
        facts = []
        for method, reason in e["not_applicable"].items():
            facts.append(f"{METHODS[method][0]}: not applicable ({reason})")
        tuning = e["tuning"].get("dkd")
        if k == 2 and tuning:
            by_t = {}
            for hp, acc in zip(
                tuning["grid"], tuning["validation_accuracy"], strict=True
            ):
                by_t.setdefault(hp["temperature"], []).append(
                    f"β = {hp['beta']:g}: {100 * acc:.2f}"
                )
            facts.append(
                "DKD's tuning (validation accuracy, %): "
                + "; ".join(
                    f"T = {t:g}: " + ", ".join(v) for t, v in by_t.items()
                )
                + " (at K = 2 NCKD = 0: β changes the gradients only at "
                "rounding level, so the spread across β at one T, same "
                "seed, is that rounding grown over training, not an "
                "effect of β)"
            )
            kd = rows.get("kd")
            dkd = rows.get("dkd")
            if kd and dkd and kd["runs"] and dkd["runs"]:
                facts.append(
                    f"DKD − KD (paired): {_points(paired_difference(dkd, kd))} "
                    f"points (DKD at T = {dkd['hp']['temperature']:g}, KD "
                    f"at T = {kd['hp']['temperature']:g})"
                )
        if k == 3 and "lskd" in rows and "kd" in rows and rows["lskd"]["runs"]:
            facts.append(
                "LS-KD − KD (paired): "
                f"{_points(paired_difference(rows['lskd'], rows['kd']))} "
                "points (z-scores of 3 logits keep only their order and "
                "relative spacing: one degree of freedom)"
            )
        pipe = rows.get(PIPELINE)
        if pipe and pipe["runs"]:
            searches = pipe["pipeline"]
            kinds = {
                c["standardize"] for s in searches for c in s["candidates"]
            }
            standardised = sum(
                s["candidates"][s["winner"]]["standardize"] for s in searches
            )
            facts.append(
                "pipeline: "
                + (
                    "z-scored candidates included, "
                    if True in kinds
                    else 'logits only (`standardize="auto"` at K = 2), '
                )
                + f"z-scored winners {standardised}/{len(searches)}"
            )
        lines.append(f"- `{n}` (K = {k}): " + "; ".join(facts) + ".")
    if not lines:
        return []
    return ["### K = 2 and K = 3: what each method does", "", *lines, ""]


def _pipeline_target_lines(summary):
    targets = pipeline_targets(summary)
    if targets is None:
        return []
    settings = targets["settings"]
    count = len(settings)
    below = [
        f"`{n}` ({_points(t['vs_best'])} vs {METHODS[t['best']][0]})"
        for n, t in settings.items()
        if not t["within_se"]
    ]
    ece_misses = [
        f"`{n}` ({100 * t['ece'][0]:.1f} vs KD {100 * t['ece'][1]:.1f})"
        for n, t in settings.items()
        if not t["ece_ok"]
    ]
    return [
        "### Targets for the default pipeline",
        "",
        f"Computed from the numbers above over {count} setting(s)"
        + ("" if count == len(summary) else " (the others lack rows)")
        + ".",
        "",
        "- Never below the best tuned baseline by more than one standard "
        "error of the paired difference, in any setting: "
        + _verdict(targets["never_below_best"])
        + (
            " ("
            + ", ".join(
                f"`{n}` {_points(t['vs_best'])}" for n, t in settings.items()
            )
            + ")."
            if not below
            else " in " + ", ".join(below) + "."
        ),
        "- At least +1.0 point over tuned KD on average over the settings: "
        f"{100 * targets['mean_over_kd']:+.2f} points: "
        + _verdict(targets["over_kd"])
        + ".",
        "- Calibrated test ECE at most calibrated KD's + 1 point in every "
        "setting: "
        + _verdict(targets["ece"])
        + (
            " ("
            + ", ".join(
                f"`{n}` {100 * t['ece'][0]:.1f} vs {100 * t['ece'][1]:.1f}"
                for n, t in settings.items()
            )
            + ")."
            if not ece_misses
            else " in " + ", ".join(ece_misses) + "."
        ),
        "",
    ]
