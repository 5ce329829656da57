"""Config validation: bad settings fail at DAG-build time with one line naming the key."""

import copy
from pathlib import Path

import pytest
import yaml

from sparsecl.errors import ConfigError
from sparsecl.experiments import load_schema, plan_runs

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = load_schema(ROOT / "workflow/schemas/config.schema.yaml")
BASE = {"seeds": [0, 1], "experiments": {"ft": {"method": "finetune", "dataset": "digits"}}}


def plan(config):
    return plan_runs(copy.deepcopy(config), SCHEMA)


def test_an_experiment_expands_into_one_run_per_seed_with_defaults_filled():
    runs = [p.run for p in plan(BASE)]
    assert [r.run_id for r in runs] == ["ft/default/seed0", "ft/default/seed1"]
    assert runs[0].scenario.num_tasks == 5 and runs[0].train.epochs == 10 and runs[0].backbone == "mlp"


def test_a_grid_expands_into_readable_run_ids():
    config = copy.deepcopy(BASE)
    config["experiments"]["ft"]["grid"] = {"train.lr": [0.01, 0.1], "scenario.num_tasks": [2]}
    ids = [p.run.run_id for p in plan(config)]
    assert ids[:2] == ["ft/lr=0.01,num_tasks=2/seed0", "ft/lr=0.01,num_tasks=2/seed1"]
    assert {p.run.train.lr for p in plan(config)} == {0.01, 0.1}


def test_the_embedded_default_config_is_valid():
    config = yaml.safe_load((ROOT / "config/config.yaml").read_text())
    assert len(plan(config)) >= 4


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda e: e.update(bogus=1), "experiments.ft.bogus: unknown key; allowed:"),
        (
            lambda e: e.update(method="nosuch"),
            "experiments.ft.method: 'nosuch' is not allowed; expected one of: finetune",
        ),
        (
            lambda e: e.update(scenario={"num_tasks": 7, "classes_per_task": 2}),
            "experiments.ft.scenario: num_tasks x classes_per_task = 7 x 2 = 14 exceeds the dataset's 10 classes",
        ),
        (
            lambda e: e.update(method="dst", method_args={"density": 1.5}),
            "experiments.ft.method_args.density: 1.5 is greater than the maximum of 1",
        ),
        (
            lambda e: e["train"].update(lr=0) if "train" in e else e.update(train={"lr": 0}),
            "experiments.ft.train.lr: 0 is less than or equal to the minimum of 0",
        ),
        (
            lambda e: e.update(grid={"method_args.density": [0.1, 1.5]}, method="dst"),
            "experiments.ft.method_args.density: 1.5",
        ),
    ],
)
def test_bad_settings_raise_one_line_naming_the_key(mutate, message):
    config = copy.deepcopy(BASE)
    mutate(config["experiments"]["ft"])
    with pytest.raises(ConfigError) as err:
        plan(config)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_an_unknown_top_level_key_is_named():
    with pytest.raises(ConfigError, match="^colour: unknown key"):
        plan({**BASE, "colour": "red"})
