"""The demo's report: scores, the tables, the verdict, the plot."""

import numpy as np

from keras_ptloss import calibration

# The teachers the demo can train: name -> what it is (the noise rate is
# filled in), in the order it runs them.
TEACHERS = {
    "clean": "1-D CNN trained on the labelled split",
    "noisy": "the same CNN trained on the labelled split with {noise:.0%} of "
    "its labels flipped (symmetric noise)",
}
# The students of each teacher, in table order.
METHODS = ("student alone", "KD", "LS-KD", "PTLoss")
# The tuned baselines PTLoss is compared with, seed by seed.
BASELINES = ("KD", "LS-KD")
# The scores of every model on the test split: accuracy (the same before
# and after calibration), NLL and ECE of the raw and calibrated model.
SCORES = ("accuracy", "nll_raw", "nll_calibrated", "ece_raw", "ece_calibrated")
COLORS = {
    "teacher": "black",
    "student alone": "tab:blue",
    "KD": "tab:orange",
    "LS-KD": "tab:green",
    "PTLoss": "tab:red",
}


def reliability(probs, labels, bins=calibration.ECE_BINS):
    """Confidence, accuracy and count per equal-width confidence bin."""
    confidence = probs.max(axis=-1)
    correct = probs.argmax(axis=-1) == labels
    index = calibration.confidence_bins(confidence, bins)
    conf, acc, count = [], [], []
    for b in range(bins):
        mask = index == b
        count.append(int(mask.sum()))
        conf.append(float(confidence[mask].mean()) if mask.any() else np.nan)
        acc.append(float(correct[mask].mean()) if mask.any() else np.nan)
    return np.array(conf), np.array(acc), np.array(count)


def _cell(entry, scale, digits):
    mean, std = scale * entry["mean"], scale * entry["std"]
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def format_table(teacher, summary, num_seeds):
    """A markdown table of one teacher's students on the test split.

    Args:
        teacher: the teacher's scores (`SCORES`).
        summary: `pipeline.summarize`'s dict.
        num_seeds: how many seeds the means are over.

    Returns:
        The table as a string.
    """
    lines = [
        f"| model (mean ± std over {num_seeds} seed(s)) | test accuracy (%) "
        "| NLL raw | NLL calibrated | ECE raw | ECE calibrated "
        "| chosen (per seed) | student-epochs | seconds |",
        "|---|---:|---:|---:|---:|---:|---|---:|---:|",
        f"| teacher | {100 * teacher['accuracy']:.1f} "
        + "".join(f"| {teacher[key]:.3f} " for key in SCORES[1:])
        + "| - | - | - |",
    ]
    for name in METHODS:
        e = summary[name]
        choices = sorted(set(e["choices"]), key=e["choices"].index)
        lines.append(
            f"| {name} | {_cell(e['accuracy'], 100, 1)} "
            + "".join(f"| {_cell(e[key], 1, 3)} " for key in SCORES[1:])
            + f"| {'; '.join(choices)} "
            f"| {e['student_epochs']:g} | {e['seconds']:.1f} |"
        )
    return "\n".join(lines)


def write_plot(path, teachers, test_probs, labels, title):
    """Writes test accuracy per seed and reliability diagrams to a PNG.

    Args:
        path: the PNG file to write.
        teachers: the demo's per-teacher results.
        test_probs: `{teacher: {model: calibrated probabilities (N, K)}}`.
        labels: test labels, shape `(N,)`.
        title: the figure's title.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 4.2 * len(teachers)), layout="constrained")
    axes = fig.subplots(len(teachers), 2, squeeze=False)
    for (ax_acc, ax_rel), (teacher, result) in zip(
        axes, teachers.items(), strict=True
    ):
        for i, name in enumerate(METHODS):
            values = 100 * np.array(
                [r[name]["scores"]["accuracy"] for r in result["runs"]]
            )
            ax_acc.scatter(
                np.full(len(values), i), values, color=COLORS[name], zorder=3
            )
            ax_acc.hlines(values.mean(), i - 0.3, i + 0.3, color=COLORS[name])
        ax_acc.set_xticks(range(len(METHODS)))
        ax_acc.set_xticklabels(METHODS, fontsize=8)
        ax_acc.set_ylabel("test accuracy (%)")
        ax_acc.set_title(
            f"{teacher} teacher: one dot per seed, line = mean", fontsize=10
        )

        ax_rel.plot([0, 1], [0, 1], color="0.7", lw=1, label="calibrated")
        for name in ("teacher", *METHODS):
            conf, acc, _ = reliability(test_probs[teacher][name], labels)
            keep = ~np.isnan(conf)
            ax_rel.plot(
                conf[keep],
                acc[keep],
                marker="o",
                ms=3,
                color=COLORS[name],
                label=name,
            )
        ax_rel.set_xlim(0, 1)
        ax_rel.set_ylim(0, 1)
        ax_rel.set_xlabel(f"confidence ({calibration.ECE_BINS} equal bins)")
        ax_rel.set_ylabel("accuracy")
        ax_rel.set_title(
            f"{teacher} teacher: reliability after calibration (test split, "
            "first seed)",
            fontsize=10,
        )
        ax_rel.legend(loc="upper left", fontsize=8)
    fig.suptitle(title)
    fig.savefig(path, dpi=100)


def paired_difference(summary, score, first, second):
    """Mean and sample std over seeds of `first - second` on one score.

    The std is `nan` for a single seed.
    """
    a = np.asarray(summary[first][score]["values"], dtype="float64")
    b = np.asarray(summary[second][score]["values"], dtype="float64")
    diff = a - b
    std = float(diff.std(ddof=1)) if len(diff) > 1 else float("nan")
    return float(diff.mean()), std


def outcome(mean, std):
    """`"ahead"`, `"behind"` or `"within"` the spread; `None` (one seed)."""
    if np.isnan(std):
        return None
    if abs(mean) > std:
        return "ahead" if mean > 0 else "behind"
    return "within"


def _compare(summary, score, scale, unit, baseline):
    mean, std = paired_difference(summary, score, "PTLoss", baseline)
    digits = 1 if scale == 100 else 3
    text = f"PTLoss - {baseline}: {scale * mean:+.{digits}f}"
    if np.isnan(std):
        return f"{text}{unit} (one seed: no spread)"
    if mean == 0 and std == 0:
        return f"{text}{unit} (the same on every seed)"
    where = {
        "ahead": "larger than its spread",
        "behind": "larger than its spread",
        "within": "within its spread",
    }[outcome(mean, std)]
    return f"{text} ± {scale * std:.{digits}f}{unit} ({where})"


def teacher_outcome(summary):
    """`"helps"`, `"hurts"` or `"ties"` against `BASELINES` on accuracy.

    `None` with a single seed.
    """
    results = [
        outcome(*paired_difference(summary, "accuracy", "PTLoss", baseline))
        for baseline in BASELINES
    ]
    if None in results:
        return None
    if "behind" in results:
        return "hurts"
    if all(r == "ahead" for r in results):
        return "helps"
    return "ties"


def verdict(summaries):
    """Lines saying what the tables show, computed from their numbers.

    Args:
        summaries: `{teacher: pipeline.summarize's dict}`.

    Returns:
        A list of strings.
    """
    first = next(iter(summaries.values()))
    num_seeds = len(first["PTLoss"]["accuracy"]["values"])
    lines = [
        "verdict (from the tables; PTLoss minus each tuned baseline, seed by "
        f"seed, mean ± std over {num_seeds} seed(s)):"
    ]
    for teacher, summary in summaries.items():
        for score, label, scale, unit in (
            ("accuracy", "test accuracy", 100, " points"),
            ("nll_calibrated", "calibrated test NLL", 1, " nats"),
        ):
            lines.append(
                f"  {teacher} teacher, {label}: "
                + "; ".join(
                    _compare(summary, score, scale, unit, baseline)
                    for baseline in BASELINES
                )
            )
    verbs = {
        "helps": "helps",
        "ties": "ties",
        "hurts": "falls behind",
        None: "cannot be judged (one seed)",
    }
    parts = [
        f"{verbs[teacher_outcome(summary)]} with the {teacher} teacher"
        for teacher, summary in summaries.items()
    ]
    lines += [
        f"  in this run, PTLoss {' and '.join(parts)}",
        "  (on test accuracy: helps = ahead of both KD and LS-KD by more than "
        "the spread; falls behind = behind either by more than it; ties = "
        "otherwise)",
        resolution(summaries),
    ]
    return lines


def resolution(summaries):
    """The line saying which accuracy differences the run can resolve."""
    first = next(iter(summaries.values()))
    num_seeds = len(first["PTLoss"]["accuracy"]["values"])
    if num_seeds < 2:
        return (
            "  this run cannot resolve any difference: with one seed it "
            "measures no spread (use --seeds 2 or more)"
        )
    spreads = [
        100 * paired_difference(summary, "accuracy", "PTLoss", baseline)[1]
        for summary in summaries.values()
        for baseline in BASELINES
    ]
    low, high = min(spreads), max(spreads)
    spread = f"{low:.1f} to {high:.1f}"
    if f"{low:.1f}" == f"{high:.1f}":
        spread = f"{low:.1f}"
    return (
        f"  what this run resolves: over {num_seeds} seeds the per-seed "
        "test accuracy differences (PTLoss minus KD, minus LS-KD) vary by "
        f"{spread} points (std); a mean difference larger than that is "
        "resolved, a smaller one cannot be told apart from the variation "
        "between seeds"
    )
