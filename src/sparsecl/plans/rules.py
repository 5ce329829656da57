"""The workflow's rules, read off the plans: one rule per shape of stage a method runs.

Snakemake needs a rule's outputs before it sees a job, so the workflow cannot make one rule of
every stage: a stage kind that writes other files at some tasks (tickets_td's task-0 `train` also
saves the seeded init) is two shapes. Everything else a job needs (what it reads, from which task
and stage) the workflow asks the plan for, job by job.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ..config import RunConfig
from .base import Stage, plan_of


@dataclass(frozen=True)
class StageRule:
    """The jobs of one method's stage kind that write the same files."""

    name: str  # <method>_<kind>; a kind's further shapes add _task<t> (or _<i> if at several tasks)
    method: str
    kind: str
    rounds: bool  # the jobs' folder is <kind><round>
    writes: tuple[str, ...]
    deciding: bool
    tasks: tuple[int, ...]  # the tasks at which this shape runs
    one_stage: bool
    mem_mb: int
    runtime: int

    @property
    def job(self) -> str:
        """The job's path below the run, as a Snakemake pattern (`task{task}/prune{round}`)."""
        if self.one_stage:
            return "task{task}"
        return "task{task}/" + (f"{self.kind}{{round}}" if self.rounds else self.kind)

    @property
    def outputs(self) -> dict[str, str]:
        """Output name (the file's stem: model, masks, train_log, eval, decision, ...) -> file name."""
        return {file.split(".")[0]: file for file in self.writes}


def _shape(method: str, stage: Stage, one_stage: bool) -> tuple:
    return (method, stage.kind, stage.round is not None, stage.writes, stage.deciding, one_stage)


def stage_rules(runs: Iterable[RunConfig]) -> list[StageRule]:
    """Every stage shape of `runs`, each task's stages walked under its plan's `explore` outcome."""
    found: dict[tuple, dict] = {}
    for run in runs:
        plan = plan_of(run.method)
        explore = plan.explore
        for task in range(run.scenario.num_tasks):
            for stage in plan.stages(run, task, lambda _task, _stage, outcome=explore: outcome):
                entry = found.setdefault(_shape(run.method, stage, plan.one_stage), {"tasks": set(), "stage": stage})
                entry["tasks"].add(task)
    kinds: dict[tuple[str, str], list[tuple]] = {}
    for shape in found:
        kinds.setdefault(shape[:2], []).append(shape)
    rules = []
    for (method, kind), shapes in sorted(kinds.items()):
        shapes.sort(key=lambda shape: (len(shape[3]), min(found[shape]["tasks"])))  # the fewest files first
        for i, shape in enumerate(shapes):
            tasks, stage = tuple(sorted(found[shape]["tasks"])), found[shape]["stage"]
            suffix = "" if i == 0 else (f"_task{tasks[0]}" if len(tasks) == 1 else f"_{i}")
            rules.append(
                StageRule(
                    name=f"{method}_{kind}{suffix}",
                    method=method,
                    kind=kind,
                    rounds=shape[2],
                    writes=stage.writes,
                    deciding=stage.deciding,
                    tasks=tasks,
                    one_stage=shape[5],
                    mem_mb=stage.mem_mb,
                    runtime=stage.runtime,
                )
            )
    return rules
