"""The `focil` method through the real train/evaluate stages on the built-in digits data (CPU).

Specification: the per-task search is seeded (same seed, same hyperparameters and masks); every
trial of task 0 starts from its own seeded initialisation; the standard protocol never changes
an earlier expert; the faithful one reproduces the published quirks (0.01 x learning rate,
weight decay on frozen weights, a new labelled batch per candidate expert, BWT from the final
model); the label-free rules route to the expert that is obviously right, and the prototype
rule also when another expert is confident about everything; `auto` takes the rule that routes
the validation images best.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from sparsecl import stages
from sparsecl.config import RunConfig, TrainConfig, load_run_config
from sparsecl.data import load_meta, load_split
from sparsecl.engine import DeviceData, train_epoch
from sparsecl.errors import ConfigError, DataError
from sparsecl.io import load_torch, sha256_file
from sparsecl.jobs import EvalJob
from sparsecl.methods import EvalContext, focil, focil_answers, focil_experts, get_method
from sparsecl.methods.focil_experts import expert_outputs
from sparsecl.methods.focil_routing import FALLBACK, RULES, Prototypes, choose_rule, route, rule_scores
from sparsecl.models import create_backbone
from sparsecl.plans.focil import FocilArgs
from sparsecl.scenarios import Scenario, ScenarioSpec
from sparsecl.sparse import MaskFile

from .stage_helpers import CPU, evaluate_task, make_run, train_task
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
    scenario: Path | None = None


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
    return Run(config, data_dir, out, scenario)


def trials(out, task: int) -> pd.DataFrame:
    return pd.read_parquet(out / f"task{task}" / "train_log.parquet")


def test_same_seed_selects_the_same_hyperparameters_and_masks(tmp_path):
    first, again = (train_run(tmp_path / name, 2).out for name in ("first", "again"))
    other = train_run(tmp_path / "other", 1, seed=1).out
    for t in range(2):
        pd.testing.assert_frame_equal(trials(first, t), trials(again, t))
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


def trial_starts(root: Path, monkeypatch, tasks: int) -> list[dict[str, torch.Tensor]]:
    """The (masked) weights every trial of a faithful run starts its pass from, in order."""
    starts = []

    def recording(model, *args, **kwargs):
        starts.append({name: p.detach().clone() for name, p in model.named_parameters()})
        return train_epoch(model, *args, **kwargs)

    monkeypatch.setattr(focil, "train_epoch", recording)
    dense = {"trials": 3, "report_every": 100, "density_grid": [0.5]}  # trials' masks overlap in every layer
    train_run(root, tasks, protocol="faithful", method_args=dense)
    return starts


def same_where_both_active(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    both = {n: (a[n] != 0) & (b[n] != 0) for n in a}
    assert all(m.any() for m in both.values())
    return all(torch.equal(a[n][both[n]], b[n][both[n]]) for n in a)


def test_every_task0_trial_starts_from_its_own_seeded_initialisation(tmp_path, monkeypatch):
    starts = trial_starts(tmp_path / "first", monkeypatch, tasks=2)
    again = trial_starts(tmp_path / "again", monkeypatch, tasks=2)
    task0, task1 = starts[:3], starts[3:]
    assert len(task1) == 3
    assert not same_where_both_active(task0[0], task0[1]) and not same_where_both_active(task0[1], task0[2])
    assert all(torch.equal(task0[i][n], again[i][n]) for i in range(3) for n in task0[i])  # reproducible
    assert same_where_both_active(task1[0], task1[1]) and same_where_both_active(task1[1], task1[2])  # shared net


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
        predictions.append(expert_outputs(model, [mask], x, batch=10)[0][0].argmax(1))
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


def test_an_evaluation_sets_each_experts_weights_once_however_many_images_it_answers(tmp_path, monkeypatch):
    """Setting an expert's weights (the shared weights times its mask) costs more than forwarding a
    test batch through it: the faithful evaluation after task t answers the test and validation
    images of every seen task, each candidate's own labelled batch and the BWT's second pass with
    every expert, yet sets each of the t+1 experts once."""
    run = train_run(tmp_path, 3, protocol="faithful", scenario={"validation_fraction": 0.2})
    set_to: list[dict] = []
    expert_weights = focil_answers.expert_weights

    @contextmanager
    def counted(model):
        with expert_weights(model) as use:
            yield lambda mask: (set_to.append(mask), use(mask))

    monkeypatch.setattr(focil_experts, "expert_weights", counted)
    rows = pd.read_parquet(evaluate_task(run.config, run.data_dir, run.scenario, 2, run.out))
    assert len(rows) == 3 and rows["bwt_final_model"].iloc[:2].notna().all()
    masks = [MaskFile.from_dict(load_torch(run.out / f"task{t}" / "masks.pt")).mask for t in range(3)]
    assert len(set_to) == 3
    for used, mask in zip(set_to, masks, strict=True):
        assert all(torch.equal(used[name], mask[name]) for name in mask)


def test_each_expert_keeps_its_prototypes_and_auto_chooses_on_the_validation_split(tmp_path):
    out = train_run(tmp_path, 2, evaluate=True, scenario={"validation_fraction": 0.2}).out
    prototypes = load_torch(out / "task1" / "model.pt")["extra"]["prototypes"]
    assert [tuple(p["means"].shape) for p in prototypes] == [(2, 32), (2, 32)]  # 2 classes, 32 features each
    final = pd.read_parquet(out / "task1" / "eval.parquet")
    validated = {rule: final[f"route_{rule}_val_expert_acc"].iloc[0] for rule in RULES}
    rule = final["selection_rule"].iloc[0]
    assert rule == choose_rule(validated)
    assert final["acc_cil"].tolist() == final[f"route_{rule}_acc"].tolist() == final["labelfree_acc"].tolist()


def test_softmax_and_energy_rules_pick_the_expert_confident_on_its_own_classes():
    logits = torch.zeros(3, 20, 6)
    logits[1, :, 2] = 8.0  # only expert 1 is sure, and sure of one of its own classes
    logits[2, :, 0] = 50.0  # expert 2 is sure of a class that is not its own: that does not count
    for rule in ("max_softmax", "entropy", "energy"):
        scores = rule_scores(rule, logits, torch.zeros(3, 20, 1), [[0, 1], [2, 3], [4, 5]], [])
        assert route(scores, 10).tolist() == [1, 1], rule


def prototypes_for(model: torch.nn.Module, masks: list[dict], data: DeviceData, tasks: list[list[int]]) -> list[dict]:
    """Each expert's prototypes on `data` (its training images), as the training stage keeps them."""
    x, y = data.batch(torch.arange(len(data.labels)))
    return [
        Prototypes.of(expert_outputs(model, [MaskFile.from_dict(m).mask], x, 64)[1][0], y, labels).to_dict()
        for m, labels in zip(masks, tasks)
    ]


def focil_run(protocol: str, spec: ScenarioSpec) -> RunConfig:
    return RunConfig(
        run_id="f/default/seed0", experiment="f", point="default", seed=0, method="focil", dataset="digits",
        backbone="mlp", scenario=spec, train=TrainConfig(eval_batch_size=8, augment=False), protocol=protocol,
    )  # fmt: skip


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
    data = DeviceData.from_numpy(images, labels, [0.0], [1.0], torch.device("cpu"))
    extra = {"hparams": [{"lr": 0.1, "density": 0.1}] * 3, "prototypes": prototypes_for(model, masks, data, tasks)}
    return EvalContext(
        focil_run(protocol, spec), 2, scenario, data, torch.device("cpu"), torch.Generator().manual_seed(0), model,
        masks, extra,
    )  # fmt: skip


@pytest.mark.parametrize("protocol", ["standard", "faithful"])
def test_label_free_selection_routes_every_batch_to_the_obvious_expert(protocol):
    rows = pd.DataFrame(get_method("focil").evaluate(obvious_case(protocol)))
    assert (rows["labelfree_expert_acc"] == 100).all() and (rows["labelfree_acc"] == 100).all()
    for rule in RULES:
        assert (rows[f"route_{rule}_expert_acc"] == 100).all() and (rows[f"route_{rule}_acc"] == 100).all(), rule
    assert (rows["labelled_expert_acc"] == 100).all() and (rows["acc_til"] == 100).all()
    assert (rows["selection_rule"] == FALLBACK).all()  # auto without a validation split


@pytest.mark.parametrize(("protocol", "per_candidate"), [("faithful", True), ("standard", False)])
def test_faithful_labelled_rule_draws_a_new_batch_for_every_candidate_expert(monkeypatch, protocol, per_candidate):
    ctx, drawn, real = obvious_case(protocol), [], DeviceData.batch

    def spy(self, idx, *args, **kwargs):
        drawn.append(idx.tolist())
        return real(self, idx, *args, **kwargs)

    monkeypatch.setattr(DeviceData, "batch", spy)
    ctx.task = 1  # candidates: experts 0 and 1 (not the final task, so no second evaluation for the BWT)
    ctx.masks, ctx.extra["prototypes"] = ctx.masks[:2], ctx.extra["prototypes"][:2]
    get_method("focil").evaluate(ctx)
    selection = [idx for idx in drawn if len(idx) == 10]
    if not per_candidate:
        assert selection == []  # standard: every candidate is scored on the first 10 of the shared batch
        return
    assert len(selection) == 1 + 2  # task 0: expert 0; task 1: experts 0 and 1, each on a batch of its own
    task1 = set(ctx.test_index(1).tolist())
    assert set(selection[1]) <= task1 and set(selection[2]) <= task1 and set(selection[1]) != set(selection[2])


def separable_images(seed: int, per_class: int = 30) -> tuple[np.ndarray, np.ndarray]:
    """4 classes, 2 tasks in 9 pixels: task t's classes are +-2 on pixels 4t..4t+3 (noise 0.3
    elsewhere); pixel 8 is 1 everywhere. Stored as uint8 128 + 40 v (normalised back to v)."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(4), per_class)
    values = rng.normal(0, 0.3, (len(labels), 9))
    for c in range(4):
        t, sign = c // 2, 1 - 2 * (c % 2)
        values[labels == c, 4 * t : 4 * t + 4] += 2 * sign
    values[:, 8] = 1
    return np.clip(128 + 40 * values, 0, 255).astype(np.uint8)[:, None, :, None], labels


def two_experts_case(overconfident: bool, validation: bool) -> EvalContext:
    """Expert t (hidden units 4t..4t+3 from pixels 4t..4t+3, classifier rows of task t) trained on
    task t's separable images. `overconfident`: expert 0 also reads the constant pixel through a
    large weight, so it is sure of class 0 whatever the image."""
    tasks = [[0, 1], [2, 3]]
    spec = ScenarioSpec(num_tasks=2, classes_per_task=2)
    torch.manual_seed(0)
    model = create_backbone("mlp", 4, (1, 9, 1), hidden=(8,))
    data = {
        s: DeviceData.from_numpy(*separable_images(s), [128 / 255], [40 / 255], torch.device("cpu")) for s in (1, 2, 3)
    }
    x, y = data[1].batch(torch.arange(len(data[1].labels)))
    masks = []
    for t, classes in enumerate(tasks):
        hidden, head = torch.zeros(8, 9, dtype=torch.bool), torch.zeros(4, 8, dtype=torch.bool)
        hidden[4 * t : 4 * t + 4, 4 * t : 4 * t + 4] = True
        head[classes, 4 * t : 4 * t + 4] = True
        mask = {"features.0.weight": hidden, "classifier.weight": head}
        own = torch.isin(y, torch.tensor(classes))
        optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
        for _ in range(100):  # masked forward: only the expert's own weights get gradients
            logits = torch.func.functional_call(model, {n: p * mask[n] for n, p in model.named_parameters()}, (x[own],))
            loss = torch.nn.functional.cross_entropy(logits[:, classes], y[own] - classes[0])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        masks.append(mask)
    if overconfident:
        with torch.no_grad():
            model.features[0].weight[0, 8], model.classifier.weight[0, 0] = 10.0, 10.0
        masks[0]["features.0.weight"][0, 8] = True
    files = [MaskFile.first(masks[0]).to_dict(), MaskFile.after(masks[1], 1, MaskFile.first(masks[0]).owner).to_dict()]
    extra = {"hparams": [{"lr": 0.5, "density": 0.2}] * 2, "prototypes": prototypes_for(model, files, data[1], tasks)}
    scenario = Scenario(spec, "digits", list(range(4)), tasks, np.arange(120), np.zeros(0, np.int64))
    return EvalContext(
        focil_run("standard", spec), 1, scenario, data[2], torch.device("cpu"), torch.Generator().manual_seed(0),
        model, files, extra, validation=data[3] if validation else None,
    )  # fmt: skip


@pytest.mark.parametrize("overconfident", [False, True])
def test_label_free_rules_pick_the_expert_of_separable_tasks(overconfident):
    ctx = two_experts_case(overconfident, validation=False)
    masks = [MaskFile.from_dict(m).mask for m in ctx.masks]
    prototypes = [Prototypes.from_dict(p) for p in ctx.extra["prototypes"]]
    for j in range(2):
        logits, features = expert_outputs(ctx.model, masks, ctx.data.batch(ctx.test_index(j))[0], 64)
        for rule in RULES:
            picks = route(rule_scores(rule, logits, features, ctx.scenario.tasks, prototypes), 10)
            # An expert sure of everything wins every softmax or energy vote; only the prototypes see
            # that task 1's images are nothing like expert 0's training images.
            expected = 0 if overconfident and rule != "prototype" else j
            assert picks.tolist() == [expected] * 6, (rule, j)


def test_auto_takes_the_rule_that_routes_the_validation_images_best():
    rows = pd.DataFrame(get_method("focil").evaluate(two_experts_case(overconfident=True, validation=True)))
    assert (rows["selection_rule"] == "prototype").all()
    assert rows["route_prototype_val_expert_acc"].iloc[0] == 100 and rows["route_energy_val_expert_acc"].iloc[0] == 50
    assert rows["acc_cil"].tolist() == rows["labelfree_acc"].tolist() == rows["route_prototype_acc"].tolist()
    assert rows["route_max_softmax_expert_acc"].tolist() == [100, 0]
    assert choose_rule({"max_softmax": 50.0, "entropy": 50.0, "energy": 40.0, "prototype": 50.0}) == "max_softmax"


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
        "route_prototype_expert_acc_mean",
        "route_energy_acc_mean",
    ):
        assert np.isfinite(summary.loc["cil", column])
    assert summary.loc["til", "forgetting_mean"] == 0  # standard protocol: experts never change
    assert "labelfree_expert_acc" in (tmp_path / "results/tables/summary.md").read_text()


class Killed(Exception):
    """Stands for the job being killed between two trials."""


def test_a_search_killed_between_trials_resumes_at_the_next_trial_with_the_same_expert(tmp_path, monkeypatch):
    uninterrupted = train_run(tmp_path / "whole", 1).out
    config, data_dir, scenario = make_run(
        tmp_path / "killed", "focil", num_tasks=1, train=ONLINE, backbone_args={"hidden": [64, 32]}, method_args=SEARCH
    )
    out = tmp_path / "killed" / "out"
    save = focil.TaskTrainer.save_progress
    calls = []

    def save_then_die(self):
        save(self)
        calls.append(len(self.finished))
        if len(self.finished) == 3:
            raise Killed

    monkeypatch.setattr(focil.TaskTrainer, "save_progress", save_then_die)
    with pytest.raises(Killed):
        train_task(config, data_dir, scenario, 0, out)
    assert (out / "resume" / "task0.pt").exists() and not (out / "task0" / "model.pt").exists()
    calls.clear()
    train_task(config, data_dir, scenario, 0, out)  # the rerun
    assert calls[0] == 4  # it went on with the fourth trial
    pd.testing.assert_frame_equal(trials(out, 0), trials(uninterrupted, 0))
    for name in ("model.pt", "masks.pt"):
        assert sha256_file(out / "task0" / name) == sha256_file(uninterrupted / "task0" / name)


def jobs_with_evaluation(root: Path, tasks: int, jobs: int | None = None, **kwargs) -> Run:
    """The first `jobs` (all) tasks of a `tasks`-task run as workflow jobs: each trains its task,
    then evaluates in the same call."""
    config, data_dir, scenario = make_run(
        root, "focil", num_tasks=tasks, train=ONLINE, backbone_args={"hidden": [64, 32]}, method_args=SEARCH, **kwargs
    )
    out = root / "out"
    for t in range(tasks if jobs is None else jobs):
        train_task(config, data_dir, scenario, t, out, evaluate=True)
    return Run(config, data_dir, out, scenario)


def count_forwards(monkeypatch) -> list[int]:
    """Images of each forward pass the evaluation's record makes, appended as they run."""
    calls, real = [], focil_answers.forward

    def counted(model, x, batch):
        calls.append(len(x))
        return real(model, x, batch)

    monkeypatch.setattr(focil_answers, "forward", counted)
    return calls


def evaluate_afresh(run: Run, task: int, monkeypatch) -> pd.DataFrame:
    """The evaluation after `task` with no recorded answers read: every expert on every task's images."""
    with monkeypatch.context() as patch:
        patch.setattr(focil_answers.Record, "read", lambda *args: None)
        path = run.out / "afresh.parquet"
        masks = tuple(run.out / f"task{t}" / "masks.pt" for t in range(task + 1))
        stages.evaluate(
            EvalJob(
                config=run.config, data_dir=run.data_dir, scenario=run.scenario, task=task, device=CPU,
                model=run.out / f"task{task}" / "model.pt", masks=masks, out=path,
            )
        )  # fmt: skip
    return pd.read_parquet(path)


def test_standard_evaluation_answers_only_the_new_expert_and_task_and_equals_a_fresh_one(tmp_path, monkeypatch):
    run = jobs_with_evaluation(tmp_path, 4, 3, scenario={"validation_fraction": 0.2})
    for t in range(3):  # each masks file records expert t on tasks 0..t and experts 0..t-1 on task t, per split
        record = load_torch(run.out / f"task{t}" / "masks.pt")["answers"]
        keys = sorted((b["split"], b["expert"], b["task"]) for b in record["blocks"])
        new = {(m, t) for m in range(t + 1)} | {(t, j) for j in range(t + 1)}
        assert keys == sorted((split, m, j) for split in ("test", "validation") for m, j in new)
    calls = count_forwards(monkeypatch)
    train_task(run.config, run.data_dir, run.scenario, 3, run.out, evaluate=True)
    assert len(calls) == 2 * (3 + 4)  # per split: experts 0-2 on task 3, expert 3 on tasks 0-3
    after = pd.read_parquet(run.out / "task3" / "eval.parquet")
    pd.testing.assert_frame_equal(after, evaluate_afresh(run, 3, monkeypatch))


def test_an_expert_whose_weights_changed_is_answered_again(tmp_path, monkeypatch):
    run = jobs_with_evaluation(tmp_path, 3)
    path = run.out / "task0" / "masks.pt"
    saved = load_torch(path)
    saved["answers"]["digests"][0] = "0" * 32  # as if expert 0 had computed with other weights then
    torch.save(saved, path)
    calls = count_forwards(monkeypatch)
    rows = pd.read_parquet(evaluate_task(run.config, run.data_dir, run.scenario, 2, run.out))
    assert len(calls) == 1  # expert 0 on task 0 again; its later blocks were recorded with its weights
    pd.testing.assert_frame_equal(rows, evaluate_afresh(run, 2, monkeypatch))


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("scores", lambda v: v.fill_(float("nan")), "scores are not finite"),
        ("scores", lambda v: v[:, :3], r"scores should be \[4, \d+\] torch.float32, got \[4, 3\]"),
        ("over_own", lambda v: v.fill_(9), "over_own holds labels outside expert 1's classes"),
        ("task", lambda v: 2, "expected an expert and a task of which the larger is 1"),
    ],
)
def test_a_recorded_answer_that_does_not_fit_is_refused_naming_the_file(tmp_path, field, value, message):
    run = jobs_with_evaluation(tmp_path, 2)
    path = run.out / "task1" / "masks.pt"
    saved = load_torch(path)
    block = next(b for b in saved["answers"]["blocks"] if b["expert"] == 1 and b["task"] == 1)
    block[field] = value(block[field])
    torch.save(saved, path)
    with pytest.raises(DataError, match=f"^{path}: 'answers' block .*{message}"):
        evaluate_task(run.config, run.data_dir, run.scenario, 1, run.out)


def test_faithful_masks_files_record_no_answers(tmp_path):
    run = jobs_with_evaluation(tmp_path, 2, protocol="faithful")
    assert "answers" not in load_torch(run.out / "task1" / "masks.pt")


def test_masks_files_with_recorded_answers_are_byte_identical_across_two_runs(tmp_path):
    first, second = (jobs_with_evaluation(tmp_path / name, 2).out for name in ("first", "second"))
    for t in range(2):
        assert "answers" in load_torch(first / f"task{t}" / "masks.pt")
        assert sha256_file(first / f"task{t}" / "masks.pt") == sha256_file(second / f"task{t}" / "masks.pt")
