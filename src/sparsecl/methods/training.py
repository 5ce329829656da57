"""`fit`: the multi-epoch loop every offline method shares, with epoch-level resume.

`fit_epochs` is the same loop around any one-epoch function (a method with several data
streams per step brings its own).

After every epoch the full training state (model, optimiser, scheduler, generator, method
state, best-so-far) is written atomically to the task's resume file. A job killed mid-task and
rerun continues from the last completed epoch and ends bit-identical (CPU) to an uninterrupted
run. The resume file lives outside the stage's declared outputs because Snakemake deletes the
outputs of failed jobs.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any, Protocol

import torch

from ..engine import EpochStats, train_epoch
from ..engine.loop import LossFn
from .base import TaskContext
from .resume import load_resume, save_resume


class Stateful(Protocol):
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def fit(
    ctx: TaskContext,
    idx: torch.Tensor,
    loss_fn: LossFn,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    *,
    epochs: int,
    batch_size: int,
    augment: bool,
    after_backward: Callable[[], None] | None = None,
    after_step: Callable[[], None] | None = None,
    method_state: Stateful | None = None,
    score: Callable[[EpochStats], float] | None = None,
) -> list[dict[str, Any]]:
    """Train `ctx.model` for `epochs` epochs on `idx`; return one log row per epoch.

    With `score`, the epoch with the highest score is kept (model and method state restored
    at the end), otherwise the last epoch is.
    """

    def run_epoch(epoch: int) -> EpochStats:
        return train_epoch(
            ctx.model,
            optimizer,
            ctx.data,
            idx,
            epoch=epoch,
            batch_size=batch_size,
            generator=ctx.generator,
            augment=augment,
            loss_fn=loss_fn,
            after_backward=after_backward,
            after_step=after_step,
        )

    rows, _ = fit_epochs(ctx, run_epoch, optimizer, scheduler, epochs=epochs, method_state=method_state, score=score)
    return rows


def fit_epochs(
    ctx: TaskContext,
    run_epoch: Callable[[int], EpochStats],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    *,
    epochs: int,
    method_state: Stateful | None = None,
    score: Callable[[EpochStats], float] | None = None,
    restore_best: bool = True,
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """The resumable epoch loop behind `fit`, for any one-epoch function (e.g. several data streams).

    Returns the log rows and the best epoch's snapshot (`score`, `epoch`, `model`, `method_state`;
    None without `score`). `restore_best=False` leaves the last epoch in the model, for methods
    that continue from the last epoch but also keep the best one.
    """
    model = ctx.model
    rows: list[dict[str, Any]] = []
    best: dict[str, Any] | None = None
    start = 0
    saved = load_resume(ctx, ("epoch", "model", "optimizer", "scheduler", "generator", "method_state", "rows", "best"))
    if saved is not None:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(saved["scheduler"])
        ctx.generator.set_state(saved["generator"].cpu())  # generator states are CPU byte tensors
        if method_state is not None:
            method_state.load_state_dict(saved["method_state"])
        rows, best, start = saved["rows"], saved["best"], saved["epoch"] + 1
        ctx.log(f"resumed task {ctx.task} after epoch {start} from {ctx.resume_path}")
    for epoch in range(start, epochs):
        stats = run_epoch(epoch)
        row = {
            "task": ctx.task,
            "epoch": epoch,
            "loss": stats.loss,
            "train_acc": stats.accuracy,
            "images_per_s": stats.images_per_second,
            "lr": optimizer.param_groups[0]["lr"],  # the rate this epoch trained at
        }
        if scheduler is not None:
            scheduler.step()
        line = stats.line(epochs, prefix=f"task {ctx.task} ")
        if score is not None:
            row["score"] = value = float(score(stats))
            line += f" score {value:.2f}"
            if best is None or value > best["score"]:
                best = {
                    "score": value,
                    "epoch": epoch,
                    "model": copy.deepcopy(model.state_dict()),
                    "method_state": copy.deepcopy(method_state.state_dict()) if method_state else None,
                }
        rows.append(row)
        ctx.log(line)
        save_resume(
            ctx,
            {
                "epoch": epoch,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict() if scheduler is not None else None,
                "generator": ctx.generator.get_state(),
                "method_state": method_state.state_dict() if method_state else None,
                "rows": rows,
                "best": best,
            },
        )
    if best is not None:
        if restore_best:
            model.load_state_dict(best["model"])
            if method_state is not None:
                method_state.load_state_dict(best["method_state"])
        line = f"epoch {best['epoch'] + 1} (score {best['score']:.2f})"
        ctx.log(f"task {ctx.task}: kept {line}" if restore_best else f"task {ctx.task}: best {line}; the last is kept")
        for row in rows:
            row["selected"] = row["epoch"] == best["epoch"]
    return rows, best
