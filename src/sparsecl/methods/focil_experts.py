"""FOCIL inference: which expert answers a test batch, and how accurate the answer is.

An expert is the shared network with one task's mask applied. Each evaluated task's test images
(one seeded shuffled order) are answered by every expert trained so far, and the selection rules
are scored on the same answers:
  * labelled, the published rule: among experts 0..j, the one with the highest accuracy (argmax
    over all logits) on `selection_batch` labelled test images of task j answers all of task j.
    `faithful` draws a new shuffled (and augmented) batch for each candidate, as published;
    `standard` scores every candidate on the same first batch (a paired comparison). It reads
    test labels and the task index, so it is not class-incremental inference;
  * label-free (`focil_routing`): each consecutive group of `selection_batch` test images goes
    to the expert that one rule (max_softmax, entropy, energy, prototype) scores highest, among
    all experts trained so far; `selection_score` names the rule behind `acc_cil` (`auto`: the
    rule that routes the validation images best after this task).
Expert-selection accuracy is the share of tasks (labelled) or groups (label-free) routed to the
true task's expert. The chosen expert predicts by an argmax over all logits (faithful, as
published) or over its own task's classes (standard). Task-IL accuracy uses the true task's
expert over that task's classes. Every rule's numbers are in the rows (`route_<rule>_acc`,
`route_<rule>_expert_acc`, and on the validation images `route_<rule>_val_expert_acc`).

`faithful` evaluates like the published code: batches of the training batch size (batch-norm
statistics of 10 images), test-time augmentation with the training transforms, the labelled
rule for class-IL accuracy, and after the last task the published backward transfer, computed
from two evaluations of the final model (`bwt_final_model`, about 0 by construction). `standard`
uses `eval_batch_size`, no augmentation and the label-free rule; its forgetting comes from the
evaluations after every task. Its experts never change and its forward batches follow the images'
stored order (the shuffled order only groups them for routing), so each expert's answers on a
task's images are computed once and recorded (`focil_answers`); faithful computes every one anew.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.nn as nn

from ..data import get_dataset
from ..engine import DeviceData
from ..sparse import MaskFile
from .base import EvalContext
from .focil_answers import RECORD, Answers, Record, expert_weights, forward
from .focil_routing import AUTO, FALLBACK, RULES, Prototypes, choose_rule, route


@dataclass(frozen=True)
class EvalSettings:
    batch: int  # forward batch size (batch-norm statistics are per batch)
    augment: bool  # test-time augmentation
    all_logits: bool  # the chosen expert predicts over all classes (else over its own task's classes)
    selection_batch: int
    score: str  # label-free rule behind acc_cil in standard: one of RULES, or auto
    labelled_cil: bool  # class-IL accuracy from the labelled rule (else label-free)
    fresh_labelled_batches: bool  # the labelled rule draws a new batch per candidate (as published)
    recorded: bool  # answers on stored-order images, recorded across tasks (focil_answers)


@torch.no_grad()
def expert_outputs(
    model: nn.Module, masks: list[dict[str, torch.Tensor]], x: torch.Tensor, batch: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits [experts, images, classes] and features [experts, images, features] (the input of
    `classifier`) of every expert (shared weights x its mask) on `x`."""
    outputs = []
    with expert_weights(model) as use:
        for mask in masks:
            use(mask)
            outputs.append(forward(model, x, batch))
    return torch.stack([logits for logits, _ in outputs]), torch.stack([features for _, features in outputs])


def labelled_choice(over_all: torch.Tensor, y: torch.Tensor, group: int) -> int:
    """The expert with the highest accuracy (`over_all` [experts, images]) on the first `group`
    labelled images (ties: earliest)."""
    hits = (over_all[:, :group] == y[:group]).float().mean(1)
    return int(hits.argmax())


@dataclass
class Experts:
    """What every evaluation of one model shares: the experts' masks, classes and prototypes."""

    masks: list[dict[str, torch.Tensor]]
    labels: list[list[int]]
    prototypes: list[Prototypes]


MAX_HELD_IMAGES = 20_000  # drawn test images an evaluation holds at once: about 1 GB of float32 at 64x64


@dataclass
class Draw:
    """One scoring of task j's images: the seeded shuffled order, and what the experts must answer.

    The draws of an evaluation are made in a fixed order, and the experts answer them one expert at
    a time, up to MAX_HELD_IMAGES drawn images at once: setting an expert's weights (the shared
    weights times its mask) costs more than forwarding a test batch, so it is done once per expert
    and group of draws, not once per expert and task. The answers do not depend on the grouping
    (forward passes draw no random numbers)."""

    j: int
    idx: torch.Tensor  # the images' indices in the shuffled order
    y: torch.Tensor
    x: torch.Tensor | None  # the images every expert answers; None where recorded answers are read
    fresh: list[tuple[torch.Tensor, torch.Tensor]]  # the published rule: candidate m's own labelled batch
    answers: Answers | None = None
    blocks: list[Answers] = field(default_factory=list)
    fresh_hits: list[float] = field(default_factory=list)

    @property
    def held(self) -> int:
        """Images drawn and not yet answered."""
        return (0 if self.x is None else len(self.x)) + sum(len(x) for x, _ in self.fresh)


def draw(
    ctx: EvalContext, data: DeviceData, j: int, idx: torch.Tensor, s: EvalSettings, recorded: Answers | None, fresh: int
) -> Draw:
    """Task j's images `idx` in one seeded shuffled order (answered from `recorded`, their answers in
    stored order, when given), and `fresh` newly shuffled labelled batches for the published rule."""
    order = torch.randperm(len(idx), generator=ctx.generator, device=idx.device)
    idx = idx[order]
    if recorded is not None:
        d = Draw(j, idx, data.labels[idx], None, [], answers=recorded.take(order))
    else:
        x, y = data.batch(idx, ctx.generator, augment=s.augment)
        d = Draw(j, idx, y, x, [])
    for _ in range(fresh):
        pick = idx[torch.randperm(len(idx), generator=ctx.generator, device=idx.device)[: s.selection_batch]]
        d.fresh.append(data.batch(pick, ctx.generator, augment=s.augment))
    return d


@torch.no_grad()
def answer(model: nn.Module, experts: Experts, draws: list[Draw], batch: int) -> None:
    """Every expert's answers on the images of `draws` that need them, and each fresh batch's
    accuracy (argmax over all logits) under its candidate expert; the images are then let go."""
    busy = [m for m in range(len(experts.masks)) if any(d.x is not None or m < len(d.fresh) for d in draws)]
    if not busy:
        return
    with expert_weights(model) as use:
        for m in busy:
            use(experts.masks[m])
            for d in draws:
                if d.x is not None:
                    d.blocks.append(Answers.of_expert(model, d.x, batch, experts.labels[m], experts.prototypes[m]))
                if m < len(d.fresh):
                    x, y = d.fresh[m]
                    d.fresh_hits.append(float((forward(model, x, batch)[0].argmax(1) == y).float().mean()))
    for d in draws:
        if d.x is not None:
            d.answers, d.x, d.blocks = Answers.stack(d.blocks), None, []
        d.fresh = []


def routes(answers: Answers, group: int) -> dict[str, torch.Tensor]:
    """Per rule, the expert chosen for each image (consecutive groups of `group` images share one)."""
    n = answers.scores.shape[2]
    return {rule: route(answers.scores[:, r], group).repeat_interleave(group)[:n] for r, rule in enumerate(RULES)}


def score_task(d: Draw, s: EvalSettings, rule: str) -> dict[str, float]:
    answers, y, j = d.answers, d.y, d.j
    assert answers is not None
    if s.fresh_labelled_batches:
        chosen = max(range(len(d.fresh_hits)), key=lambda m: (d.fresh_hits[m], -m))
    else:
        chosen = labelled_choice(answers.over_all[: j + 1], y, s.selection_batch)
    scores = {
        "acc_til": _percent(answers.predict(torch.full_like(y, j), all_logits=False) == y),
        "labelled_acc": _percent(answers.predict(torch.full_like(y, chosen), s.all_logits) == y),
        "labelled_expert_acc": 100.0 * (chosen == j),
    }
    for name, experts_of_image in routes(answers, s.selection_batch).items():
        scores[f"route_{name}_acc"] = _percent(answers.predict(experts_of_image, s.all_logits) == y)
        scores[f"route_{name}_expert_acc"] = _percent(experts_of_image[:: s.selection_batch] == j)
    scores["labelfree_acc"] = scores[f"route_{rule}_acc"]
    scores["labelfree_expert_acc"] = scores[f"route_{rule}_expert_acc"]
    return scores


def validation_routing(draws: list[Draw], group: int) -> dict[str, float]:
    """Per rule, the share (%) of validation groups of the seen tasks routed to the right expert."""
    hits = dict.fromkeys(RULES, 0)
    total = 0
    for d in draws:
        assert d.answers is not None
        for rule, chosen in routes(d.answers, group).items():
            hits[rule] += int((chosen[::group] == d.j).sum())
        total += -(-len(d.idx) // group)
    return {rule: 100.0 * hits[rule] / max(total, 1) for rule in RULES}


def settings_for(ctx: EvalContext, selection_batch: int, score: str) -> EvalSettings:
    cfg, faithful = ctx.run.train, ctx.run.protocol == "faithful"
    return EvalSettings(
        batch=cfg.batch_size if faithful else cfg.eval_batch_size,
        augment=faithful and cfg.augment,
        all_logits=faithful,
        selection_batch=selection_batch,
        score=score,
        labelled_cil=faithful,
        fresh_labelled_batches=faithful,
        recorded=not faithful,
    )


def recorded_answers(ctx: EvalContext, experts: Experts, s: EvalSettings) -> Record:
    """Every expert's answers on every seen task's stored-order images: the unchanged ones read from
    the masks files, the rest computed; what is new goes into this task's masks file."""
    record = Record(ctx.model, experts.masks, experts.labels, experts.prototypes)
    splits = {"test": ctx.data, **({"validation": ctx.validation} if ctx.validation is not None else {})}
    images = {
        (split, j): data.indices_of(ctx.scenario.tasks[j])
        for split, data in splits.items()
        for j in range(ctx.task + 1)
    }
    images = {key: idx for key, idx in images.items() if len(idx) > 0}
    sizes = {key: len(idx) for key, idx in images.items()}
    for k, saved in enumerate(ctx.masks):
        if RECORD in saved:
            where = str(ctx.masks_paths[k]) if ctx.masks_paths else f"masks file of task {k}"
            record.read(saved[RECORD], k, sizes, ctx.scenario.num_classes, where)
    record.fill(list(images), lambda split, j: splits[split].batch(images[split, j])[0], s.batch)
    ctx.masks_entries[RECORD] = record.entry()
    return record


def evaluate_experts(ctx: EvalContext, s: EvalSettings) -> list[dict[str, Any]]:
    """One row per seen task: task-IL, class-IL, every selection rule and the sparsity its expert chose."""
    data = ctx.data
    if s.augment:  # the test split is loaded without augmentation; the faithful protocol adds the training one
        spec = get_dataset(ctx.run.dataset)
        data = replace(data, crop_padding=spec.crop_padding, hflip=spec.hflip)
    experts = Experts(
        masks=[MaskFile.from_dict(m).mask for m in ctx.masks],
        labels=ctx.scenario.tasks[: len(ctx.masks)],
        prototypes=[Prototypes.from_dict(p) for p in ctx.extra["prototypes"]],
    )
    record = recorded_answers(ctx, experts, s) if s.recorded else None
    final = ctx.task == len(ctx.scenario.tasks) - 1
    again = s.labelled_cil and final  # the published BWT: column j evaluated again with the same final model
    val_draws, test_draws, again_draws = [], [], {}
    pending: list[Draw] = []

    def drawn(d: Draw) -> Draw:
        """`d`, with every pending draw answered once they hold MAX_HELD_IMAGES images."""
        pending.append(d)
        if sum(p.held for p in pending) >= MAX_HELD_IMAGES:
            answer(ctx.model, experts, pending, s.batch)
            pending.clear()
        return d

    if ctx.validation is not None:
        for j in range(ctx.task + 1):
            idx = ctx.validation.indices_of(ctx.scenario.tasks[j])
            if len(idx) > 0:
                recorded = record.answers("validation", j) if record is not None else None
                val_draws.append(drawn(draw(ctx, ctx.validation, j, idx, s, recorded, fresh=0)))
    fresh = s.fresh_labelled_batches
    for j in range(ctx.task + 1):
        recorded = record.answers("test", j) if record is not None else None
        test_draws.append(drawn(draw(ctx, data, j, ctx.test_index(j), s, recorded, fresh=j + 1 if fresh else 0)))
        if again and j < ctx.task:
            again_draws[j] = drawn(draw(ctx, data, j, ctx.test_index(j), s, recorded, fresh=j + 1 if fresh else 0))
    answer(ctx.model, experts, pending, s.batch)
    validated = validation_routing(val_draws, s.selection_batch) if ctx.validation is not None else {}
    rule = s.score
    if rule == AUTO:
        rule = choose_rule(validated) if validated else FALLBACK
    hparams = ctx.extra["hparams"]  # (lr, density, trial) of every expert so far
    rows = []
    for d in test_draws:
        j = d.j
        scores = score_task(d, s, rule)
        row = {
            "task_trained": ctx.task,
            "task_eval": j,
            "n": int(len(ctx.test_index(j))),
            "acc_til": scores.pop("acc_til"),
            "acc_cil": scores["labelled_acc"] if s.labelled_cil else scores["labelfree_acc"],
            **scores,
            "selection_rule": rule,
            **{f"route_{name}_val_expert_acc": value for name, value in validated.items()},
            "selected_sparsity": 100.0 * (1.0 - hparams[j]["density"]),  # %, as the paper reports it
            "selected_lr": hparams[j]["lr"],  # as sampled (faithful trains at lr_gamma^2 x this)
        }
        if again:
            repeat = score_task(again_draws[j], s, rule)["labelled_acc"] if j < ctx.task else float("nan")
            row["bwt_final_model"] = scores["labelled_acc"] - repeat
        rows.append(row)
    return rows


def _percent(hits: torch.Tensor) -> float:
    return 100.0 * float(hits.float().mean()) if len(hits) else float("nan")
