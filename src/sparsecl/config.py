"""Typed run configuration: the fully resolved hyperparameters of one run.

The workflow expands `config/*.yaml` into one `RunConfig` per (experiment, grid point, seed)
and writes it to `results/runs/<run-id>/config.yaml`; every stage of the run reads that file.
This module is torch-free so that the workflow can import it at DAG-build time.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from types import UnionType
from typing import Any, Union, get_args, get_origin, get_type_hints

import yaml

from .errors import ConfigError
from .io import config_hash
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
        _check_finite(data, "")
        try:
            data["scenario"] = build_typed(ScenarioSpec, data.get("scenario", {}), "scenario")
            data["train"] = build_typed(TrainConfig, data.get("train", {}), "train")
            run = build_typed(cls, data, "run")
        except TypeError as err:
            raise ConfigError(f"run config: {err}") from None
        if run.protocol not in PROTOCOLS:
            raise ConfigError(f"protocol: expected one of {PROTOCOLS}, got {run.protocol!r}")
        for key in ("epochs", "batch_size", "eval_batch_size"):
            if getattr(run.train, key) < 1:
                raise ConfigError(f"train.{key}: expected an integer >= 1, got {getattr(run.train, key)}")
        return run


def _check_finite(value: Any, where: str) -> None:
    """A NaN or infinity anywhere in a run config (JSON and YAML both spell them) trains at chance."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{where}: {value!r} is not allowed; expected a finite number")
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        _check_finite(item, f"{where}.{key}" if where else str(key))


def build_typed(cls: type, data: dict[str, Any], where: str):
    """`cls(**data)` with every key known and every value of its declared simple type, else one
    ConfigError line naming `where.key` (a bare dataclass call would take "2" for an int)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {data!r}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}: unknown key; expected one of {sorted(known)}")
    hints = get_type_hints(cls)
    for key, value in data.items():
        _check_type(f"{where}.{key}", value, hints[key])
    return cls(**data)


_SIMPLE = {
    int: "an integer",
    float: "a number",
    bool: "true or false",
    str: "a string",
    tuple: "a list",
    dict: "a mapping",
}


def _check_type(where: str, value: Any, hint: Any) -> None:
    """Reject a value of the wrong simple type (int, float, bool, str, a list of them, a mapping) with one line."""
    options = get_args(hint) if get_origin(hint) in (Union, UnionType) else (hint,)
    if any(_fits(value, option) for option in options):
        return
    wanted = " or ".join(_SIMPLE.get(get_origin(o) or o, "null" if o is type(None) else str(o)) for o in options)
    raise ConfigError(f"{where}: expected {wanted}, got {value!r}")


def _fits(value: Any, hint: Any) -> bool:
    if hint is Any:
        return True
    if hint is type(None):
        return value is None
    if get_origin(hint) is tuple:
        items = get_args(hint)[:1] or (Any,)
        return isinstance(value, (list, tuple)) and all(_fits(v, items[0]) for v in value)
    if hint is bool:
        return isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint in (str,):
        return isinstance(value, str)
    if get_origin(hint) is dict:
        return isinstance(value, dict)  # its entries are checked where they are used
    return True  # nested dataclasses are built and checked on their own


def method_args(cls: type, run: RunConfig):
    """The run's `method_args` as the method's typed dataclass (lists become tuples)."""
    args = {k: tuple(v) if isinstance(v, list) else v for k, v in run.method_args.items()}
    return build_typed(cls, args, "method_args")


def _listify(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


HASH_KEY = "config_hash"


REMAKE = "remove it and rerun snakemake, which writes it again from the workflow config"


def load_run_config(path: str | Path, expected_hash: str | None = None) -> RunConfig:
    """Read a run's config.yaml, refusing one whose content no longer matches the hash the
    workflow wrote into it, or (`expected_hash`, given by the workflow) no longer matches what
    the workflow config resolves to: a hand edit would make the run disagree with the config."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: run config not found") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    recorded = data.pop(HASH_KEY, None)
    if recorded != config_hash(data):
        raise ConfigError(
            f"{path}: edited by hand (its content does not match its {HASH_KEY}); change the workflow config"
            f" instead: {REMAKE}"
        )
    if expected_hash is not None and recorded != expected_hash:
        raise ConfigError(
            f"{path}: not what the workflow config resolves to (its {HASH_KEY} {recorded}, expected"
            f" {expected_hash}; edited by hand?); {REMAKE}"
        )
    try:
        return RunConfig.from_dict(data)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


def dump_run_config(run: RunConfig) -> str:
    content = run.to_dict()
    return yaml.safe_dump({**content, HASH_KEY: config_hash(content)}, sort_keys=True)


def write_run_config(config_json: str, out: str | Path) -> None:
    """The `run-config` stage: one run's resolved settings, with the hash that guards them."""
    from .io import write_text

    try:
        data = json.loads(config_json)
    except json.JSONDecodeError as err:
        raise ConfigError(
            f"--json: expected the resolved run config as JSON ({err.msg} at column {err.colno})"
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(f"--json: expected the resolved run config as a JSON object, got {config_json!r}")
    write_text(out, dump_run_config(RunConfig.from_dict(data)))
