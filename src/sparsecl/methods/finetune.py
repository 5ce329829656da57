"""`finetune`: train each task in turn with no protection against forgetting (the lower bound).

The loss covers the classes seen so far (`train.loss_scope: seen`, default) or the current
task's classes only (`task`). In a data-incremental scenario task t is data step t: it trains
on chunk t only, starting from the previous step's model (every class in every step).
"""

from __future__ import annotations

import torch

from ..engine import make_optimizer, make_scheduler
from ..engine.loop import sliced_cross_entropy
from .base import Method, TaskContext, TaskResult, register_method
from .training import fit


def loss_range(ctx: TaskContext) -> tuple[int, int]:
    """Logit slice of the loss: the current task's labels, or every label seen so far."""
    labels = ctx.scenario.tasks[ctx.task]
    lo = labels[0] if ctx.run.train.loss_scope == "task" else 0
    return lo, labels[-1] + 1


@register_method("finetune")
class Finetune(Method):
    def train_task(self, ctx: TaskContext) -> TaskResult:
        return train_dense(ctx, tasks=[ctx.task], logits=loss_range(ctx))


def training_images(ctx: TaskContext, tasks: list[int]) -> torch.Tensor:
    """The training images of `tasks`: their classes' images, or (data-incremental) their chunks."""
    if ctx.scenario.spec.kind == "data":
        return torch.cat([ctx.chunk_index(t) for t in tasks])
    return ctx.train_index(tasks)


def train_dense(ctx: TaskContext, tasks: list[int], logits: tuple[int, int]) -> TaskResult:
    """Plain dense training of `ctx.model` on the training images of `tasks`, CE over `logits`."""
    cfg = ctx.run.train
    optimizer = make_optimizer(ctx.model.parameters(), cfg)
    rows = fit(
        ctx,
        training_images(ctx, tasks),
        sliced_cross_entropy(*logits),
        optimizer,
        make_scheduler(optimizer, cfg),
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        augment=cfg.augment,
    )
    return TaskResult(model_state=ctx.model.state_dict(), log_rows=rows)
