"""The `dst` method through the real train/evaluate stages on the built-in digits data (CPU).

Specification: earlier tasks are isolated (their weights and task-IL accuracy never change),
the same config and seed reproduce the same masks and metrics, a task killed mid-training
resumes to exactly the result of an uninterrupted run, and each task's masks file stands alone.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import pandas as pd
import pytest
import torch

from sparsecl.config import RunConfig, TrainConfig, dump_run_config
from sparsecl.errors import ConfigError
from sparsecl.io import load_torch, write_text
from sparsecl.methods import EvalContext, resume
from sparsecl.methods.dst import DST, all_logit_accuracy
from sparsecl.plans.dst import DSTArgs
from sparsecl.scenarios import ScenarioSpec
from sparsecl.sparse import MaskFile
from sparsecl.sparse.masks import FREE

from .stage_helpers import digits_and_scenario, evaluate_task, train_task

CPU = torch.device("cpu")
SCENARIO = ScenarioSpec(num_tasks=3, classes_per_task=2, validation_fraction=0.1)


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> tuple[Path, Path]:
    return digits_and_scenario(tmp_path_factory.mktemp("digits"), SCENARIO)


def run_config(protocol: str = "standard", epochs: int = 3, **method_args) -> RunConfig:
    args = {"density": 0.2, "init": "ERK", "growth": "random", "update_frequency": 3, **method_args}
    return RunConfig(
        run_id="dst/default/seed0",
        experiment="dst",
        point="default",
        seed=0,
        method="dst",
        dataset="digits",
        backbone="mlp",
        backbone_args={"hidden": [32, 32]},
        protocol=protocol,
        scenario=SCENARIO,
        train=TrainConfig(epochs=epochs, batch_size=32, optimizer="adam", lr=0.003, loss_scope="task"),
        method_args=args,
    )


def train_and_evaluate(digits, out: Path, run: RunConfig, tasks: int = 3, first: int = 0) -> Path:
    """Train and evaluate tasks `first`..`tasks - 1` in `out` (earlier tasks' files must exist)."""
    data, scenario = digits
    write_text(out / "config.yaml", dump_run_config(run))
    for t in range(first, tasks):
        train_task(out / "config.yaml", data, scenario, t, out)
        evaluate_task(out / "config.yaml", data, scenario, t, out)
    return out


def weights(out: Path, t: int) -> dict[str, torch.Tensor]:
    return load_torch(out / f"task{t}" / "model.pt")["state_dict"]


def masks(out: Path, t: int) -> MaskFile:
    return MaskFile.from_dict(load_torch(out / f"task{t}" / "masks.pt"))


def evals(out: Path, tasks: int = 3) -> pd.DataFrame:
    return pd.concat([pd.read_parquet(out / f"task{t}" / "eval.parquet") for t in range(tasks)], ignore_index=True)


@pytest.fixture(scope="module")
def standard_run(digits, tmp_path_factory) -> Path:
    return train_and_evaluate(digits, tmp_path_factory.mktemp("standard"), run_config())


def test_weights_owned_by_earlier_tasks_are_bit_identical_after_every_later_task(standard_run):
    for t in (1, 2):
        owned = masks(standard_run, t - 1).used()
        before, after = weights(standard_run, t - 1), weights(standard_run, t)
        for name, used in owned.items():
            assert used.any()
            assert torch.equal(after[name][used], before[name][used]), (t, name)


def test_earlier_tasks_task_il_accuracy_never_changes_so_bwt_is_zero(standard_run):
    rows = evals(standard_run).set_index(["task_trained", "task_eval"])["acc_til"]
    for i in (1, 2):
        for j in range(i):
            assert rows[(i, j)] == rows[(j, j)]
    assert (rows > 50).all()  # above chance (two classes per task)


def test_each_masks_file_stands_alone_with_owner_map_and_statistics(standard_run):
    saved = load_torch(standard_run / "task2" / "masks.pt")
    assert set(saved) == {"mask", "owner", "stats", "provenance"}
    assert saved["provenance"]["run_id"] == "dst/default/seed0" and saved["provenance"]["task"] == 2
    owner = saved["owner"]["classifier.weight"]
    assert owner.dtype == torch.uint8 and set(owner.unique().tolist()) <= {0, 1, 2, FREE}
    stats = saved["stats"]
    assert stats["task"] == 2 and 0 < stats["density"] < 1 and 0 <= stats["overlap"] < 1
    assert stats["capacity_used"] + stats["free_capacity"] == pytest.approx(1)
    assert set(stats["layers"]) == set(saved["mask"])
    row = evals(standard_run).iloc[-1]
    assert row["capacity_used_pct"] == pytest.approx(100 * stats["capacity_used"])


def test_standard_masks_cover_only_the_classifier_rows_of_the_tasks_classes(standard_run):
    for t in range(3):
        head = masks(standard_run, t).mask["classifier.weight"]
        rows = head.any(dim=1).nonzero().flatten().tolist()
        assert rows == [2 * t, 2 * t + 1]


def test_standard_updates_keep_the_density_exactly(standard_run):
    log = pd.read_parquet(standard_run / "task1" / "train_log.parquet")
    assert log["dst_updates"].sum() > 0
    assert (log["pruned"] == log["grown"]).all()
    assert log["density"].nunique() == 1


def test_the_same_config_and_seed_reproduce_masks_and_metrics(digits, standard_run, tmp_path):
    again = train_and_evaluate(digits, tmp_path, run_config())
    for t in range(3):
        first, second = load_torch(standard_run / f"task{t}" / "masks.pt"), load_torch(again / f"task{t}" / "masks.pt")
        for part in ("mask", "owner"):
            assert all(torch.equal(first[part][n], second[part][n]) for n in first[part])
        assert first["stats"] == second["stats"]
    pd.testing.assert_frame_equal(evals(standard_run), evals(again))


def test_faithful_masks_span_the_whole_classifier_and_random_growth_drifts(digits, tmp_path):
    out = train_and_evaluate(digits, tmp_path, run_config("faithful", init="uniform", density=0.5), tasks=2)
    head = masks(out, 0).mask["classifier.weight"]
    assert head[2:].any()  # rows of later tasks' classes are in task 0's mask, hence frozen later
    log = pd.read_parquet(out / "task1" / "train_log.parquet")
    assert (log["pruned"] != log["grown"]).any()
    assert {"acc_til", "acc_cil", "density_pct", "overlap_pct"} <= set(pd.read_parquet(out / "task1" / "eval.parquet"))


def topology(out: Path, t: int) -> pd.DataFrame:
    return pd.read_parquet(out / f"task{t}" / "topology.parquet")


def test_each_task_writes_its_topology_trace_beside_its_files(standard_run):
    trace = topology(standard_run, 1)
    layers = list(masks(standard_run, 1).mask)
    updates = pd.read_parquet(standard_run / "task1" / "train_log.parquet")["dst_updates"].sum()
    assert len(trace) == (updates + 1) * len(layers) and trace["layer"].unique().tolist() == layers
    initial = trace.query("update == 0")
    assert (initial["step"] == 0).all() and (initial[["pruned", "grown"]] == 0).all(axis=None)
    assert initial["reused"].gt(0).any()  # task 1's random mask reuses weights task 0 owns
    assert trace.query("update > 0")["step"].tolist() == sorted(trace.query("update > 0")["step"])
    assert (trace["pruned"] == trace["grown"]).all() and trace.groupby("layer")["density"].nunique().eq(1).all()


def test_faithful_gradient_growth_shrinks_layers_with_too_few_nonzero_scores(digits, tmp_path):
    # ERK at density 0.5 makes the classifier dense in task 0: task 1 finds it fully frozen (all
    # gradients 0), so the original code's top-c over the whole tensor re-picks active positions.
    out = train_and_evaluate(digits, tmp_path, run_config("faithful", growth="gradient", density=0.5), tasks=2)
    trace = topology(out, 1)
    head = trace.query("layer == 'classifier.weight'")
    assert head["density"].iloc[0] == 1.0 and head["density"].iloc[-1] < 1.0
    for _, layer in trace.groupby("layer"):  # kept = active - pruned + grown, update after update
        assert (layer["active"].diff().iloc[1:] == (layer["grown"] - layer["pruned"]).iloc[1:]).all()
    assert masks(out, 1).mask["classifier.weight"].float().mean() < 1.0
    log = pd.read_parquet(out / "task1" / "train_log.parquet")
    assert (log["grown"] < log["pruned"]).all() and log["density"].is_monotonic_decreasing


class Killed(RuntimeError):
    pass


@pytest.mark.parametrize("growth", ["unfired", "momentum"])
def test_a_task_killed_mid_training_resumes_to_the_uninterrupted_result(digits, tmp_path, monkeypatch, capsys, growth):
    run = run_config(epochs=5, growth=growth)
    uninterrupted = train_and_evaluate(digits, tmp_path / "whole", run, tasks=2)
    real_save, saved_epochs = resume.save_torch, []

    def save_then_die(path, obj):
        real_save(path, obj)
        saved_epochs.append(obj["epoch"])
        if obj["epoch"] == 2:
            raise Killed("job killed after epoch 3")

    out = tmp_path / "killed"
    train_and_evaluate(digits, out, run, tasks=1)
    monkeypatch.setattr(resume, "save_torch", save_then_die)
    with pytest.raises(Killed):
        train_and_evaluate(digits, out, run, tasks=2, first=1)
    assert not (out / "task1" / "model.pt").exists() and (out / "resume" / "task1.pt").exists()
    monkeypatch.setattr(resume, "save_torch", real_save)
    capsys.readouterr()
    train_and_evaluate(digits, out, run, tasks=2, first=1)
    assert "resumed task 1 after epoch 3" in capsys.readouterr().out

    assert saved_epochs[-3:] == [0, 1, 2]
    for name, value in weights(uninterrupted, 1).items():
        assert torch.equal(weights(out, 1)[name], value), name
    a, b = load_torch(uninterrupted / "task1" / "masks.pt"), load_torch(out / "task1" / "masks.pt")
    assert all(torch.equal(a["mask"][n], b["mask"][n]) for n in a["mask"]) and a["stats"] == b["stats"]
    logs = [pd.read_parquet(d / "task1" / "train_log.parquet") for d in (uninterrupted, out)]
    pd.testing.assert_frame_equal(*logs)
    pd.testing.assert_frame_equal(topology(uninterrupted, 1), topology(out, 1))
    pd.testing.assert_frame_equal(evals(uninterrupted, 2), evals(out, 2))


def test_faithful_training_accuracy_is_the_argmax_over_all_logits():
    logits = torch.tensor([[0.0, 1.0, 5.0, 0.0], [2.0, 1.0, 0.0, 0.0]])
    y = torch.tensor([1, 0])  # task 0 owns logits 0..1: sample 0 is right within the slice only
    _, correct = all_logit_accuracy(0, 2)(logits, y)
    assert int(correct) == 1


@pytest.mark.parametrize(
    "change,message",
    [
        (dict(method_args={"density": 0.1, "sparsity": 0.9}), "method_args.sparsity: unknown key"),
        (dict(method_args={"growth": "magic"}), "method_args.growth"),
        (dict(method_args={"growth": "momentum"}, train=TrainConfig(optimizer="sgd", momentum=0.0)), "momentum growth"),
        (dict(train=TrainConfig(optimizer="adam", weight_decay=5e-4)), "train.weight_decay"),
    ],
)
def test_bad_method_settings_are_one_line_config_errors(change, message):
    run = dataclasses.replace(run_config(), **change)
    with pytest.raises(ConfigError, match=message):
        DSTArgs.of(run)


def test_both_spellings_of_unfired_growth_are_accepted():
    for growth in ("unfired", "random_unfired"):
        assert DSTArgs.of(run_config(growth=growth)).growth == growth


def test_each_expert_is_the_shared_network_times_its_own_mask_alone():
    model = torch.nn.Sequential(torch.nn.Linear(4, 3))
    masks = [{"mask": {"0.weight": torch.rand(3, 4, generator=torch.Generator().manual_seed(t)) > 0.5}} for t in (0, 1)]
    ctx = EvalContext(None, 1, None, None, CPU, None, model, masks, {})  # only the model and masks are read
    shared = copy.deepcopy(model.state_dict())
    for task in (0, 1, 0):  # the one reused copy: a later expert never carries an earlier mask
        expert = DST().model_for(ctx, task)
        assert torch.equal(expert[0].weight, shared["0.weight"] * masks[task]["mask"]["0.weight"])
        assert torch.equal(expert[0].bias, shared["0.bias"])
    assert DST().model_for(ctx, None) is model
    assert all(torch.equal(value, shared[name]) for name, value in model.state_dict().items())
