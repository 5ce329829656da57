"""`multistep`: multi-step sparsity training on accumulating data (Lee & Kim, IEEE Access 2023).

Data-incremental: the training set arrives in chunks of every class, and a step sees only its
own chunk. Each stage is its own job (docs/methods/multistep.md gives the losses and which
choices are ours):

  step 0, chunk 0   `train`    cross-entropy from scratch.
                    `sst`      selective sparsity training: cross-entropy plus s * sum |gamma| over
                               S, the `ratio` of BN channels with the smallest |gamma| at the start.
                               S is written as the stage's channel file.
  step k, chunk k   `aod`      re-initialise the filters of the previous step's S, then train with
                               cross-entropy plus the adaptively weighted distillation from the
                               previous step's final model (`--input teacher=...`).
                    `sst_msl`  (not at the last step) sparsity training on a new S with the
                               multi-step loss: distillation from the final model of every earlier
                               step (`--input teacher<j>=...`), or of the previous one.

Every stage writes a channel file where other methods write their masks (the job's masks.pt):
`unimportant` (BN layer -> bool per channel, the selected S; empty selections for `train` and
`aod`), the `aod` one also the channels it `reinitialised`, and `stats`. It holds no per-weight
mask. Evaluation is the default: top-1 on the whole test set after each stage.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from ..config import RunConfig
from ..engine import make_optimizer, make_scheduler
from ..engine.loop import LossFn, sliced_cross_entropy
from ..errors import ConfigError, DataError
from ..plans.multistep import STAGES, MultistepArgs, stage_run_config, stages_of_step, teachers
from ..scenarios import Scenario
from ..seeds import seed_stream
from ..sparse.channels import (
    ChannelSelection,
    batch_norms,
    channel_table,
    l1_subgradient,
    no_channels,
    reinitialise_channels,
    select_smallest,
)
from ..stage_files import load_weights
from .base import EvalContext, Method, TaskContext, TaskResult, register_method
from .distillation import TeacherTap, distillation_loss
from .training import fit

_ORDER, _REINIT = 10, 20  # purposes of the per-stage random streams


@register_method("multistep")
class Multistep(Method):
    stages = STAGES

    def check_stage(self, run: RunConfig, scenario: Scenario, task: int, stage: str) -> None:
        if scenario.spec.kind != "data":
            raise ConfigError("scenario.kind: the multistep method needs a data-incremental scenario (kind: data)")
        here = stages_of_step(task, scenario.spec.num_tasks)
        if stage not in here:
            raise ConfigError(
                f"--stage: step {task} of {scenario.spec.num_tasks} runs {', '.join(here)}, got {stage!r}"
            )

    def evaluate(self, ctx: EvalContext) -> list[dict[str, Any]]:
        """Top-1 on the whole test set; after a sparsity stage also the % of its selected channels
        it switched off and the floor it was held to, so that the summary can say where SST fell short."""
        rows = super().evaluate(ctx)
        channel_file = ctx.masks[-1] if ctx.masks else {}  # this stage's (EvalContext.masks)
        stats = channel_file.get("stats", {})
        if "silenced_fraction" in stats:
            for row in rows:
                row["silenced_pct"] = 100.0 * stats["silenced_fraction"]
                row["silenced_floor_pct"] = 100.0 * stats["silenced_floor"]
        return rows

    def train_stage(self, ctx: TaskContext) -> TaskResult:
        batch_norms(ctx.model)  # fails early for a backbone without BN scaling factors
        ctx = replace(ctx, run=stage_run_config(ctx.run, ctx.stage))
        ctx.generator.manual_seed(_stream(ctx, _ORDER))  # each stage its own order and augmentation
        stage = {"train": _train, "sst": _sst, "aod": _aod, "sst_msl": _sst_msl}[ctx.stage]
        result = stage(ctx, MultistepArgs.of(ctx.run))
        for row in result.log_rows:
            row["stage"] = ctx.stage
        return result


def _train(ctx: TaskContext, args: MultistepArgs) -> TaskResult:
    rows = _fit(ctx, _cross_entropy(ctx))
    return _result(ctx, rows, no_channels(ctx.model))


def _sst(ctx: TaskContext, args: MultistepArgs, loss_fn: LossFn | None = None) -> TaskResult:
    """Cross-entropy (or `loss_fn`) + s * sum |gamma| over the channels of S, chosen at the start."""
    selected = select_smallest(ctx.model, args.ratio, args.selection, args.layer_cap)
    rows = _fit(ctx, loss_fn or _cross_entropy(ctx), after_backward=l1_subgradient(ctx.model, selected, args.s))
    table = channel_table(ctx.model, selected, args.small_gamma)
    total = {key: sum(row[key] for row in table) for key in ("channels", "selected", "small_selected", "small_other")}
    in_s, outside = total["small_selected"], total["small_other"]
    silenced = in_s / max(total["selected"], 1)
    ctx.log(
        f"{ctx.stage}: |gamma| < {args.small_gamma:g} for {in_s} of {total['selected']} channels in S"
        f" ({silenced:.0%}) and {outside} of {total['channels'] - total['selected']} outside"
    )
    if silenced < args.silenced_floor:  # the sparsity term did not reach its target: say so, train on
        ctx.log(
            f"WARNING {ctx.stage} step {ctx.task}: only {silenced:.0%} of S has |gamma| < {args.small_gamma:g},"
            f" below silenced_floor {args.silenced_floor:.0%}; the sparsity term missed its target"
            " (raise s or the stage's epochs)"
        )
    result = _result(
        ctx, rows, selected, small_selected=in_s, small_other=outside,
        silenced_fraction=silenced, silenced_floor=args.silenced_floor,
    )  # fmt: skip
    result.tables["channels"] = table
    return result


def _aod(ctx: TaskContext, args: MultistepArgs) -> TaskResult:
    """Re-initialise the previous step's S, then cross-entropy + lambda * distillation from its final model."""
    teacher = _teachers(ctx, args)["teacher"]
    channel_file = ctx.prev_masks  # the previous stage's (TaskContext.prev_masks)
    selected = {name: chosen.bool() for name, chosen in channel_file.get("unimportant", {}).items()}
    if not selected:
        raise DataError(f"step {ctx.task} aod: the previous stage's channel file has no `unimportant` channels")
    reinit = torch.Generator().manual_seed(_stream(ctx, _REINIT))
    reinitialise_channels(ctx.model, selected, reinit, args.reinit_downstream, args.reinit_gamma)
    with TeacherTap(ctx.model, [teacher]) as tap:
        loss_fn = distillation_loss(_cross_entropy(ctx), tap, [args.kd_lambda], args.temperature, args.kd_weighting)
        rows = _fit(ctx, loss_fn)
    result = _result(ctx, rows, no_channels(ctx.model))
    result.masks["reinitialised"] = selected
    return result


def _sst_msl(ctx: TaskContext, args: MultistepArgs) -> TaskResult:
    """Sparsity training on a new S with the multi-step loss: CE + sum_j alpha_j * distillation from step j."""
    wanted = teachers(ctx.stage, ctx.task, ctx.scenario.spec.num_tasks, args.msl_teachers)
    steps = [step for step, _ in wanted.values()]
    if args.msl_alpha:  # long enough for every step: MultistepArgs.check
        alphas = [args.msl_alpha[j] for j in steps]
    else:
        alphas = [args.kd_lambda / len(steps)] * len(steps)
    snapshots = _teachers(ctx, args)
    with TeacherTap(ctx.model, list(snapshots.values())) as tap:
        loss_fn = distillation_loss(_cross_entropy(ctx), tap, alphas, args.temperature, args.kd_weighting)
        return _sst(ctx, args, loss_fn)


def _cross_entropy(ctx: TaskContext) -> LossFn:
    return sliced_cross_entropy(0, ctx.scenario.num_classes)


def _fit(ctx: TaskContext, loss_fn: LossFn, after_backward: Callable[[], None] | None = None) -> list[dict]:
    """The stage's epochs on its step's chunk, with the stage's `train` settings (resumable)."""
    cfg = ctx.run.train
    optimizer = make_optimizer(ctx.model.parameters(), cfg)
    return fit(
        ctx,
        ctx.chunk_index(ctx.task),
        loss_fn,
        optimizer,
        make_scheduler(optimizer, cfg),
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        augment=cfg.augment,
        after_backward=after_backward,
    )


def _teachers(ctx: TaskContext, args: MultistepArgs) -> dict[str, torch.nn.Module]:
    """The frozen models this stage distils from, loaded from its `--input teacher...` files."""
    wanted = teachers(ctx.stage, ctx.task, ctx.scenario.spec.num_tasks, args.msl_teachers)
    missing = [name for name in wanted if name not in ctx.inputs]
    if missing:
        step, stage = wanted[missing[0]]
        raise DataError(
            f"step {ctx.task} {ctx.stage}: missing --input {missing[0]}=PATH (the {stage} model of step {step})"
        )
    loaded = {}
    for name in wanted:
        saved, teacher = ctx.stage_input(name, "model"), copy.deepcopy(ctx.model)
        load_weights(teacher, saved, Path(ctx.inputs[name]))
        loaded[name] = teacher
    return loaded


def _result(ctx: TaskContext, rows: list[dict], unimportant: ChannelSelection, **stats: float) -> TaskResult:
    """The stage's model and its channel file (`TaskResult.masks`: the job's masks.pt)."""
    channels = sum(len(chosen) for chosen in unimportant.values())
    summary = {"stage": ctx.stage, "step": ctx.task, "channels": channels, **stats}
    summary["unimportant"] = int(sum(int(chosen.sum()) for chosen in unimportant.values()))
    return TaskResult(
        model_state=ctx.model.state_dict(),
        masks={"unimportant": unimportant, "stats": summary},
        log_rows=rows,
    )


def _stream(ctx: TaskContext, purpose: int) -> int:
    return seed_stream(ctx.run.seed, ctx.task, purpose, STAGES.index(ctx.stage))
