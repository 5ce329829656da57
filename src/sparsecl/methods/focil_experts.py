"""FOCIL inference: which expert answers a test batch, and how accurate the answer is.

An expert is the shared network with one task's mask applied. Each evaluated task's test images
(one seeded shuffled order) go through every expert trained so far, and two selection rules are
scored on the same logits:
  * labelled, the published rule: among experts 0..j, the one with the highest accuracy (argmax
    over all logits) on the first `selection_batch` labelled test images of task j answers all of
    task j. It reads test labels and the task index, so it is not class-incremental inference;
  * label-free: each consecutive group of `selection_batch` test images goes to the expert most
    confident on its own task's classes (highest mean max-softmax, or lowest mean entropy) among
    all experts trained so far.
Expert-selection accuracy is the share of tasks (labelled) or groups (label-free) routed to the
true task's expert. The chosen expert predicts by an argmax over all logits (faithful, as
published) or over its own task's classes (standard). Task-IL accuracy uses the true task's
expert over that task's classes.

`faithful` evaluates like the published code: batches of the training batch size (batch-norm
statistics of 10 images), test-time augmentation with the training transforms, the labelled
rule for class-IL accuracy, and after the last task the published backward transfer, computed
from two evaluations of the final model (`bwt_final_model`, about 0 by construction). `standard`
uses `eval_batch_size`, no augmentation and the label-free rule; its forgetting comes from the
evaluations after every task.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn as nn

from ..data import get_dataset
from ..engine import DeviceData, autocast
from ..sparse import MaskFile, maskable_parameters
from .base import EvalContext

SCORES = ("max_softmax", "entropy")


@dataclass(frozen=True)
class EvalSettings:
    batch: int  # forward batch size (batch-norm statistics are per batch)
    augment: bool  # test-time augmentation
    all_logits: bool  # the chosen expert predicts over all classes (else over its own task's classes)
    selection_batch: int
    score: str  # label-free confidence: max_softmax | entropy
    labelled_cil: bool  # class-IL accuracy from the labelled rule (else label-free)


@dataclass
class TaskScores:
    acc_til: float
    labelled_acc: float
    labelled_expert_acc: float
    labelfree_acc: float
    labelfree_expert_acc: float


@torch.no_grad()
def expert_logits(model: nn.Module, masks: list[dict[str, torch.Tensor]], x: torch.Tensor, batch: int) -> torch.Tensor:
    """Logits [experts, images, classes] of every expert (shared weights x its mask) on `x`."""
    params = maskable_parameters(model)
    shared = {name: p.detach().clone() for name, p in params.items()}
    model.eval()
    outputs = []
    try:
        for mask in masks:
            for name, p in params.items():
                p.copy_(shared[name] * mask[name])
            with autocast(x.device):
                outputs.append(torch.cat([model(x[s : s + batch]).float() for s in range(0, len(x), batch)]))
    finally:
        for name, p in params.items():
            p.copy_(shared[name])
    return torch.stack(outputs)


def confidence(logits: torch.Tensor, score: str) -> torch.Tensor:
    """Per image: max softmax probability, or negative entropy (higher means more confident)."""
    log_p = torch.log_softmax(logits.float(), dim=1)
    if score == "max_softmax":
        return log_p.exp().max(1).values
    return (log_p.exp() * log_p).sum(1)


def label_free_choice(logits: torch.Tensor, expert_labels: list[list[int]], group: int, score: str) -> torch.Tensor:
    """Expert chosen for each consecutive group of `group` images, from logits [experts, images, classes].

    Each expert is judged on its own task's classes only, the logits its training shaped; ties go
    to the earliest expert.
    """
    n = logits.shape[1]
    conf = torch.stack([confidence(logits[m][:, labels], score) for m, labels in enumerate(expert_labels)])
    groups = torch.arange(n, device=logits.device) // group
    sums = torch.zeros(len(expert_labels), int(groups[-1]) + 1, device=logits.device).index_add_(1, groups, conf)
    return sums.argmax(0)  # within a group every expert sees the same images, so sums rank like means


def labelled_choice(logits: torch.Tensor, y: torch.Tensor, group: int) -> int:
    """The expert with the highest accuracy on the first `group` labelled images (ties: earliest)."""
    hits = (logits[:, :group].argmax(2) == y[:group]).float().mean(1)
    return int(hits.argmax())


def predict(logits: torch.Tensor, expert: torch.Tensor, expert_labels: torch.Tensor, all_logits: bool) -> torch.Tensor:
    """Labels predicted for each image by its expert (`expert` [images]) from logits [experts, images, classes]."""
    chosen = logits[expert, torch.arange(logits.shape[1], device=logits.device)]
    if all_logits:
        return chosen.argmax(1)
    own = expert_labels[expert]  # [images, classes per task]
    return own.gather(1, chosen.gather(1, own).argmax(1, keepdim=True)).squeeze(1)


def score_task(
    ctx: EvalContext, data: DeviceData, masks: list[dict[str, torch.Tensor]], j: int, s: EvalSettings
) -> TaskScores:
    idx = ctx.test_index(j)
    idx = idx[torch.randperm(len(idx), generator=ctx.generator, device=idx.device)]
    x, y = data.batch(idx, ctx.generator, augment=s.augment)
    logits = expert_logits(ctx.model, masks, x, s.batch)
    tasks = ctx.scenario.tasks[: len(masks)]
    expert_labels = torch.as_tensor(tasks, device=y.device)
    chosen = labelled_choice(logits[: j + 1], y, s.selection_batch)
    routes = label_free_choice(logits, tasks, s.selection_batch, s.score)
    per_image = routes.repeat_interleave(s.selection_batch)[: len(y)]
    return TaskScores(
        acc_til=_percent(predict(logits, torch.full_like(y, j), expert_labels, all_logits=False) == y),
        labelled_acc=_percent(predict(logits, torch.full_like(y, chosen), expert_labels, s.all_logits) == y),
        labelled_expert_acc=100.0 * (chosen == j),
        labelfree_acc=_percent(predict(logits, per_image, expert_labels, s.all_logits) == y),
        labelfree_expert_acc=_percent(routes == j),
    )


def settings_for(ctx: EvalContext, selection_batch: int, score: str) -> EvalSettings:
    cfg, faithful = ctx.run.train, ctx.run.protocol == "faithful"
    return EvalSettings(
        batch=cfg.batch_size if faithful else cfg.eval_batch_size,
        augment=faithful and cfg.augment,
        all_logits=faithful,
        selection_batch=selection_batch,
        score=score,
        labelled_cil=faithful,
    )


def evaluate_experts(ctx: EvalContext, s: EvalSettings) -> list[dict[str, Any]]:
    """One row per seen task: task-IL, class-IL, both selection rules and the sparsity its expert chose."""
    data = ctx.data
    if s.augment:  # the test split is loaded without augmentation; the faithful protocol adds the training one
        spec = get_dataset(ctx.run.dataset)
        data = replace(data, crop_padding=spec.crop_padding, hflip=spec.hflip)
    masks = [MaskFile.from_dict(m).mask for m in ctx.masks]
    hparams = ctx.extra["hparams"]  # (lr, density, trial) of every expert so far
    final = ctx.task == len(ctx.scenario.tasks) - 1
    rows = []
    for j in range(ctx.task + 1):
        scores = score_task(ctx, data, masks, j, s)
        row = {
            "task_trained": ctx.task,
            "task_eval": j,
            "n": int(len(ctx.test_index(j))),
            "acc_til": scores.acc_til,
            "acc_cil": scores.labelled_acc if s.labelled_cil else scores.labelfree_acc,
            "labelled_acc": scores.labelled_acc,
            "labelled_expert_acc": scores.labelled_expert_acc,
            "labelfree_acc": scores.labelfree_acc,
            "labelfree_expert_acc": scores.labelfree_expert_acc,
            "selected_sparsity": 100.0 * (1.0 - hparams[j]["density"]),  # %, as the paper reports it
        }
        if s.labelled_cil and final:  # the published BWT: column j evaluated again with the same final model
            again = score_task(ctx, data, masks, j, s).labelled_acc if j < ctx.task else float("nan")
            row["bwt_final_model"] = scores.labelled_acc - again
        rows.append(row)
    return rows


def _percent(hits: torch.Tensor) -> float:
    return 100.0 * float(hits.float().mean()) if len(hits) else float("nan")
