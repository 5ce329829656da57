"""`packnet`: PackNet (Mallya and Lazebnik, CVPR 2018), one network packed with a subnetwork per task.

Per task t, in the task's one job: train the weights no earlier task owns ("free") on task t's
classes for `train.epochs`; prune `prune_ratio` of them in each layer by magnitude (back to 0, and
free again for later tasks); retrain the kept ones for `retrain_epochs`; they then belong to task t
and never move again. Task j is answered by the weights of tasks 0..j (its masks file's `mask`),
with the classifier rows of its own classes (task-incremental inference); class-IL (task
unknown) uses the whole network.

As in the paper: the classifier rows of a task's classes are its head (weights and bias), trained
in its task and never pruned; every other bias and the normalisation layers (affine parameters and
running statistics) are learned with task 0 and frozen afterwards, so while a later task trains,
batch normalisation uses task 0's statistics. See docs/methods/packnet.md.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import torch
import torch.nn as nn

from ..engine import make_optimizer, make_scheduler
from ..engine.loop import sliced_cross_entropy
from ..errors import ConfigError
from ..io import remove_stale_temporaries
from ..plans.packnet import PackNetArgs
from ..sparse import MaskFile, apply_masks, maskable_parameters, row_mask
from ..sparse.stats import evaluation_columns, format_statistics, mask_statistics
from .base import EvalContext, Method, TaskContext, TaskResult, register_method
from .finetune import loss_range
from .training import fit

HEAD = "classifier"  # the module whose rows are the per-class outputs (every backbone names it so)
NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


@register_method("packnet")
class PackNet(Method):
    def train_task(self, ctx: TaskContext) -> TaskResult:
        args, cfg = PackNetArgs.of(ctx.run), ctx.run.train
        model = ctx.model
        params = maskable_parameters(model)
        head = f"{HEAD}.weight"
        if head not in params:
            raise ConfigError(f"backbone {ctx.run.backbone}: packnet needs a linear `{HEAD}` head")
        prev = MaskFile.from_dict(ctx.prev_masks) if ctx.task > 0 else None
        used = (
            prev.used() if prev is not None else {n: torch.zeros_like(p, dtype=torch.bool) for n, p in params.items()}
        )
        free = {name: ~used[name] for name in params if name != head}
        rows = ctx.scenario.tasks[ctx.task]
        own_head = {name: row_mask(p, rows) for name, p in model.named_parameters() if name.startswith(f"{HEAD}.")}
        trainable = trainable_positions(model, {**free, **own_head}, shared_too=ctx.task == 0)
        idx = ctx.train_index([ctx.task])
        loss = sliced_cross_entropy(*loss_range(ctx))
        with frozen_statistics(model, frozen=ctx.task > 0):
            log = train_phase(ctx, "train", idx, loss, trainable, cfg.epochs)
            kept = {name: keep_largest(params[name], positions, args.prune_ratio) for name, positions in free.items()}
            retrain = {**trainable, **kept}
            retrain_ctx = replace(ctx, resume_path=ctx.resume_path.with_name(f"{ctx.resume_path.stem}-retrain.pt"))
            remove_stale_temporaries(retrain_ctx.resume_path)  # an atomic resume save killed half-way
            log += train_phase(retrain_ctx, "retrain", idx, loss, retrain, args.retrain_epochs)
        retrain_ctx.resume_path.unlink(missing_ok=True)
        mask = {name: used[name] | (kept[name] if name in kept else own_head[name]) for name in params}
        mask_file = MaskFile.after(mask, ctx.task, prev.owner if prev is not None else None)
        stats = mask_statistics(mask_file, ctx.task)
        ctx.log(f"task {ctx.task}: pruned {args.prune_ratio:g} of the free weights per layer")
        for line in format_statistics(stats):
            ctx.log(line)
        return TaskResult(model_state=model.state_dict(), masks={**mask_file.to_dict(), "stats": stats}, log_rows=log)

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


def train_phase(
    ctx: TaskContext, phase: str, idx: torch.Tensor, loss, trainable: dict[str, torch.Tensor], epochs: int
) -> list[dict[str, Any]]:
    """One resumable training phase (its own resume file) of the positions `trainable`; the last epoch is kept."""
    cfg = ctx.run.train
    isolation = Isolation(ctx.model, trainable)
    optimizer = make_optimizer(ctx.model.parameters(), cfg)
    rows = fit(
        ctx,
        idx,
        loss,
        optimizer,
        make_scheduler(optimizer, replace(cfg, epochs=epochs)),
        epochs=epochs,
        batch_size=cfg.batch_size,
        augment=cfg.augment,
        after_backward=isolation.after_backward,
        after_step=isolation.after_step,
    )
    return [{**row, "phase": phase} for row in rows]


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
