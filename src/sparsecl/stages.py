"""The pipeline stages behind the CLI: each reads explicit input files and writes its outputs atomically."""

from __future__ import annotations

import time
import zipfile
from collections.abc import Sequence
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
from .jobs import EvalJob, TrainJob
from .methods import EvalContext, TaskContext, get_method
from .models import create_backbone
from .models.weights import maskable_parameters
from .plans import Ref, plan_of
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


def load_masks(
    path: Path, run: RunConfig, scenario, device, tasks: tuple[int, ...], model: torch.nn.Module, stage: str = ""
) -> dict:
    """A masks file of this run, of one of `tasks` (and of `stage`, when given), whose masks fit
    `model` weight for weight."""
    saved = load_stage_file(path, run, scenario, device, tasks, "masks", stage)
    shapes = {name: tuple(p.shape) for name, p in model.named_parameters()}
    check_masks_fit(saved, shapes, tuple(maskable_parameters(model)), path)
    return saved


def expected(ref: Ref | None, task: int) -> tuple[tuple[int, ...], str]:
    """The task and stage ('': any) a file the plan names `ref` must come from; a file the plan
    does not name comes from the previous task or an earlier stage of this one."""
    if ref is None:
        return (task - 1, task), ""
    return (ref.task,), ref.made_by


def train(job: TrainJob) -> None:
    """Train one task (or stage); with `job.out_eval`, then evaluate the saved model in the same
    process (`job.eval_masks`: the masks files of tasks 0..task-1; this task's is the one just written)."""
    started = time.time()
    run = load_run_config(job.config, job.config_hash)
    task, stage, device = job.task, job.stage, job.device
    scenario = load_run_scenario(job.scenario, run, task)
    if job.out_eval is not None:  # fail now, not after training
        check_eval_masks(task, [*job.eval_masks, job.out_masks])
        for path in job.eval_masks:
            if not path.is_file():
                raise DataError(f"{path}: no such masks file (the evaluation after task {task} reads it)")
    method = get_method(run.method)
    method.check_stage(run, scenario, task, stage)
    plan = plan_of(run.method)
    plan.check(run)  # the rules across its settings, before any file is read
    planned = plan.job_stage(run, task, stage)
    log_to_stdout(f"== {run.run_id} task {task} stage {stage}: {time.strftime('%Y-%m-%d %H:%M:%S')}")
    seed_everything(run.seed, device)  # task 0's initial weights depend on the run seed only
    meta = load_meta(job.data_dir)
    model = build_model(run, meta, scenario, device)
    prev_extra: dict[str, Any] = {}
    masks: dict[str, Any] = {}
    start = {name: planned.reads[name] for name in ("prev_model", "prev_masks") if name in planned.reads}
    if start and (job.prev_model is None or job.prev_masks is None):
        ref = start["prev_model"]
        raise DataError(
            f"task {task} stage {stage}: the model and masks files of stage {ref.stage} of task {ref.task} are required"
        )
    if job.prev_model is not None:
        tasks, made_by = expected(start.get("prev_model"), task)
        saved = load_stage_file(job.prev_model, run, scenario, device, tasks, "model", made_by)
        load_weights(model, saved, job.prev_model)
        prev_extra = saved.get("extra", {})
    if job.prev_masks is not None:
        tasks, made_by = expected(start.get("prev_masks"), task)
        masks = load_masks(job.prev_masks, run, scenario, device, tasks, model, made_by)
    check_writable(job.out_model, job.out_masks, job.out_log, job.resume, *([job.out_eval] if job.out_eval else []))
    generator = seed_everything(seed_stream(run.seed, task, 0), device)
    ctx = TaskContext(
        run=run,
        task=task,
        scenario=scenario,
        data=load_device_data(run, job.data_dir, meta, "train", scenario, device, augment=run.train.augment),
        device=device,
        generator=generator,
        model=model,
        prev_masks=masks,
        prev_extra=prev_extra,
        resume_path=job.resume,
        log=log_to_stdout,
        stage=stage,
        inputs=dict(job.inputs),
        planned=planned,
    )
    result = method.train_stage(ctx)
    prov = provenance(run.to_dict(), seed=run.seed, device=device, started=started)
    prov.update(run_id=run.run_id, task=task, stage=stage, method=run.method, protocol=run.protocol)
    prov.update(result.extra.get("provenance", {}))  # e.g. the unlabeled pool a stage distilled on
    stored = file_provenance(run, scenario, task, stage)
    log_rows, timing = split_timing(result.log_rows)
    prov.update(timing)
    tables = {job.out_model.parent / f"{name}.parquet": table for name, table in result.tables.items()}
    files = {job.out_model.parent / name: obj for name, obj in result.files.items()}
    with all_or_none(job.out_masks, job.out_log, job.out_model, *tables, *files):
        save_torch(job.out_masks, {**_to_cpu(result.masks), "provenance": stored})
        for path, table in tables.items():
            write_parquet(path, table, prov)
        for path, obj in files.items():
            write_json(path, obj) if path.suffix == ".json" else save_torch(
                path, {**_to_cpu(obj), "provenance": stored}
            )
        write_parquet(job.out_log, log_rows, prov)
        state = {"state_dict": _to_cpu(result.model_state), "extra": _to_cpu(result.extra), "provenance": stored}
        save_torch(job.out_model, state)
    if job.out_eval is not None:
        evaluate(job.evaluation())
    job.resume.unlink(missing_ok=True)  # only now: a failed evaluation resumes after training


def check_eval_masks(task: int, masks_paths: Sequence[Path]) -> None:
    """The evaluation after `task` reads one masks file per task 0..task: else a one-line error."""
    if len(masks_paths) != task + 1:
        raise DataError(
            f"evaluate task {task}: expected {task + 1} masks files (tasks 0..{task}), got {len(masks_paths)}"
        )


def evaluate(job: EvalJob) -> None:
    """Evaluate `job.model` after `job.task` on every task seen so far into `job.out`; with
    `job.record_in_masks`, the last masks file is this job's own output and takes the entries the
    method records (`EvalContext.masks_entries`)."""
    started = time.time()
    run = load_run_config(job.config, job.config_hash)
    task, device = job.task, job.device
    scenario = load_run_scenario(job.scenario, run, task)
    check_eval_masks(task, job.masks)
    check_writable(job.out, *job.masks[-1:] if job.record_in_masks else ())
    meta = load_meta(job.data_dir)
    model = build_model(run, meta, scenario, device)
    saved = load_stage_file(job.model, run, scenario, device, (task,), "model")
    load_weights(model, saved, job.model)
    masks = [load_masks(p, run, scenario, device, (t,), model) for t, p in enumerate(job.masks)]
    generator = seed_everything(seed_stream(run.seed, task, 1), device)
    ctx = EvalContext(
        run=run,
        task=task,
        scenario=scenario,
        data=load_device_data(run, job.data_dir, meta, "test", scenario, device, augment=False),
        device=device,
        generator=generator,
        model=model,
        masks=masks,
        extra=saved.get("extra", {}),
        stage=job.stage,
        inputs=dict(job.inputs),
        validation=load_validation(job.data_dir, meta, scenario, device),
        masks_paths=list(job.masks),
    )
    rows = get_method(run.method).evaluate(ctx)
    for row in rows:
        log_to_stdout(
            f"after task {task}: task {row['task_eval']} task-IL {row['acc_til']:.2f}% class-IL {row['acc_cil']:.2f}%"
        )
    prov = provenance(run.to_dict(), seed=run.seed, device=device, started=started)
    prov.update(run_id=run.run_id, task=task, stage=job.stage, method=run.method, protocol=run.protocol)
    prov.update(ctx.extra.get("provenance", {}))
    recorded = job.record_in_masks and bool(ctx.masks_entries)
    with all_or_none(job.out, *job.masks[-1:] if recorded else ()):
        write_parquet(job.out, rows, prov)
        if recorded:
            stored = file_provenance(run, scenario, task, job.stage)
            save_torch(job.masks[-1], {**_to_cpu(masks[-1]), **_to_cpu(ctx.masks_entries), "provenance": stored})


def _to_cpu(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj
