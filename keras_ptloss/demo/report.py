"""The demo's report: scores, the results table, the plot."""

import numpy as np

from keras_ptloss import calibration

METHODS = (
    "teacher",
    "student alone",
    "KD",
    "PTLoss, training-free",
    "PTLoss, searched",
    "PTLoss, searched, standardised",
)
# The two student-aware searches: method name -> `standardize`.
SEARCHES = {
    "PTLoss, searched": False,
    "PTLoss, searched, standardised": True,
}
COLORS = {
    "teacher": "black",
    "student alone": "tab:blue",
    "KD": "tab:orange",
    "PTLoss, training-free": "tab:green",
    "PTLoss, searched": "tab:red",
    "PTLoss, searched, standardised": "tab:purple",
}
# The scores the verdict ranks by: key, label, scale, unit of a value, unit
# of a difference, whether higher is better.
VERDICT_SCORES = (
    ("accuracy", "test accuracy", 100, " %", " points", True),
    ("nll", "test NLL", 1, " nats", " nats", False),
)


def reliability(probs, labels, bins=10):
    """Confidence, accuracy and count per confidence bin (equal width).

    The bins of `keras_ptloss.expected_calibration_error`.
    """
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


def expected_calibration_error(probs, labels, bins=10):
    """ECE: `sum_b (n_b / N) |accuracy_b - confidence_b|` over `bins`.

    `keras_ptloss.expected_calibration_error` with the demo's 10 bins.
    """
    return calibration.expected_calibration_error(probs, labels, num_bins=bins)


def _cell(entry, scale, digits):
    mean, std = scale * entry["mean"], scale * entry["std"]
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def format_table(teacher, summary, num_seeds):
    """A markdown table of test accuracy, NLL, ECE and Brier per method.

    Args:
        teacher: the teacher's scores (one model, no spread).
        summary: `pipeline.summarize`'s dict (mean and std over seeds).
        num_seeds: how many seeds the means are over.

    Returns:
        The table as a string; the students' rows show mean ± standard
        deviation over the seeds, the chosen setting per seed, and the
        student-epochs and seconds each method spent per seed.
    """
    lines = [
        f"| model (mean ± std over {num_seeds} seed(s)) | test accuracy (%) "
        "| test NLL | test ECE | test Brier | chosen (per seed) "
        "| student-epochs | seconds |",
        "|---|---:|---:|---:|---:|---|---:|---:|",
        f"| teacher | {100 * teacher['accuracy']:.1f} | {teacher['nll']:.3f} "
        f"| {teacher['ece']:.3f} | {teacher['brier']:.3f} | - | - | - |",
    ]
    for name in METHODS[1:]:
        e = summary[name]
        choices = sorted(set(e["choices"]), key=e["choices"].index)
        lines.append(
            f"| {name} | {_cell(e['accuracy'], 100, 1)} "
            f"| {_cell(e['nll'], 1, 3)} | {_cell(e['ece'], 1, 3)} "
            f"| {_cell(e['brier'], 1, 3)} | {'; '.join(choices)} "
            f"| {e['student_epochs']:g} | {e['seconds']:.1f} |"
        )
    return "\n".join(lines)


def write_plot(path, runs, test_probs, labels, title):
    """Writes test accuracy per seed and a reliability diagram to a PNG.

    Args:
        path: the PNG file to write.
        runs: the demo's runs (one dict per seed with each method's
            `scores`).
        test_probs: `{method: probabilities (N, K) on the test split}` of
            the first seed (and the teacher).
        labels: test labels, shape `(N,)`.
        title: the figure's title.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 4.5), layout="constrained")
    ax_acc, ax_rel = fig.subplots(1, 2)
    names = METHODS[1:]
    for i, name in enumerate(names):
        values = 100 * np.array([r[name]["scores"]["accuracy"] for r in runs])
        ax_acc.scatter(
            np.full(len(values), i), values, color=COLORS[name], zorder=3
        )
        ax_acc.hlines(values.mean(), i - 0.3, i + 0.3, color=COLORS[name])
    ax_acc.set_xticks(range(len(names)))
    ax_acc.set_xticklabels([n.replace(", ", "\n") for n in names], fontsize=8)
    ax_acc.set_ylabel("test accuracy (%)")
    ax_acc.set_title("students: one dot per seed, line = mean")

    ax_rel.plot([0, 1], [0, 1], color="0.7", lw=1, label="calibrated")
    for name in METHODS:
        if name not in test_probs:
            continue
        conf, acc, _ = reliability(test_probs[name], labels)
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
    ax_rel.set_xlabel("confidence (10 equal-width bins)")
    ax_rel.set_ylabel("accuracy")
    ax_rel.set_title("reliability on the test split (first seed)")
    ax_rel.legend(loc="upper left", fontsize=8)
    fig.suptitle(title)
    fig.savefig(path, dpi=100)


def paired_difference(summary, score, first, second):
    """Mean and std over seeds of `first - second` on one score.

    The methods share each seed's initial weights and batch order, so the
    difference is taken seed by seed.

    Returns:
        `(mean, std)`; `std` is the sample standard deviation (`ddof=1`),
        `nan` for a single seed.
    """
    a = np.asarray(summary[first][score]["values"], dtype="float64")
    b = np.asarray(summary[second][score]["values"], dtype="float64")
    diff = a - b
    std = float(diff.std(ddof=1)) if len(diff) > 1 else float("nan")
    return float(diff.mean()), std


def _compare(summary, score, scale, unit, first, second):
    mean, std = paired_difference(summary, score, first, second)
    digits = 1 if scale == 100 else 3
    text = f"{first} - {second}: {scale * mean:+.{digits}f}"
    if np.isnan(std):
        return f"{text}{unit} (one seed: no spread to compare with)"
    if mean == 0 and std == 0:
        return f"{text}{unit} (the same on every seed)"
    if abs(mean) > std:
        where = "larger than its spread over seeds"
    else:
        where = "within its spread over seeds"
    return f"{text} ± {scale * std:.{digits}f}{unit} ({where})"


def verdict(summary):
    """Lines saying what the table shows, computed from its numbers.

    For each score of `VERDICT_SCORES` (test accuracy, test NLL): which
    student method is best on the mean over seeds, and its difference from
    KD (from the runner-up when KD is best), seed by seed; plus KD's
    difference from the student alone (whether distillation helped). A
    difference is "larger than its spread" when its mean exceeds the
    standard deviation of the per-seed differences in absolute value.

    Args:
        summary: `pipeline.summarize`'s dict.

    Returns:
        A list of strings.
    """
    students = METHODS[1:]
    num_seeds = len(summary[students[0]]["accuracy"]["values"])
    lines = [
        f"verdict (from the table; differences seed by seed, mean ± std over "
        f"{num_seeds} seed(s)):"
    ]
    for score, label, scale, value_unit, unit, higher in VERDICT_SCORES:
        sign = -1.0 if higher else 1.0
        ranked = sorted(
            students, key=lambda n: sign * summary[n][score]["mean"]
        )
        best = ranked[0]
        other = "KD" if best != "KD" else ranked[1]
        digits = 1 if scale == 100 else 3
        value = scale * summary[best][score]["mean"]
        lines.append(
            f"  best {label}: {best} ({value:.{digits}f}{value_unit}); "
            + _compare(summary, score, scale, unit, best, other)
        )
    lines.append(
        "  distillation (test accuracy): "
        + _compare(summary, "accuracy", 100, " points", "KD", "student alone")
    )
    return lines
