"""Mask statistics of a task: how much of the network it uses, how much of that it shares with
earlier tasks, and how much capacity is left for later ones (per layer and overall).

Stored in the task's masks file (so they can be read without the checkpoint) and reported per
evaluated task by the sparse methods (`density_pct`, `overlap_pct`, `capacity_used_pct`).
"""

from __future__ import annotations

from typing import Any

import torch

from .masks import FREE, MaskFile


def _counts(mask: torch.Tensor, owner: torch.Tensor, task: int) -> tuple[int, int, int, int]:
    active = int(torch.count_nonzero(mask))
    reused = int(torch.count_nonzero(mask & (owner < task)))
    used = int(torch.count_nonzero(owner != FREE))
    return mask.numel(), active, reused, used


def _ratios(numel: int, active: int, reused: int, used: int) -> dict[str, float]:
    return {
        "numel": numel,
        "density": active / numel,
        "overlap": reused / active if active else 0.0,  # of this task's mask, owned by earlier tasks
        "capacity_used": used / numel,  # union of every mask so far
        "free_capacity": 1 - used / numel,
    }


def mask_statistics(masks: MaskFile, task: int) -> dict[str, Any]:
    """Overall and per-layer statistics of task `task`'s mask file."""
    layers = {name: _counts(masks.mask[name], masks.owner[name], task) for name in masks.mask}
    totals = [sum(values) for values in zip(*layers.values())] if layers else [0, 0, 0, 0]
    return {
        "task": task,
        **_ratios(*totals),
        "layers": {name: _ratios(*counts) for name, counts in layers.items()},
    }


def format_statistics(stats: dict[str, Any]) -> list[str]:
    """Log lines: the overall figures, then one line per layer."""
    lines = [
        f"task {stats['task']} mask: density {stats['density']:.4f}, overlap with earlier tasks {stats['overlap']:.4f},"
        f" capacity used {stats['capacity_used']:.4f}, free {stats['free_capacity']:.4f}"
    ]
    for name, layer in stats["layers"].items():
        lines.append(
            f"  {name:<32} numel {layer['numel']:>9} density {layer['density']:.4f}"
            f" overlap {layer['overlap']:.4f} used {layer['capacity_used']:.4f}"
        )
    return lines


def evaluation_columns(masks: list[dict[str, Any]], task: int) -> dict[str, float]:
    """Columns of the evaluation row of `task`, given every masks file so far (in percent)."""
    own = mask_statistics(MaskFile.from_dict(masks[task]), task)
    last = mask_statistics(MaskFile.from_dict(masks[-1]), len(masks) - 1)
    return {
        "density_pct": 100 * own["density"],
        "overlap_pct": 100 * own["overlap"],
        "capacity_used_pct": 100 * last["capacity_used"],
    }
