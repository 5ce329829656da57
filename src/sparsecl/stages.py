"""The pipeline stages behind the CLI: each reads explicit input files and writes its outputs atomically."""

from __future__ import annotations

import time
import zipfile
from pathlib import Path
from typing import Any

import torch

from .config import RunConfig, load_run_config
from .data import get_dataset, load_meta, load_split
from .engine import DeviceData, seed_everything
from .engine.device import prepare_model
from .errors import DataError
from .io import (
    all_or_none,
    check_writable,
    provenance,
    save_torch,
    split_timing,
    write_json,
    write_parquet,
)
from .methods import EvalContext, TaskContext, get_method
from .models import create_backbone
from .models.weights import maskable_parameters
from .scenarios import Scenario, load_scenario
from .seeds import seed_stream
from .stage_files import check_masks_fit, file_provenance, load_stage_file, load_weights


def log_to_stdout(message: str) -> None:
    print(message, flush=True)


def load_device_data(
    run: RunConfig, data_dir: Path, meta: dict, split: str, scenario: Scenario, device: torch.device, augment: bool
) -> DeviceData:
    spec = get_dataset(run.dataset)
    prepared = load_split(data_dir, split, meta=meta)
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


def load_validation(data_dir: Path, meta: dict, scenario: Scenario, device: torch.device) -> DeviceData | None:
    """The validation holdout of the training split (None without one), unaugmented."""
    if len(scenario.val_index) == 0:
        return None
    prepared = load_split(data_dir, "train", meta=meta)
    labels = scenario.label_map(meta["num_classes"])[prepared.labels[scenario.val_index]]
    return DeviceData.from_numpy(prepared.images[scenario.val_index], labels, meta["mean"], meta["std"], device)


def build_model(run: RunConfig, meta: dict, scenario: Scenario, device: torch.device) -> torch.nn.Module:
    model = create_backbone(run.backbone, scenario.num_classes, tuple(meta["image_shape"]), **run.backbone_args)
    return prepare_model(model, device)


def load_run_scenario(path: Path, run: RunConfig, task: int) -> Scenario:
    """The scenario file of this run (its dataset and split), holding `task`; else a one-line error."""
    try:
        scenario = load_scenario(path)
    except (KeyError, TypeError) as err:
        raise DataError(f"{path}: not a scenario file written by sparsecl ({type(err).__name__}: {err})") from None
    except zipfile.BadZipFile as err:
        raise DataError(f"{Path(path).with_suffix('.npz')}: not a readable scenario index file ({err})") from None
    if (scenario.dataset, scenario.spec.id) != (run.dataset, run.scenario_id):
        raise DataError(
            f"{path}: scenario {scenario.spec.id!r} of {scenario.dataset}, this run uses {run.scenario_id!r}"
            f" of {run.dataset}"
        )
    if not 0 <= task < len(scenario.tasks):
        raise DataError(f"{path}: task {task} does not exist (scenario has {len(scenario.tasks)} tasks)")
    return scenario


def load_masks(path: Path, run: RunConfig, scenario, device, tasks: tuple[int, ...], model: torch.nn.Module) -> dict:
    """A masks file of this run and of one of `tasks` whose masks fit `model` weight for weight."""
    saved = load_stage_file(path, run, scenario, device, tasks, "masks")
    shapes = {name: tuple(p.shape) for name, p in model.named_parameters()}
    check_masks_fit(saved, shapes, tuple(maskable_parameters(model)), path)
    return saved


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
    out_eval: Path | None = None,
    eval_masks: list[Path] | tuple[Path, ...] = (),
    config_hash: str | None = None,
) -> None:
    """Train one task (or stage); with `out_eval`, then evaluate the saved model in the same process
    (`eval_masks`: the masks files of tasks 0..task-1; this task's is the one just written)."""
    started = time.time()
    run = load_run_config(run_config, config_hash)
    scenario = load_run_scenario(scenario_path, run, task)
    if out_eval is not None:  # fail now, not after training
        check_eval_masks(task, [*eval_masks, out_masks])
        for path in eval_masks:
            if not Path(path).is_file():
                raise DataError(f"{path}: no such masks file (the evaluation after task {task} reads it)")
    method = get_method(run.method)
    method.check_stage(run, scenario, task, stage)
    log_to_stdout(f"== {run.run_id} task {task} stage {stage}: {time.strftime('%Y-%m-%d %H:%M:%S')}")
    seed_everything(run.seed, device)  # task 0's initial weights depend on the run seed only
    meta = load_meta(data_dir)
    model = build_model(run, meta, scenario, device)
    prev_extra: dict[str, Any] = {}
    masks: dict[str, Any] = {}
    if task > 0 and (prev_model is None or prev_masks is None):
        raise DataError(f"task {task}: the previous task's model and masks files are required")
    earlier = (task - 1, task)  # the previous task's last stage, or an earlier stage of this task
    if prev_model is not None:
        saved = load_stage_file(prev_model, run, scenario, device, earlier, "model")
        load_weights(model, saved, prev_model)
        prev_extra = saved.get("extra", {})
    if prev_masks is not None:
        masks = load_masks(prev_masks, run, scenario, device, earlier, model)
    check_writable(out_model, out_masks, out_log, resume_path, *([out_eval] if out_eval else []))
    generator = seed_everything(seed_stream(run.seed, task, 0), device)
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
    result = method.train_stage(ctx)
    prov = provenance(run.to_dict(), seed=run.seed, device=device, started=started)
    prov.update(run_id=run.run_id, task=task, stage=stage, method=run.method, protocol=run.protocol)
    prov.update(result.extra.get("provenance", {}))  # e.g. the unlabeled pool a stage distilled on
    stored = file_provenance(run, scenario, task, stage)
    log_rows, timing = split_timing(result.log_rows)
    prov.update(timing)
    tables = {Path(out_model).parent / f"{name}.parquet": table for name, table in result.tables.items()}
    files = {Path(out_model).parent / name: obj for name, obj in result.files.items()}
    with all_or_none(out_masks, out_log, out_model, *tables, *files):
        save_torch(out_masks, {**_to_cpu(result.masks), "provenance": stored})
        for path, table in tables.items():
            write_parquet(path, table, prov)
        for path, obj in files.items():
            write_json(path, obj) if path.suffix == ".json" else save_torch(
                path, {**_to_cpu(obj), "provenance": stored}
            )
        write_parquet(out_log, log_rows, prov)
        state = {"state_dict": _to_cpu(result.model_state), "extra": _to_cpu(result.extra), "provenance": stored}
        save_torch(out_model, state)
    if out_eval is not None:
        masks_paths = [*eval_masks, out_masks]
        evaluate(
            run_config,
            data_dir,
            scenario_path,
            task,
            out_model,
            masks_paths,
            out_eval,
            device,
            stage,
            inputs,
            config_hash,
            record_in_masks=True,
        )
    Path(resume_path).unlink(missing_ok=True)  # only now: a failed evaluation resumes after training


def check_eval_masks(task: int, masks_paths: list[Path]) -> None:
    """The evaluation after `task` reads one masks file per task 0..task: else a one-line error."""
    if len(masks_paths) != task + 1:
        raise DataError(
            f"evaluate task {task}: expected {task + 1} masks files (tasks 0..{task}), got {len(masks_paths)}"
        )


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
    config_hash: str | None = None,
    record_in_masks: bool = False,
) -> None:
    """Evaluate the model after `task`; `record_in_masks`: the last masks file is this job's own
    output, and takes the entries the method records (`EvalContext.masks_entries`)."""
    started = time.time()
    run = load_run_config(run_config, config_hash)
    scenario = load_run_scenario(scenario_path, run, task)
    check_eval_masks(task, masks_paths)
    check_writable(out, *masks_paths[-1:] if record_in_masks else ())
    meta = load_meta(data_dir)
    model = build_model(run, meta, scenario, device)
    saved = load_stage_file(model_path, run, scenario, device, (task,), "model")
    load_weights(model, saved, model_path)
    masks = [load_masks(p, run, scenario, device, (t,), model) for t, p in enumerate(masks_paths)]
    generator = seed_everything(seed_stream(run.seed, task, 1), device)
    ctx = EvalContext(
        run=run,
        task=task,
        scenario=scenario,
        data=load_device_data(run, data_dir, meta, "test", scenario, device, augment=False),
        device=device,
        generator=generator,
        model=model,
        masks=masks,
        extra=saved.get("extra", {}),
        stage=stage,
        inputs=dict(inputs or {}),
        validation=load_validation(data_dir, meta, scenario, device),
        masks_paths=[Path(p) for p in masks_paths],
    )
    rows = get_method(run.method).evaluate(ctx)
    for row in rows:
        log_to_stdout(
            f"after task {task}: task {row['task_eval']} task-IL {row['acc_til']:.2f}% class-IL {row['acc_cil']:.2f}%"
        )
    prov = provenance(run.to_dict(), seed=run.seed, device=device, started=started)
    prov.update(run_id=run.run_id, task=task, stage=stage, method=run.method, protocol=run.protocol)
    prov.update(ctx.extra.get("provenance", {}))
    recorded = record_in_masks and bool(ctx.masks_entries)
    with all_or_none(out, *masks_paths[-1:] if recorded else ()):
        write_parquet(out, rows, prov)
        if recorded:
            stored = file_provenance(run, scenario, task, stage)
            save_torch(masks_paths[-1], {**_to_cpu(masks[-1]), **_to_cpu(ctx.masks_entries), "provenance": stored})


def _to_cpu(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj
