"""Global magnitude pruning over the conv weights, the step of iterative magnitude pruning (IMP).

Lifelong Tickets prunes and counts only conv weights (heads, biases and BatchNorm are never
pruned). One prune removes `round(fraction x candidates)` of the candidate weights with the
smallest |w| over all conv layers at once; Python's round (halves to even), the count
torch.nn.utils.prune uses. Candidates are the weights still in the mask and outside `protected`:
bottom-up regrowth prunes the weights outside the current ticket only, so a ticket never loses a
weight. Ties in |w| are broken by position (stable sort), so the result is deterministic.
"""

from __future__ import annotations

import torch
import torch.nn as nn

Masks = dict[str, torch.Tensor]


def conv_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """Every Conv2d weight (stem, block convs and shortcut convs), by parameter name."""
    return {f"{name}.weight": m.weight for name, m in model.named_modules() if isinstance(m, nn.Conv2d)}


def dense_masks(params: dict[str, torch.Tensor]) -> Masks:
    return {name: torch.ones_like(p, dtype=torch.bool) for name, p in params.items()}


def prune_count(candidates: int, fraction: float) -> int:
    return int(round(fraction * candidates))


@torch.no_grad()
def prune_smallest_global(
    params: dict[str, torch.Tensor], masks: Masks, fraction: float, protected: Masks | None = None
) -> Masks:
    """New masks without the `fraction` of candidate weights with the smallest |w| (global over layers)."""
    names = list(masks)
    candidate = torch.cat([(masks[n] & ~protected[n] if protected is not None else masks[n]).flatten() for n in names])
    scores = torch.cat([params[n].detach().abs().flatten().float() for n in names])
    positions = candidate.nonzero().flatten()
    k = prune_count(len(positions), fraction)
    order = torch.sort(scores[positions], stable=True).indices[:k]
    keep = torch.cat([masks[n].flatten() for n in names]).clone()
    keep[positions[order]] = False
    out, start = {}, 0
    for n in names:
        size = masks[n].numel()
        out[n] = keep[start : start + size].view_as(masks[n])
        start += size
    return out


def remaining_percent(masks: Masks) -> float:
    """Kept weights as a percentage of all masked (conv) weights."""
    total = sum(m.numel() for m in masks.values())
    return 100.0 * sum(int(m.sum()) for m in masks.values()) / total
