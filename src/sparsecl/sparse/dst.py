"""Dynamic sparse training: magnitude pruning, then regrowth of as many connections.

One topology update of a tensor W with mask M (W is already W * M):

1. prune: q = ceil(r * nnz(M)); the threshold tau is the (z + q)-th smallest |W| over *all*
   entries (the z masked-out zeros come first), and M' = |W| > tau. Ties at tau are removed too,
   so c = nnz(M) - nnz(M') connections are actually removed (c >= q is possible);
2. grow c connections among the positions where M' = 0 (just-pruned ones included).

Growth criteria (`unfired` and `random_unfired` are one mode):
  random    uniform over the candidates;
  unfired   positions never active in this task first (the "fired" set: the initial mask and
            every mask after an update), the remainder uniformly;
  gradient  largest |dL/dW| of the last minibatch (after isolation zeroed frozen gradients);
  momentum  largest |m / (sqrt(v) + 1e-8)| of Adam (no bias correction), or |SGD momentum buffer|.

`exact=True` grows exactly c connections among the inactive positions, so the density never
drifts (score ties: the lower flat index first). `exact=False` is the original code's rule:
  random, unfired   an independent Bernoulli per inactive position, c only in expectation;
  gradient, momentum the top c of |score x (inactive)| over the *whole* tensor in the order of the
                    original's `torch.sort(..., descending=True)` call, ties included (on the CPU a
                    fixed order), active positions among them. Where fewer than
                    c inactive positions score above 0 (a fully frozen layer; head rows whose
                    moments stay 0), some picks land on active positions and are lost, so the
                    mask shrinks: kept = active - pruned + (picks that were inactive).
"""

from __future__ import annotations

import math

import torch

GROWTH_MODES = ("random", "unfired", "gradient", "momentum")
GROWTH_ALIASES = {"random_unfired": "unfired"}
ADAM_EPS = 1e-8


def canonical_growth(mode: str) -> str:
    return GROWTH_ALIASES.get(mode, mode)


def prune_fraction(step: int, total_steps: int, initial: float, final: float) -> float:
    """Cosine annealing from `initial` (step 0) to `final` (step `total_steps`)."""
    return final + (initial - final) * (1 + math.cos(math.pi * step / max(total_steps, 1))) / 2


@torch.no_grad()
def drop_smallest(weight: torch.Tensor, mask: torch.Tensor, rate: float) -> tuple[torch.Tensor, int]:
    """DST's drop step on one layer: the mask without its smallest-magnitude connections, and how many went."""
    active = nnz(mask)
    q = math.ceil(rate * active)
    magnitude = (weight * mask).abs()
    if q == 0:
        kept = (magnitude != 0) & mask
    else:
        zeros = mask.numel() - active
        tau = magnitude.flatten().kthvalue(zeros + q).values
        kept = (magnitude > tau) & mask
    return kept, active - nnz(kept)


@torch.no_grad()
def grow(
    mode: str,
    kept: torch.Tensor,
    count: int,
    *,
    generator: torch.Generator,
    exact: bool,
    scores: torch.Tensor | None = None,
    fired: torch.Tensor | None = None,
    allowed: torch.Tensor | None = None,
) -> torch.Tensor:
    """`kept` plus `count` connections chosen by `mode` among the inactive (and `allowed`) positions."""
    mode = canonical_growth(mode)
    candidates = ~kept if allowed is None else ~kept & allowed
    if count <= 0:
        return kept
    if mode in ("gradient", "momentum"):
        if scores is None:
            raise ValueError(f"{mode} growth needs scores")
        if exact:
            return kept | top_scores(scores.abs(), candidates, count)
        return kept | top_by_sort(scores, candidates, count)
    if mode == "random":
        return kept | random_choice(candidates, count, generator, exact)
    if mode == "unfired":
        if fired is None:
            raise ValueError("unfired growth needs the fired set")
        unfired = candidates & ~fired
        available = nnz(unfired)
        if count <= available:
            return kept | random_choice(unfired, count, generator, exact=True)
        # Every unfired position, then the rest among the candidates still off (Bernoulli if not exact).
        return kept | unfired | random_choice(candidates & fired, count - available, generator, exact)
    raise ValueError(f"unknown growth mode {mode!r}; expected one of {GROWTH_MODES}")


def random_choice(pool: torch.Tensor, count: int, generator: torch.Generator, exact: bool) -> torch.Tensor:
    """`count` positions of `pool` uniformly without replacement (exact: those with the largest
    i.i.d. uniform keys), or an independent Bernoulli(count / |pool|) at every position of `pool`."""
    size = nnz(pool)
    if size == 0 or count <= 0:
        return torch.zeros_like(pool)
    keys = torch.rand(pool.shape, generator=generator, device=pool.device)
    if not exact:
        return pool & (keys < count / size)
    return top_scores(keys, pool, count)


def top_scores(scores: torch.Tensor, pool: torch.Tensor, count: int) -> torch.Tensor:
    """The `count` positions of `pool` with the largest scores (ties: lower flat index first).

    Linear time: a k-th value threshold instead of a sort, so an update of a large layer stays cheap.
    """
    count = min(count, nnz(pool))
    if count <= 0:
        return torch.zeros_like(pool)
    flat = scores.masked_fill(~pool, -math.inf).flatten()
    threshold = flat.kthvalue(flat.numel() - count + 1).values
    chosen = flat > threshold
    ties = (flat == threshold).nonzero().flatten()[: count - nnz(chosen)]
    chosen[ties] = True
    return chosen.view_as(pool)


def top_by_sort(scores: torch.Tensor, candidates: torch.Tensor, count: int) -> torch.Tensor:
    """The first `count` positions of the original code's descending sort of |scores x candidates|
    over the whole tensor: the same call on the same values and layout, so that ties (the zeros of
    frozen layers, unreached head rows and every non-candidate) fall in torch.sort's order."""
    _, order = torch.sort((scores * candidates.to(scores.dtype)).abs().flatten(), descending=True)
    chosen = torch.zeros(scores.numel(), dtype=torch.bool, device=scores.device)
    chosen[order[:count]] = True
    return chosen.view(scores.shape)


def nnz(mask: torch.Tensor) -> int:
    return int(torch.count_nonzero(mask))


def growth_scores(mode: str, param: torch.Tensor, optimizer: torch.optim.Optimizer) -> torch.Tensor | None:
    """What `gradient` and `momentum` growth rank by; None for the random modes."""
    mode = canonical_growth(mode)
    if mode == "gradient":
        return param.grad if param.grad is not None else torch.zeros_like(param)
    if mode != "momentum":
        return None
    state = optimizer.state.get(param, {})
    if "exp_avg" in state:
        return state["exp_avg"] / (state["exp_avg_sq"].sqrt() + ADAM_EPS)
    buffer = state.get("momentum_buffer")
    return buffer if buffer is not None else torch.zeros_like(param)
