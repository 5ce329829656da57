"""What one `sparsecl train` or `sparsecl evaluate` job reads, writes and runs on, as one value.

A job is one process running one stage of a method on one task; the method's stage is what is
trained, the job names the files it is trained from and into. The CLI builds the job once from
its options (a job forwarded to the stage server is its command line, so the served child builds
the same value) and `stages.train` / `stages.evaluate` take it whole. Standard library only;
making the classes takes milliseconds, so the CLI imports this module only in the commands that
run a job, and the stage server has it loaded already (through `stages`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True, kw_only=True)
class StageJob:
    """What every job of a run's stage names: the run, its data and task split, the stage and where it runs."""

    config: Path  # the run's resolved config.yaml
    data_dir: Path  # the prepared dataset's directory
    scenario: Path  # the task split of the dataset
    task: int
    device: torch.device
    stage: str = "train"
    inputs: Mapping[str, Path] = field(default_factory=dict)  # further files the stage reads, by name
    config_hash: str | None = None  # the hash the workflow resolves the run's config to

    def __post_init__(self) -> None:  # a read-only copy: the job is a value
        object.__setattr__(self, "inputs", MappingProxyType(dict(self.inputs)))


@dataclass(frozen=True, kw_only=True)
class EvalJob(StageJob):
    """Evaluate a task's (or stage's) model on every task seen so far."""

    model: Path
    masks: tuple[Path, ...]  # the masks file of every task 0..task, in order
    out: Path  # the evaluation table
    record_in_masks: bool = False  # the last masks file is the training job's own: it records into it


@dataclass(frozen=True, kw_only=True)
class TrainJob(StageJob):
    """Train one task (or stage) from the previous stage's files; with `out_eval`, evaluate it after."""

    out_model: Path
    out_masks: Path
    out_log: Path
    resume: Path  # epoch-level resume state: read if present, removed when the job is done
    prev_model: Path | None = None  # the previous task's (or stage's) model and masks
    prev_masks: Path | None = None
    out_eval: Path | None = None
    eval_masks: tuple[Path, ...] = ()  # with `out_eval`: the masks file of every earlier task, in order

    def evaluation(self) -> EvalJob:
        """The evaluation that follows training in the same process (`out_eval` must be set)."""
        shared = {f.name: getattr(self, f.name) for f in fields(StageJob)}
        masks = (*self.eval_masks, self.out_masks)
        return EvalJob(**shared, model=self.out_model, masks=masks, out=self.out_eval, record_in_masks=True)
