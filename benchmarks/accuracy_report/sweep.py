"""The accuracy report's teacher-scale sweep section."""

import math

import numpy as np
import timing
from accuracy_settings import HEADLINE
from accuracy_settings import METHODS
from accuracy_settings import SEARCH_STANDARDIZE
from accuracy_settings import SWEEP_ADDED
from accuracy_settings import SWEEP_METHODS
from accuracy_settings import TEACHER_SWEEP
from accuracy_settings import TUNED_BASELINES

from accuracy_report.summary import best_index
from accuracy_report.summary import pct


def sweep_summary(everything):
    """The teacher-scale sweep's settings present in the summary, in
    order from the weakest teacher to the strongest."""
    if not any(n in everything for n in SWEEP_ADDED):
        return {}
    return {n: everything[n] for n in TEACHER_SWEEP if n in everything}


def sweep_section(everything, profile):
    """The sweep's markdown lines (none when no sweep setting ran)."""
    sweep = sweep_summary(everything)
    if not sweep:
        return []
    names = list(sweep)
    columns = [f"`{n}`" for n in names]
    acc_rows, cal_rows = _student_rows(sweep)
    align = "l" + "r" * len(names)
    return [
        *_intro(names, profile),
        "#### Teachers",
        "",
        timing.markdown_table([""] + columns, _teacher_rows(sweep), align),
        "",
        f"#### Student test accuracy (%), mean ± std over {profile['seeds']}"
        " seeds",
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
        *_gap_table(sweep),
        *_cost_table(sweep),
    ]


def _intro(names, profile):
    return [
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
    ]


def _percent(v):
    return f"{100 * v:.1f}"


TEACHER_FIELDS = (
    ("test accuracy (%)", "test_accuracy", _percent),
    (
        "test mean confidence (mean max prob)",
        "test_mean_confidence",
        "{:.3f}".format,
    ),
    ("test NLL", "test_nll", "{:.3f}".format),
    ("test ECE (%)", "test_ece", _percent),
    ("train accuracy (%)", "train_accuracy", _percent),
    ("training time (s)", "seconds", "{:.0f}".format),
)


def _teacher_rows(sweep):
    teachers = [e["teacher"] for e in sweep.values()]
    return [["teacher"] + [e["setting"]["teacher"] for e in sweep.values()]] + [
        [label] + [fmt(t[key]) if key in t else "-" for t in teachers]
        for label, key, fmt in TEACHER_FIELDS
    ]


def _student_rows(sweep):
    """Rows of the accuracy table (bold: best of a column) and of the
    NLL / ECE table."""
    names = list(sweep)
    methods = [
        m for m in SWEEP_METHODS if any(m in sweep[n]["rows"] for n in names)
    ]
    means = {
        n: [
            sweep[n]["rows"][m]["test"][0]
            if m in sweep[n]["rows"] and sweep[n]["rows"][m]["runs"]
            else float("nan")
            for m in methods
        ]
        for n in names
    }
    best = {n: best_index(means[n]) for n in names}
    acc_rows, cal_rows = [], []
    for i, method in enumerate(methods):
        cells, cal = [], []
        for n in names:
            row = sweep[n]["rows"].get(method)
            if row is None or not row["runs"]:
                cells.append("-")
                cal.append("-")
                continue
            text = pct(row["test"])
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
    return acc_rows, cal_rows


def _gap_row(name, rows):
    """Best PTLoss row against the best tuned baseline (None if either is
    missing a run)."""
    pt = [m for m in (HEADLINE, *SEARCH_STANDARDIZE) if m in rows]
    base = [m for m in TUNED_BASELINES if m in rows]
    if not pt or not base or not all(rows[m]["runs"] for m in pt + base):
        return None
    best_pt = max(pt, key=lambda m: rows[m]["test"][0])
    best_base = max(base, key=lambda m: rows[m]["test"][0])
    a = [r["test_accuracy"] for r in rows[best_pt]["runs"]]
    b = [r["test_accuracy"] for r in rows[best_base]["runs"]]
    se = math.sqrt(np.var(a, ddof=1) / len(a) + np.var(b, ddof=1) / len(b))
    kd = rows.get("kd")
    return [
        f"`{name}`",
        f"{METHODS[best_pt][0]} {pct(rows[best_pt]['test'])}",
        f"{METHODS[best_base][0]} {pct(rows[best_base]['test'])}",
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


def _gap_table(sweep):
    rows = [_gap_row(n, e["rows"]) for n, e in sweep.items()]
    return [
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
            [row for row in rows if row is not None],
            "lllrrr",
        ),
        "",
    ]


def _cost_row(name, e):
    epochs = e["setting"]["student_epochs"]
    cells = [f"`{name}`"]
    kd_tuning = e["tuning"].get("kd")
    kd_seconds = e["tuning_seconds"].get("kd")
    cells.append(
        "-"
        if kd_tuning is None
        else f"{len(kd_tuning['grid']) * epochs} / "
        + ("-" if kd_seconds is None else f"{kd_seconds:.0f}")
    )
    selection = (e["rows"].get(HEADLINE) or {}).get("selection")
    cells.append("-" if not selection else f"0 / {selection['wall_time']:.1f}")
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
    return cells


def _cost_table(sweep):
    return [
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
            [_cost_row(n, e) for n, e in sweep.items()],
            "lrrrr",
        ),
        "",
    ]
