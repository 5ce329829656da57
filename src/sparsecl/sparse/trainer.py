"""One task's masks while it trains: isolation, masking after every step, DST topology updates.

The method hands `after_backward` and `after_step` to the shared epoch loop and the trainer
itself as its `method_state`: the masks, the fired set, the step counter and the update log go
into the resume file beside the model and the optimiser moments, so a task resumed after a
kill ends with the topology of an uninterrupted run. The prune fraction is a pure function of
the step counter, so the schedule needs no state of its own.

The update log holds counts only (per update and layer: pruned, grown, active, reused), never
masks, so it costs a few integers per layer and update in memory and in the resume file;
`topology()` turns it into the task's topology trace.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .dst import canonical_growth, drop_smallest, grow, growth_scores, nnz, prune_fraction
from .masks import freeze_used_gradients, mask_factors


@dataclass(frozen=True)
class DSTSchedule:
    growth: str  # random | unfired (= random_unfired) | gradient | momentum
    update_frequency: int  # optimiser steps between topology updates
    total_steps: int  # optimiser steps in the task (the cosine period of the prune fraction)
    prune_rate: float = 0.5
    prune_rate_min: float = 0.005
    exact: bool = True  # regrow exactly as many as were pruned (False: only in expectation)


class SparseTrainer:
    """Keeps W = W * M for the task's masks M and, with a schedule, updates M every f steps.

    `frozen` marks weights owned by earlier tasks (their gradients are zeroed); `allowed`
    restricts where a tensor's mask may grow; `frozen_values`, if given, is what a frozen
    position reads when growth re-activates it (the shared network's value), otherwise it stays
    at the 0 it was masked to and is dead until the merge (the original code's behaviour).
    """

    def __init__(
        self,
        params: dict[str, torch.nn.Parameter],
        masks: dict[str, torch.Tensor],
        optimizer: torch.optim.Optimizer,
        generator: torch.Generator,
        *,
        schedule: DSTSchedule | None = None,
        frozen: dict[str, torch.Tensor] | None = None,
        allowed: dict[str, torch.Tensor] | None = None,
        frozen_values: dict[str, torch.Tensor] | None = None,
    ) -> None:
        self.params = params
        self.masks = masks
        self.fired = {name: mask.clone() for name, mask in masks.items()}
        self.optimizer = optimizer
        self.generator = generator
        self.schedule = schedule
        self.frozen = frozen or {}
        self.allowed = allowed or {}
        self.frozen_values = frozen_values
        self.step = 0
        self.history: list[dict[str, Any]] = []  # per update: step, prune rate, per-layer counts
        self.initial = self.layer_counts(dict.fromkeys(masks, 0), dict.fromkeys(masks, 0))
        self.apply()

    @property
    def masks(self) -> dict[str, torch.Tensor]:
        """The task's current masks; assign a new dict to change them (an update, a resume), which
        also renews the multipliers that `apply` uses."""
        return self._masks

    @masks.setter
    def masks(self, masks: dict[str, torch.Tensor]) -> None:
        self._masks = dict(masks)
        self._factors = mask_factors(self.params, self._masks)

    def after_backward(self) -> None:
        freeze_used_gradients(self.params, self.frozen)

    @torch.no_grad()
    def after_step(self) -> None:
        self.apply()
        self.step += 1
        if self.schedule is not None and self.step % self.schedule.update_frequency == 0:
            self.update()

    @torch.no_grad()
    def apply(self) -> None:
        """W <- W * M, and SGD momentum buffers too (Adam's moments are left as they are), in one
        fused multiply: a step launches the same few kernels whatever the number of layers."""
        tensors, factors = [], []
        for name, factor in self._factors.items():
            param = self.params[name]
            tensors.append(param)
            factors.append(factor)
            buffer = self.optimizer.state.get(param, {}).get("momentum_buffer")
            if buffer is not None:
                tensors.append(buffer)
                factors.append(factor)
        if tensors:
            torch._foreach_mul_(tensors, factors)

    @torch.no_grad()
    def update(self) -> None:
        """Prune by magnitude and regrow, every tensor; pruned-then-regrown weights keep their value."""
        schedule = self.schedule
        assert schedule is not None
        rate = prune_fraction(self.step, schedule.total_steps, schedule.prune_rate, schedule.prune_rate_min)
        pruned, grown = {}, {}
        masks = dict(self.masks)
        for name, param in self.params.items():
            old = self.masks[name]
            kept, pruned[name] = drop_smallest(param, old, rate)
            new = grow(
                schedule.growth,
                kept,
                pruned[name],
                generator=self.generator,
                exact=schedule.exact,
                scores=growth_scores(schedule.growth, param, self.optimizer),
                fired=self.fired[name],
                allowed=self.allowed.get(name),
            )
            if self.frozen_values is not None and name in self.frozen:
                revived = new & ~old & self.frozen[name]
                param.copy_(torch.where(revived, self.frozen_values[name], param))
            masks[name] = new
            self.fired[name] = self.fired[name] | new
            grown[name] = nnz(new & ~kept)
        self.masks = masks
        self.apply()
        self.history.append({"step": self.step, "prune_rate": rate, "layers": self.layer_counts(pruned, grown)})

    def layer_counts(self, pruned: dict[str, int], grown: dict[str, int]) -> list[list[int]]:
        """[pruned, grown, active, reused] per layer, in parameter order; reused = active weights
        an earlier task owns."""
        counts = []
        for name, mask in self.masks.items():
            frozen = self.frozen.get(name)
            reused = nnz(mask & frozen) if frozen is not None else 0
            counts.append([pruned[name], grown[name], nnz(mask), reused])
        return counts

    def epoch_log(self, epoch: int, steps_per_epoch: int) -> dict[str, Any]:
        """Topology columns of an epoch's log row: updates, connections pruned and regrown, and the
        density of the mask at the epoch's end."""
        updates = [h for h in self.history if (h["step"] - 1) // steps_per_epoch == epoch]
        before = [h for h in self.history if h["step"] <= (epoch + 1) * steps_per_epoch]
        layers = before[-1]["layers"] if before else self.initial
        return {
            "dst_updates": len(updates),
            "pruned": sum(c[0] for h in updates for c in h["layers"]),
            "grown": sum(c[1] for h in updates for c in h["layers"]),
            "prune_rate": updates[-1]["prune_rate"] if updates else float("nan"),
            "density": sum(c[2] for c in layers) / sum(self.params[name].numel() for name in self.masks),
        }

    def topology(self, steps_per_epoch: int) -> list[dict[str, Any]]:
        """The topology trace: one row per layer for the initial mask (update 0, step 0), then per
        layer and update. `epoch` is the epoch an update happened in (-1: the initial mask)."""
        rows = []
        events = [{"step": 0, "prune_rate": float("nan"), "layers": self.initial}, *self.history]
        for update, event in enumerate(events):
            epoch = (event["step"] - 1) // steps_per_epoch if update else -1
            for name, (pruned, grown, active, reused) in zip(self.masks, event["layers"]):
                numel = self.params[name].numel()
                rows.append(
                    {"update": update, "step": event["step"], "epoch": epoch, "prune_rate": event["prune_rate"],
                     "layer": name, "numel": numel, "pruned": pruned, "grown": grown, "active": active,
                     "density": active / numel, "reused": reused}
                )  # fmt: skip
        return rows

    def describe(self) -> str:
        s = self.schedule
        if s is None:
            return "static masks"
        return f"DST: {canonical_growth(s.growth)} growth every {s.update_frequency} of {s.total_steps} steps"

    def state_dict(self) -> dict[str, Any]:
        return {"masks": self.masks, "fired": self.fired, "step": self.step, "history": self.history}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the topology; the update log only ever grows (restoring the selected epoch must
        not erase the record of the updates after it)."""
        self.masks = {name: mask.clone() for name, mask in state["masks"].items()}
        self.fired = {name: mask.clone() for name, mask in state["fired"].items()}
        self.step = int(state["step"])
        if len(state["history"]) >= len(self.history):
            self.history = [dict(entry) for entry in state["history"]]
