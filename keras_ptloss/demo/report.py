"""The demo's report: the results table, the reliability bins, the plot."""

import numpy as np

METHODS = ("teacher", "student alone", "KD", "PTLoss")


def format_table(results):
    """A markdown table of test accuracy, Brier score and NLL per method."""
    lines = [
        "| model | test accuracy | test Brier | test NLL |",
        "|---|---:|---:|---:|",
    ]
    for name in METHODS:
        r = results[name]
        lines.append(
            f"| {name} | {100 * r['accuracy']:.1f} % | {r['brier']:.4f} "
            f"| {r['nll']:.4f} |"
        )
    return "\n".join(lines)


def reliability(probs, labels, bins=10):
    """Confidence, accuracy and count per confidence bin (equal width)."""
    confidence = probs.max(axis=-1)
    correct = probs.argmax(axis=-1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    conf, acc, count = [], [], []
    for b in range(bins):
        mask = index == b
        count.append(int(mask.sum()))
        conf.append(float(confidence[mask].mean()) if mask.any() else np.nan)
        acc.append(float(correct[mask].mean()) if mask.any() else np.nan)
    return np.array(conf), np.array(acc), np.array(count)


COLORS = {
    "teacher": "black",
    "student alone": "tab:blue",
    "KD": "tab:orange",
    "PTLoss": "tab:green",
}


def write_plot(path, histories, results, test_probs, labels, title):
    """Writes learning curves and a reliability diagram to a PNG file.

    Args:
        path: the PNG file to write.
        histories: `{method: [validation accuracy per epoch]}`.
        results: `{method: {"accuracy": ...}}`; the teacher's is drawn as
            a horizontal line.
        test_probs: `{method: probabilities (N, K) on the test split}`.
        labels: test labels, shape `(N,)`.
        title: the figure's title.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.2), layout="constrained")
    ax_curve, ax_rel = fig.subplots(1, 2)
    for name, values in histories.items():
        epochs = np.arange(1, len(values) + 1)
        ax_curve.plot(
            epochs,
            100 * np.asarray(values),
            marker="o",
            ms=3,
            color=COLORS.get(name),
            label=name,
        )
    ax_curve.axhline(
        100 * results["teacher"]["accuracy"],
        color=COLORS["teacher"],
        ls="--",
        lw=1,
        label="teacher (test)",
    )
    ax_curve.set_xlabel("epoch")
    ax_curve.set_ylabel("validation accuracy (%)")
    ax_curve.set_title("students during training")
    ax_curve.legend(loc="best")

    ax_rel.plot([0, 1], [0, 1], color="0.7", lw=1, label="calibrated")
    for name, probs in test_probs.items():
        conf, acc, _ = reliability(probs, labels)
        keep = ~np.isnan(conf)
        ax_rel.plot(
            conf[keep],
            acc[keep],
            marker="o",
            ms=3,
            color=COLORS.get(name),
            label=name,
        )
    ax_rel.set_xlim(0, 1)
    ax_rel.set_ylim(0, 1)
    ax_rel.set_xlabel("confidence (10 equal-width bins)")
    ax_rel.set_ylabel("accuracy")
    ax_rel.set_title("reliability on the test split")
    ax_rel.legend(loc="upper left")
    fig.suptitle(title)
    fig.savefig(path, dpi=100)
