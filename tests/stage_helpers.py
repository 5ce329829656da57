"""Run the pipeline stages in-process on the digits data (fast, no Snakemake)."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch

from sparsecl import stages
from sparsecl.config import RunConfig, TrainConfig, load_run_config, write_run_config
from sparsecl.data import get_dataset
from sparsecl.jobs import EvalJob, TrainJob
from sparsecl.methods import training
from sparsecl.plans import Ref, plan_of
from sparsecl.scenarios import ScenarioSpec, make_scenario

CPU = torch.device("cpu")


def kill_in_epoch(monkeypatch, epoch: int = 3) -> Callable[[], None]:
    """Make the `epoch`-th epoch of the shared training loop die as a killed job would (a
    KeyboardInterrupt), after the earlier epochs saved their resume state. Returns the function
    that puts the real loop back, for the resumed run."""
    real, calls = training.train_epoch, itertools.count(1)

    def dies(*args, **kwargs):
        if next(calls) == epoch:
            raise KeyboardInterrupt("killed")
        return real(*args, **kwargs)

    monkeypatch.setattr(training, "train_epoch", dies)
    return lambda: monkeypatch.setattr(training, "train_epoch", real)


def prepare_digits(root: Path) -> Path:
    data_dir = root / "data" / "digits"
    if not (data_dir / "meta.json").exists():
        get_dataset("digits").prepare(root / "raw", data_dir, 0)
    return data_dir


def digits_and_scenario(root: Path, spec: ScenarioSpec) -> tuple[Path, Path]:
    """The digits prepared under `root` and the scenario file of `spec` (each made once)."""
    data_dir = prepare_digits(root)
    scenario = root / "scenarios" / f"{spec.id}.json"
    if not scenario.exists():
        make_scenario("digits", data_dir, json.dumps(asdict(spec)), scenario)
    return data_dir, scenario


def make_run(root: Path, method: str = "finetune", *, num_tasks: int = 3, seed: int = 0, protocol: str = "standard",
             scenario: dict | None = None, train: dict | None = None, method_args: dict | None = None,
             backbone_args: dict | None = None) -> tuple[Path, Path, Path]:  # fmt: skip
    """Write data, scenario and run config under `root`; return (config, data_dir, scenario)."""
    spec = ScenarioSpec(num_tasks=num_tasks, classes_per_task=2, **(scenario or {}))
    data_dir, scenario_path = digits_and_scenario(root, spec)
    run = RunConfig(
        run_id=f"{method}/default/seed{seed}", experiment=method, point="default", seed=seed, method=method,
        dataset="digits", backbone="mlp", backbone_args=backbone_args or {"hidden": [32]}, protocol=protocol,
        scenario=spec, train=TrainConfig(**({"epochs": 3, "batch_size": 32} | (train or {}))),
        method_args=method_args or {},
    )  # fmt: skip
    config = root / "runs" / run.run_id / "config.yaml"
    write_run_config(json.dumps(run.to_dict()), config)
    return config, data_dir, scenario_path


def train_task(
    config: Path,
    data_dir: Path,
    scenario: Path,
    task: int,
    out: Path,
    evaluate: bool = False,
    device: torch.device = CPU,
) -> Path:
    """Train `task` (reading task-1 from `out`), writing into out/task<t>/; with `evaluate`, then
    evaluate it in the same call, as a workflow job does (out/task<t>/eval.parquet)."""
    task_dir = out / f"task{task}"
    prev = out / f"task{task - 1}"
    evaluation = {
        "out_eval": task_dir / "eval.parquet",
        "eval_masks": tuple(out / f"task{t}/masks.pt" for t in range(task)),
    }
    stages.train(
        TrainJob(
            config=config, data_dir=data_dir, scenario=scenario, task=task, device=device,
            resume=out / "resume" / f"task{task}.pt", **task_files(task_dir, prev if task else None),
            **(evaluation if evaluate else {}),
        )
    )  # fmt: skip
    return task_dir


def task_files(out: Path, prev: Path | None, log: str = "train_log.parquet") -> dict[str, Path | None]:
    """A train job's model, masks and log in `out`, starting from the model and masks in `prev`
    (None: from scratch)."""
    return {
        "out_model": out / "model.pt", "out_masks": out / "masks.pt", "out_log": out / log,
        "prev_model": prev / "model.pt" if prev else None, "prev_masks": prev / "masks.pt" if prev else None,
    }  # fmt: skip


def evaluate_task(
    config: Path, data_dir: Path, scenario: Path, task: int, out: Path, device: torch.device = CPU
) -> Path:
    path = out / f"task{task}" / "eval.parquet"
    masks = tuple(out / f"task{t}" / "masks.pt" for t in range(task + 1))
    model = out / f"task{task}" / "model.pt"
    stages.evaluate(
        EvalJob(
            config=config,
            data_dir=data_dir,
            scenario=scenario,
            task=task,
            device=device,
            model=model,
            masks=masks,
            out=path,
        )
    )
    return path


def undecided(task: int, stage: str) -> dict:
    raise LookupError(f"task {task} {stage}: a deciding stage, which these helpers do not run")


def train_stage(
    config: Path, data_dir: Path, scenario: Path, task: int, stage: str, out: Path, device: torch.device = CPU
) -> Path:
    """Run stage `stage` of `task` as the workflow's job does: its files where its plan puts them
    under `out` (read from there too), the stage config of its kind when the plan has them, and,
    when it writes eval.parquet, the evaluation in the same call. Returns the stage's folder."""
    run = load_run_config(config)
    plan = plan_of(run.method)
    spec = plan.stage(run, task, stage, undecided)
    here = (out / plan.path(task, stage, "model.pt")).parent

    def path(ref: Ref | None) -> Path | None:
        return out / plan.path(ref.task, ref.stage, ref.file) if ref else None

    reads = dict(spec.reads)
    prev = {"prev_model": path(reads.pop("prev_model", None)), "prev_masks": path(reads.pop("prev_masks", None))}
    evaluation = {}
    if "eval.parquet" in spec.writes:
        standing = [plan.path(t, plan.standing(run, t, undecided), "masks.pt") for t in range(task)]
        evaluation = {"out_eval": here / "eval.parquet", "eval_masks": tuple(out / p for p in standing)}
    kind = stage.rstrip("0123456789")
    if plan.stage_keys:
        config = config.parent / "stage_configs" / f"{kind}.yaml"
        write_run_config(json.dumps(plan.stage_run(run, kind).to_dict()), config)
    stages.train(
        TrainJob(
            config=config, data_dir=data_dir, scenario=scenario, task=task, device=device, stage=stage,
            inputs={name: path(ref) for name, ref in reads.items()}, resume=out / "resume" / f"task{task}" / f"{stage}.pt",
            out_model=here / "model.pt", out_masks=here / "masks.pt", out_log=here / "train_log.parquet",
            **prev, **evaluation,
        )
    )  # fmt: skip
    return here


def train_stages(config: Path, data_dir: Path, scenario: Path, task: int, out: Path) -> list[Path]:
    """Every stage of `task` in its plan's order (`train_stage`); their folders."""
    run = load_run_config(config)
    names = [stage.name for stage in plan_of(run.method).stages(run, task, undecided)]
    return [train_stage(config, data_dir, scenario, task, name, out) for name in names]
