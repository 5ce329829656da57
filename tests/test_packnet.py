"""The `packnet` method through the real train/evaluate stages on the built-in digits data (CPU).

Specification: each task is two jobs, `train` (the free weights) then `prune` (prune, retrain,
freeze, evaluate), each reading the config of its stage kind, so that a new prune ratio or
retraining length reruns the prune stages only; after each stage of task t every weight an
earlier task owns (and, from task 1 on, every bias outside the head) is bit-identical to what that
task left; each task keeps exactly the configured share of the weights that were free for it; a
stage killed mid-epoch resumes to the result of an uninterrupted run; a stage fed the files of
another stage, task or network refuses them in one line naming the file; the workflow runs
`packnet_train` and `packnet_prune` once per task; on the default digits run PackNet's task-IL
accuracy is above finetune's; a prune ratio outside (0, 1) is a one-line error naming the key.
"""

from __future__ import annotations

import copy
import json
import math
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from sparsecl import stages
from sparsecl.config import RunConfig, load_run_config, write_run_config
from sparsecl.errors import ConfigError, DataError
from sparsecl.experiments import load_schema, plan_runs
from sparsecl.io import load_torch
from sparsecl.jobs import TrainJob
from sparsecl.plans import TRAINED, Ref, plan_of
from sparsecl.plans.packnet import PackNetArgs
from sparsecl.sparse.masks import FREE

from .stage_helpers import CPU, kill_in_epoch, make_run, task_files, train_stage, train_stages, undecided
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
        train_stages(config, data, scenario, task, out)
    return out


def weights(out: Path, task: int, stage: str = "prune") -> dict[str, torch.Tensor]:
    return load_torch(out / f"task{task}" / stage / "model.pt")["state_dict"]


def owners(out: Path, task: int, stage: str = "prune") -> dict[str, torch.Tensor]:
    return load_torch(out / f"task{task}" / stage / "masks.pt")["owner"]


def test_each_task_is_a_train_job_then_a_prune_job_that_stands_for_it_and_evaluates():
    plan, run = plan_of("packnet"), plan_runs(config_of(num_tasks=3), SCHEMA)[0].run
    first, third = (list(plan.stages(run, task, undecided)) for task in (0, 2))
    assert [s.name for s in first] == [s.name for s in third] == ["train", "prune"]
    assert first[0].reads == {}
    assert third[0].reads == {"prev_model": Ref(1, "prune"), "prev_masks": Ref(1, "prune", "masks.pt")}
    assert third[1].reads == {"prev_model": Ref(2, "train"), "prev_masks": Ref(2, "train", "masks.pt")}
    assert third[0].writes == TRAINED and third[1].writes == (*TRAINED, "eval.parquet")
    assert plan.path(2, "prune", "eval.parquet") == "task2/prune/eval.parquet"
    assert plan.standing(run, 2, undecided) == "prune" and plan.evaluated(run, 2, undecided) == ["prune"]


@pytest.mark.parametrize("changed", [{"prune_ratio": 0.7}, {"retrain_epochs": 3}])
def test_a_new_prune_ratio_or_retraining_length_changes_the_prune_config_only(changed):
    plan = plan_of("packnet")
    before = plan_runs(config_of(method_args={"prune_ratio": 0.6, "retrain_epochs": 2}), SCHEMA)[0].run
    after = plan_runs(config_of(method_args={"prune_ratio": 0.6, "retrain_epochs": 2, **changed}), SCHEMA)[0].run
    assert plan.stage_run(before, "train") == plan.stage_run(after, "train")
    assert plan.stage_run(before, "train").method_args == {}
    assert plan.stage_run(before, "prune") != plan.stage_run(after, "prune")
    for stage in plan.stages(after, 1, undecided):
        assert stage.keys == plan.stage_keys[stage.name]


def test_the_train_stage_reads_a_config_without_the_prune_keys(three_tasks):
    train_config = load_run_config(three_tasks.parent / "runs/packnet/default/seed0/stage_configs/train.yaml")
    assert train_config.method_args == {}
    prune_config = load_run_config(three_tasks.parent / "runs/packnet/default/seed0/stage_configs/prune.yaml")
    assert prune_config.method_args == {"prune_ratio": 0.6, "retrain_epochs": 2}


@pytest.mark.parametrize("task", [1, 2])
@pytest.mark.parametrize("stage", ["train", "prune"])
def test_weights_owned_by_earlier_tasks_are_bit_identical_after_each_stage_of_a_later_task(three_tasks, task, stage):
    before, after = weights(three_tasks, task - 1), weights(three_tasks, task, stage)
    earlier = owners(three_tasks, task - 1)
    assert all(torch.equal(owners(three_tasks, task, "train")[n], o) for n, o in earlier.items()), "passed on as is"
    for name, owner in earlier.items():
        held = owner != FREE
        assert held.any(), name
        assert torch.equal(after[name][held], before[name][held]), name
    for name in ("features.0.bias", "features.2.bias"):  # learned with task 0, then fixed
        assert torch.equal(after[name], before[name]), name
    evaluations = [pd.read_parquet(three_tasks / f"task{t}" / "prune" / "eval.parquet") for t in (task - 1, task)]
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


@pytest.mark.parametrize(("stage", "epoch"), [("train", 2), ("prune", 2)])  # mid-training, mid-retraining
def test_a_stage_killed_mid_epoch_resumes_to_the_uninterrupted_result(three_tasks, tmp_path, monkeypatch, stage, epoch):
    config, data, scenario = packnet_run(tmp_path)
    out = tmp_path / "out"
    train_stages(config, data, scenario, 0, out)
    if stage == "prune":
        train_stage(config, data, scenario, 1, "train", out)
    restore = kill_in_epoch(monkeypatch, epoch=epoch)
    with pytest.raises(KeyboardInterrupt):
        train_stage(config, data, scenario, 1, stage, out)
    assert (out / "resume" / "task1" / f"{stage}.pt").is_file(), "the stage's own resume file"
    restore()
    train_stage(config, data, scenario, 1, stage, out)
    for name, value in weights(three_tasks, 1, stage).items():
        assert torch.equal(weights(out, 1, stage)[name], value), name
    assert not list((out / "resume").rglob("*.pt")), "the resume file is gone once the stage is written"


def test_a_prune_job_refuses_a_start_of_another_stage_task_or_network_in_one_line(three_tasks, tmp_path):
    config, data, scenario = packnet_run(tmp_path)
    start = tmp_path / "out" / "task1" / "train"  # where task 1's prune job reads its start
    start.mkdir(parents=True)
    shutil.copytree(three_tasks / "task0" / "prune", tmp_path / "out" / "task0" / "prune")  # what it evaluates with
    for task, stage in ((1, "prune"), (0, "train"), (0, "prune")):
        for name in ("model.pt", "masks.pt"):
            (start / name).write_bytes((three_tasks / f"task{task}" / stage / name).read_bytes())
        expected = (
            "model file of stage 'prune', expected stage 'train'" if task else "model file of task 0, expected task 1"
        )
        with pytest.raises(DataError, match=f"^{re.escape(str(start / 'model.pt'))}: {expected}$"):
            train_stage(config, data, scenario, 1, "prune", tmp_path / "out")
    wide, *_ = make_run(
        tmp_path / "wide", "packnet", train=TRAIN, backbone_args={"hidden": [64, 16], "bias": True},
        method_args={"prune_ratio": 0.6, "retrain_epochs": 2},
    )  # fmt: skip
    train_stage(wide, data, scenario, 0, "train", tmp_path / "wide" / "out")
    with pytest.raises(DataError, match=r"^\S+/task0/train/model.pt: model file for mlp\{.*64.*\}.*, this run uses"):
        train_stage(config, data, scenario, 0, "prune", tmp_path / "wide" / "out")
    here = tmp_path / "out" / "task0" / "prune"
    with pytest.raises(DataError, match=r"^task 0 stage prune: the model and masks files of stage train of task 0"):
        stages.train(
            TrainJob(
                config=config, data_dir=data, scenario=scenario, task=0, device=CPU, stage="prune",
                resume=tmp_path / "resume.pt", **task_files(here, None),
            )
        )  # fmt: skip
    assert not [*tmp_path.glob("wide/out/*/prune"), *tmp_path.glob("out/task1/prune")], "refused before any write"


def config_of(num_tasks: int = 3, **changes) -> dict:
    experiment = {"method": "packnet", "dataset": "digits", "scenario": {"num_tasks": num_tasks, "classes_per_task": 2}}
    return {"seeds": [0], "experiments": {"pn": {**experiment, **changes}}}


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
        *_, standing = train_stages(path, data, scenario, task, root / experiment / "out")
    return float(pd.read_parquet(standing / "eval.parquet").acc_til.mean())


def test_packnet_beats_finetune_in_task_il_on_the_default_digits_run(tmp_path):
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    packnet, finetune = final_til(config, "packnet", tmp_path), final_til(config, "finetune", tmp_path)
    assert packnet > finetune, (packnet, finetune)


@pytest.mark.parametrize("ratio", [0, 1, -0.5, 1.5])
def test_a_prune_ratio_outside_0_1_is_a_one_line_error_naming_the_key(tmp_path, ratio):
    with pytest.raises(ConfigError, match=r"^experiments\.pn\.method_args\.prune_ratio: ") as planned:
        plan_runs(config_of(method_args={"prune_ratio": ratio}), SCHEMA)
    assert "\n" not in str(planned.value)
    config, _, _ = make_run(tmp_path, "packnet", method_args={"prune_ratio": ratio})
    with pytest.raises(ConfigError, match=r"^method_args\.prune_ratio: expected a number in \(0, 1\)") as job:
        PackNetArgs.of(load_run_config(config))
    assert "\n" not in str(job.value)


def test_the_workflow_runs_a_train_job_and_a_prune_job_per_task(tmp_path):
    write_config(tmp_path, config_of(num_tasks=3))
    jobs = planned_jobs(snakemake(tmp_path, "-n", "all").stdout)
    for rule in ("packnet_train", "packnet_prune"):
        assert sorted(w["task"] for r, w in jobs if r == rule) == ["0", "1", "2"], rule
    assert not [rule for rule, _ in jobs if rule in ("train_baseline", "packnet")]
