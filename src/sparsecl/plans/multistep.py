"""multistep's plan: its settings, its stage sequence, and what each stage depends on.

Step 0 runs `train` then `sst` on chunk 0; every
later step k runs `aod` then, unless it is the last step, `sst_msl` on chunk k. Each stage job
reads a stage config (`stage_run_config`): the run's settings with `train` resolved for that
stage and `method_args` cut down to the keys the stage depends on, so that a change of, e.g.,
`ratio` reaches the sparsity-training stages (and what follows them) and never the first one.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, fields, replace
from typing import Any

from ..config import RunConfig, TrainConfig
from ..errors import ConfigError
from .base import TRAINED, Decide, MethodArgs, Plan, Ref, Stage, register_plan

STAGES = ("train", "sst", "aod", "sst_msl")
SELECTIONS = ("global", "layer")
WEIGHTINGS = ("confidence", "uniform")
TEACHER_SETS = ("all", "previous", "aod")
DOWNSTREAM = ("keep", "zero")


def _arg(default: Any, *stages: str) -> Any:
    return field(default=default, metadata={"stages": stages})


@dataclass(frozen=True)
class MultistepArgs(MethodArgs):
    """`method_args` of a multistep experiment; each field names the stages that read it."""

    ratio: float = _arg(0.5, "sst", "sst_msl")  # fraction of all BN channels in the selected set S
    selection: str = _arg("global", "sst", "sst_msl")  # smallest |gamma| over all layers, or per layer
    layer_cap: float = _arg(0.9, "sst", "sst_msl")  # most of one layer's channels a global S may take
    s: float = _arg(1e-4, "sst", "sst_msl")  # L1 strength on the gamma of S
    small_gamma: float = _arg(1e-2, "sst", "sst_msl")  # |gamma| below this counts as switched off
    silenced_floor: float = _arg(0.25, "sst", "sst_msl")  # fraction of S switched off below which a stage warns
    reinit_gamma: float = _arg(0.05, "aod")  # BN gamma of the re-initialised channels (small: see the docs)
    reinit_downstream: str = _arg("keep", "aod")  # input slices of the layers reading S: keep or zero
    temperature: float = _arg(4.0, "aod", "sst_msl")
    kd_lambda: float = _arg(1.0, "aod", "sst_msl")
    kd_weighting: str = _arg("confidence", "aod", "sst_msl")  # per-sample weight of the distillation term
    msl_teachers: str = _arg(
        "all", "sst_msl"
    )  # final models of all earlier steps, the previous one, or this step's aod
    msl_alpha: tuple[float, ...] = _arg((), "sst_msl")  # weight of step j's snapshot; (): kd_lambda / count
    stage_train: dict[str, dict[str, Any]] = field(default_factory=dict)  # stage -> overrides of `train`

    def check(self, run: RunConfig) -> None:
        for key, allowed in (
            ("selection", SELECTIONS),
            ("kd_weighting", WEIGHTINGS),
            ("msl_teachers", TEACHER_SETS),
            ("reinit_downstream", DOWNSTREAM),
        ):
            if getattr(self, key) not in allowed:
                raise ConfigError(f"method_args.{key}: expected one of {allowed}, got {getattr(self, key)!r}")
        if not 0 < self.ratio < 1:
            raise ConfigError(f"method_args.ratio: expected in (0, 1), got {self.ratio}")
        for key in ("s", "kd_lambda", "reinit_gamma"):
            if getattr(self, key) < 0:
                raise ConfigError(f"method_args.{key}: expected >= 0, got {getattr(self, key)}")
        if not self.ratio <= self.layer_cap <= 1:
            raise ConfigError(
                f"method_args.layer_cap: expected in [ratio, 1] = [{self.ratio}, 1], got {self.layer_cap}"
            )
        if not 0 <= self.silenced_floor <= 1:
            raise ConfigError(f"method_args.silenced_floor: expected in [0, 1], got {self.silenced_floor}")
        if self.small_gamma <= 0:
            raise ConfigError(f"method_args.small_gamma: expected > 0, got {self.small_gamma}")
        if self.temperature <= 0:
            raise ConfigError(f"method_args.temperature: expected > 0, got {self.temperature}")
        unknown = sorted(set(self.stage_train) - set(STAGES))
        if unknown:
            raise ConfigError(f"method_args.stage_train.{unknown[0]}: unknown stage; expected one of {STAGES}")
        if run.scenario.kind != "data":
            raise ConfigError("scenario.kind: the multistep method needs a data-incremental scenario (kind: data)")
        steps = run.scenario.num_tasks
        needed = [j for k in range(1, steps - 1) for j, _ in teachers("sst_msl", k, steps, self.msl_teachers).values()]
        if self.msl_alpha and needed and len(self.msl_alpha) <= max(needed):
            raise ConfigError(
                f"method_args.msl_alpha: the multi-step loss needs a weight for steps 0..{max(needed)},"
                f" got {list(self.msl_alpha)}"
            )


STAGE_KEYS = {
    stage: tuple(f.name for f in fields(MultistepArgs) if stage in f.metadata.get("stages", ())) for stage in STAGES
}


def stage_run_config(run: RunConfig, stage: str) -> RunConfig:
    """What stage `stage` of `run` depends on: `train` with the stage's overrides, its own method_args.

    Idempotent, so a stage job may read either the stage config or the full run config.
    """
    if stage not in STAGES:
        raise ConfigError(f"--stage: the multistep method has stages {', '.join(STAGES)}, got {stage!r}")
    overrides = dict(MultistepArgs.of(run).stage_train.get(stage, {}))
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ConfigError(f"method_args.stage_train.{stage}.{unknown[0]}: unknown key; expected one of {sorted(known)}")
    kept = {key: value for key, value in run.method_args.items() if key in STAGE_KEYS[stage]}
    return replace(run, train=replace(run.train, **overrides), method_args=kept)


def stages_of_step(step: int, num_steps: int) -> tuple[str, ...]:
    """The stages that run on chunk `step`, in order."""
    if step == 0:
        return ("train", "sst")
    return ("aod",) if step == num_steps - 1 else ("aod", "sst_msl")


def final_stage(step: int, num_steps: int) -> str:
    """The stage whose model stands for step `step` (its evaluation is the step's accuracy)."""
    return stages_of_step(step, num_steps)[-1]


def predecessor(stage: str, step: int, num_steps: int) -> tuple[int, str] | None:
    """(step, stage) whose model and channel file `stage` of `step` starts from; None for the first stage."""
    if stage not in stages_of_step(step, num_steps):
        raise ConfigError(f"stage {stage!r} does not run at step {step} of {num_steps}")
    position = stages_of_step(step, num_steps).index(stage)
    if position:
        return step, stages_of_step(step, num_steps)[position - 1]
    return (step - 1, final_stage(step - 1, num_steps)) if step else None


def teachers(stage: str, step: int, num_steps: int, msl_teachers: str = "all") -> dict[str, tuple[int, str]]:
    """The frozen models a stage distils from, as `--input` name -> (step, stage) of their model.

    `aod` learns from the final model of the previous step (`teacher`); `sst_msl` from the final
    model of every earlier step j (`teacher<j>`, `all`), of the previous one only (`previous`), or
    from the `aod` model it resumes (`teacher<step>`: the README gives the multi-step loss only
    that model).
    """
    if stage == "aod":
        return {"teacher": (step - 1, final_stage(step - 1, num_steps))}
    if stage == "sst_msl":
        if msl_teachers == "aod":
            return {f"teacher{step}": (step, "aod")}
        steps = range(step) if msl_teachers == "all" else [step - 1]
        return {f"teacher{j}": (j, final_stage(j, num_steps)) for j in steps}
    return {}


@register_plan("multistep")
class Multistep(Plan):
    """Each stage starts from the one before it (across steps too) and is evaluated on its own."""

    args = MultistepArgs
    stage_keys = STAGE_KEYS

    def stages(self, run: RunConfig, task: int, decide: Decide) -> Iterator[Stage]:
        steps = run.scenario.num_tasks
        msl = run.method_args.get("msl_teachers", MultistepArgs.msl_teachers)
        for stage in stages_of_step(task, steps):
            reads = {}
            before = predecessor(stage, task, steps)
            if before:
                reads = {"prev_model": Ref(*before), "prev_masks": Ref(*before, "masks.pt")}
            reads |= {name: Ref(*where) for name, where in teachers(stage, task, steps, msl).items()}
            channels = ("channels.parquet",) if stage in ("sst", "sst_msl") else ()
            yield Stage(stage, reads, (*TRAINED, *channels), keys=STAGE_KEYS[stage], runtime=240)

    def evaluated(self, run: RunConfig, task: int, decide: Decide) -> list[str]:
        return list(stages_of_step(task, run.scenario.num_tasks))

    def stage_run(self, run: RunConfig, kind: str) -> RunConfig:
        return stage_run_config(run, kind)
