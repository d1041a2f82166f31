"""The accuracy report's main tables: accuracy, settings, hyper-parameters,
closeness to p*, selection quality, calibration and the targets.
"""

import inspect
import math

import numpy as np
import scipy.stats
import timing
from accuracy_settings import GRIDS
from accuracy_settings import HEADLINE
from accuracy_settings import METHODS
from accuracy_settings import PIPELINE
from accuracy_settings import subsample_grid

from accuracy_report.summary import HP_NAMES
from accuracy_report.summary import hp_text
from accuracy_report.summary import kd_differences
from accuracy_report.summary import mean_std
from accuracy_report.summary import methods_of
from accuracy_report.summary import pct
from accuracy_report.summary import pipeline_winners
from keras_ptloss import calibrate

# The temperature bounds of `keras_ptloss.calibrate` (its documented default).
CALIBRATION_BOUNDS = inspect.signature(calibrate).parameters["bounds"].default


def protocol(profile):
    """How the main tables' students and baselines are trained."""
    return [
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
            f"{METHODS[m][0]} {grid_text(m, profile['tune_budget'])}"
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


def grid_text(method, budget):
    """A tuning grid as `(w, T) in {(0.1, 1), ...}`."""
    grid = subsample_grid(GRIDS[method], budget)
    keys = [k for k in grid[0] if len({hp[k] for hp in grid}) > 1]
    fixed = [k for k in grid[0] if k not in keys]
    label = ", ".join(HP_NAMES[k] for k in keys)
    values = ", ".join(
        "(" + ", ".join(f"{hp[k]:g}" for k in keys) + ")"
        if len(keys) > 1
        else f"{hp[keys[0]]:g}"
        for hp in grid
    )
    text = f"{'(' + label + ')' if len(keys) > 1 else label} ∈ {{{values}}}"
    if fixed:
        text += ", " + ", ".join(
            f"{HP_NAMES[k]} = {grid[0][k]:g}" for k in fixed
        )
    return text


def method_rows(summary, teacher_cell, cell):
    """A teacher row, then a row a method; a column a setting. `cell(entry,
    method, row)` formats a method's row of a setting (`"-"` if absent)."""
    rows = [
        ["Teacher"] + [teacher_cell(e["teacher"]) for e in summary.values()]
    ]
    for method in methods_of(summary):
        cells = [
            cell(e, method, e["rows"].get(method)) for e in summary.values()
        ]
        rows.append([METHODS[method][0]] + cells)
    return rows


def _accuracy_cell(entry, method, row):
    if row is None:
        return "-"
    text = pct(row["test"])
    kd = entry["rows"].get("kd")
    if method.startswith("pt_") and kd is not None:
        text += f" ({100 * (row['test'][0] - kd['test'][0]):+.1f})"
    return text


def accuracy_table(summary):
    rows = method_rows(
        summary, lambda t: f"{100 * t['test_accuracy']:.1f}", _accuracy_cell
    )
    return [
        "### Test accuracy (%), mean ± std over seeds",
        "",
        "PTLoss rows show the difference from tuned KD in brackets.",
        "",
        timing.markdown_table(
            ["method", *summary], rows, "l" + "r" * len(summary)
        ),
        "",
    ]


def settings_table(summary):
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


def hp_table(summary):
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
                    pipeline_winners(row)
                    if method == PIPELINE
                    else hp_text(method, row["hp"]),
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


def bayes_table(summary):
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
                    pct(row["test"]),
                    pct(mean_std([r["excess_risk"] for r in runs]), 2),
                    "{:.4f} ± {:.4f}".format(
                        *mean_std([r["kl_to_bayes"] for r in runs])
                    ),
                    "{:.4f} ± {:.4f}".format(
                        *mean_std([r["sq_dist_to_bayes"] for r in runs])
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


def quality_table(summary, png):
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


def targets(summary):
    _, diffs, misses = kd_differences(summary, HEADLINE)
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


def _nll_ece_cell(entry, method, row):
    if row is None or not math.isfinite(row["nll"][0]):
        return "-"
    return (
        f"{row['nll'][0]:.3f} ± {row['nll'][1]:.3f} / {100 * row['ece'][0]:.1f}"
    )


def _teacher_nll_ece(teacher):
    if "test_nll" not in teacher:
        return "-"
    return f"{teacher['test_nll']:.3f} / {100 * teacher['test_ece']:.1f}"


def calibration_table(summary):
    rows = method_rows(summary, _teacher_nll_ece, _nll_ece_cell)
    return [
        "### Test NLL and ECE, mean over seeds",
        "",
        "Each cell: negative log-likelihood (nats, mean ± std over seeds) / "
        "expected calibration error in % (15 equal-width confidence bins, "
        "mean over seeds), on the test split.",
        "",
        timing.markdown_table(
            ["method", *summary], rows, "l" + "r" * len(summary)
        ),
        "",
    ]


def calibrated_table(
    summary,
    title="### Test NLL and ECE after temperature scaling, mean over seeds",
):
    """NLL / ECE before → after `keras_ptloss.calibrate` (empty when no
    run recorded them)."""
    names = list(summary)
    methods = methods_of(summary)
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
