"""The `focil` method through the real train/evaluate stages on the built-in digits data (CPU).

Specification: the per-task search is seeded (same seed, same hyperparameters and masks); the
standard protocol never changes an earlier expert; the faithful one reproduces the published
quirks (0.01 x learning rate, weight decay on frozen weights, BWT from the final model); the
label-free rule routes to the expert that is obviously right.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from sparsecl.config import RunConfig, TrainConfig, load_run_config
from sparsecl.data import load_meta, load_split
from sparsecl.engine import DeviceData
from sparsecl.errors import ConfigError
from sparsecl.io import load_torch
from sparsecl.methods import EvalContext, get_method
from sparsecl.methods.focil import FocilArgs
from sparsecl.methods.focil_experts import expert_logits, label_free_choice
from sparsecl.models import create_backbone
from sparsecl.scenarios import Scenario, ScenarioSpec
from sparsecl.sparse import MaskFile

from .stage_helpers import evaluate_task, make_run, train_task
from .workflow_helpers import snakemake, write_config

ONLINE = {"epochs": 1, "batch_size": 10, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4}
SEARCH = {"trials": 6, "report_every": 5}


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny networks: one thread is faster and keeps the timings stable on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@dataclass
class Run:
    config: Path
    data_dir: Path
    out: Path


def train_run(root: Path, tasks: int = 3, *, evaluate: bool = False, train: dict | None = None, **kwargs) -> Run:
    """Train (and optionally evaluate after) tasks 0..tasks-1 of a focil run on the digits."""
    kwargs.setdefault("method_args", SEARCH)
    config, data_dir, scenario = make_run(
        root, "focil", num_tasks=tasks, train=ONLINE | (train or {}), backbone_args={"hidden": [64, 32]}, **kwargs
    )
    out = root / "out"
    for t in range(tasks):
        train_task(config, data_dir, scenario, t, out)
        if evaluate:
            evaluate_task(config, data_dir, scenario, t, out)
    return Run(config, data_dir, out)


def trials(out, task: int) -> pd.DataFrame:
    return pd.read_parquet(out / f"task{task}" / "train_log.parquet")


def test_same_seed_selects_the_same_hyperparameters_and_masks(tmp_path):
    first, again = (train_run(tmp_path / name, 2).out for name in ("first", "again"))
    other = train_run(tmp_path / "other", 1, seed=1).out
    for t in range(2):
        pd.testing.assert_frame_equal(
            trials(first, t).drop(columns="seconds"), trials(again, t).drop(columns="seconds")
        )
        masks, masks_again = (load_torch(out / f"task{t}" / "masks.pt") for out in (first, again))
        for name, mask in masks["mask"].items():
            assert torch.equal(mask, masks_again["mask"][name])
            assert torch.equal(masks["owner"][name], masks_again["owner"][name])
    hparams = load_torch(first / "task1" / "model.pt")["extra"]["hparams"]
    assert hparams == load_torch(again / "task1" / "model.pt")["extra"]["hparams"]
    assert [h["trial"] for h in hparams] == [int(trials(first, t).query("selected")["trial"].iloc[0]) for t in range(2)]
    other_mask = load_torch(other / "task0" / "masks.pt")["mask"]
    assert any(not torch.equal(m, other_mask[n]) for n, m in load_torch(first / "task0" / "masks.pt")["mask"].items())


def test_search_prunes_trials_and_keeps_the_best_completed_one(tmp_path):
    log = trials(train_run(tmp_path, 1, method_args={"trials": 10, "report_every": 3}).out, 0)
    assert len(log) == 10 and log["pruned"].any() and not log["pruned"].iloc[0]
    selected = log.query("selected")
    assert len(selected) == 1 and not selected["pruned"].iloc[0]
    assert selected["train_acc"].iloc[0] == log.query("not pruned")["train_acc"].max()
    assert set(log["lr"]) <= set(FocilArgs.lr_grid) and set(log["density"]) <= set(FocilArgs.density_grid)


def test_fixed_search_trains_one_online_pass_at_the_given_lr_and_density(tmp_path):
    run = train_run(tmp_path, 1, method_args={"search": "fixed", "lr": 0.2, "density": 0.3}, train={"epochs": 4})
    log = trials(run.out, 0)
    assert log[["trial", "lr", "density", "pruned", "selected"]].to_dict("records") == [
        {"trial": 0, "lr": 0.2, "density": 0.3, "pruned": False, "selected": True}
    ]
    images = int(np.isin(load_split(run.data_dir, "train").labels, [0, 1]).sum())
    assert log["batches"].iloc[0] == -(-images // ONLINE["batch_size"])  # one pass, whatever train.epochs says


@pytest.mark.parametrize(("protocol", "factor"), [("faithful", 0.01), ("standard", 1.0)])
def test_faithful_protocol_trains_at_one_hundredth_of_the_sampled_lr(tmp_path, protocol, factor):
    log = trials(train_run(tmp_path, 1, protocol=protocol).out, 0)
    assert np.allclose(log["lr_effective"], log["lr"] * factor)


def own_task_predictions(run: Run, after: int) -> list[torch.Tensor]:
    """Prediction of each expert j <= `after` (shared net after task `after`, task j's mask) on task j's test digits."""
    config = load_run_config(run.config)
    num_classes = config.scenario.num_tasks * config.scenario.classes_per_task
    model = create_backbone("mlp", num_classes, (8, 8, 1), **config.backbone_args)
    model.load_state_dict(load_torch(run.out / f"task{after}" / "model.pt")["state_dict"])
    meta, test = load_meta(run.data_dir), load_split(run.data_dir, "test")
    data = DeviceData.from_numpy(test.images, test.labels, meta["mean"], meta["std"], torch.device("cpu"))
    predictions = []
    for j in range(after + 1):
        x, _ = data.batch(data.indices_of([2 * j, 2 * j + 1]))
        mask = load_torch(run.out / f"task{j}" / "masks.pt")["mask"]
        predictions.append(expert_logits(model, [mask], x, batch=10)[0].argmax(1))
    return predictions


def test_standard_protocol_never_changes_an_earlier_expert(tmp_path):
    fixed = {"search": "fixed", "lr": 0.1, "density": 0.5}  # dense enough that every task reuses earlier weights
    run = train_run(tmp_path, 3, method_args=fixed)
    final = own_task_predictions(run, after=2)
    for j in range(2):
        assert torch.equal(own_task_predictions(run, after=j)[j], final[j])
    before, after = (load_torch(run.out / f"task{t}" / "model.pt")["state_dict"] for t in (0, 2))
    owner0 = load_torch(run.out / "task0" / "masks.pt")["owner"]
    for name, owner in owner0.items():
        assert torch.equal(before[name][owner == 0], after[name][owner == 0])
    reused = load_torch(run.out / "task1" / "masks.pt")["mask"]
    assert any(bool(((owner0[n] == 0) & m).any()) for n, m in reused.items())


def test_faithful_protocol_lets_weight_decay_move_frozen_weights(tmp_path):
    out = train_run(tmp_path, 2, protocol="faithful", method_args={"search": "fixed", "lr": 0.1, "density": 0.5}).out
    before, after = (load_torch(out / f"task{t}" / "model.pt")["state_dict"] for t in (0, 1))
    owner = load_torch(out / "task0" / "masks.pt")["owner"]
    reused = load_torch(out / "task1" / "masks.pt")["mask"]
    moved = [
        bool((before[n][(owner[n] == 0) & reused[n]] != after[n][(owner[n] == 0) & reused[n]]).any()) for n in owner
    ]
    assert any(moved)


def test_evaluation_reports_both_selection_rules_and_the_published_bwt(tmp_path):
    out = train_run(tmp_path, 3, protocol="faithful", evaluate=True).out
    final = pd.read_parquet(out / "task2" / "eval.parquet")
    for column in ("labelled_acc", "labelfree_acc", "labelled_expert_acc", "labelfree_expert_acc"):
        assert final[column].between(0, 100).all()
    assert final["acc_cil"].tolist() == final["labelled_acc"].tolist()  # faithful: the published, labelled rule
    assert final["labelled_expert_acc"].iloc[0] == 100.0  # task 0 has one candidate
    assert final["bwt_final_model"].iloc[:2].notna().all() and np.isnan(final["bwt_final_model"].iloc[2])
    assert "bwt_final_model" not in pd.read_parquet(out / "task1" / "eval.parquet")
    hparams = load_torch(out / "task2" / "model.pt")["extra"]["hparams"]
    assert np.allclose(final["selected_sparsity"], [100 * (1 - h["density"]) for h in hparams])


def test_label_free_rule_picks_the_confident_expert():
    flat = torch.zeros(3, 20, 6)
    flat[1, :, 2] = 8.0  # only expert 1 is sure, and sure of one of its own classes
    for score in ("max_softmax", "entropy"):
        assert label_free_choice(flat, [[0, 1], [2, 3], [4, 5]], 10, score).tolist() == [1, 1]


def obvious_case(protocol: str) -> EvalContext:
    """Class c lights pixel c; the classifier maps pixel c to logit c; expert m keeps only its classes' rows."""
    images = np.repeat(np.eye(6, dtype=np.uint8)[:, None, :, None] * 255, 12, axis=0)  # [72, 1, 6, 1]
    labels = np.repeat(np.arange(6), 12)
    spec = ScenarioSpec(num_tasks=3, classes_per_task=2)
    tasks = [[0, 1], [2, 3], [4, 5]]
    scenario = Scenario(spec, "digits", list(range(6)), tasks, np.arange(72), np.zeros(0, np.int64))
    model = create_backbone("mlp", 6, (1, 6, 1), hidden=())
    with torch.no_grad():
        model.classifier.weight.copy_(10 * torch.eye(6))
    masks = []
    for labels_m in tasks:
        rows = torch.zeros(6, 6, dtype=torch.bool)
        rows[labels_m] = True
        masks.append(MaskFile.first({"classifier.weight": rows}).to_dict())
    run = RunConfig(
        run_id="f/default/seed0", experiment="f", point="default", seed=0, method="focil", dataset="digits",
        backbone="mlp", scenario=spec, train=TrainConfig(eval_batch_size=8, augment=False), protocol=protocol,
    )  # fmt: skip
    data = DeviceData.from_numpy(images, labels, [0.0], [1.0], torch.device("cpu"))
    return EvalContext(
        run, 2, scenario, data, torch.device("cpu"), torch.Generator().manual_seed(0), model, masks,
        {"hparams": [{"lr": 0.1, "density": 0.1}] * 3},
    )  # fmt: skip


@pytest.mark.parametrize("protocol", ["standard", "faithful"])
def test_label_free_selection_routes_every_batch_to_the_obvious_expert(protocol):
    rows = pd.DataFrame(get_method("focil").evaluate(obvious_case(protocol)))
    assert (rows["labelfree_expert_acc"] == 100).all() and (rows["labelfree_acc"] == 100).all()
    assert (rows["labelled_expert_acc"] == 100).all() and (rows["acc_til"] == 100).all()


def test_an_unknown_method_arg_is_a_one_line_config_error():
    run = obvious_case("standard").run
    with pytest.raises(ConfigError, match="method_args.density_grids: unknown key"):
        FocilArgs.of(RunConfig.from_dict(run.to_dict() | {"method_args": {"density_grids": [0.1]}}))


@pytest.mark.slow
def test_the_workflow_reports_accuracy_forgetting_and_expert_selection(tmp_path):
    experiment = {
        "method": "focil", "dataset": "digits", "scenario": {"num_tasks": 2, "classes_per_task": 2},
        "train": ONLINE, "method_args": {"trials": 4, "report_every": 5},
    }  # fmt: skip
    write_config(tmp_path, {"seeds": [0], "experiments": {"focil": experiment}})
    snakemake(tmp_path, "all", "--cores", "2")
    summary = pd.read_csv(tmp_path / "results/tables/summary.csv").set_index("setting")
    for column in (
        "acc_mean",
        "forgetting_mean",
        "labelfree_acc_mean",
        "labelfree_expert_acc_mean",
        "labelled_acc_mean",
    ):
        assert np.isfinite(summary.loc["cil", column])
    assert summary.loc["til", "forgetting_mean"] == 0  # standard protocol: experts never change
    assert "labelfree_expert_acc" in (tmp_path / "results/tables/summary.md").read_text()
