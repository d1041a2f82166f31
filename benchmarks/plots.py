"""Plots for the selection benchmark: closeness landscape and calibration.

- `selection_closeness_grid.png`: for shared coefficients of order M = 1
  and M = 2, the Brier score of the proxy teacher on a labelled validation
  sample over a grid of coefficients (what the selection minimises), next
  to the mean squared distance of the proxy to the true Bayes probabilities
  p* (what it is meant to minimise), with the teacher (eps = 0) and the
  selected coefficients marked.
- `selection_reliability.png`: reliability diagram (accuracy against
  confidence, in equal-width confidence bins) of the teacher, the proxy
  teacher at the selected coefficients and the Bayes probabilities p*, on a
  test sample, with the expected calibration error (ECE) of each.

Usage: python benchmarks/plots.py [--output-dir DIR] (also called by
`selection_speed.py`).
"""

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from selection_task import make_task  # noqa: E402


def closeness_grid(task, out_path, num_classes=10, num_examples=2000, seed=0):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from keras_ptloss import select_coefficients
    from keras_ptloss.proxy import proxy_teacher

    teacher, labels, p_star = task(num_examples, num_classes, seed)
    one_hot = np.eye(num_classes)[labels]

    def scores(candidates):
        proxies = proxy_teacher(teacher, candidates, batched=True)
        brier = np.mean(np.sum((proxies - one_hot) ** 2, axis=-1), axis=-1)
        dist = np.mean(np.sum((proxies - p_star) ** 2, axis=-1), axis=-1)
        return brier, dist

    eps1 = np.linspace(-1.6, 1.5, 125)
    brier1, dist1 = scores(eps1[:, None])
    best1 = select_coefficients(teacher, labels, order=1, verbose=0)
    e1 = np.linspace(-1.6, 1.5, 63)
    e2 = np.linspace(-0.4995, 2.0, 51)
    grid = np.stack(np.meshgrid(e1, e2, indexing="xy"), axis=-1)
    brier2, dist2 = scores(grid.reshape(-1, 2))
    brier2 = brier2.reshape(grid.shape[:2])
    dist2 = dist2.reshape(grid.shape[:2])
    best2 = select_coefficients(teacher, labels, order=2, verbose=0)

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.3))
    ax = axes[0]
    # Brier = E|proxy - p*|^2 + a constant in expectation: both are shown
    # as the excess over their own minimum on the grid.
    ax.plot(
        eps1, brier1 - brier1.min(), color="C0", lw=2.5, label="Brier on labels"
    )
    ax.plot(
        eps1,
        dist1 - dist1.min(),
        color="C1",
        ls="--",
        label="mean |proxy - p*|^2",
    )
    ax.set_yscale("symlog", linthresh=1e-3)
    ax.set_xlabel("eps_1 (M = 1)")
    ax.set_ylabel("excess over the minimum on the grid")
    ax.axvline(0.0, color="gray", ls=":", label="teacher (eps = 0)")
    ax.axvline(best1.coefficients[0], color="C3", ls="-.", label="selected")
    ax.legend(loc="upper right", fontsize=8)
    ax.set_title("M = 1: the label score tracks the distance to p*")
    norm = matplotlib.colors.LogNorm(vmin=1e-4, vmax=1.0)
    for ax, values, title in (
        (axes[1], brier2, "M = 2: Brier score on labels"),
        (axes[2], dist2, "M = 2: mean squared distance to p*"),
    ):
        excess = values - values.min() + 1e-4
        mesh = ax.pcolormesh(
            e1, e2, excess, shading="auto", cmap="viridis", norm=norm
        )
        ax.contour(
            e1,
            e2,
            excess,
            levels=np.geomspace(1e-4, 1, 9),
            colors="white",
            linewidths=0.4,
        )
        fig.colorbar(mesh, ax=ax, label="excess over grid minimum")
        ax.plot(0, 0, "wo", label="teacher")
        ax.plot(*best2.coefficients, "r*", ms=12, label="selected")
        ax.set_xlabel("eps_1")
        ax.set_ylabel("eps_2")
        ax.set_title(title)
        ax.legend(loc="upper right", fontsize=8)
    fig.suptitle(
        f"Closeness of the proxy teacher over shared coefficients (K = "
        f"{num_classes}, N = {num_examples}; over-confident, biased teacher)"
    )
    fig.tight_layout()
    fig.savefig(out_path, dpi=110)
    plt.close(fig)
    return out_path


def reliability(task, out_path, num_classes=10, num_examples=20000, seed=0):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from keras_ptloss import select_coefficients
    from keras_ptloss.proxy import proxy_teacher

    teacher, labels, _ = task(num_examples, num_classes, seed)
    result = select_coefficients(teacher, labels, order=5, verbose=0)
    test_teacher, test_labels, test_p_star = task(
        num_examples, num_classes, seed, sample=1
    )
    proxy = proxy_teacher(
        test_teacher, result.coefficients, result.temperature, detemper=True
    )
    edges = np.linspace(0.0, 1.0, 16)
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.plot([0, 1], [0, 1], color="gray", ls=":", label="perfect calibration")
    for name, probs, style in (
        ("teacher", test_teacher, "o-"),
        ("proxy teacher (M = 5)", proxy, "s-"),
        ("Bayes p*", test_p_star, "^--"),
    ):
        conf = probs.max(axis=1)
        correct = probs.argmax(axis=1) == test_labels
        which = np.clip(np.digitize(conf, edges) - 1, 0, len(edges) - 2)
        xs, ys, ece = [], [], 0.0
        for b in range(len(edges) - 1):
            mask = which == b
            if mask.any():
                gap = abs(conf[mask].mean() - correct[mask].mean())
                ece += mask.mean() * gap
            if mask.sum() >= 50:  # plot only bins with enough examples
                xs.append(conf[mask].mean())
                ys.append(correct[mask].mean())
        ax.plot(xs, ys, style, ms=4, label=f"{name} (ECE {ece:.3f})")
    ax.set_xlabel("confidence (max probability)")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title(
        f"Reliability on a test sample (K = {num_classes}, "
        f"{num_examples} examples;\nbins with >= 50 examples)"
    )
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(out_path, dpi=110)
    plt.close(fig)
    return out_path


def make_plots(out_dir, seed=0):
    """Writes both PNGs into `out_dir`; returns `[(title, path), ...]`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return [
        (
            "closeness over a coefficient grid (M = 1, 2)",
            closeness_grid(
                make_task, out_dir / "selection_closeness_grid.png", seed=seed
            ),
        ),
        (
            "reliability diagram: teacher vs proxy teacher",
            reliability(
                make_task, out_dir / "selection_reliability.png", seed=seed
            ),
        ),
    ]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--output-dir",
        default=str(Path(__file__).resolve().parent / "results"),
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for title, path in make_plots(args.output_dir, seed=args.seed):
        print(f"{title}: {path}")


if __name__ == "__main__":
    main()
