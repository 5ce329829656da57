"""The shape of a plan: stages, the files they read and write, and the method's typed arguments."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

from ..config import RunConfig, method_args
from ..errors import ConfigError
from ..registry import Registry

TRAINED = ("model.pt", "masks.pt", "train_log.parquet")  # what every training stage writes
EVALUATION = "eval.parquet"  # a stage's evaluation on every task seen so far
STANDING = "<standing>"  # Ref.stage: whichever stage stands for that task (known once its decisions are)

# (task, stage) -> the decision.json of that deciding stage. In the workflow it waits for the
# stage's checkpoint; in a test it is a dictionary lookup.
Decide = Callable[[int, "Stage"], dict[str, Any]]


@dataclass(frozen=True)
class Ref:
    """File `file` of stage `stage` of task `task` of the same run."""

    task: int
    stage: str
    file: str = "model.pt"

    @property
    def made_by(self) -> str:
        """The stage the file's provenance must name ('' for `STANDING`: whichever stood)."""
        return "" if self.stage == STANDING else self.stage


@dataclass(frozen=True)
class Stage:
    """One job of a task: what it reads, what it writes, and what it depends on.

    A stage of a loop (`round` 1, 2, ...) is named `<kind><round>`: prune3 is round 3 of `prune`.
    `mem_mb` and `runtime` (minutes) are what a cluster job of the stage asks for on its first try.
    """

    kind: str
    reads: dict[str, Ref] = field(default_factory=dict)  # --prev-model/--prev-masks, or --input NAME=
    writes: tuple[str, ...] = TRAINED
    keys: tuple[str, ...] | None = None  # the method_args keys the stage reads; None: all of them
    deciding: bool = False  # writes decision.json, which says what runs next
    needs: tuple[str, ...] = ()  # run inputs besides config, data and scenario: unlabeled_pool, test_split
    round: int | None = None
    mem_mb: int = 8000
    runtime: int = 120

    @property
    def name(self) -> str:
        return self.kind if self.round is None else f"{self.kind}{self.round}"

    @property
    def evaluates(self) -> bool:
        """Whether the job evaluates what it trained itself (else an evaluation job does)."""
        return EVALUATION in self.writes


@dataclass(frozen=True)
class MethodArgs:
    """Base of a method's `method_args` dataclass: the fields and their defaults are the one source
    (the schema's defaults are tested against them); `check` holds the rules across fields."""

    @classmethod
    def of(cls, run: RunConfig) -> Any:
        args = method_args(cls, run)
        args.check(run)
        return args

    def check(self, run: RunConfig) -> None:
        """Rules the schema cannot state (between keys, or against the run's train and scenario)."""


class NoArgs(MethodArgs):
    """A method without settings of its own."""


class Plan:
    """A method's procedure. One-stage plans write task<t>/<file>; the others task<t>/<stage>/<file>."""

    name: ClassVar[str]
    args: ClassVar[type[MethodArgs]] = NoArgs
    one_stage: ClassVar[bool] = False
    # Stage kind (a stage's name less its round: prune3 -> prune) -> the method_args keys its jobs
    # read. A method that names its kinds here has its jobs read a stage config (`stage_run`).
    stage_keys: ClassVar[dict[str, tuple[str, ...]]] = {}
    # The outcome of every deciding stage under which each stage kind of a task shows up at least
    # once (the workflow makes one rule per kind from it).
    explore: ClassVar[dict[str, Any]] = {}
    # The outcome under which every loop goes on: a job finds its own stage, and what it reads,
    # without the decisions before it (loops end at their own bound).
    reach: ClassVar[dict[str, Any]] = {}

    def stages(self, run: RunConfig, task: int, decide: Decide) -> Iterator[Stage]:
        """Task `task`'s stages in order; a deciding stage's outcome is read through `decide`."""
        raise NotImplementedError

    def standing(self, run: RunConfig, task: int, decide: Decide) -> str:
        """The stage whose evaluation is the task's: by default the task's last stage."""
        return list(self.stages(run, task, decide))[-1].name

    def evaluated(self, run: RunConfig, task: int, decide: Decide) -> list[str]:
        """The stages of `task` whose evaluation the run's summary waits for."""
        return [self.standing(run, task, decide)]

    def check(self, run: RunConfig) -> MethodArgs:
        return self.args.of(run)

    def stage(self, run: RunConfig, task: int, name: str, decide: Decide) -> Stage:
        for stage in self.stages(run, task, decide):
            if stage.name == name:
                return stage
        raise ConfigError(f"{run.run_id}: method {run.method} runs no stage {name!r} at task {task}")

    def job_stage(self, run: RunConfig, task: int, name: str) -> Stage:
        """Stage `name` of `task`, as a job that runs it sees it (every earlier loop went on)."""
        return self.stage(run, task, name, lambda _task, _stage: self.reach)

    def path(self, task: int, stage: str, file: str) -> str:
        """Where a stage's file lies inside the run's folder."""
        return f"{self.job(task, stage)}/{file}"

    def job(self, task: int, stage: str) -> str:
        """A stage job's name inside the run, for its log, benchmark and resume files."""
        return f"task{task}" if self.one_stage else f"task{task}/{stage}"

    def config_kind(self, stage: Stage) -> str | None:
        """The stage config a job of `stage` reads (its kind's), or None for the run's config."""
        return stage.kind if self.stage_keys else None

    def stage_args(self, run: RunConfig, stage: Stage) -> dict[str, Any]:
        """The run's method_args cut down to what `stage` depends on."""
        if stage.keys is None:
            return dict(run.method_args)
        return {key: value for key, value in run.method_args.items() if key in stage.keys}

    def stage_run(self, run: RunConfig, kind: str) -> RunConfig:
        """The settings a job of stage kind `kind` reads: the run's, `method_args` cut to the kind's
        keys, so that its config file changes (and the job reruns) only when one of them does."""
        if kind not in self.stage_keys:
            raise ConfigError(f"--stage: method {self.name} has stages {', '.join(self.stage_keys)}, got {kind!r}")
        keys = self.stage_keys[kind]
        return replace(run, method_args={key: value for key, value in run.method_args.items() if key in keys})


PLANS: Registry[Plan] = Registry("method")


def register_plan(name: str):
    def add(cls: type[Plan]) -> type[Plan]:
        cls.name = name
        PLANS.register(name)(cls())
        return cls

    return add


def plan_of(method: str) -> Plan:
    return PLANS.get(method)


def check_run(run: RunConfig) -> None:
    """Refuse a run whose method arguments break a rule of its method, naming its experiment."""
    try:
        plan_of(run.method).check(run)
    except ConfigError as err:
        raise ConfigError(f"experiments.{run.experiment}.{err}") from None
