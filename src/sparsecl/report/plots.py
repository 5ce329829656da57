"""Accuracy-matrix heatmaps and accuracy-vs-task curves (PNG, written atomically)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from ..io import atomic_path  # noqa: E402

SETTING_LABELS = {"til": "task-IL", "cil": "class-IL", "data": "data-incremental"}


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def matrix_heatmaps(matrices: dict[str, np.ndarray], title: str, path: Path) -> None:
    """One heatmap per setting (task-IL, class-IL): R[i, j], mean over seeds. A data-incremental
    run has one column (the whole test set): it is drawn as one row, step by step."""
    if set(matrices) == {"data"}:
        _step_row(matrices["data"][:, 0], title, path)
        return
    fig, axes = plt.subplots(1, len(matrices), figsize=(4.6 * len(matrices), 3.8), squeeze=False, layout="constrained")
    for ax, (setting, R) in zip(axes[0], matrices.items()):
        T, columns = R.shape
        image = ax.imshow(R, vmin=0, vmax=100, cmap="viridis")
        for i in range(T):
            for j in range(columns):
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
        ax.set_title(SETTING_LABELS.get(setting, setting))
        ax.set_xlabel("evaluated task j" if columns > 1 else "top-1 on the whole test set")
        ax.set_ylabel("after training task i" if setting != "data" else "after data step i")
        # Tasks and steps are numbered from 1, as the papers number them.
        ax.set_xticks(range(columns), [str(j + 1) for j in range(columns)] if columns > 1 else [""])
        ax.set_yticks(range(T), [str(i + 1) for i in range(T)])
    fig.colorbar(image, ax=axes[0].tolist(), fraction=0.046, label="accuracy (%)")
    fig.suptitle(title, fontsize=9)
    _save(fig, path)


def _step_row(accuracy: np.ndarray, title: str, path: Path) -> None:
    steps = len(accuracy)
    fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * steps + 1.5), 2.2), layout="constrained")
    image = ax.imshow(accuracy[None, :], vmin=0, vmax=100, cmap="viridis", aspect="auto")
    for j, value in enumerate(accuracy):
        if not np.isnan(value) and steps <= 20:
            ax.text(
                j, 0, f"{value:.1f}", ha="center", va="center", fontsize=8, color="white" if value < 60 else "black"
            )
    ax.set_xticks(range(steps), [str(j + 1) for j in range(steps)])
    ax.set_yticks([0], ["whole\ntest set"])
    ax.set_xlabel("after data step")
    ax.set_title(SETTING_LABELS["data"] + ": top-1 on the whole test set", fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.046, label="accuracy (%)")
    fig.suptitle(title, fontsize=9)
    _save(fig, path)


def comparison(curves: pd.DataFrame, setting: str, path: Path) -> None:
    """Every experiment of one setting on one axis: accuracy after each task (or data step), mean
    over seeds with the seed spread (± std) as a band."""
    data = setting == "data"
    fig, ax = plt.subplots(figsize=(7.5, 4.4), layout="constrained")
    lines = curves.groupby(["experiment", "point"], sort=True)
    single_point = curves.groupby("experiment")["point"].nunique().to_dict()
    for (experiment, point), group in lines:
        group = group.sort_values("after_task")
        x, mean, std = group["after_task"].to_numpy() + 1, group["mean"].to_numpy(), group["std"].fillna(0).to_numpy()
        label = experiment if single_point[experiment] == 1 else f"{experiment}/{point}"
        (line,) = ax.plot(x, mean, marker="o", ms=3, label=label)
        ax.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.15, lw=0)
    ax.set_xlabel("after data step" if data else "after task")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_ylabel("top-1 on the whole test set (%)" if data else "average accuracy on seen tasks (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), ncols=1 if lines.ngroups <= 16 else 2)
    ax.set_title(f"{SETTING_LABELS.get(setting, setting)}: every method, mean ± std over seeds (band)", fontsize=9)
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
            label=f"{point} ({SETTING_LABELS.get(setting, setting)})",
        )
    ax.set_xlabel("data steps learned" if set(curves["setting"]) == {"data"} else "tasks learned")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_ylabel(
        "top-1 on the whole test set (%)"
        if set(curves["setting"]) == {"data"}
        else "average accuracy on seen tasks (%)"
    )
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(title, fontsize=9)
    _save(fig, path)


def ledger_curves(paper: str, entries: list[dict], results, path: Path) -> None:
    """One panel per published curve: the paper's values beside ours (mean ± std over seeds)."""
    fig, axes = plt.subplots(1, len(entries), figsize=(4.8 * len(entries), 3.6), squeeze=False, layout="constrained")
    for ax, entry in zip(axes[0], entries):
        tasks = np.arange(1, len(entry["curve"]) + 1)
        band = entry.get("uncertainty", 0.0)
        # The paper's values are drawn last-on-top, in their own marker, so ours never hide them.
        ax.plot(
            tasks, entry["curve"], "D--", ms=5, mfc="none", color="black", zorder=3, label=f"paper ({entry['kind']})"
        )
        if band:
            ax.fill_between(tasks, np.array(entry["curve"]) - band, np.array(entry["curve"]) + band, color="0.85")
        ours = results.curve(entry["experiment"], entry["point"], entry["metric"])
        if ours is not None:
            ax.errorbar(
                ours.index + 1,
                ours["mean"],
                yerr=ours["std"].fillna(0),
                marker="o",
                ms=3,
                capsize=2,
                zorder=2,
                label="ours (mean ± std over seeds)",
            )
        ax.set_title(f"{entry['experiment']}/{entry['point']}\n{entry['metric']}", fontsize=8)
        data = entry["metric"].endswith("_data")
        ax.set_xlabel("after data step" if data else "after task")
        ax.set_ylabel(entry["metric"] + (" (%)" if entry["metric"].startswith("acc") else ""))
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(paper, fontsize=9)
    _save(fig, path)
