"""`tickets_td`: top-down lifelong pruning (Lifelong Tickets, upstream main_TD.py).

Per task t (stages of one task, each its own job):
  retrieve   (t >= 1) unlabeled images and teacher logits from task t-1's best model;
  train      task t by lottery teaching, under the ticket of task t-1 after its rewind (task 0:
             dense from the seeded init, whose conv weights it saves as `init.pt`); writes the
             best-validation model (`model.pt`, the next retrieval's teacher) and the last epoch (`last.pt`);
  prune<r>   r = 1..n_t with n_t = `prune_schedule[t]`: remove `prune_fraction` of the remaining
             conv weights by global magnitude; rounds r < n_t then retrain `retrain_epochs` at
             `retrain_lr` with task t's loss. prune<n_t> is task t's ticket (the model evaluated
             after task t; its density is (1 - fraction)^(n_0 + ... + n_t));
  final      (last task) rewind and retrain the last task once more under the last ticket.
The next task's `train` (and `final`) starts from the ticket with its conv weights rewound
(`rewind`): `zero` to the seeded init, `best` to task t's best-validation weights, `rand` to a
fresh draw, `none` keeps them; the mask is kept, BatchNorm and both head sets are never rewound.

Protocols: `faithful` continues from the last epoch of `train` and of each retraining round while
the best-validation model teaches (upstream). Its first prune of a task t >= 1 ranks the magnitudes
of `train`'s best-validation weights (`--input ranked=`), as upstream's pruning hook does: it keeps
the weights of the last forward pass, made with the best checkpoint before the last epoch's weights
were loaded beneath it; task 0 and later rounds rank the weights they continue from. `standard`
prunes and continues from the best-validation model of each. Retraining between prunes: faithful
carries one SGD (its momentum) across a task's rounds in the rounds' model files, as upstream;
standard starts each round with a fresh SGD.
"""

from __future__ import annotations

import torch

from ..errors import ConfigError, DataError
from ..plans.tickets import TDArgs
from ..sparse import apply_masks, reinitialise
from ..sparse.imp import Masks, conv_parameters, dense_masks, prune_smallest_global, remaining_percent
from .base import TaskContext, TaskResult, register_method
from .tickets import (
    TicketsMethod,
    best_state,
    current_masks,
    full_schedule,
    retrain_schedule,
    train_current_task,
    validation_score,
)


@torch.no_grad()
def rewind(ctx: TaskContext, mode: str, masks: Masks) -> None:
    """Rewind the conv weights of `ctx.model` (the ticket) and re-apply its mask."""
    params = conv_parameters(ctx.model)
    if mode in ("zero", "best"):
        if "rewind" not in ctx.inputs:
            raise ConfigError(f"stage {ctx.stage}: method_args.rewind {mode} needs --input rewind=<weights file>")
        source = ctx.stage_input("rewind", "weights")["state_dict"]
        for name, param in params.items():
            param.copy_(source[name])
    elif mode == "rand":
        reinitialise(params, dense_masks(params), ctx.generator)
    apply_masks(params, masks)
    ctx.log(f"task {ctx.task}: conv weights rewound ({mode}), {remaining_percent(masks):.2f}% kept")


def ranked_weights(ctx: TaskContext, round_: int, params: dict[str, torch.Tensor]):
    """The conv weights a prune round ranks and what they are: faithful's first prune of a task
    t >= 1 ranks `train`'s best-validation weights while the model continues from the last epoch."""
    faithful = ctx.run.protocol == "faithful"
    if faithful and round_ == 1 and ctx.task >= 1:
        best = ctx.stage_input("ranked", "weights")["state_dict"]
        return {name: best[name] for name in params}, "best-validation"
    if faithful:
        return params, "last-epoch"
    return params, "best-validation"


def carried_optimizer(ctx: TaskContext, round_: int) -> dict | None:
    """Faithful retraining rounds share one SGD per task, as upstream's prune loop does: round 1
    starts it fresh, each later round continues with the momentum the round before left in its
    model file (`extra.optimizer`)."""
    if round_ == 1:
        return None
    if "optimizer" not in ctx.prev_extra:
        raise DataError(
            f"stage {ctx.stage} of task {ctx.task}: the previous prune round's model file has no optimizer state"
        )
    return ctx.prev_extra["optimizer"]


@register_method("tickets_td")
class TicketsTD(TicketsMethod):
    stages = ("retrieve", "train", "prune", "final")
    rounds = ("prune",)
    args_type = TDArgs

    def stage_train(self, ctx: TaskContext, args: TDArgs, _round: int) -> TaskResult:
        files, masks = {}, None
        if ctx.task == 0:
            files["init.pt"] = {"state_dict": {n: p.detach().clone() for n, p in conv_parameters(ctx.model).items()}}
        else:
            masks = current_masks(ctx)
            rewind(ctx, args.rewind, masks)
        trained = train_current_task(
            ctx, args, full_schedule(ctx), masks=masks, score=validation_score(ctx), restore_best=False
        )
        files["last.pt"] = {"state_dict": ctx.model.state_dict()}
        return TaskResult(
            model_state=best_state(trained, ctx),
            masks={"mask": masks} if masks is not None else {},
            extra={"provenance": trained.provenance},
            log_rows=trained.rows,
            files=files,
        )

    def stage_prune(self, ctx: TaskContext, args: TDArgs, round_: int) -> TaskResult:
        rounds = args.prune_schedule[ctx.task]
        if round_ > rounds:
            raise ConfigError(
                f"--stage prune{round_}: method_args.prune_schedule gives task {ctx.task} {rounds} prunes"
            )
        params = conv_parameters(ctx.model)
        ranked, source = ranked_weights(ctx, round_, params)
        masks = prune_smallest_global(ranked, current_masks(ctx), args.prune_fraction)
        apply_masks(params, masks)
        remaining = remaining_percent(masks)
        ctx.log(
            f"task {ctx.task}: prune {round_}/{rounds} ranked the {source} weights,"
            f" {remaining:.2f}% of the conv weights remain"
        )
        rows = [{"task": ctx.task, "stage": ctx.stage, "remaining_weights": remaining, "ranked": source}]
        extra: dict = {"provenance": {}, "ranked": source}
        if round_ < rounds:
            faithful = ctx.run.protocol == "faithful"
            trained = train_current_task(
                ctx,
                args,
                retrain_schedule(args),
                masks=masks,
                score=validation_score(ctx),
                restore_best=not faithful,
                optimizer_state=carried_optimizer(ctx, round_) if faithful else None,
            )
            rows = [{**row, "ranked": source} for row in trained.rows]
            extra["provenance"] = trained.provenance
            if faithful:
                extra["optimizer"] = trained.optimizer
        return TaskResult(model_state=ctx.model.state_dict(), masks={"mask": masks}, extra=extra, log_rows=rows)

    def stage_final(self, ctx: TaskContext, args: TDArgs, _round: int) -> TaskResult:
        last = ctx.scenario.spec.num_tasks - 1
        if ctx.task != last:
            raise ConfigError(f"--stage final: only the last task ({last}) is retrained, got task {ctx.task}")
        masks = current_masks(ctx)
        rewind(ctx, args.rewind, masks)
        trained = train_current_task(ctx, args, full_schedule(ctx), masks=masks, score=validation_score(ctx))
        return TaskResult(
            model_state=ctx.model.state_dict(),
            masks={"mask": masks},
            extra={"provenance": trained.provenance},
            log_rows=trained.rows,
        )
