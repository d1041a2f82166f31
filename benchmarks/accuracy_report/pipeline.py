"""The accuracy report's section on the default pipeline profile (`--profile
pipeline`).
"""

import math

import numpy as np
import timing
from accuracy_harness import record_key
from accuracy_settings import FULL
from accuracy_settings import METHODS
from accuracy_settings import PIPELINE
from accuracy_settings import PROFILES
from accuracy_settings import TUNED_BASELINES

from accuracy_report.main_tables import calibrated_table
from accuracy_report.summary import best_index
from accuracy_report.summary import compute_text
from accuracy_report.summary import pct
from accuracy_report.summary import pipeline_winners
from accuracy_report.summary import summarize

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
    lines = _header(records, backend, meta, profile, summary)
    lines += _protocol(profile)
    if not summary:
        return lines + ["No finished setting yet.", ""]
    lines += _pipeline_settings_table(summary)
    lines += _pipeline_accuracy_table(summary, profile)
    lines += _pipeline_difference_table(summary)
    lines += calibrated_table(
        summary, "### Test NLL and ECE before → after temperature scaling"
    )
    lines += _pipeline_choice_table(summary, profile)
    lines += _small_k_notes(summary)
    lines += _pipeline_target_lines(summary)
    return lines


def _header(records, backend, meta, profile, summary):
    """Title, command, machine, compute and what ran (or was cut)."""
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
        "- Compute: " + compute_text(records, "pipeline", backend),
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
    return lines


def _protocol(profile):
    return [
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
            text = pct(row["test"])
            if method == "dkd" and _num_classes(e) == 2:
                text += "²"
            best = best_index(
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
                pipeline_winners(pipe),
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
