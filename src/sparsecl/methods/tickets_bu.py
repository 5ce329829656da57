"""`tickets_bu`: bottom-up lifelong pruning (Lifelong Tickets, upstream main_BU.py).

A dense reference runs beside the ticket: its `train` stage of task t is the `tickets_cil` training
from the reference of task t-1, and it is the teacher of every retrieval. Stages:
  imp<r>     task 0 only, r = 1, 2, ...: prune `prune_fraction` of the remaining conv weights of round
             r-1 (round 0 = the dense reference) and retrain `retrain_epochs` at `retrain_lr`. The
             loop stops at the first round whose accuracy drop (the reference's accuracy minus the
             round's best) is >= `deacc` while the sparsity is >= `base_sparsity` %, keeping the
             round before it, or after `max_rounds` rounds, keeping the last;
  ticket     task t >= 1: the reference of task t-1 under the ticket so far, trained on task t;
             if the reference beats it by >= `accept_decay` points (mean accuracy over tasks 0..t),
             the ticket regrows;
  regrow<r>  task t >= 1: the reference of task t times (ticket + the largest-|w| fraction of the
             other weights: 80% of them at r = 1, 20% fewer each round), retrained; the same loop
             decides which round is kept. Regrowth never removes a ticket weight: masks only grow.
Each round's `decision.json` says whether another round follows and which round is kept; the
workflow reads it through Snakemake checkpoints.

Protocols: the stopping and regrowth rules read test accuracy under `faithful` (upstream) and
validation accuracy under `standard`. `faithful` also keeps the upstream regrowth exits (a strict
`>` break that keeps round r-1, and a `>=` loop exit that keeps round r, measured at the sparsity
after the next prune) and continues each round from its last epoch; `standard` uses one rule for
both loops and continues from each round's best epoch.
"""

from __future__ import annotations

import copy
from typing import Any

from ..errors import ConfigError
from ..plans.tickets import BUArgs
from ..sparse import apply_masks
from ..sparse.imp import conv_parameters, dense_masks, prune_count, prune_smallest_global, remaining_percent
from .base import TaskContext, TaskResult, register_method
from .tickets import (
    TicketsMethod,
    current_masks,
    full_schedule,
    retrain_schedule,
    stopping_split,
    train_current_task,
    validation_score,
)


def imp_decision(round_: int, drop: float, sparsity: float, args: BUArgs) -> dict[str, Any]:
    """After IMP round `round_`: stop (keeping the round before) once the drop and the sparsity both reach their bounds."""
    if drop >= args.deacc and sparsity >= args.base_sparsity:
        return {"stop": True, "kept": round_ - 1}
    return {"stop": round_ >= args.max_rounds, "kept": round_}


def regrow_decision(
    round_: int, drop: float, sparsity: float, next_sparsity: float, args: BUArgs, faithful: bool
) -> dict[str, Any]:
    """After regrowth round `round_` (see the module docstring for the two protocols)."""
    if not faithful:
        return imp_decision(round_, drop, sparsity, args)
    if drop > args.deacc and sparsity > args.base_sparsity:
        return {"stop": True, "kept": round_ - 1}
    if drop >= args.deacc and next_sparsity >= args.base_sparsity:
        return {"stop": True, "kept": round_}
    return {"stop": round_ >= args.max_rounds, "kept": round_}


@register_method("tickets_bu")
class TicketsBU(TicketsMethod):
    stages = ("retrieve", "train", "imp", "ticket", "regrow")
    rounds = ("imp", "regrow")
    args_type = BUArgs

    def stage_imp(self, ctx: TaskContext, args: BUArgs, round_: int) -> TaskResult:
        if ctx.task != 0:
            raise ConfigError(f"--stage {ctx.stage}: IMP rounds belong to task 0 (later tasks regrow)")
        return self._round(ctx, args, round_, start=current_masks(ctx), protected=None)

    def stage_ticket(self, ctx: TaskContext, args: BUArgs, _round: int) -> TaskResult:
        if ctx.task == 0 or "dense" not in ctx.inputs:
            raise ConfigError(f"--stage ticket: tasks >= 1 only, with --input dense=<task {ctx.task}'s train model>")
        dense = copy.deepcopy(ctx.model)  # read before training: a wrong input fails at once
        dense.load_state_dict(ctx.stage_input("dense", "model")["state_dict"])
        split, batch = stopping_split(ctx), ctx.run.train.eval_batch_size
        masks = current_masks(ctx)
        trained = train_current_task(ctx, args, full_schedule(ctx), masks=masks, score=validation_score(ctx))
        a_dense, a_ticket = split.task_mean(dense, ctx.task, batch), split.task_mean(ctx.model, ctx.task, batch)
        regrow = a_dense - a_ticket >= args.accept_decay
        ctx.log(f"task {ctx.task}: {split.name} accuracy dense {a_dense:.2f}%, ticket {a_ticket:.2f}%: regrow {regrow}")
        decision = {"regrow": bool(regrow), "a_dense": a_dense, "a_ticket": a_ticket, "split": split.name}
        return TaskResult(
            model_state=ctx.model.state_dict(),
            masks={"mask": masks},
            extra={"provenance": trained.provenance},
            log_rows=trained.rows,
            files={"decision.json": decision},
        )

    def stage_regrow(self, ctx: TaskContext, args: BUArgs, round_: int) -> TaskResult:
        if ctx.task == 0:
            raise ConfigError(f"--stage {ctx.stage}: task 0 prunes by IMP rounds, it does not regrow")
        first = round_ == 1  # from the dense reference of this task and the ticket's masks file
        ticket = current_masks(ctx) if first else dict(ctx.prev_masks["base"])
        start = dense_masks(ticket) if first else current_masks(ctx)
        return self._round(ctx, args, round_, start=start, protected=ticket)

    def _round(self, ctx: TaskContext, args: BUArgs, round_: int, start, protected) -> TaskResult:
        """One prune-and-retrain round: prune `start` (never `protected`), retrain, decide."""
        split, batch, t = stopping_split(ctx), ctx.run.train.eval_batch_size, ctx.task
        a_base = split.joint(ctx.model, t, batch) if round_ == 1 else ctx.prev_extra["a_base"]
        params = conv_parameters(ctx.model)
        masks = prune_smallest_global(params, start, args.prune_fraction, protected=protected)
        apply_masks(params, masks)
        trained = train_current_task(
            ctx,
            args,
            retrain_schedule(args),
            masks=masks,
            score=lambda: split.joint(ctx.model, t, batch),
            restore_best=ctx.run.protocol != "faithful",
        )
        drop = a_base - max(row["score"] for row in trained.rows)
        remaining = remaining_percent(masks)
        if protected is None:
            decision = imp_decision(round_, drop, 100.0 - remaining, args)
        else:
            grown = sum(int((masks[n] & ~protected[n]).sum()) for n in masks)
            total = sum(m.numel() for m in masks.values())
            after_next = remaining - 100.0 * prune_count(grown, args.prune_fraction) / total
            decision = regrow_decision(
                round_, drop, 100.0 - remaining, 100.0 - after_next, args, ctx.run.protocol == "faithful"
            )
        decision.update(round=round_, drop=drop, a_base=a_base, remaining_weights=remaining, split=split.name)
        ctx.log(f"task {t}: {ctx.stage}: {remaining:.2f}% kept, {split.name} drop {drop:.2f}: {decision}")
        masks_file = {"mask": masks} if protected is None else {"mask": masks, "base": protected}
        return TaskResult(
            model_state=ctx.model.state_dict(),
            masks=masks_file,
            extra={"a_base": a_base, "provenance": trained.provenance},
            log_rows=trained.rows,
            files={"decision.json": decision},
        )
