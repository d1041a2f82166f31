"""The accuracy report's search section: the searched rows, the short-run study
and the search targets.
"""

import numpy as np
import scipy.stats
import timing
from accuracy_settings import METHODS
from accuracy_settings import SEARCH_STANDARDIZE
from accuracy_settings import TUNED_BASELINES

from accuracy_report.summary import hp_text
from accuracy_report.summary import kd_differences


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


def search_table(summary):
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
                    f"{winner['label']}: " + hp_text(method, row["hp"]),
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


def study_table(summary, png=None):
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


def search_targets(summary):
    """Targets of the student-aware search, met or missed with numbers."""
    lines = []
    for method in SEARCH_STANDARDIZE:
        comparisons, diffs, misses = kd_differences(summary, method)
        wins, seconds = [], []
        for n, e, pt, _ in comparisons:
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
