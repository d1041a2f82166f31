"""The accuracy report's figures: selection quality and the search study."""

import math

import numpy as np
from accuracy_settings import SEARCHED

from accuracy_report.main_tables import selection_quality
from accuracy_report.search import search_quality


def _panels(count, height):
    """A figure of `count` panels, three a row: `(fig, axes)`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = min(3, count)
    rows = math.ceil(count / columns)
    fig, axes = plt.subplots(
        rows, columns, figsize=(4.6 * columns, height * rows), squeeze=False
    )
    for ax in axes.ravel()[count:]:
        ax.set_visible(False)
    return fig, axes.ravel()


def _save(fig, path):
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def plot_selection(summary, path):
    """Per setting: student accuracy and proxy Brier across the grid."""
    names = [n for n, e in summary.items() if e["grid"]]
    if not names:
        return None
    fig, axes = _panels(len(names), 3.4)
    for ax, name in zip(axes, names, strict=False):
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
    return _save(fig, path)


def plot_study(summary, path):
    """Per setting: each candidate's short-run vs full-run accuracy."""
    names = [
        n for n, e in summary.items() if search_quality(e, SEARCHED) is not None
    ]
    if not names:
        return None
    fig, axes = _panels(len(names), 3.6)
    for ax, name in zip(axes, names, strict=False):
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
    return _save(fig, path)
