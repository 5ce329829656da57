"""`packnet`: PackNet (Mallya and Lazebnik, CVPR 2018), one network packed with a subnetwork per task.

Per task t, two jobs. `train`: train the weights no earlier task owns ("free") on task t's
classes for `train.epochs`. `prune`: prune `prune_ratio` of them in each layer by magnitude (back
to 0, and free again for later tasks); retrain the kept ones for `retrain_epochs`; they then
belong to task t and never move again. Task j is answered by the weights of tasks 0..j (its masks
file's `mask`), with the classifier rows of its own classes (task-incremental inference); class-IL
(task unknown) uses the whole network.

As in the paper: the classifier rows of a task's classes are its head (weights and bias), trained
in its task and never pruned; every other bias and the normalisation layers (affine parameters and
running statistics) are learned with task 0 and frozen afterwards, so while a later task trains,
batch normalisation uses task 0's statistics. See docs/methods/packnet.md.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn as nn

from ..config import RunConfig
from ..engine import make_optimizer, make_scheduler
from ..engine.loop import sliced_cross_entropy
from ..errors import ConfigError
from ..plans.packnet import STAGE_KEYS, PackNetArgs, check_scenario
from ..scenarios import Scenario
from ..seeds import seed_stream
from ..sparse import MaskFile, apply_masks, maskable_parameters, row_mask
from ..sparse.masks import FREE
from ..sparse.stats import evaluation_columns, format_statistics, mask_statistics
from .base import EvalContext, Method, TaskContext, TaskResult, register_method
from .finetune import loss_range
from .training import fit

HEAD = "classifier"  # the module whose rows are the per-class outputs (every backbone names it so)
NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_RETRAIN_ORDER = 10  # purpose of the prune stage's own stream of batch order and augmentation


@register_method("packnet")
class PackNet(Method):
    stages = tuple(STAGE_KEYS)

    def check_stage(self, run: RunConfig, scenario: Scenario, task: int, stage: str) -> None:
        super().check_stage(run, scenario, task, stage)
        check_scenario(scenario.spec.kind)

    def train_stage(self, ctx: TaskContext) -> TaskResult:
        weights = Weights.of(ctx)
        with frozen_statistics(ctx.model, frozen=ctx.task > 0):
            result = train_free(ctx, weights) if ctx.stage == "train" else prune(ctx, weights)
        for row in result.log_rows:
            row["stage"] = ctx.stage
        return result

    def model_for(self, ctx: EvalContext, task: int | None) -> nn.Module:
        """Task `task`: the weights that tasks 0..task own (by the latest owner map); class-IL: the whole network."""
        if task is None:
            return ctx.model
        owned = {name: owner <= task for name, owner in ctx.masks[-1]["owner"].items()}  # FREE is above every task
        model = ctx.model_copy()
        apply_masks(maskable_parameters(model), owned)
        return model

    def evaluate(self, ctx: EvalContext) -> list[dict[str, Any]]:
        """The default rows, with each task's mask statistics."""
        return [row | evaluation_columns(ctx.masks, row["task_eval"]) for row in super().evaluate(ctx)]


@dataclass(frozen=True)
class Weights:
    """Task t's share of the network before its prune: what earlier tasks own (the owner map both
    stages start from, which `train` passes on unchanged), the free weights and its head rows."""

    owner: dict[str, torch.Tensor]  # the earlier tasks' owner map (all FREE for task 0)
    used: dict[str, torch.Tensor]  # owned by an earlier task
    free: dict[str, torch.Tensor]  # every maskable weight but the head: nobody's yet
    own_head: dict[str, torch.Tensor]  # the classifier rows (weight and bias) of task t's classes

    @classmethod
    def of(cls, ctx: TaskContext) -> Weights:
        params = maskable_parameters(ctx.model)
        head = f"{HEAD}.weight"
        if head not in params:
            raise ConfigError(f"backbone {ctx.run.backbone}: packnet needs a linear `{HEAD}` head")
        if ctx.prev_masks:
            owner = MaskFile.from_dict(ctx.prev_masks).owner
        else:
            owner = {name: torch.full_like(p, FREE, dtype=torch.uint8) for name, p in params.items()}
        used = {name: held != FREE for name, held in owner.items()}
        rows = ctx.scenario.tasks[ctx.task]
        return cls(
            owner=owner,
            used=used,
            free={name: ~used[name] for name in params if name != head},
            own_head={n: row_mask(p, rows) for n, p in ctx.model.named_parameters() if n.startswith(f"{HEAD}.")},
        )


def train_free(ctx: TaskContext, weights: Weights) -> TaskResult:
    """Stage `train`: the free weights and the task's head rows (in task 0 also every bias and
    normalisation parameter) for `train.epochs`. Its masks file: `mask` = every weight the trained
    network uses, `owner` = the earlier tasks' owner map, unchanged."""
    trainable = trainable_positions(ctx.model, {**weights.free, **weights.own_head}, shared_too=ctx.task == 0)
    log = train_phase(ctx, trainable, ctx.run.train.epochs)
    mask = {name: weights.used[name] | trainable[name] for name in weights.used}
    return TaskResult(model_state=ctx.model.state_dict(), masks=MaskFile(mask, weights.owner).to_dict(), log_rows=log)


def prune(ctx: TaskContext, weights: Weights) -> TaskResult:
    """Stage `prune`: prune `prune_ratio` of each layer's free weights, retrain the kept ones for
    `retrain_epochs`, and give them, with the task's head rows, to the task (the owner map)."""
    args = PackNetArgs.of(ctx.run)
    ctx.generator.manual_seed(seed_stream(ctx.run.seed, ctx.task, _RETRAIN_ORDER))
    params = maskable_parameters(ctx.model)
    kept = {name: keep_largest(params[name], free, args.prune_ratio) for name, free in weights.free.items()}
    retrained = trainable_positions(ctx.model, {**kept, **weights.own_head}, shared_too=ctx.task == 0)
    log = train_phase(ctx, retrained, args.retrain_epochs)
    mask = {name: weights.used[name] | (kept[name] if name in kept else weights.own_head[name]) for name in params}
    mask_file = MaskFile.after(mask, ctx.task, weights.owner)
    stats = mask_statistics(mask_file, ctx.task)
    ctx.log(f"task {ctx.task}: pruned {args.prune_ratio:g} of the free weights per layer")
    for line in format_statistics(stats):
        ctx.log(line)
    return TaskResult(model_state=ctx.model.state_dict(), masks={**mask_file.to_dict(), "stats": stats}, log_rows=log)


def trainable_positions(
    model: nn.Module, positions: dict[str, torch.Tensor], *, shared_too: bool
) -> dict[str, torch.Tensor]:
    """Where each parameter may move in this task: the given positions; every other parameter
    (biases, normalisation) as a whole in task 0 (`shared_too`), nowhere later."""
    return {
        name: positions[name] if name in positions else torch.full_like(p, shared_too, dtype=torch.bool)
        for name, p in model.named_parameters()
    }


@torch.no_grad()
def keep_largest(weight: torch.Tensor, free: torch.Tensor, ratio: float) -> torch.Tensor:
    """The free positions kept after pruning `ratio` of them by magnitude; the pruned ones are set
    to 0. Exactly floor(ratio * n + 1/2) of the n free weights go (ties: the earlier position first)."""
    magnitudes = weight.detach().abs()[free]
    pruned = math.floor(ratio * magnitudes.numel() + 0.5)
    keep = torch.ones_like(magnitudes, dtype=torch.bool)
    keep[torch.argsort(magnitudes, stable=True)[:pruned]] = False
    kept = torch.zeros_like(free)
    kept[free] = keep
    weight.masked_fill_(free & ~kept, 0.0)
    return kept


class Isolation:
    """Only `trainable` positions move: other gradients are zeroed before the step and, after it,
    every other position is put back to its value at the start, so that neither weight decay nor
    optimiser momentum can move a weight an earlier task (or the prune) fixed."""

    def __init__(self, model: nn.Module, trainable: dict[str, torch.Tensor]) -> None:
        self.params = dict(model.named_parameters())
        self.fixed = {name: ~allowed for name, allowed in trainable.items() if not bool(allowed.all())}
        self.start = {name: self.params[name].detach().clone() for name in self.fixed}

    def after_backward(self) -> None:
        for name, fixed in self.fixed.items():
            grad = self.params[name].grad
            if grad is not None:
                grad.masked_fill_(fixed, 0.0)

    @torch.no_grad()
    def after_step(self) -> None:
        for name, fixed in self.fixed.items():
            param = self.params[name]
            param.copy_(torch.where(fixed, self.start[name], param))


def train_phase(ctx: TaskContext, trainable: dict[str, torch.Tensor], epochs: int) -> list[dict[str, Any]]:
    """The stage's resumable training of the positions `trainable` on the task's images, with the
    `train` schedule compressed into `epochs`; the last epoch is kept."""
    cfg = ctx.run.train
    isolation = Isolation(ctx.model, trainable)
    optimizer = make_optimizer(ctx.model.parameters(), cfg)
    return fit(
        ctx,
        ctx.train_index([ctx.task]),
        sliced_cross_entropy(*loss_range(ctx)),
        optimizer,
        make_scheduler(optimizer, replace(cfg, epochs=epochs)),
        epochs=epochs,
        batch_size=cfg.batch_size,
        augment=cfg.augment,
        after_backward=isolation.after_backward,
        after_step=isolation.after_step,
    )


@contextmanager
def frozen_statistics(model: nn.Module, *, frozen: bool) -> Iterator[None]:
    """With `frozen`, batch-norm layers that track running statistics normalise with them (and
    leave them as they are) even while the network trains."""
    handles = []
    if frozen:
        for module in model.modules():
            if isinstance(module, NORMS) and module.track_running_stats:
                handles.append(module.register_forward_pre_hook(lambda m, _inputs: m.train(False)))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
