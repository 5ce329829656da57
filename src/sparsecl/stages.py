"""The pipeline stages behind the CLI: each reads explicit input files and writes its outputs atomically."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from .config import RunConfig, dump_run_config, load_run_config
from .data import get_dataset, load_meta, load_split
from .engine import DeviceData, seed_everything
from .engine.device import prepare_model
from .errors import DataError
from .io import load_torch, provenance, save_torch, write_json, write_parquet, write_text
from .methods import EvalContext, TaskContext, get_method
from .models import create_backbone
from .scenarios import Scenario, ScenarioSpec, build_scenario, load_scenario, save_scenario


def log_to_stdout(message: str) -> None:
    print(message, flush=True)


def write_run_config(config_json: str, out: Path) -> None:
    run = RunConfig.from_dict(json.loads(config_json))
    write_text(out, dump_run_config(run))


def make_scenario(dataset: str, data_dir: Path, spec_json: str, out: Path) -> None:
    spec = ScenarioSpec(**json.loads(spec_json))
    meta = load_meta(data_dir)
    labels = load_split(data_dir, "train").labels
    scenario = build_scenario(spec, dataset, labels, meta["num_classes"])
    if scenario.spec.id != Path(out).stem:
        raise DataError(f"{out}: file name does not match the scenario id {scenario.spec.id!r}")
    save_scenario(scenario, out)


def load_device_data(
    run: RunConfig, data_dir: Path, meta: dict, split: str, scenario: Scenario, device: torch.device, augment: bool
) -> DeviceData:
    spec = get_dataset(run.dataset)
    prepared = load_split(data_dir, split)
    labels = scenario.label_map(meta["num_classes"])[prepared.labels]
    return DeviceData.from_numpy(
        prepared.images,
        labels,
        meta["mean"],
        meta["std"],
        device,
        crop_padding=spec.crop_padding if augment else 0,
        hflip=spec.hflip and augment,
    )


def build_model(run: RunConfig, meta: dict, scenario: Scenario, device: torch.device) -> torch.nn.Module:
    model = create_backbone(run.backbone, scenario.num_classes, tuple(meta["image_shape"]), **run.backbone_args)
    return prepare_model(model, device)


def task_generator_seed(run: RunConfig, task: int, purpose: int = 0) -> int:
    """Independent, reproducible streams per (run seed, task, purpose)."""
    return int(np.random.SeedSequence([run.seed, task, purpose]).generate_state(1)[0])


def train(
    run_config: Path,
    data_dir: Path,
    scenario_path: Path,
    task: int,
    prev_model: Path | None,
    prev_masks: Path | None,
    out_model: Path,
    out_masks: Path,
    out_log: Path,
    resume_path: Path,
    device: torch.device,
    stage: str = "train",
    inputs: dict[str, Path] | None = None,
) -> None:
    started = time.time()
    run = load_run_config(run_config)
    scenario = load_scenario(scenario_path)
    if not 0 <= task < len(scenario.tasks):
        raise DataError(f"{scenario_path}: task {task} does not exist (scenario has {len(scenario.tasks)} tasks)")
    seed_everything(run.seed, device)  # task 0's initial weights depend on the run seed only
    meta = load_meta(data_dir)
    model = build_model(run, meta, scenario, device)
    prev_extra: dict[str, Any] = {}
    masks: dict[str, Any] = {}
    if task > 0 and (prev_model is None or prev_masks is None):
        raise DataError(f"task {task}: the previous task's model and masks files are required")
    if prev_model is not None:  # task 0's later stages continue from its earlier ones
        saved = load_torch(prev_model, map_location=device)
        model.load_state_dict(saved["state_dict"])
        prev_extra = saved.get("extra", {})
    if prev_masks is not None:
        masks = load_torch(prev_masks, map_location=device)
    generator = seed_everything(task_generator_seed(run, task), device)
    ctx = TaskContext(
        run=run,
        task=task,
        scenario=scenario,
        data=load_device_data(run, data_dir, meta, "train", scenario, device, augment=run.train.augment),
        device=device,
        generator=generator,
        model=model,
        prev_masks=masks,
        prev_extra=prev_extra,
        resume_path=Path(resume_path),
        log=log_to_stdout,
        stage=stage,
        inputs=dict(inputs or {}),
    )
    result = get_method(run.method).train_stage(ctx)
    prov = provenance(run.to_dict(), seed=run.seed, device=device, started=started)
    prov.update(run_id=run.run_id, task=task, stage=stage, method=run.method, protocol=run.protocol)
    prov.update(result.extra.get("provenance", {}))
    save_torch(out_masks, _to_cpu(result.masks))
    for name, table in result.tables.items():
        write_parquet(Path(out_model).parent / f"{name}.parquet", table, prov)
    for name, obj in result.files.items():
        path = Path(out_model).parent / name
        if path.suffix == ".json":
            write_json(path, obj)
        else:
            save_torch(path, _to_cpu(obj))
    write_parquet(out_log, pd.DataFrame(result.log_rows), prov)
    save_torch(
        out_model, {"state_dict": _to_cpu(result.model_state), "extra": _to_cpu(result.extra), "provenance": prov}
    )
    Path(resume_path).unlink(missing_ok=True)


def evaluate(
    run_config: Path,
    data_dir: Path,
    scenario_path: Path,
    task: int,
    model_path: Path,
    masks_paths: list[Path],
    out: Path,
    device: torch.device,
    stage: str = "train",
    inputs: dict[str, Path] | None = None,
) -> None:
    started = time.time()
    run = load_run_config(run_config)
    scenario = load_scenario(scenario_path)
    if len(masks_paths) != task + 1:
        raise DataError(f"evaluate task {task}: expected {task + 1} masks files, got {len(masks_paths)}")
    meta = load_meta(data_dir)
    model = build_model(run, meta, scenario, device)
    saved = load_torch(model_path, map_location=device)
    model.load_state_dict(saved["state_dict"])
    generator = seed_everything(task_generator_seed(run, task, purpose=1), device)
    ctx = EvalContext(
        run=run,
        task=task,
        scenario=scenario,
        data=load_device_data(run, data_dir, meta, "test", scenario, device, augment=False),
        device=device,
        generator=generator,
        model=model,
        masks=[load_torch(p, map_location=device) for p in masks_paths],
        extra=saved.get("extra", {}),
        stage=stage,
        inputs=dict(inputs or {}),
    )
    rows = get_method(run.method).evaluate(ctx)
    for row in rows:
        log_to_stdout(
            f"after task {task}: task {row['task_eval']} task-IL {row['acc_til']:.2f}% class-IL {row['acc_cil']:.2f}%"
        )
    prov = provenance(run.to_dict(), seed=run.seed, device=device, started=started)
    prov.update(run_id=run.run_id, task=task, stage=stage, method=run.method, protocol=run.protocol)
    prov.update(ctx.extra.get("provenance", {}))
    write_parquet(out, pd.DataFrame(rows), prov)


def _to_cpu(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj
