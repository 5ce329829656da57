"""Typed run configuration: the fully resolved hyperparameters of one run.

The workflow expands `config/*.yaml` into one `RunConfig` per (experiment, grid point, seed)
and writes it to `results/runs/<run-id>/config.yaml`; every stage of the run reads that file.
This module is torch-free so that the workflow can import it at DAG-build time.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError
from .io import write_text
from .scenarios import ScenarioSpec

PROTOCOLS = ("standard", "faithful")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings shared by every method (a method may ignore some, e.g. FOCIL's searched lr)."""

    epochs: int = 10
    batch_size: int = 64
    eval_batch_size: int = 256
    optimizer: str = "sgd"  # sgd | adam
    lr: float = 0.05
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0
    lr_milestones: tuple[float, ...] = (0.5, 0.75)  # fractions of the epochs at which lr *= lr_gamma
    lr_gamma: float = 0.1
    augment: bool = True  # pad-crop-flip on the device, where the dataset allows it
    loss_scope: str = "seen"  # "task": CE over the current task's logits; "seen": over every class seen so far

    def __post_init__(self) -> None:
        if isinstance(self.lr_milestones, list):
            object.__setattr__(self, "lr_milestones", tuple(self.lr_milestones))

    def milestone_epochs(self) -> list[int]:
        """Epoch indices at which the learning rate decays (upstream: floor(E/2), floor(3E/4))."""
        return [int(m * self.epochs) for m in self.lr_milestones]


@dataclass(frozen=True)
class RunConfig:
    run_id: str
    experiment: str
    point: str
    seed: int
    method: str
    dataset: str
    backbone: str
    scenario: ScenarioSpec
    train: TrainConfig
    protocol: str = "standard"
    backbone_args: dict[str, Any] = field(default_factory=dict)
    method_args: dict[str, Any] = field(default_factory=dict)

    @property
    def scenario_id(self) -> str:
        return self.scenario.id

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["scenario"]["class_order"] = _listify(out["scenario"]["class_order"])
        out["scenario"]["chunks"] = list(out["scenario"]["chunks"])
        out["train"]["lr_milestones"] = list(out["train"]["lr_milestones"])
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        data = dict(data)
        try:
            data["scenario"] = _build(ScenarioSpec, data.get("scenario", {}), "scenario")
            data["train"] = _build(TrainConfig, data.get("train", {}), "train")
            run = _build(cls, data, "run")
        except TypeError as err:
            raise ConfigError(f"run config: {err}") from None
        if run.protocol not in PROTOCOLS:
            raise ConfigError(f"protocol: expected one of {PROTOCOLS}, got {run.protocol!r}")
        return run


def _build(cls: type, data: dict[str, Any], where: str):
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}: unknown key; expected one of {sorted(known)}")
    return cls(**data)


def method_args(cls: type, run: RunConfig):
    """The run's `method_args` as the method's typed dataclass (lists become tuples)."""
    args = {k: tuple(v) if isinstance(v, list) else v for k, v in run.method_args.items()}
    return _build(cls, args, "method_args")


def _listify(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def load_run_config(path: str | Path) -> RunConfig:
    try:
        data = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: run config not found") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return RunConfig.from_dict(data)


def dump_run_config(run: RunConfig) -> str:
    return yaml.safe_dump(run.to_dict(), sort_keys=True)


def write_run_config(config_json: str, out: str | Path) -> None:
    """Write one run's (or stage's) resolved configuration; torch-free, so the job starts fast."""
    write_text(out, dump_run_config(RunConfig.from_dict(json.loads(config_json))))
