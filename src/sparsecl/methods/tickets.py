"""Lifelong Tickets (Chen et al., ICLR 2021): the class-incremental learner ("lottery teaching")
that `tickets_cil`, `tickets_td` and `tickets_bu` share, and their stage machinery.

Task 0 trains both head sets on the task's images (CE on each, two backbone passes per batch).
Task t >= 1 starts from the previous model and draws four streams per step, b = batch_size / 4:
R (b images of task t and of the old classes' exemplars, shuffled; its length is the epoch),
N (floor(b / (t+1)) of task t) and O (floor(b t / (t+1)) old exemplars), together a class-balanced
batch, and U (b frozen views of the retrieved unlabeled images with their teacher logits):

    L = CE(random_{0..t}(x_R), y_R) + KD(random_{0..t-1}(x_U), z_random)
        + 1/2 [c_new CE(main_{0..t}(x_N), y_N) + c_old CE(main_{0..t}(x_O), y_O) + KD(main_{0..t-1}(x_U), z_main)]

with c_new, c_old the N and O batch sizes over b and KD(s, z) = T^2 mean_batch sum_c -softmax(z/T)_c
log softmax(s/T)_c (T = `kd_temperature`, 2). N, O and U restart with a fresh shuffle when used up.
SGD is fresh for every stage; the kept epoch is the best joint accuracy of the main heads on the
validation images of every seen class (the last epoch without a validation split).

Stages are named `<kind>` or `<kind><round>` (`prune2`, `imp5`); every kind is a method `stage_<kind>`.
Sparse stages prune conv weights only (src/sparsecl/sparse/imp.py); masks are re-applied after every
optimiser step. Stopping rules read `stopping_split`: the test split under `protocol: faithful` (the
upstream rule; the stage's rule then declares the test files as inputs), the validation split under
`standard`. The evaluation adds `remaining_weights`, the % of conv weights the evaluated model keeps.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from ..config import RunConfig
from ..data import get_dataset
from ..engine import DeviceData, autocast, make_optimizer, make_scheduler
from ..errors import ConfigError
from ..plans.tickets import LotteryArgs, PruneArgs
from ..scenarios import Scenario
from ..sparse import apply_masks
from ..sparse.imp import Masks, conv_parameters, dense_masks, remaining_percent
from .base import EvalContext, Method, TaskContext, TaskResult
from .tickets_teaching import first_task_epoch, lottery_epoch
from .tickets_unlabeled import load_unlabeled, provenance_of, retrieve
from .training import fit_epochs


def retrain_schedule(args: PruneArgs) -> Schedule:
    """IMP retraining: `retrain_epochs` at the constant `retrain_lr` (upstream: 30 at lr / 100)."""
    return Schedule(args.retrain_epochs, args.retrain_lr, decay=False)


@dataclass(frozen=True)
class Schedule:
    """How long and how fast a stage trains: `decay` = MultiStepLR at `train.lr_milestones`."""

    epochs: int
    lr: float
    decay: bool


@dataclass
class Trained:
    rows: list[dict[str, Any]]
    best: dict[str, Any] | None  # the best-scoring epoch's snapshot (see training.fit_epochs)
    provenance: dict[str, Any]
    optimizer: dict[str, Any]  # the SGD state after the last epoch (momentum buffers)


def train_current_task(
    ctx: TaskContext,
    args: LotteryArgs,
    schedule: Schedule,
    *,
    masks: Masks | None = None,
    score: Callable[[], float] | None = None,
    restore_best: bool = True,
    optimizer_state: dict[str, Any] | None = None,
) -> Trained:
    """Train task `ctx.task` from `ctx.model` (under `masks`, if given): task 0 alone, later tasks by
    lottery teaching; a fresh SGD, or one continuing from `optimizer_state` (its momentum)."""
    params = conv_parameters(ctx.model)
    if masks is not None:
        apply_masks(params, masks)

    def after_step() -> None:
        if masks is not None:
            apply_masks(params, masks)

    cfg = ctx.run.train
    optimizer = make_optimizer(ctx.model.parameters(), cfg, lr=schedule.lr)
    if optimizer_state is not None:
        optimizer.load_state_dict(optimizer_state)
    scheduler = make_scheduler(optimizer, cfg) if schedule.decay else None
    provenance: dict[str, Any] = {}
    if ctx.task == 0:
        run_epoch = first_task_epoch(ctx, optimizer, after_step)
    else:
        unlabeled = load_unlabeled(ctx, args.unlabeled_source)
        provenance = unlabeled.provenance
        run_epoch = lottery_epoch(ctx, optimizer, unlabeled, args.kd_temperature, after_step)
    rows, best = fit_epochs(
        ctx,
        run_epoch,
        optimizer,
        scheduler,
        epochs=schedule.epochs,
        score=(lambda _stats: score()) if score is not None else None,
        restore_best=restore_best,
    )
    remaining = remaining_percent(masks) if masks is not None else 100.0
    for row in rows:
        row.update(stage=ctx.stage, remaining_weights=remaining)
    return Trained(rows, best, provenance, optimizer.state_dict())


@dataclass
class ScoreSplit:
    """Images of each task in one split, scored with the main heads of the tasks seen."""

    name: str
    data: DeviceData
    index: list[torch.Tensor]  # per task

    @torch.no_grad()
    def hits(self, model: torch.nn.Module, task: int, heads: int, batch: int) -> tuple[int, int]:
        model.eval()
        correct = 0
        for x, y in self.data.batches(self.index[task], batch):
            with autocast(self.data.device):
                correct += int((model.forward_heads(x, "main", heads).float().argmax(1) == y).sum())
        return correct, len(self.index[task])

    def joint(self, model: torch.nn.Module, upto: int, batch: int) -> float:
        """Accuracy (%) over the images of tasks 0..upto, all their classes competing."""
        counts = [self.hits(model, j, upto + 1, batch) for j in range(upto + 1)]
        return 100.0 * sum(c for c, _ in counts) / max(sum(n for _, n in counts), 1)

    def task_mean(self, model: torch.nn.Module, upto: int, batch: int) -> float:
        """Mean over tasks 0..upto of each task's accuracy (all seen classes competing)."""
        counts = [self.hits(model, j, upto + 1, batch) for j in range(upto + 1)]
        return float(np.mean([100.0 * c / max(n, 1) for c, n in counts]))


def validation_split(ctx: TaskContext) -> ScoreSplit | None:
    index = [ctx.val_index([j]) for j in range(ctx.task + 1)]
    return ScoreSplit("val", ctx.data, index) if sum(len(i) for i in index) else None


def stopping_split(ctx: TaskContext) -> ScoreSplit:
    """The split a pruning loop's stopping rule reads: test (faithful) or validation (standard)."""
    if ctx.run.protocol != "faithful":
        split = validation_split(ctx)
        if split is None:
            raise ConfigError(
                "scenario.validation_fraction: the standard protocol's stopping rules need a validation split"
            )
        return split
    if "test_images" not in ctx.inputs or "test_labels" not in ctx.inputs:
        raise ConfigError(
            f"stage {ctx.stage}: protocol faithful stops on test accuracy; pass --input test_images=... test_labels=..."
        )
    images = np.load(ctx.inputs["test_images"], mmap_mode="r")
    labels = ctx.scenario.label_map(get_dataset(ctx.run.dataset).num_classes)[np.load(ctx.inputs["test_labels"])]
    data = DeviceData.from_numpy(
        images, labels, ctx.data.mean.flatten().tolist(), ctx.data.std.flatten().tolist(), ctx.device
    )
    return ScoreSplit("test", data, [data.indices_of(ctx.scenario.tasks[j]) for j in range(ctx.task + 1)])


def validation_score(ctx: TaskContext) -> Callable[[], float] | None:
    split = validation_split(ctx)
    if split is None:
        return None
    return lambda: split.joint(ctx.model, ctx.task, ctx.run.train.eval_batch_size)


def current_masks(ctx: TaskContext) -> Masks:
    """The conv masks the previous stage ended with (dense if it had none)."""
    return dict(ctx.prev_masks["mask"]) if "mask" in ctx.prev_masks else dense_masks(conv_parameters(ctx.model))


def full_schedule(ctx: TaskContext) -> Schedule:
    return Schedule(ctx.run.train.epochs, ctx.run.train.lr, decay=True)


def best_state(trained: Trained, ctx: TaskContext) -> dict[str, torch.Tensor]:
    return trained.best["model"] if trained.best is not None else ctx.model.state_dict()


def check_setup(ctx: TaskContext) -> None:
    """One-line errors for a backbone or scenario the learner cannot run on."""
    spec = ctx.scenario.spec
    if not hasattr(ctx.model, "forward_heads"):
        raise ConfigError(
            f"backbone: the tickets methods need preact_resnet18_tickets (two head sets), got {ctx.run.backbone}"
        )
    if spec.kind != "class":
        raise ConfigError(f"scenario.kind: the tickets methods are class-incremental (class), got {spec.kind!r}")
    if ctx.model.classes_per_head != spec.classes_per_task:
        raise ConfigError(
            f"backbone_args.classes_per_head: expected scenario.classes_per_task = {spec.classes_per_task},"
            f" got {ctx.model.classes_per_head}"
        )
    if not len(ctx.scenario.exemplar_index):
        raise ConfigError(
            "scenario.exemplars_per_class: the tickets methods need exemplars (the paper keeps 100 per class)"
        )


class TicketsMethod(Method):
    """Stage dispatch, the shared `retrieve` and dense `train` stages, and the evaluation."""

    stages: ClassVar[tuple[str, ...]] = ("retrieve", "train")
    rounds: ClassVar[tuple[str, ...]] = ()  # stage kinds numbered by round (prune1, prune2, ...)
    args_type: ClassVar[type[LotteryArgs]] = LotteryArgs

    def check_stage(self, run: RunConfig, scenario: Scenario, task: int, stage: str) -> None:
        """Stage kinds numbered by round (prune1, regrow2, ...) are one kind each."""
        match = re.fullmatch(r"([a-z]+)([1-9][0-9]*)?", stage)
        kind = match.group(1) if match else ""
        if kind not in self.stages or (match.group(2) is None) == (kind in self.rounds):
            named = ", ".join(f"{k}<round>" if k in self.rounds else k for k in self.stages)
            raise ConfigError(f"--stage: method {self.name} has stages {named}, got {stage!r}")

    def train_stage(self, ctx: TaskContext) -> TaskResult:
        check_setup(ctx)
        stage = ctx.planned  # the plan's stage: its kind and, in a loop, its round
        result = getattr(self, f"stage_{stage.kind}")(ctx, self.args_type.of(ctx.run), stage.round or 0)
        # what the starting model distilled on stays on record (e.g. a prune round that does not train)
        inherited = ctx.prev_extra.get("provenance", {})
        result.extra["provenance"] = {**inherited, **result.extra.get("provenance", {})}
        return result

    def stage_retrieve(self, ctx: TaskContext, args: LotteryArgs, _round: int) -> TaskResult:
        if ctx.task == 0:
            raise ConfigError("--stage retrieve: task 0 has no previous model to retrieve with")
        payload = retrieve(ctx, args.unlabeled_source, args.unlabeled_per_exemplar)
        selected, exemplars, size = len(payload["index"]), payload["exemplars"], payload["pool_size"]
        fraction = selected / size if size else 0.0
        ctx.log(
            f"task {ctx.task}: {selected} unlabeled images retrieved around {exemplars} exemplars"
            f" from a pool of {size} ({100 * fraction:.1f}% of it)"
        )
        if payload["requested"] >= size:
            ctx.log(
                f"warning: task {ctx.task} asks for {payload['requested']} unlabeled images"
                f" ({exemplars} exemplars x {args.unlabeled_per_exemplar}) from a pool of {size}:"
                " the whole pool is taken and retrieval selects nothing"
            )
        row = {
            "task": ctx.task,
            "stage": ctx.stage,
            "selected": selected,
            "requested": payload["requested"],
            "pool_size": size,
            "retrieved_fraction": fraction,
            "exemplars": exemplars,
        }
        return TaskResult(
            model_state={},
            extra={"provenance": provenance_of(payload)},
            log_rows=[row],
            files={"unlabeled.pt": payload},
        )

    def stage_train(self, ctx: TaskContext, args: LotteryArgs, _round: int) -> TaskResult:
        """Dense lottery teaching of task t from the previous task's model."""
        trained = train_current_task(ctx, args, full_schedule(ctx), score=validation_score(ctx))
        return TaskResult(
            model_state=ctx.model.state_dict(), extra={"provenance": trained.provenance}, log_rows=trained.rows
        )

    def evaluate(self, ctx: EvalContext) -> list[dict[str, Any]]:
        rows = super().evaluate(ctx)
        own = ctx.masks[-1]
        remaining = remaining_percent(own["mask"]) if "mask" in own else 100.0
        for row in rows:
            row["remaining_weights"] = remaining
        return rows
