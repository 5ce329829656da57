"""Config file -> validated settings -> one `RunConfig` per (experiment, grid point, seed).

Runs at DAG-build time inside Snakemake, so it is torch-free. Every problem is reported as one
`ConfigError` line that names the key and what is allowed.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from .config import RunConfig, TrainConfig
from .data import get_dataset
from .errors import ConfigError
from .scenarios import ScenarioSpec


@dataclass(frozen=True)
class PlannedRun:
    run: RunConfig
    reported: dict[str, float]
    reported_source: str


def load_schema(path: str | Path) -> dict:
    return yaml.safe_load(Path(path).read_text())


def validate(config: dict, schema: dict) -> dict:
    """Return a copy of `config` with every default filled in; raise ConfigError on the first problem."""
    config = copy.deepcopy(config if config is not None else {})
    validator_cls = _with_defaults(jsonschema.Draft202012Validator)
    validator = validator_cls(schema)
    # Fill defaults first (the validator fills them as it walks), then report the first error.
    errors = sorted(
        validator.iter_errors(config), key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path)))
    )
    if errors:
        raise ConfigError(_one_line(_deepest(errors[0])))
    return config


def _deepest(error: jsonschema.ValidationError) -> jsonschema.ValidationError:
    """For allOf/if-then failures, the informative error is the innermost one."""
    while error.context:
        error = max(error.context, key=lambda e: len(e.absolute_path))
    return error


def _one_line(error: jsonschema.ValidationError) -> str:
    path = ".".join(str(p) for p in error.absolute_path) or "<top level>"
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed))
        key = f"{path}.{extra[0]}" if path != "<top level>" else extra[0]
        return f"{key}: unknown key; allowed: {', '.join(allowed) if allowed else 'none'}"
    if error.validator == "enum":
        return (
            f"{path}: {error.instance!r} is not allowed; expected one of: {', '.join(map(str, error.validator_value))}"
        )
    return f"{path}: {error.message}"


def _with_defaults(validator_cls):
    """A validator that writes schema `default` values into the instance as it validates."""
    validate_properties = validator_cls.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, subschema in properties.items():
                if "default" in subschema and name not in instance:
                    instance[name] = copy.deepcopy(subschema["default"])
                elif "$ref" in subschema and name not in instance:
                    target = validator._resolver.lookup(subschema["$ref"]).contents
                    if "default" in target:
                        instance[name] = copy.deepcopy(target["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_cls, {"properties": set_defaults})


def plan_runs(config: dict, schema: dict) -> list[PlannedRun]:
    """Validate the config and expand every experiment into its runs (grid x seeds)."""
    config = validate(config, schema)
    planned: list[PlannedRun] = []
    for name, experiment in config["experiments"].items():
        grid = experiment.get("grid", {})
        keys = list(grid)
        short = [key.split(".")[-1] for key in keys]
        if len(set(short)) != len(short):
            raise ConfigError(f"experiments.{name}.grid: keys must differ in their last component, got {keys}")
        seeds = experiment.get("seeds") or config["seeds"]
        for values in itertools.product(*(grid[k] for k in keys)):
            point = ",".join(f"{s}={_fmt(v)}" for s, v in zip(short, values)) or "default"
            settings = copy.deepcopy(experiment)
            settings.pop("grid", None)
            for key, value in zip(keys, values):
                _set_dotted(settings, key, value)
            settings = validate({"experiments": {name: settings}}, schema)["experiments"][name]
            for seed in seeds:
                run = _run_config(name, point, seed, settings)
                planned.append(
                    PlannedRun(run, _reported(settings.get("reported", {}), point), settings["reported_source"])
                )
    return planned


def _run_config(name: str, point: str, seed: int, settings: dict) -> RunConfig:
    where = f"experiments.{name}"
    scenario = ScenarioSpec(**settings["scenario"])
    dataset = get_dataset(settings["dataset"])
    scenario.check(dataset.num_classes, where=f"{where}.scenario")
    return RunConfig(
        run_id=f"{name}/{point}/seed{seed}",
        experiment=name,
        point=point,
        seed=seed,
        method=settings["method"],
        dataset=settings["dataset"],
        backbone=settings["backbone"],
        backbone_args=settings["backbone_args"],
        protocol=settings["protocol"],
        scenario=scenario,
        train=TrainConfig(**settings["train"]),
        method_args=settings["method_args"],
    )


def _reported(reported: dict | list, point: str) -> dict[str, float]:
    if isinstance(reported, list):  # ledger entries ({metric, kind, value|curve, ...}), not a point's values
        return {}
    values = dict(reported.get("all", {}) or {})
    values.update(reported.get(point, {}) or {})
    return values


def _set_dotted(settings: dict, key: str, value: Any) -> None:
    *parents, leaf = key.split(".")
    node = settings
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return "-".join(map(_fmt, value))
    return str(value)
