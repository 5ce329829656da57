"""The `packnet` method through the real train/evaluate stages on the built-in digits data (CPU).

Specification: after task t every weight an earlier task owns (and, from task 1 on, every bias
outside the head) is bit-identical to what that task left; each task keeps exactly the
configured share of the weights that were free for it; a task killed during its retraining
resumes to the result of an uninterrupted run; the workflow's generic training rule runs it,
one job per task, with no rule of its own; on the default digits run PackNet's task-IL
accuracy is above finetune's; a prune ratio outside (0, 1) is a one-line error naming the key.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from sparsecl.config import RunConfig, load_run_config, write_run_config
from sparsecl.errors import ConfigError
from sparsecl.experiments import load_schema, plan_runs
from sparsecl.io import load_torch
from sparsecl.plans.packnet import PackNetArgs
from sparsecl.sparse.masks import FREE

from .stage_helpers import kill_in_epoch, make_run, train_task
from .workflow_helpers import planned_jobs, snakemake, write_config

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = load_schema(ROOT / "workflow/schemas/config.schema.yaml")
HEAD = "classifier.weight"
# SGD with momentum and weight decay: both would move a weight whose gradient is merely zeroed.
TRAIN = {"epochs": 3, "batch_size": 32, "lr": 0.05, "momentum": 0.9, "weight_decay": 0.001}


def packnet_run(root: Path, prune_ratio: float = 0.6, retrain_epochs: int = 2) -> tuple[Path, Path, Path]:
    return make_run(
        root, "packnet", train=TRAIN, backbone_args={"hidden": [32, 16], "bias": True},
        method_args={"prune_ratio": prune_ratio, "retrain_epochs": retrain_epochs},
    )  # fmt: skip


@pytest.fixture(scope="module")
def three_tasks(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("packnet")
    config, data, scenario = packnet_run(root)
    out = root / "out"
    for task in range(3):
        train_task(config, data, scenario, task, out, evaluate=True)
    return out


def weights(out: Path, task: int) -> dict[str, torch.Tensor]:
    return load_torch(out / f"task{task}" / "model.pt")["state_dict"]


def owners(out: Path, task: int) -> dict[str, torch.Tensor]:
    return load_torch(out / f"task{task}" / "masks.pt")["owner"]


@pytest.mark.parametrize("task", [1, 2])
def test_weights_owned_by_earlier_tasks_are_bit_identical_after_a_later_task(three_tasks, task):
    before, after = weights(three_tasks, task - 1), weights(three_tasks, task)
    earlier = owners(three_tasks, task - 1)
    for name, owner in earlier.items():
        held = owner != FREE
        assert held.any(), name
        assert torch.equal(after[name][held], before[name][held]), name
    for name in ("features.0.bias", "features.2.bias"):  # learned with task 0, then fixed
        assert torch.equal(after[name], before[name]), name
    evaluations = [pd.read_parquet(three_tasks / f"task{t}" / "eval.parquet") for t in (task - 1, task)]
    old = [e[e.task_eval < task].sort_values("task_eval").acc_til.tolist() for e in evaluations]
    assert old[0] == old[1]


@pytest.mark.parametrize("task", [0, 1, 2])
def test_each_task_keeps_the_configured_share_of_its_free_weights(three_tasks, task):
    owner = owners(three_tasks, task)
    previous = owners(three_tasks, task - 1) if task else {n: torch.full_like(o, FREE) for n, o in owner.items()}
    model = weights(three_tasks, task)
    for name in ("features.0.weight", "features.2.weight"):
        free = int((previous[name] == FREE).sum())
        pruned = math.floor(0.6 * free + 0.5)
        own = owner[name] == task
        assert int(own.sum()) == free - pruned, name
        assert not model[name][owner[name] == FREE].any(), f"{name}: pruned weights are 0"
    rows = torch.zeros(owner[HEAD].shape[0], dtype=torch.bool)
    rows[[2 * task, 2 * task + 1]] = True
    assert torch.equal((owner[HEAD] == task).all(1), rows), "the task's head rows, never pruned"


def test_a_task_killed_while_retraining_resumes_to_the_uninterrupted_result(three_tasks, tmp_path, monkeypatch):
    config, data, scenario = packnet_run(tmp_path)
    out = tmp_path / "out"
    train_task(config, data, scenario, 0, out)
    restore = kill_in_epoch(monkeypatch, epoch=TRAIN["epochs"] + 2)  # the second retraining epoch
    with pytest.raises(KeyboardInterrupt):
        train_task(config, data, scenario, 1, out)
    restore()
    train_task(config, data, scenario, 1, out)
    for name, value in weights(three_tasks, 1).items():
        assert torch.equal(weights(out, 1)[name], value), name
    assert not list((out / "resume").iterdir()), "both resume files are gone once the task is written"


def final_til(config: dict, experiment: str, root: Path) -> float:
    """Mean task-IL accuracy after the last task of `experiment`'s seed-0 run, trained in-process."""
    run = next(p.run for p in plan_runs(copy.deepcopy(config), SCHEMA) if p.run.experiment == experiment)
    run = RunConfig.from_dict({**run.to_dict(), "seed": 0})
    from .stage_helpers import digits_and_scenario

    data, scenario = digits_and_scenario(root, run.scenario)
    path = root / experiment / "config.yaml"
    write_run_config(json.dumps(run.to_dict()), path)
    last = run.scenario.num_tasks - 1
    for task in range(last + 1):
        train_task(path, data, scenario, task, root / experiment / "out", evaluate=True)
    return float(pd.read_parquet(root / experiment / "out" / f"task{last}" / "eval.parquet").acc_til.mean())


def test_packnet_beats_finetune_in_task_il_on_the_default_digits_run(tmp_path):
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    packnet, finetune = final_til(config, "packnet", tmp_path), final_til(config, "finetune", tmp_path)
    assert packnet > finetune, (packnet, finetune)


@pytest.mark.parametrize("ratio", [0, 1, -0.5, 1.5])
def test_a_prune_ratio_outside_0_1_is_a_one_line_error_naming_the_key(tmp_path, ratio):
    experiment = {"method": "packnet", "dataset": "digits", "method_args": {"prune_ratio": ratio}}
    with pytest.raises(ConfigError, match=r"^experiments\.pn\.method_args\.prune_ratio: ") as planned:
        plan_runs({"seeds": [0], "experiments": {"pn": experiment}}, SCHEMA)
    assert "\n" not in str(planned.value)
    config, _, _ = make_run(tmp_path, "packnet", method_args={"prune_ratio": ratio})
    with pytest.raises(ConfigError, match=r"^method_args\.prune_ratio: expected a number in \(0, 1\)") as job:
        PackNetArgs.of(load_run_config(config))
    assert "\n" not in str(job.value)


def test_the_generic_training_rule_plans_one_job_per_task(tmp_path):
    experiment = {"method": "packnet", "dataset": "digits", "scenario": {"num_tasks": 3, "classes_per_task": 2}}
    write_config(tmp_path, {"seeds": [0], "experiments": {"pn": experiment}})
    jobs = planned_jobs(snakemake(tmp_path, "-n", "all").stdout)
    assert sorted(w["task"] for rule, w in jobs if rule == "train_baseline") == ["0", "1", "2"]
    assert not [rule for rule, _ in jobs if "packnet" in rule]
