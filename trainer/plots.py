"""ROC and CMC figures as PNG files (matplotlib's Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt, *plt.subplots(figsize=(5, 4), dpi=120)


def roc_png(far: np.ndarray, tar: np.ndarray, path: Path, title: str) -> Path:
    """TAR against FAR on a log axis, where face verification is judged (FAR <= 1e-1)."""
    plt, figure, axes = _figure()
    keep = far > 0
    axes.semilogx(far[keep], tar[keep])
    axes.set(
        xlabel="false accept rate",
        ylabel="true accept rate",
        title=title,
        xlim=(max(far[keep].min(), 1e-5), 1),
        ylim=(0, 1.01),
    )
    axes.grid(True, which="both", alpha=0.3)
    return _save(plt, figure, path)


def cmc_png(curve: np.ndarray, path: Path, title: str) -> Path:
    plt, figure, axes = _figure()
    ranks = np.arange(1, len(curve) + 1)
    axes.plot(ranks, curve, marker="o")
    axes.set(xlabel="rank", ylabel="identification rate", title=title, xticks=ranks, ylim=(0, 1.01))
    axes.grid(True, alpha=0.3)
    return _save(plt, figure, path)


def _save(plt, figure, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path
