"""The interface every method implements, and the default per-task evaluation.

A method trains one task at a time (`train_task`), starting from what the previous task's
stage wrote (model weights, masks, method state), and returns what this task's stage writes.
A method whose paper runs several steps per task (train, sparsity-train, distil; prune rounds)
names them in `stages` and implements `train_stage`: each stage is its own job, reading the
previous stage's files and any further `inputs` (teachers, retrieval files) its rule declares.
Evaluation after task t asks the method for a model per evaluated task (`model_for`) and
scores task-IL (only that task's classes compete) and class-IL (all seen classes compete); in a
data-incremental scenario every step sees every class, and the one score is top-1 accuracy on
the whole test set.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn as nn

from ..config import RunConfig
from ..engine import DeviceData, predict_logits
from ..errors import ConfigError
from ..plans import Stage
from ..registry import Registry
from ..scenarios import Scenario
from ..stage_files import load_stage_file


@dataclass
class TaskContext:
    """Everything a method may use to train task `task`; nothing else is read."""

    run: RunConfig
    task: int
    scenario: Scenario
    data: DeviceData  # the training split; labels are training labels (-1 outside the scenario)
    device: torch.device
    generator: torch.Generator  # drives order and augmentation
    model: nn.Module  # task t-1's weights (fresh, seeded init for t = 0)
    prev_masks: dict[str, Any]  # task t-1's masks file ({} for t = 0)
    prev_extra: dict[str, Any]  # method state task t-1 stored in its model file
    resume_path: Path  # epoch-level resume file, outside the stage's declared outputs
    log: Callable[[str], None]
    stage: str = "train"  # which of the method's `stages` this job runs
    inputs: dict[str, Path] = field(default_factory=dict)  # further files the stage's rule declares
    planned: Stage | None = None  # the plan's stage: what it reads, from which task and stage

    def stage_input(self, name: str, what: str) -> dict[str, Any]:
        """The file `--input name=...`, checked against the task and stage its plan names it after
        (provenance, then dropped); a one-line error when the input is missing or from elsewhere."""
        ref = self.planned.reads.get(name) if self.planned else None
        if name not in self.inputs or ref is None:
            raise ConfigError(f"stage {self.stage} of task {self.task}: needs --input {name}=<{what} file>")
        return load_stage_file(self.inputs[name], self.run, self.scenario, self.device, (ref.task,), what, ref.made_by)

    def labels_of(self, tasks: range | list[int]) -> list[int]:
        return [label for t in tasks for label in self.scenario.tasks[t]]

    def train_index(self, tasks: range | list[int]) -> torch.Tensor:
        """Training images of `tasks` (the validation holdout excluded)."""
        return self.data.indices_of(self.labels_of(tasks), self.scenario.train_index)

    def val_index(self, tasks: range | list[int]) -> torch.Tensor:
        return self.data.indices_of(self.labels_of(tasks), self.scenario.val_index)

    def chunk_index(self, step: int) -> torch.Tensor:
        """Data-incremental: the training images of step `step` (every class, one chunk)."""
        return torch.as_tensor(self.scenario.chunk_index[step], device=self.device)


@dataclass
class TaskResult:
    """What a training stage writes: weights, masks (their own file), method state, per-epoch log,
    and any further tables (`<name>.parquet` beside the model, e.g. dst's topology trace)."""

    model_state: dict[str, torch.Tensor]
    masks: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    log_rows: list[dict[str, Any]] = field(default_factory=list)
    tables: dict[str, list[dict[str, Any]]] = field(
        default_factory=dict
    )  # rows, written as <name>.parquet beside the model
    files: dict[str, Any] = field(default_factory=dict)  # file name -> object beside the model (.json or torch)


@dataclass
class EvalContext:
    run: RunConfig
    task: int  # the last trained task; tasks 0..task are evaluated
    scenario: Scenario
    data: DeviceData  # the test split
    device: torch.device
    generator: torch.Generator
    model: nn.Module  # weights after `task`
    masks: list[dict[str, Any]]  # masks file of every task 0..task
    extra: dict[str, Any]
    stage: str = "train"  # the stage whose model is evaluated
    inputs: dict[str, Path] = field(default_factory=dict)

    def evaluated_tasks(self) -> range:
        """Tasks whose test images are scored: every seen task, or the whole test set once (data-incremental)."""
        return range(1) if self.scenario.spec.kind == "data" else range(self.task + 1)

    validation: DeviceData | None = None  # the scenario's validation holdout of the training split, if any
    masks_paths: list[Path] = field(default_factory=list)  # where `masks` were read from
    # Entries the evaluation adds to task `task`'s masks file, written with the evaluation when the
    # task's training job evaluates (its own output), e.g. answers later evaluations reuse.
    masks_entries: dict[str, Any] = field(default_factory=dict)
    _copy: nn.Module | None = field(default=None, init=False, repr=False, compare=False)

    def model_copy(self) -> nn.Module:
        """A copy of `model` as it is now, for a method to mask into one task's expert: one network
        reused by every call, so valid only until the next. Deep-copying a full-size backbone per
        evaluated task cost more than scoring the task's test images."""
        if self._copy is None:
            self._copy = copy.deepcopy(self.model)
        else:
            self._copy.load_state_dict(self.model.state_dict())
        return self._copy

    def test_index(self, task: int) -> torch.Tensor:
        return self.data.indices_of(self.scenario.tasks[task])

    def seen_labels(self) -> int:
        """Number of training labels seen after `task` (labels are contiguous per task)."""
        return max(label for t in range(self.task + 1) for label in self.scenario.tasks[t]) + 1


class Method:
    """Base class; subclasses set `name` and implement `train_task`."""

    name: ClassVar[str]
    stages: ClassVar[tuple[str, ...]] = ("train",)

    def train_task(self, ctx: TaskContext) -> TaskResult:
        raise NotImplementedError

    def check_stage(self, run: RunConfig, scenario: Scenario, task: int, stage: str) -> None:
        """Refuse a stage that does not belong at `task` before any file is read (a one-line error)."""
        if stage not in self.stages:
            raise ConfigError(f"--stage: method {self.name} has stages {', '.join(self.stages)}, got {stage!r}")

    def train_stage(self, ctx: TaskContext) -> TaskResult:
        """Run stage `ctx.stage` (checked by `check_stage`); single-stage methods only have `train`."""
        return self.train_task(ctx)

    def model_for(self, ctx: EvalContext, task: int | None) -> nn.Module:
        """The network that answers for `task` (None: class-IL, task unknown), used before the next
        call (a masked expert lives in `ctx.model_copy()`). Dense: one network."""
        return ctx.model

    def evaluate(self, ctx: EvalContext) -> list[dict[str, Any]]:
        """Accuracy on every seen task's test images: task-IL and class-IL, one row per task."""
        rows = []
        seen = ctx.seen_labels()
        cil_model = self.model_for(ctx, None)
        batch = ctx.run.train.eval_batch_size
        for j in ctx.evaluated_tasks():
            idx = ctx.test_index(j)
            labels = ctx.data.labels[idx]
            task_labels = torch.as_tensor(ctx.scenario.tasks[j], device=ctx.device)
            logits = predict_logits(cil_model, ctx.data, idx, batch)
            expert = self.model_for(ctx, j)  # a dense method's expert is its one network: score it once
            til_logits = logits if expert is cil_model else predict_logits(expert, ctx.data, idx, batch)
            til_pred = task_labels[til_logits[:, task_labels].argmax(1)]
            cil_pred = logits[:, :seen].argmax(1)
            rows.append(
                {
                    "task_trained": ctx.task,
                    "task_eval": j,
                    "n": int(len(idx)),
                    "acc_til": _percent(til_pred == labels),
                    "acc_cil": _percent(cil_pred == labels),
                }
            )
        return rows


def _percent(hits: torch.Tensor) -> float:
    return 100.0 * float(hits.float().mean()) if len(hits) else float("nan")


METHODS: Registry[type[Method]] = Registry("method")


def register_method(name: str):
    def add(cls: type[Method]) -> type[Method]:
        cls.name = name
        return METHODS.register(name)(cls)

    return add


def get_method(name: str) -> Method:
    return METHODS.get(name)()
