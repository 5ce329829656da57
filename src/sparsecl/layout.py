"""Where the workflow's files lie, and which of them each job of a plan reads (torch-free).

The workflow's input functions only turn wildcards into a run and call these; a deciding stage's
outcome comes in through the plan's `Decide`, which in the workflow waits for its checkpoint.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .config import RunConfig
from .data.unlabeled import pool_dir, resolve_pool
from .plans import EVALUATION, STANDING, Decide, Stage, StageRule, plan_of

# The inputs of a stage job that are not passed as `--input NAME=PATH`.
JOB_INPUTS = ("config", "meta", "scenario", "prev_model", "prev_masks", "eval_masks")
NEVER = "(?!x)x"  # a regex that matches nothing: the constraint of a rule no run uses


@dataclass(frozen=True)
class Layout:
    """The results and resources roots of a config, and its `data.unlabeled_pool`."""

    results: str
    resources: str
    unlabeled_pool: str

    def run_path(self, run: RunConfig, *parts: str) -> str:
        return os.path.join(self.results, "runs", run.run_id, *parts)

    def data_dir(self, dataset: str) -> str:
        return f"{self.resources}/data/{dataset}"

    def scenario_file(self, run: RunConfig) -> str:
        return f"{self.resources}/scenarios/{run.dataset}/{run.scenario_id}.json"

    def stage_config(self, run: RunConfig, kind: str | None) -> str:
        """The settings a job of stage kind `kind` reads (the plan's `stage_keys`), else the run's."""
        if kind is None:
            return self.run_path(run, "config.yaml")
        return self.run_path(run, "stage_configs", f"{kind}.yaml")

    def stage_inputs(self, run: RunConfig, kind: str | None = None) -> dict[str, Any]:
        """What every stage job reads: its config, the prepared data and the scenario."""
        return {
            "config": self.stage_config(run, kind),
            "meta": f"{self.data_dir(run.dataset)}/meta.json",
            "scenario": self.scenario_file(run),
        }

    def pool(self, dataset: str) -> dict[str, str]:
        """The unlabeled pool files that runs on `dataset` distil on, per `data.unlabeled_pool`."""
        folder = pool_dir(resolve_pool(self.unlabeled_pool, dataset), dataset, f"{self.resources}/data")
        return {"pool": f"{folder}/pool.npy", "pool_meta": f"{folder}/meta.json"}

    def needs(self, run: RunConfig, need: str) -> dict[str, str]:
        """Files a stage reads besides its config, data and scenario, by the name its plan gives."""
        if need == "unlabeled_pool":
            return self.pool(run.dataset)
        if need == "test_split":
            test = f"{self.data_dir(run.dataset)}/test"
            return {f"test_{kind}": f"{test}/{kind}.npy" for kind in ("images", "labels")}
        raise ValueError(f"{run.run_id}: a stage needs {need!r}, which the workflow does not know")

    def stage_file(self, run: RunConfig, task: int, stage: str, file: str, decide: Decide) -> str:
        """A file of a stage of `run` (`STANDING`: whichever stage stands for that task)."""
        plan = plan_of(run.method)
        if stage == STANDING:
            stage = plan.standing(run, task, decide)
        return self.run_path(run, plan.path(task, stage, file))

    def earlier_masks(self, run: RunConfig, task: int, decide: Decide) -> list[str]:
        """The masks file of each task before `task`: what its evaluation reads besides its own."""
        return [self.stage_file(run, t, STANDING, "masks.pt", decide) for t in range(task)]

    def job_inputs(self, run: RunConfig, task: int, stage: Stage, decide: Decide) -> dict[str, Any]:
        """A stage job's inputs: config, data, scenario, the files its stage reads by name and, for
        a stage that evaluates itself, the masks of the earlier tasks."""
        files = self.stage_inputs(run, plan_of(run.method).config_kind(stage))
        for name, ref in stage.reads.items():
            files[name] = self.stage_file(run, ref.task, ref.stage, ref.file, decide)
        for need in stage.needs:
            files |= self.needs(run, need)
        if stage.evaluates:
            files["eval_masks"] = self.earlier_masks(run, task, decide)
        return files

    def evaluation_inputs(self, run: RunConfig, task: int, stage: Stage, decide: Decide) -> dict[str, Any]:
        """A stage's model, its kind's config, and the masks of every task up to it (its own last)."""
        files = self.stage_inputs(run, plan_of(run.method).config_kind(stage))
        files["model"] = self.stage_file(run, task, stage.name, "model.pt", decide)
        own = self.stage_file(run, task, stage.name, "masks.pt", decide)
        files["masks"] = [*self.earlier_masks(run, task, decide), own]
        return files

    def summary_inputs(self, run: RunConfig, decide: Decide) -> dict[str, list[str]]:
        """Each task's standing evaluation (`evals`), and every other evaluation the plan asks for."""
        plan = plan_of(run.method)
        tasks = range(run.scenario.num_tasks)
        standing = [plan.standing(run, t, decide) for t in tasks]
        others = [(t, s) for t in tasks for s in plan.evaluated(run, t, decide) if s != standing[t]]
        return {
            "evals": [self.stage_file(run, t, s, EVALUATION, decide) for t, s in enumerate(standing)],
            "extras": [self.stage_file(run, t, s, EVALUATION, decide) for t, s in others],
        }


def job_args(inputs: Mapping[str, Any], evaluation: str | None) -> str:
    """A stage job's file options: --prev-model/--prev-masks, one --input NAME=PATH per further
    input and, for a stage that evaluates itself, --out-eval and --eval-masks."""
    args = []
    if "prev_model" in inputs:
        args.append(f"--prev-model {inputs['prev_model']} --prev-masks {inputs['prev_masks']}")
    args += [f"--input {name}={path}" for name, path in inputs.items() if name not in JOB_INPUTS]
    if evaluation is not None:
        args.append(f"--out-eval {evaluation}")
        args += [f"--eval-masks {path}" for path in inputs.get("eval_masks", [])]
    return " ".join(args)


def either(names: Iterable[str]) -> str:
    """A regex matching exactly `names` (and nothing when there are none)."""
    return "|".join(re.escape(name) for name in sorted(set(names))) or NEVER


def evaluated_apart(rules: Iterable[StageRule]) -> tuple[set[str], str]:
    """The methods, and a regex of the stage names, whose evaluation is a job of its own."""
    apart = [rule for rule in rules if EVALUATION not in rule.writes]
    names = {f"{rule.kind}[1-9][0-9]*" if rule.rounds else re.escape(rule.kind) for rule in apart}
    return {rule.method for rule in apart}, "|".join(sorted(names)) or NEVER
