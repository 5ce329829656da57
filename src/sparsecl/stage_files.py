"""Files one stage writes for another (model, masks, retrieval, checkpoint files): each carries
the provenance of the run, task, stage and network that made it, and is refused by a stage of
another run, task or network with one line naming the file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

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


# Per-weight tensors a masks file may hold: this task's mask, the owner map after it (methods that
# give each task its own weights), and the protected base of a bottom-up ticket.
MASK_ENTRIES = ("mask", "owner", "base")


def check_masks_fit(saved: dict, shapes: dict[str, tuple[int, ...]], owned: tuple[str, ...], path: Path) -> None:
    """A masks file's tensors, entry by entry: bool or uint8, named after a weight of the network and
    of its exact shape (a broadcastable [1, 64] for [16, 64] is not the same mask), the entries
    covering the same weights; a file with an owner map covers every weight in `owned`."""
    layers = None
    for entry in MASK_ENTRIES:
        tensors = saved.get(entry)
        if tensors is None:
            continue
        if not isinstance(tensors, dict):
            raise DataError(f"{path}: '{entry}' is not a mapping of weight name to mask")
        for name, tensor in tensors.items():
            if name not in shapes:
                raise DataError(f"{path}: {entry} of {name!r}, which is not a weight of this network")
            if getattr(tensor, "dtype", None) not in (torch.bool, torch.uint8):
                raise DataError(
                    f"{path}: {entry} of {name!r} is {getattr(tensor, 'dtype', type(tensor).__name__)}, expected bool"
                )
            if tuple(tensor.shape) != tuple(shapes[name]):
                raise DataError(
                    f"{path}: {entry} of {name!r} has shape {list(tensor.shape)}, the weight {list(shapes[name])}"
                )
        if layers is not None and set(tensors) != layers:
            missing = sorted(layers ^ set(tensors))[0]
            raise DataError(f"{path}: '{entry}' and 'mask' do not cover the same weights ({missing!r})")
        layers = set(tensors)
    if "owner" in saved and layers is not None and layers != set(owned):
        missing = sorted(set(owned) - layers)
        raise DataError(
            f"{path}: no mask for {missing[0]!r}" if missing else f"{path}: masks of weights that no task owns"
        )
    if "owner" in saved and "mask" not in saved:
        raise DataError(f"{path}: an owner map without its 'mask'")


def check_finite(state_dict: dict, path: Path) -> None:
    """NaN or infinite weights give numbers at chance, not an error: refuse them here."""
    for name, tensor in state_dict.items():
        if isinstance(tensor, torch.Tensor) and tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise DataError(f"{path}: weights of {name!r} are not finite (NaN or infinity)")


def load_stage_file(
    path: Path, run: RunConfig, scenario: Scenario, device, tasks: tuple[int, ...], what: str, stage: str = ""
) -> dict:
    """A model or masks file of this run, of one of `tasks` (and of `stage`, when given), for this
    network; else a one-line error."""
    saved = load_torch(path, map_location=device)
    prov = saved.pop("provenance", None) if isinstance(saved, dict) else None
    if not isinstance(prov, dict):
        raise DataError(f"{path}: not a {what} file written by sparsecl (no provenance)")
    if prov.get("run_id") != run.run_id:
        raise DataError(f"{path}: {what} file of run {prov.get('run_id')!r}, not of this run {run.run_id!r}")
    if prov.get("task") not in tasks:
        expected = " or ".join(map(str, tasks))
        raise DataError(f"{path}: {what} file of task {prov.get('task')}, expected task {expected}")
    if stage and prov.get("stage") != stage:
        raise DataError(f"{path}: {what} file of stage {prov.get('stage')!r}, expected stage {stage!r}")
    if prov.get("architecture") != architecture(run, scenario):
        raise DataError(
            f"{path}: {what} file for {prov.get('architecture')}, this run uses {architecture(run, scenario)}"
        )
    if isinstance(saved.get("state_dict"), dict):
        check_finite(saved["state_dict"], path)
    return saved


def load_weights(model: torch.nn.Module, saved: dict, path: Path) -> None:
    """A loaded model file's weights into `model`, or one line naming the file that does not fit."""
    if "state_dict" not in saved:
        raise DataError(f"{path}: not a model file (it holds no weights: a masks or other stage file?)")
    try:
        model.load_state_dict(saved["state_dict"])
    except (KeyError, RuntimeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DataError(f"{path}: weights do not fit this run's network ({first})") from None
