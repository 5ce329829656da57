"""`dst`: continual learning with dynamic sparse training (CL-with-DST, CPAL 2024).

Per task: draw a sparse mask (uniform or ERK at `density`) over every conv and linear weight,
train the masked network on the task's classes while the topology is updated every
`update_frequency` steps (magnitude pruning with a cosine-annealed fraction, then regrowth by
`growth`), with the gradients of weights owned by earlier tasks zeroed. The chosen epoch's
weights are merged into the shared network (where the task's network is zero, the shared value
is kept) and its mask is saved as the task's masks file. Task j is answered by the shared
network times mask j; class-IL (task unknown) uses the shared network as is, i.e. the union of
every task's subnetwork.

`protocol: faithful` keeps what moves the published numbers: `acc_til` is the argmax over all
C logits of expert j (the paper's "task-incremental" accuracy) on randomly augmented test
batches, the epoch with the best training accuracy (all-logit argmax) is kept, free weights of
tasks >= 1 start at 0, regrowth counts as the original code does (random: right only in
expectation; gradient and momentum: the top scores over the whole tensor, so a layer with fewer
non-zero scores than connections to regrow, e.g. one fully frozen by earlier tasks, shrinks),
grown weights that an earlier task owns stay dead (0) until the merge, and the mask spans the
whole classifier, so head rows of other tasks' classes become "used" and frozen (with ERK often
the whole head).
`protocol: standard` corrects these: task-IL logits only, no test-time augmentation, the epoch
with the best validation accuracy (the last epoch when `scenario.validation_fraction` is 0),
fresh initial values for free weights, exact regrowth counts, re-activated earlier-task weights
read their shared value, and each task's mask covers only its own classifier rows.

Each task also writes its topology trace (`topology.parquet` beside the model): the initial
mask and every update, per layer (step, pruned, grown, active, density, reused).
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import torch
import torch.nn as nn

from ..data import get_dataset
from ..engine import DeviceData, autocast, make_optimizer, make_scheduler, predict_logits
from ..engine.loop import LossFn, sliced_cross_entropy
from ..plans.dst import DSTArgs
from ..sparse import (
    MaskFile,
    apply_masks,
    layer_densities,
    maskable_parameters,
    merge_into,
    random_masks,
    reinitialise,
    row_mask,
)
from ..sparse.stats import evaluation_columns, format_statistics, mask_statistics
from ..sparse.trainer import DSTSchedule, SparseTrainer
from .base import EvalContext, Method, TaskContext, TaskResult, register_method
from .finetune import loss_range
from .training import fit

CLASSIFIER = "classifier.weight"


@register_method("dst")
class DST(Method):
    def train_task(self, ctx: TaskContext) -> TaskResult:
        args, cfg = DSTArgs.of(ctx.run), ctx.run.train
        faithful = ctx.run.protocol == "faithful"
        model = ctx.model
        params = maskable_parameters(model)
        shared = {name: value.detach().clone() for name, value in model.state_dict().items()}
        prev = MaskFile.from_dict(ctx.prev_masks) if ctx.task > 0 else None
        used = prev.used() if prev is not None else {}
        frozen = used if args.isolate else {}
        masks, allowed = initial_masks(ctx, args, params, head_rows_only=not faithful)
        if not faithful and prev is not None:
            reinitialise(params, {name: masks[name] & ~used[name] for name in masks}, ctx.generator)

        idx = ctx.train_index([ctx.task])
        steps_per_epoch = math.ceil(len(idx) / cfg.batch_size)
        optimizer = make_optimizer(model.parameters(), cfg)
        trainer = SparseTrainer(
            params,
            masks,
            optimizer,
            ctx.generator,
            schedule=DSTSchedule(
                growth=args.growth,
                update_frequency=args.update_frequency,
                total_steps=steps_per_epoch * cfg.epochs,
                prune_rate=args.prune_rate,
                prune_rate_min=args.prune_rate_min,
                exact=not faithful,
            ),
            frozen=frozen,
            allowed=allowed,
            frozen_values=None if faithful else {name: shared[name] for name in frozen},
        )
        ctx.log(f"task {ctx.task}: {args.init} masks at density {args.density}, {trainer.describe()}")
        lo, hi = loss_range(ctx)
        rows = fit(
            ctx,
            idx,
            all_logit_accuracy(lo, hi) if faithful else sliced_cross_entropy(lo, hi),
            optimizer,
            make_scheduler(optimizer, cfg),
            epochs=cfg.epochs,
            batch_size=cfg.batch_size,
            augment=cfg.augment,
            after_backward=trainer.after_backward,
            after_step=trainer.after_step,
            method_state=trainer,
            score=(lambda stats: stats.accuracy) if faithful else validation_score(ctx),
        )
        for row in rows:
            row.update(trainer.epoch_log(row["epoch"], steps_per_epoch))
        trained = model.state_dict()
        merged = merge_into(shared, trained) if prev is not None else trained
        mask_file = MaskFile.after(trainer.masks, ctx.task, prev.owner if prev is not None else None)
        stats = mask_statistics(mask_file, ctx.task)
        for line in format_statistics(stats):
            ctx.log(line)
        return TaskResult(
            model_state=merged,
            masks={**mask_file.to_dict(), "stats": stats},
            log_rows=rows,
            tables={"topology": trainer.topology(steps_per_epoch)},
        )

    def model_for(self, ctx: EvalContext, task: int | None) -> nn.Module:
        """Expert `task`: the shared network times that task's mask; class-IL: the shared network."""
        if task is None:
            return ctx.model
        model = ctx.model_copy()
        apply_masks(maskable_parameters(model), ctx.masks[task]["mask"])
        return model

    def evaluate(self, ctx: EvalContext) -> list[dict[str, Any]]:
        rows = faithful_rows(self, ctx) if ctx.run.protocol == "faithful" else super().evaluate(ctx)
        for row in rows:
            row.update(evaluation_columns(ctx.masks, row["task_eval"]))
        return rows


def initial_masks(
    ctx: TaskContext, args: DSTArgs, params: dict[str, nn.Parameter], *, head_rows_only: bool
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The task's random masks and where they may grow. With `head_rows_only` the classifier mask
    (and its ERK share, computed for those rows) covers only the rows of this task's classes."""
    shapes = {name: tuple(p.shape) for name, p in params.items()}
    allowed: dict[str, torch.Tensor] = {}
    if head_rows_only and CLASSIFIER in params:
        rows = ctx.scenario.tasks[ctx.task]
        allowed[CLASSIFIER] = row_mask(params[CLASSIFIER], rows)
        shapes[CLASSIFIER] = (len(rows), *shapes[CLASSIFIER][1:])
    masks = random_masks(params, layer_densities(args.init, shapes, args.density), ctx.generator)
    for name, region in allowed.items():
        masks[name] &= region
    return masks, allowed


def all_logit_accuracy(lo: int, hi: int) -> LossFn:
    """Cross-entropy on the logit slice [lo, hi); accuracy by argmax over all logits (as published)."""
    sliced = sliced_cross_entropy(lo, hi)

    def loss_fn(logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loss, _ = sliced(logits, y)
        return loss, (logits.argmax(1) == y).sum()

    return loss_fn


def validation_score(ctx: TaskContext):
    """Task-IL accuracy of the current network on the task's validation images; None (keep the
    last epoch) without a validation split."""
    val = ctx.val_index([ctx.task])
    if len(val) == 0:
        ctx.log(f"task {ctx.task}: no validation split (scenario.validation_fraction = 0): keeping the last epoch")
        return None
    labels = torch.as_tensor(ctx.scenario.tasks[ctx.task], device=ctx.device)

    def score(_stats) -> float:
        logits = predict_logits(ctx.model, ctx.data, val, ctx.run.train.eval_batch_size)
        return 100.0 * float((labels[logits[:, labels].argmax(1)] == ctx.data.labels[val]).float().mean())

    return score


@torch.no_grad()
def faithful_rows(method: DST, ctx: EvalContext) -> list[dict[str, Any]]:
    """Accuracy as the paper's code measures it: shuffled test batches with the training
    augmentation; `acc_til` argmax over all logits of expert j, `acc_cil` over the seen classes."""
    spec = get_dataset(ctx.run.dataset)
    augment = ctx.run.train.augment
    data = replace(ctx.data, crop_padding=spec.crop_padding, hflip=spec.hflip) if augment else ctx.data
    seen = ctx.seen_labels()
    rows = []
    for j in range(ctx.task + 1):
        idx = ctx.test_index(j)
        til = shuffled_hits(method.model_for(ctx, j), data, idx, ctx, augment, limit=None)
        cil = shuffled_hits(ctx.model, data, idx, ctx, augment, limit=seen)
        rows.append({"task_trained": ctx.task, "task_eval": j, "n": int(len(idx)), "acc_til": til, "acc_cil": cil})
    return rows


def shuffled_hits(
    model: nn.Module, data: DeviceData, idx: torch.Tensor, ctx: EvalContext, augment: bool, limit: int | None
) -> float:
    """Accuracy (%) over shuffled batches; with batch-statistics BN the batch composition matters."""
    model.eval()
    hits = 0
    for x, y in data.batches(idx, ctx.run.train.eval_batch_size, ctx.generator, shuffle=True, augment=augment):
        with autocast(ctx.device):
            logits = model(x).float()
        hits += int((logits[:, :limit].argmax(1) == y).sum())
    return 100.0 * hits / len(idx) if len(idx) else float("nan")
