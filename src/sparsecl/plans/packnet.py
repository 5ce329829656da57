"""PackNet's plan and arguments: per task a `train` job, then a `prune` job that prunes, retrains,
freezes and evaluates; `prune` stands for the task."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from ..config import RunConfig
from ..errors import ConfigError
from .base import TRAINED, Decide, MethodArgs, Plan, Ref, Stage, register_plan

# What each stage kind reads of `method_args`: training the free weights reads none, so a new
# prune ratio or retraining length reruns the prune stages (and what follows) only.
STAGE_KEYS: dict[str, tuple[str, ...]] = {"train": (), "prune": ("prune_ratio", "retrain_epochs")}


def check_scenario(kind: str) -> None:
    """PackNet answers each task with that task's subnetwork: it needs tasks of their own classes."""
    if kind != "class":
        raise ConfigError(f"scenario.kind: packnet is task-incremental, expected 'class', got {kind!r}")


@dataclass(frozen=True)
class PackNetArgs(MethodArgs):
    """`method_args` of a packnet experiment (the paper's 50% per task)."""

    prune_ratio: float = 0.5  # fraction of each layer's free weights a task gives back
    retrain_epochs: int = 10  # epochs of the kept weights after the prune (0: none)

    def check(self, run: RunConfig) -> None:
        if not 0 < self.prune_ratio < 1:
            raise ConfigError(f"method_args.prune_ratio: expected a number in (0, 1), got {self.prune_ratio}")
        if self.retrain_epochs < 0:
            raise ConfigError(f"method_args.retrain_epochs: expected an integer >= 0, got {self.retrain_epochs}")
        check_scenario(run.scenario.kind)


def start(task: int, stage: str) -> dict[str, Ref]:
    """--prev-model/--prev-masks: the files of stage `stage` of task `task`."""
    return {"prev_model": Ref(task, stage), "prev_masks": Ref(task, stage, "masks.pt")}


@register_plan("packnet")
class PackNet(Plan):
    """Task t's `train` starts from task t-1's `prune`; its `prune` from its `train`."""

    args = PackNetArgs
    stage_keys = STAGE_KEYS

    def stages(self, run: RunConfig, task: int, decide: Decide) -> Iterator[Stage]:
        yield Stage("train", start(task - 1, "prune") if task else {}, TRAINED, keys=STAGE_KEYS["train"])
        yield Stage("prune", start(task, "train"), (*TRAINED, "eval.parquet"), keys=STAGE_KEYS["prune"])
