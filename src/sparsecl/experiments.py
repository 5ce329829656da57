"""Config file -> validated settings -> one `RunConfig` per (experiment, grid point, seed).

Runs at DAG-build time inside Snakemake, so it is torch-free. Every problem is reported as one
`ConfigError` line that names the key and what is allowed.
"""

from __future__ import annotations

import copy
import itertools
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from .config import RunConfig, TrainConfig
from .data import get_dataset
from .errors import ConfigError
from .plans import check_run
from .scenarios import ScenarioSpec


@dataclass(frozen=True)
class PlannedRun:
    run: RunConfig
    paper: str  # the paper the run's experiment reproduces ("" for baselines)


# The paper each method reproduces, as the ledger names it (an experiment's `paper` overrides it).
PAPERS = {
    "dst": "CL-with-DST (CPAL 2024)",
    "focil": "FOCIL (arXiv 2403.14684v1)",
    "multistep": "Multi-step sparsity training (IEEE Access 2023)",
    "tickets_cil": "Lifelong Tickets (ICLR 2021)",
    "tickets_td": "Lifelong Tickets (ICLR 2021)",
    "tickets_bu": "Lifelong Tickets (ICLR 2021)",
}
# Reference kinds checked on our own runs rather than against a number: a paper's claim, and a
# check written for a demo config (the ledger counts the two apart).
CLAIM_KINDS = ("claim", "demo")


def load_schema(path: str | Path) -> dict:
    return yaml.safe_load(Path(path).read_text())


class _StrictLoader(yaml.SafeLoader):
    """YAML that refuses a key repeated in one mapping (plain YAML keeps the last, silently)."""

    def construct_mapping(self, node, deep=False):
        seen: set = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *defaults`: its keys may be overridden
                continue
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise ConfigError(
                    f"line {key_node.start_mark.line + 1}: duplicate key {key!r}"
                    " (YAML would keep only the last; give each its own name)"
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def check_config_files(paths: list[str | Path]) -> None:
    """Refuse a config file that repeats a key: Snakemake's loader would keep the last one and
    drop the other experiment or setting without a word."""
    for path in paths:
        try:
            yaml.load(Path(path).read_text(), Loader=_StrictLoader)
        except ConfigError as err:
            raise ConfigError(f"{path}, {err}") from None
        except OSError as err:
            raise ConfigError(f"{path}: cannot read the config file ({err.strerror})") from None
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None


def validate(config: dict, schema: dict) -> dict:
    """Return a copy of `config` with every default filled in; raise ConfigError on the first problem."""
    config = copy.deepcopy(config if config is not None else {})
    validator_cls = _with_defaults(_strict_numbers(jsonschema.Draft202012Validator))
    validator = validator_cls(schema)
    # Fill defaults first (the validator fills them as it walks), then report the first error.
    errors = sorted(
        validator.iter_errors(config), key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path)))
    )
    if errors:
        raise ConfigError(_one_line(_deepest(errors[0])))
    return config


def _strict_numbers(validator_cls):
    """JSON Schema counts 2.0 as an integer and lets NaN and infinity through every bound; a
    config's `num_tasks: 2.0` or `lr: .nan` is a mistake, so neither passes here."""

    def is_integer(checker, instance) -> bool:
        return isinstance(instance, int) and not isinstance(instance, bool)

    def is_number(checker, instance) -> bool:
        return isinstance(instance, (int, float)) and not isinstance(instance, bool) and math.isfinite(instance)

    checker = validator_cls.TYPE_CHECKER.redefine_many({"integer": is_integer, "number": is_number})
    return jsonschema.validators.extend(validator_cls, type_checker=checker)


def _deepest(error: jsonschema.ValidationError) -> jsonschema.ValidationError:
    """For allOf/if-then failures, the informative error is the innermost one; a oneOf of
    alternatives at the same key is reported as the list of alternatives."""
    while error.context and not _scalar_alternatives(error):
        error = max(error.context, key=lambda e: len(e.absolute_path))
    return error


def _scalar_alternatives(error: jsonschema.ValidationError) -> bool:
    """A oneOf/anyOf of plain values ('auto' or an integer >= 0), which reads best as a list."""
    simple = {"const", "enum", "type", "minimum", "maximum", "description"}
    return error.validator in ("oneOf", "anyOf") and all(
        isinstance(option, dict) and set(option) <= simple and option.get("type") not in ("object", "array")
        for option in error.validator_value
    )


def _alternative(schema: dict) -> str:
    """One alternative of a oneOf in words: 'auto', an integer >= 0, one of: a, b."""
    if "const" in schema:
        return repr(schema["const"])
    if "enum" in schema:
        return " or ".join(map(repr, schema["enum"]))
    kind = {
        "integer": "an integer",
        "number": "a number",
        "boolean": "true or false",
        "array": "a list",
        "string": "a string",
        "object": "a mapping",
    }.get(schema.get("type"), "a value")
    bounds = [f">= {schema['minimum']}"] if "minimum" in schema else []
    bounds += [f"<= {schema['maximum']}"] if "maximum" in schema else []
    return " ".join([kind, *bounds])


def _one_line(error: jsonschema.ValidationError) -> str:
    path = ".".join(str(p) for p in error.absolute_path) or "<top level>"
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed))
        key = f"{path}.{extra[0]}" if path != "<top level>" else extra[0]
        return f"{key}: unknown key; allowed: {', '.join(allowed) if allowed else 'none'}"
    if error.validator == "not" and isinstance(error.instance, dict):
        forbidden = [k for option in error.validator_value.get("anyOf", []) for k in option.get("required", [])]
        present = [k for k in forbidden if k in error.instance]
        if present:
            kind = error.instance.get("kind")
            return f"{path}.{present[0]}: not allowed here" + (f" (kind {kind!r})" if kind else "")
    if error.validator in ("oneOf", "anyOf"):
        wanted = " or ".join(_alternative(option) for option in error.validator_value)
        return f"{path}: {error.instance!r} is not allowed; expected {wanted}"
    if error.validator == "const" and "description" in error.schema:
        return f"{path}: {error.instance!r} is not allowed; {error.schema['description']}"
    if error.validator == "type" and isinstance(error.instance, float) and not math.isfinite(error.instance):
        return f"{path}: {error.instance!r} is not allowed; expected a finite number"
    if error.validator == "type" and error.validator_value == "integer" and isinstance(error.instance, float):
        return f"{path}: {error.instance!r} is not an integer; write it without a decimal point"
    if error.validator == "pattern" and "expected" in error.schema:
        return f"{path}: {error.message}; expected {error.schema['expected']}"
    if error.validator == "not" and "enum" in error.validator_value:
        return f"{path}: {error.instance!r} is reserved; expected a name other than: {', '.join(error.validator_value['enum'])}"
    if error.validator == "uniqueItems":
        return f"{path}: {error.instance!r} repeats a value; expected each value once (a repeat is the same run)"
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
        made: dict[str, tuple] = {}
        for values in itertools.product(*(grid[k] for k in keys)):
            point = ",".join(f"{s}={_fmt(v)}" for s, v in zip(short, values)) or "default"
            if made.setdefault(point, values) != values:
                raise ConfigError(
                    f"experiments.{name}.grid: {list(made[point])} and {list(values)} both name the point {point!r}"
                    " (values are written with 6 significant digits); expected values that differ there"
                )
            settings = copy.deepcopy(experiment)
            settings.pop("grid", None)
            for key, value in zip(keys, values):
                _set_dotted(settings, key, value)
            settings = validate({"experiments": {name: settings}}, schema)["experiments"][name]
            _check_stage_train(name, settings, schema)
            paper = settings.get("paper", PAPERS.get(settings["method"], ""))
            for seed in seeds:
                run = _run_config(name, point, seed, settings)
                check_run(run)
                planned.append(PlannedRun(run, paper))
    _check_paper_slugs(planned)
    return planned


def _check_stage_train(name: str, settings: dict, schema: dict) -> None:
    """A stage's `train` overrides (multistep's `method_args.stage_train`) meet the bounds of `train`."""
    for stage, overrides in settings["method_args"].get("stage_train", {}).items():
        merged = {**settings, "train": {**settings["train"], **overrides}}
        try:
            validate({"experiments": {name: merged}}, schema)
        except ConfigError as err:
            where = f"experiments.{name}.train."
            raise ConfigError(
                str(err).replace(where, f"experiments.{name}.method_args.stage_train.{stage}.", 1)
            ) from None


def _check_paper_slugs(planned: list[PlannedRun]) -> None:
    """Two paper names that make one file name would share (and overwrite) one ledger plot."""
    by_slug: dict[str, tuple[str, str]] = {}
    for p in planned:
        other = by_slug.setdefault(paper_slug(p.paper), (p.paper, p.run.experiment))
        if other[0] != p.paper:
            raise ConfigError(
                f"experiments.{p.run.experiment}.paper: {p.paper!r} and {other[0]!r} (experiment {other[1]})"
                f" share the file name {paper_slug(p.paper)!r}; expected paper names that differ in letters or digits"
            )


def plan_ledger(config: dict, planned: list[PlannedRun]) -> list[dict[str, Any]]:
    """Every `reported` entry of the config, one per (entry, grid point), checked against the runs.

    An entry without `point` stands for every point of its experiment. A curve must have one value
    per task; a claim's `experiment/point` must name a point of the config when its experiment is
    in it (an experiment the config does not run leaves the claim "not run").
    """
    papers = sorted({p.paper for p in planned} - {""})
    for paper in config.get("papers", {}):
        if paper not in papers:
            raise ConfigError(
                f"papers.{paper}: no experiment reproduces {paper!r}, so its note would be lost;"
                f" expected one of: {', '.join(papers) or 'none (no experiment names a paper)'}"
            )
    points = {(p.run.experiment, p.run.point): p for p in planned}
    by_experiment: dict[str, list[str]] = {}
    for experiment, point in points:
        by_experiment.setdefault(experiment, [])
        if point not in by_experiment[experiment]:
            by_experiment[experiment].append(point)
    entries = []
    for name, experiment in config["experiments"].items():
        for i, entry in enumerate(experiment.get("reported", [])):
            where = f"experiments.{name}.reported.{i}"
            if entry["kind"] in CLAIM_KINDS:
                for key in ("left", "right"):
                    if key in entry:
                        _check_reference(entry[key], by_experiment, f"{where}.{key}")
                for g, group in enumerate(entry.get("spread", [])):
                    for ref in group:
                        _check_reference(ref, by_experiment, f"{where}.spread.{g}")
                paper = points[(name, by_experiment[name][0])].paper
                entries.append({**entry, "paper": paper, "experiment": name, "point": entry.get("left", "")})
                continue
            if "point" in entry and entry["point"] not in by_experiment[name]:
                raise ConfigError(
                    f"{where}.point: {entry['point']!r} is not a grid point of {name};"
                    f" expected one of: {', '.join(by_experiment[name])}"
                )
            for point in [entry["point"]] if "point" in entry else by_experiment[name]:
                run = points[(name, point)]
                tasks = run.run.scenario.num_tasks
                if "curve" in entry and len(entry["curve"]) != tasks:
                    raise ConfigError(
                        f"{where}.curve: expected {tasks} values (one per task), got {len(entry['curve'])}"
                    )
                entries.append({**entry, "paper": run.paper, "experiment": name, "point": point})
    return entries


def paper_slug(paper: str) -> str:
    """A paper's name as a file name (its ledger plot)."""
    return re.sub(r"[^a-z0-9]+", "-", paper.lower()).strip("-")


def _check_reference(ref: str, by_experiment: dict[str, list[str]], where: str) -> None:
    experiment, _, point = ref.partition("/")
    if experiment in by_experiment and point not in by_experiment[experiment]:
        raise ConfigError(
            f"{where}: {point!r} is not a grid point of {experiment}; expected one of: {', '.join(by_experiment[experiment])}"
        )


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
