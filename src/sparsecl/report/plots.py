"""Accuracy-matrix heatmaps and accuracy-vs-task curves (PNG, written atomically)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from ..io import atomic_path  # noqa: E402


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def matrix_heatmaps(matrices: dict[str, np.ndarray], title: str, path: Path) -> None:
    """One heatmap per setting (task-IL, class-IL): R[i, j], mean over seeds."""
    fig, axes = plt.subplots(1, len(matrices), figsize=(4.6 * len(matrices), 3.8), squeeze=False, layout="constrained")
    for ax, (setting, R) in zip(axes[0], matrices.items()):
        T = R.shape[0]
        image = ax.imshow(R, vmin=0, vmax=100, cmap="viridis")
        for i in range(T):
            for j in range(T):
                if not np.isnan(R[i, j]) and T <= 12:
                    ax.text(
                        j,
                        i,
                        f"{R[i, j]:.0f}",
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="white" if R[i, j] < 60 else "black",
                    )
        ax.set_title({"til": "task-IL", "cil": "class-IL"}.get(setting, setting))
        ax.set_xlabel("evaluated task j")
        ax.set_ylabel("after training task i")
        ax.set_xticks(range(T))
        ax.set_yticks(range(T))
    fig.colorbar(image, ax=axes[0].tolist(), fraction=0.046, label="accuracy (%)")
    fig.suptitle(title, fontsize=9)
    _save(fig, path)


def accuracy_curves(curves: pd.DataFrame, title: str, path: Path) -> None:
    """Average accuracy over seen tasks after each task; one line per (point, setting)."""
    fig, ax = plt.subplots(figsize=(5.5, 3.8), layout="constrained")
    for (point, setting), group in curves.groupby(["point", "setting"], sort=True):
        ax.errorbar(
            group["after_task"] + 1,
            group["mean"],
            yerr=group["std"].fillna(0),
            marker="o",
            ms=3,
            capsize=2,
            label=f"{point} ({'task-IL' if setting == 'til' else 'class-IL'})",
        )
    ax.set_xlabel("tasks learned")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_ylabel("average accuracy on seen tasks (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(title, fontsize=9)
    _save(fig, path)
