"""Files one stage writes for another (model, masks, retrieval, checkpoint files): each carries
the provenance of the run, task, stage and network that made it, and is refused by a stage of
another run, task or network with one line naming the file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .config import RunConfig
from .errors import DataError
from .io import TIMING_FIELDS, load_torch, provenance
from .scenarios import Scenario


def architecture(run: RunConfig, scenario: Scenario) -> str:
    """What a weights or masks file must have been made for: backbone, its arguments, class count."""
    return f"{run.backbone}{json.dumps(run.backbone_args, sort_keys=True)} x {scenario.num_classes} classes"


def file_provenance(run: RunConfig, scenario: Scenario, task: int, stage: str) -> dict[str, Any]:
    """Provenance stored inside model and masks files: which run, task, stage and network made them,
    and no timing fields, so that the same config and seed give byte-identical files."""
    prov = {k: v for k, v in provenance(run.to_dict(), seed=run.seed).items() if k not in TIMING_FIELDS}
    return {**prov, "run_id": run.run_id, "task": task, "stage": stage, "architecture": architecture(run, scenario)}


def load_stage_file(path: Path, run: RunConfig, scenario: Scenario, device, tasks: tuple[int, ...], what: str) -> dict:
    """A model or masks file of this run, of one of `tasks`, for this network; else a one-line error."""
    saved = load_torch(path, map_location=device)
    prov = saved.pop("provenance", None) if isinstance(saved, dict) else None
    if not isinstance(prov, dict):
        raise DataError(f"{path}: not a {what} file written by sparsecl (no provenance)")
    if prov.get("run_id") != run.run_id:
        raise DataError(f"{path}: {what} file of run {prov.get('run_id')!r}, not of this run {run.run_id!r}")
    if prov.get("task") not in tasks:
        expected = " or ".join(map(str, tasks))
        raise DataError(f"{path}: {what} file of task {prov.get('task')}, expected task {expected}")
    if prov.get("architecture") != architecture(run, scenario):
        raise DataError(
            f"{path}: {what} file for {prov.get('architecture')}, this run uses {architecture(run, scenario)}"
        )
    return saved
