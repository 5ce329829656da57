"""The `multistep` method's stages through the real train/evaluate stages on digits (CPU).

Specification: SST drives the gamma of its selected channels towards zero and leaves the others
alone; AOD re-initialises exactly the filters of the previous step's selection and nothing else;
the distillation term is the weighted, temperature-scaled KL of its formula; each stage reads
only the settings it depends on; stages are deterministic and resume mid-stage to the same
weights; the fine-tuning and joint baselines train on the right chunks of a data scenario.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn as nn
import yaml

from sparsecl import stages
from sparsecl.config import RunConfig, TrainConfig, dump_run_config
from sparsecl.data import load_split
from sparsecl.errors import ConfigError, DataError
from sparsecl.io import load_torch, write_text
from sparsecl.jobs import EvalJob, TrainJob
from sparsecl.methods import multistep, training
from sparsecl.methods.distillation import TeacherTap, distillation_loss, kd_term, sample_weights
from sparsecl.models import create_backbone
from sparsecl.plans.multistep import (
    STAGE_KEYS,
    MultistepArgs,
    predecessor,
    stage_run_config,
    stages_of_step,
    teachers,
)
from sparsecl.scenarios import ScenarioSpec, build_scenario, make_scenario
from sparsecl.sparse.channels import batch_norms, channel_links, reinitialise_channels, select_smallest

from .stage_helpers import digits_and_scenario, kill_in_epoch, task_files

CPU = torch.device("cpu")
STEPS = 4
SCENARIO = ScenarioSpec(kind="data", num_tasks=STEPS, chunks=(1, 1, 1, 1))
SST = {"ratio": 0.25, "s": 0.2}


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> tuple[Path, Path]:
    return digits_and_scenario(tmp_path_factory.mktemp("digits"), SCENARIO)


def run_config(method: str = "multistep", epochs: int = 3, seed: int = 0, **method_args) -> RunConfig:
    return RunConfig(
        run_id=f"{method}/default/seed{seed}", experiment=method, point="default", seed=seed, method=method,
        dataset="digits", backbone="resnet110", backbone_args={"blocks": 1, "width": 0.5}, scenario=SCENARIO,
        train=TrainConfig(epochs=epochs, batch_size=64, lr=0.05),
        method_args=method_args if method != "multistep" else {**SST, **method_args},
    )  # fmt: skip


def run_stage(digits, out: Path, run: RunConfig, step: int, stage: str) -> Path:
    """Run `stage` of `step` in `out`, reading its predecessor's and teachers' files from `out`."""
    data, scenario = digits
    config = out / "config.yaml"
    write_text(config, dump_run_config(run))
    before = predecessor(stage, step, STEPS)
    prev = out / f"task{before[0]}" / before[1] if before else None
    msl = run.method_args.get("msl_teachers", "all")
    inputs = {name: out / f"task{j}" / s / "model.pt" for name, (j, s) in teachers(stage, step, STEPS, msl).items()}
    d = out / f"task{step}" / stage
    stages.train(
        TrainJob(
            config=config, data_dir=data, scenario=scenario, task=step, device=CPU, stage=stage, inputs=inputs,
            resume=out / "resume" / f"task{step}-{stage}.pt", **task_files(d, prev),
        )
    )  # fmt: skip
    return d


def weights(stage_dir: Path) -> dict[str, torch.Tensor]:
    return load_torch(stage_dir / "model.pt")["state_dict"]


def unimportant(stage_dir: Path) -> dict[str, torch.Tensor]:
    return load_torch(stage_dir / "masks.pt")["unimportant"]


def fork(base: Path, new: Path, *stage_dirs: str) -> Path:
    for name in stage_dirs:
        shutil.copytree(base / name, new / name)
    return new


@pytest.fixture(scope="module")
def chain(digits, tmp_path_factory) -> Path:
    """train -> sst -> aod -> sst_msl of a 4-step run (steps 0 and 1).

    Re-initialised channels start at gamma 1 here, so that AOD's training can move them out of the
    smallest |gamma| and sst_msl's fresh selection is visible; at the default 0.05 this short chain
    selects the same S again.
    """
    out = tmp_path_factory.mktemp("chain")
    run = run_config(stage_train={"sst": {"epochs": 10}}, reinit_gamma=1.0)
    for step, stage in ((0, "train"), (0, "sst"), (1, "aod"), (1, "sst_msl")):
        run_stage(digits, out, run, step, stage)
    return out


# ---------------------------------------------------------------- settings and stage sequence


def test_each_stage_depends_on_its_own_keys_and_every_key_belongs_to_a_stage():
    assert STAGE_KEYS["train"] == ()
    assert {"ratio", "s", "selection"} <= set(STAGE_KEYS["sst"]) and "temperature" not in STAGE_KEYS["sst"]
    assert "ratio" not in STAGE_KEYS["aod"] and {"temperature", "kd_lambda", "kd_weighting"} <= set(STAGE_KEYS["aod"])
    assert {"ratio", "msl_teachers", "msl_alpha", "temperature"} <= set(STAGE_KEYS["sst_msl"])
    owned = {key for keys in STAGE_KEYS.values() for key in keys}
    assert owned | {"stage_train"} == {f.name for f in dataclasses.fields(MultistepArgs)}


def test_a_stage_config_resolves_train_and_keeps_only_the_stage_s_method_args():
    run = run_config(epochs=7, ratio=0.3, temperature=2.0, stage_train={"sst": {"epochs": 2, "lr": 0.01}})
    train, sst, aod = (stage_run_config(run, s) for s in ("train", "sst", "aod"))
    assert train.method_args == {} and train.train == run.train
    assert sst.method_args == {"ratio": 0.3, "s": 0.2} and (sst.train.epochs, sst.train.lr) == (2, 0.01)
    assert aod.method_args == {"temperature": 2.0} and aod.train.epochs == 7
    assert stage_run_config(sst, "sst") == sst  # idempotent: a stage may read either file
    assert stage_run_config(dataclasses.replace(run, method_args={**run.method_args, "ratio": 0.9}), "train") == train


def test_the_stage_sequence_of_four_steps_and_who_reads_whom():
    assert [stages_of_step(k, 4) for k in range(4)] == [
        ("train", "sst"),
        ("aod", "sst_msl"),
        ("aod", "sst_msl"),
        ("aod",),
    ]
    assert stages_of_step(1, 2) == ("aod",)  # single-step: train -> sst -> aod
    assert predecessor("train", 0, 4) is None and predecessor("sst", 0, 4) == (0, "train")
    assert predecessor("aod", 2, 4) == (1, "sst_msl") and predecessor("sst_msl", 2, 4) == (2, "aod")
    assert teachers("aod", 1, 4) == {"teacher": (0, "sst")}
    assert teachers("sst_msl", 2, 4) == {"teacher0": (0, "sst"), "teacher1": (1, "sst_msl")}
    assert teachers("sst_msl", 2, 4, "previous") == {"teacher1": (1, "sst_msl")}
    assert teachers("sst_msl", 2, 4, "aod") == {"teacher2": (2, "aod")}  # the model it resumes
    assert teachers("sst_msl", 1, 4, "aod") == {"teacher1": (1, "aod")}
    with pytest.raises(ConfigError, match="stage 'sst_msl' does not run at step 3 of 4"):
        predecessor("sst_msl", 3, 4)


@pytest.mark.parametrize(
    "args, message",
    [
        ({"ratio": 1.0}, r"method_args.ratio: expected in \(0, 1\)"),
        ({"kd_weighting": "entropy"}, "method_args.kd_weighting: expected one of"),
        ({"reinit_gamma": -0.1}, "method_args.reinit_gamma: expected >= 0"),
        ({"layer_cap": 0.1}, r"method_args.layer_cap: expected in \[ratio, 1\]"),
        ({"silenced_floor": 1.5}, r"method_args.silenced_floor: expected in \[0, 1\]"),
        ({"stage_train": {"prune": {}}}, "method_args.stage_train.prune: unknown stage"),
        ({"stage_train": {"sst": {"epoch": 3}}}, "method_args.stage_train.sst.epoch: unknown key"),
    ],
)
def test_bad_method_args_are_one_line_config_errors(args, message):
    with pytest.raises(ConfigError, match=message):
        stage_run_config(run_config(**args), "sst")


# ---------------------------------------------------------------- distillation


def test_the_distillation_term_matches_its_formula_on_hand_computed_logits():
    student = [[1.0, 0.0, -1.0], [0.5, 0.5, 0.0]]
    teacher = [[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]]
    labels = [0, 2]  # the teacher is right on sample 0 only
    T = 2.0

    def softmax(z, t=1.0):
        e = [math.exp(v / t) for v in z]
        return [v / sum(e) for v in e]

    def kl(p, q):
        return sum(a * math.log(a / b) for a, b in zip(p, q))

    kls = [kl(softmax(t, T), softmax(s, T)) for s, t in zip(student, teacher)]
    confidence0 = math.exp(2) / (math.exp(2) + 2)  # max softmax of the teacher's sample 0 at T = 1
    args = torch.tensor(student), torch.tensor(teacher), torch.tensor(labels)
    assert sample_weights(args[1], args[2], "confidence").tolist() == pytest.approx([confidence0, 0.0])
    assert float(kd_term(*args, T, "uniform")) == pytest.approx(T**2 * (kls[0] + kls[1]) / 2, rel=1e-5)  # float32
    assert float(kd_term(*args, T, "confidence")) == pytest.approx(T**2 * confidence0 * kls[0] / 2, rel=1e-5)  # float32


def cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return nn.functional.cross_entropy(logits, y), (logits.argmax(1) == y).sum()


def test_teachers_see_the_students_training_batch_and_add_their_weighted_terms():
    torch.manual_seed(0)
    student, teacher_a, teacher_b = nn.Linear(4, 3), nn.Linear(4, 3), nn.Linear(4, 3)
    x, y = torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1])
    with TeacherTap(student, [teacher_a, teacher_b]) as tap:
        logits = student(x)
        assert torch.equal(tap.logits[0], teacher_a(x)) and torch.equal(tap.logits[1], teacher_b(x))
        loss, _ = distillation_loss(cross_entropy, tap, [0.3, 0.7], 4.0, "uniform")(logits, y)
    expected = cross_entropy(logits, y)[0]
    expected = expected + 0.3 * kd_term(logits, teacher_a(x), y, 4.0, "uniform")
    expected = expected + 0.7 * kd_term(logits, teacher_b(x), y, 4.0, "uniform")
    assert float(loss.detach()) == pytest.approx(float(expected.detach()))
    tap.logits = []
    student(x)  # outside the context nothing is captured
    assert tap.logits == [] and not teacher_a.training and not teacher_a.weight.requires_grad


# ---------------------------------------------------------------- channels


def model_with_gammas(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = create_backbone("resnet110", 10, (8, 8, 1), blocks=1, width=0.5)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            nn.init.uniform_(m.weight, -1, 1)
            nn.init.uniform_(m.bias, -1, 1)
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    return model


def test_selection_takes_the_ratio_with_smallest_abs_gamma_globally_or_per_layer():
    model = model_with_gammas()
    gam = {n: m.weight.detach().abs() for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)}
    flat = torch.cat(list(gam.values()))
    chosen = select_smallest(model, 0.3, "global")
    picked = torch.cat([gam[n][chosen[n]] for n in gam])
    assert len(picked) == math.floor(0.3 * len(flat))
    assert picked.max() <= torch.cat([gam[n][~chosen[n]] for n in gam]).min()
    per_layer = select_smallest(model, 0.3, "layer")
    for name, g in gam.items():
        assert int(per_layer[name].sum()) == math.floor(0.3 * len(g))
        if per_layer[name].any() and (~per_layer[name]).any():
            assert g[per_layer[name]].max() <= g[~per_layer[name]].min()


def test_a_global_selection_takes_at_most_the_layer_cap_of_any_layer():
    model = model_with_gammas()
    bns = batch_norms(model)
    first = next(iter(bns))
    with torch.no_grad():
        bns[first].weight.mul_(1e-6)  # a whole layer smaller than every other gamma
    whole = select_smallest(model, 0.3, "global")
    assert bool(whole[first].all())
    capped = select_smallest(model, 0.3, "global", layer_cap=0.5)
    assert int(capped[first].sum()) == math.floor(0.5 * len(capped[first]))
    assert sum(int(m.sum()) for m in capped.values()) == sum(int(m.sum()) for m in whole.values())


def test_channel_links_find_each_bn_s_producer_and_readers_through_residual_additions():
    links = channel_links(create_backbone("resnet110", 10, (8, 8, 1), blocks=1))
    assert links["bn1"].producer == "conv1"
    assert links["layer2.0.shortcut.1"].producer == "layer2.0.shortcut.0"
    assert links["layer1.0.bn1"].consumers == ("layer1.0.conv2",)
    # the stem's channels reach block 1 and, through its identity shortcut, block 2's convs
    assert links["bn1"].consumers == ("layer1.0.conv1", "layer2.0.conv1", "layer2.0.shortcut.0")
    assert links["layer3.0.bn2"].consumers == ("classifier",)
    depthwise = channel_links(create_backbone("mobilenetv2", 10, (8, 8, 1)))["blocks.0.conv.0.1"]
    assert depthwise.producer == "blocks.0.conv.0.0" and depthwise.consumers == ("blocks.0.conv.1.0",)


def differing(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Per tensor: which rows (first dimension) changed; tensors that did not change are left out."""
    out = {}
    for name, value in before.items():
        if value.dim() and not torch.equal(value, after[name]):
            out[name] = (value != after[name]).reshape(len(value), -1).any(1)
    return out


def reinitialised_rows(model: nn.Module, selected: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """What re-initialising `selected` may change: the producers' filters and the BN entries of S."""
    links, rows = channel_links(model), {}
    for bn, mask in selected.items():
        if mask.any():
            rows[f"{links[bn].producer}.weight"] = mask
            rows.update({f"{bn}.{p}": mask for p in ("weight", "bias", "running_mean", "running_var")})
    return rows


@pytest.mark.parametrize("downstream", ["keep", "zero"])
def test_reinitialisation_changes_exactly_the_selected_filters_and_their_bn_entries(downstream):
    model = model_with_gammas()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    chosen = select_smallest(model, 0.3)
    reinitialise_channels(model, chosen, torch.Generator().manual_seed(0), downstream)
    changed, expected = differing(before, model.state_dict()), reinitialised_rows(model, chosen)
    if downstream == "keep":
        assert changed.keys() == expected.keys()
        for name, rows in changed.items():
            assert torch.equal(rows, expected[name]), name  # every selected row changed, nothing else
        return
    links, state = channel_links(model), model.state_dict()
    readers = 0
    for bn, mask in chosen.items():  # the readers' input slices of S are now 0
        for reader in links[bn].consumers:
            weight = state[f"{reader}.weight"]
            assert (weight[:, mask] == 0).all() and (before[f"{reader}.weight"][:, mask] != 0).all()
            readers += int(mask.any())
    assert readers > 0


@pytest.mark.parametrize("gamma", [1.0, 0.05])
def test_re_initialised_channels_start_from_the_configured_gamma_and_the_rest_keep_theirs(gamma):
    model = model_with_gammas()
    before = {name: bn.weight.detach().clone() for name, bn in batch_norms(model).items()}
    chosen = select_smallest(model, 0.3)
    reinitialise_channels(model, chosen, torch.Generator().manual_seed(0), "keep", gamma)
    for name, bn in batch_norms(model).items():
        mask = chosen[name]
        assert torch.all(bn.weight[mask] == gamma), name
        assert torch.equal(bn.weight[~mask], before[name][~mask]), name
    assert stage_run_config(run_config(reinit_gamma=gamma), "aod").method_args["reinit_gamma"] == gamma


# ---------------------------------------------------------------- stages


def test_sst_shrinks_the_gamma_of_s_towards_zero_and_leaves_the_others(digits, chain, tmp_path):
    plain = fork(chain, tmp_path, "task0/train")
    run_stage(digits, plain, run_config(s=0.0, stage_train={"sst": {"epochs": 10}}), 0, "sst")
    sparse, dense = weights(chain / "task0/sst"), weights(plain / "task0/sst")
    selected = unimportant(chain / "task0/sst")
    assert torch.equal(torch.cat(list(selected.values())), torch.cat(list(unimportant(plain / "task0/sst").values())))
    inside = torch.cat([sparse[f"{n}.weight"][m] for n, m in selected.items()]).abs()
    inside_plain = torch.cat([dense[f"{n}.weight"][m] for n, m in selected.items()]).abs()
    outside = torch.cat([sparse[f"{n}.weight"][~m] for n, m in selected.items()]).abs()
    outside_plain = torch.cat([dense[f"{n}.weight"][~m] for n, m in selected.items()]).abs()
    assert inside.mean() < 0.1 * inside_plain.mean() and inside_plain.mean() > 0.5
    assert outside.mean() == pytest.approx(float(outside_plain.mean()), rel=0.1)
    table = pd.read_parquet(chain / "task0/sst/channels.parquet")
    assert table["small_selected"].sum() > 0.5 * table["selected"].sum() and table["small_other"].sum() == 0
    stats = load_torch(chain / "task0/sst/masks.pt")["stats"]
    assert stats["unimportant"] == math.floor(0.25 * stats["channels"]) == table["selected"].sum()


def test_aod_starts_from_the_teacher_with_exactly_the_filters_of_s_re_initialised(digits, chain, tmp_path, monkeypatch):
    captured = {}

    def record_instead_of_training(ctx, *args, **kwargs):
        captured.update({k: v.clone() for k, v in ctx.model.state_dict().items()})
        return []

    monkeypatch.setattr(multistep, "fit", record_instead_of_training)
    aod = run_stage(digits, fork(chain, tmp_path, "task0/train", "task0/sst"), run_config(), 1, "aod")
    teacher, selected = weights(chain / "task0/sst"), unimportant(chain / "task0/sst")
    expected = reinitialised_rows(create_backbone("resnet110", 10, (8, 8, 1), blocks=1, width=0.5), selected)
    changed = differing(teacher, captured)
    assert changed.keys() == expected.keys()
    for name, rows in changed.items():
        assert torch.equal(rows, expected[name]), name  # the filters of S differ, every other value is identical
    masks = load_torch(aod / "masks.pt")
    assert all(torch.equal(masks["reinitialised"][n], selected[n]) for n in selected)
    assert not any(m.any() for m in masks["unimportant"].values())


def test_sst_msl_selects_a_new_s_and_its_snapshots_shape_the_result(digits, chain, tmp_path):
    log = pd.read_parquet(chain / "task1/sst_msl/train_log.parquet")
    assert set(log["stage"]) == {"sst_msl"} and len(log) == 3
    new, old = unimportant(chain / "task1/sst_msl"), unimportant(chain / "task0/sst")
    assert sum(int(m.sum()) for m in new.values()) == sum(int(m.sum()) for m in old.values())
    assert any(not torch.equal(new[n], old[n]) for n in new)  # chosen again, after AOD
    without = fork(chain, tmp_path, "task0/train", "task0/sst", "task1/aod")
    alone = weights(run_stage(digits, without, run_config(kd_lambda=0.0), 1, "sst_msl"))
    assert not torch.equal(alone["classifier.weight"], weights(chain / "task1/sst_msl")["classifier.weight"])


def test_an_sst_stage_records_how_much_of_s_it_silenced_and_warns_below_the_floor(digits, chain, tmp_path, capsys):
    reached = load_torch(chain / "task0/sst/masks.pt")["stats"]
    assert reached["silenced_fraction"] == reached["small_selected"] / reached["unimportant"]
    capsys.readouterr()
    plain = fork(chain, tmp_path, "task0/train")
    run_stage(digits, plain, run_config(s=0.0, silenced_floor=1.0), 0, "sst")  # nothing drives gamma down
    stats = load_torch(plain / "task0/sst/masks.pt")["stats"]
    warning = [line for line in capsys.readouterr().out.splitlines() if line.startswith("WARNING sst step 0")]
    assert stats["silenced_fraction"] < 1.0 and len(warning) == 1 and "below silenced_floor 100%" in warning[0]


def test_sst_msl_with_aod_teachers_reads_only_the_aod_model_it_resumes(digits, chain, tmp_path):
    only_aod = fork(chain, tmp_path, "task1/aod")  # no model of step 0 on disk
    resumed = weights(run_stage(digits, only_aod, run_config(msl_teachers="aod"), 1, "sst_msl"))
    every = weights(chain / "task1/sst_msl")  # msl_teachers: all, distilling from step 0's sst
    assert not torch.equal(resumed["classifier.weight"], every["classifier.weight"])


def test_stages_are_deterministic_and_resume_mid_stage_to_identical_weights(digits, chain, tmp_path, monkeypatch):
    run = run_config(epochs=4)
    prior = ("task0/train", "task0/sst", "task1/aod")
    a = run_stage(digits, fork(chain, tmp_path / "a", *prior), run, 1, "sst_msl")
    b = run_stage(digits, fork(chain, tmp_path / "b", *prior), run, 1, "sst_msl")
    assert all(torch.equal(weights(a)[k], weights(b)[k]) for k in weights(a))

    killed = fork(chain, tmp_path / "killed", *prior)
    restore_epochs = kill_in_epoch(monkeypatch, epoch=3)
    with pytest.raises(KeyboardInterrupt):
        run_stage(digits, killed, run, 1, "sst_msl")
    assert not (killed / "task1/sst_msl/model.pt").exists() and (killed / "resume/task1-sst_msl.pt").exists()
    restore_epochs()
    resumed = run_stage(digits, killed, run, 1, "sst_msl")
    assert all(torch.equal(weights(a)[k], weights(resumed)[k]) for k in weights(a))
    assert pd.read_parquet(resumed / "train_log.parquet")["epoch"].tolist() == [0, 1, 2, 3]


def test_each_stage_is_scored_once_on_the_whole_test_set(digits, chain):
    data, scenario = digits
    path = chain / "task1/sst_msl/eval.parquet"
    masks = (chain / "task0/sst/masks.pt", chain / "task1/sst_msl/masks.pt")
    stages.evaluate(
        EvalJob(
            config=chain / "config.yaml", data_dir=data, scenario=scenario, task=1, device=CPU, stage="sst_msl",
            model=chain / "task1/sst_msl/model.pt", masks=masks, out=path,
        )
    )  # fmt: skip
    rows = pd.read_parquet(path)
    assert len(rows) == 1 and rows["n"].iloc[0] == len(load_split(data, "test").labels)
    assert rows["acc_cil"].iloc[0] > 50  # 10 classes: chance is 10%
    stats = load_torch(masks[-1])["stats"]  # a sparsity stage's evaluation carries what it silenced
    assert rows["silenced_pct"].iloc[0] == 100 * stats["silenced_fraction"]
    assert rows["silenced_floor_pct"].iloc[0] == 100 * stats["silenced_floor"] == 25.0


@pytest.mark.parametrize(
    "step, stage, run, message",
    [
        (1, "train", run_config(), "--stage: step 1 of 4 runs aod, sst_msl, got 'train'"),
        (3, "sst_msl", run_config(), "--stage: step 3 of 4 runs aod, got 'sst_msl'"),
        (0, "train", dataclasses.replace(run_config(), backbone="mlp", backbone_args={}), "needs BatchNorm layers"),
    ],
)
def test_misplaced_stages_and_unsuitable_backbones_are_one_line_config_errors(
    digits, chain, tmp_path, step, stage, run, message
):
    data, scenario = digits
    write_text(tmp_path / "config.yaml", dump_run_config(run))
    prev = chain / "task0/train" if step else None
    d = tmp_path / "out"
    with pytest.raises(ConfigError, match=message):
        stages.train(
            TrainJob(
                config=tmp_path / "config.yaml", data_dir=data, scenario=scenario, task=step, device=CPU, stage=stage,
                resume=d / "resume.pt", **task_files(d, prev, log="log.parquet"),
            )
        )  # fmt: skip
    assert not d.exists() or not any(d.iterdir())  # nothing written


def test_an_aod_stage_whose_channel_file_selects_no_channels_stops_in_one_line(digits, chain, tmp_path):
    """AOD re-initialises the channels the previous stage's channel file selected: a file without
    that selection is named as what it is, not as a masks file."""
    out = fork(chain, tmp_path / "out", "task0")
    channel_file = load_torch(out / "task0/sst/masks.pt")
    del channel_file["unimportant"]
    torch.save(channel_file, out / "task0/sst/masks.pt")
    run = run_config(stage_train={"sst": {"epochs": 10}}, reinit_gamma=1.0)  # the chain's run
    with pytest.raises(DataError, match="step 1 aod: the previous stage's channel file has no `unimportant` channels"):
        run_stage(digits, out, run, 1, "aod")
    assert not any((out / "task1/aod").iterdir())  # nothing written


def test_missing_teachers_short_alpha_lists_and_class_scenarios_are_named(digits, chain, tmp_path):
    data, scenario = digits
    starts = {1: chain / "task1/aod", 2: chain / "task1/sst_msl"}  # what sst_msl of step 1, aod of step 2 start from
    d = tmp_path / "out"

    def train(run: RunConfig, step: int, stage: str, scenario_file: Path = scenario, **inputs) -> None:
        write_text(tmp_path / "config.yaml", dump_run_config(run))
        stages.train(
            TrainJob(
                config=tmp_path / "config.yaml", data_dir=data, scenario=scenario_file, task=step, device=CPU,
                stage=stage, inputs=inputs, resume=d / "resume.pt", **task_files(d, starts.get(step), log="log.parquet"),
            )
        )  # fmt: skip

    with pytest.raises(DataError, match=r"step 1 sst_msl: missing --input teacher0=PATH \(the sst model of step 0\)"):
        train(run_config(), 1, "sst_msl")
    with pytest.raises(DataError, match=r"step 2 aod: missing --input teacher=PATH \(the sst_msl model of step 1\)"):
        train(run_config(), 2, "aod")
    with pytest.raises(DataError, match=r"task0/sst/masks.pt: not a model file \(it holds no weights"):
        train(run_config(), 1, "sst_msl", teacher0=chain / "task0/sst/masks.pt")
    with pytest.raises(DataError, match="task0/train/model.pt: model file of stage 'train', expected stage 'sst'"):
        train(run_config(), 1, "sst_msl", teacher0=chain / "task0/train/model.pt")
    with pytest.raises(DataError, match="task1/sst_msl/model.pt: model file of task 1, expected task 0"):
        train(run_config(), 1, "sst_msl", teacher0=chain / "task1/sst_msl/model.pt")
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": load_torch(chain / "task0/sst/model.pt")["state_dict"]}, foreign)
    with pytest.raises(DataError, match="foreign.pt: not a model file written by sparsecl"):
        train(run_config(), 1, "sst_msl", teacher0=foreign)
    with pytest.raises(
        ConfigError, match=r"method_args.msl_alpha: the multi-step loss needs a weight for steps 0..1, got \[1.0\]"
    ):
        train(
            run_config(msl_alpha=[1.0]),
            2,
            "sst_msl",
            teacher0=chain / "task0/sst/model.pt",
            teacher1=starts[2] / "model.pt",
        )
    spec = ScenarioSpec(num_tasks=2, classes_per_task=2)
    make_scenario("digits", data, json.dumps(dataclasses.asdict(spec)), tmp_path / f"{spec.id}.json")
    with pytest.raises(ConfigError, match="scenario.kind: the multistep method needs a data-incremental scenario"):
        train(dataclasses.replace(run_config(), scenario=spec), 0, "train", scenario_file=tmp_path / f"{spec.id}.json")
    assert not d.exists() or not any(d.iterdir())  # nothing written


# ---------------------------------------------------------------- baselines and scenario


@pytest.mark.parametrize("method, chunks_of", [("finetune", lambda t: [t]), ("joint", lambda t: list(range(t + 1)))])
def test_baselines_train_on_their_chunks_of_a_data_scenario(digits, tmp_path, monkeypatch, method, chunks_of):
    data, scenario = digits
    from sparsecl.scenarios import load_scenario

    chunk = load_scenario(scenario).chunk_index
    seen = []
    real_epoch = training.train_epoch

    def record(model, optimizer, data_, idx, **kwargs):
        seen.append(np.sort(idx.numpy()))
        return real_epoch(model, optimizer, data_, idx, **kwargs)

    monkeypatch.setattr(training, "train_epoch", record)
    config = tmp_path / "config.yaml"
    write_text(config, dump_run_config(run_config(method, epochs=1)))
    for t in range(3):
        d, p = tmp_path / f"task{t}", tmp_path / f"task{t - 1}"
        stages.train(
            TrainJob(
                config=config, data_dir=data, scenario=scenario, task=t, device=CPU, resume=tmp_path / "resume.pt",
                **task_files(d, p if t else None, log="log.parquet"),
            )
        )  # fmt: skip
        np.testing.assert_array_equal(seen[-1], np.sort(np.concatenate([chunk[c] for c in chunks_of(t)])))


def test_data_chunks_are_seeded_by_the_split_seed_only_and_leave_the_test_split_whole():
    labels = np.repeat(np.arange(10), 50)
    a = build_scenario(ScenarioSpec(kind="data", num_tasks=4, chunks=(1, 1, 1, 1)), "toy", labels, 10)
    b = build_scenario(ScenarioSpec(kind="data", num_tasks=4, chunks=(1, 1, 1, 1), order_seed=3), "toy", labels, 10)
    c = build_scenario(ScenarioSpec(kind="data", num_tasks=4, chunks=(1, 1, 1, 1), split_seed=1), "toy", labels, 10)
    assert all(np.array_equal(x, y) for x, y in zip(a.chunk_index, b.chunk_index))
    assert not np.array_equal(a.chunk_index[0], c.chunk_index[0])
    assert a.tasks == [list(range(10))] * 4  # every step is scored on every class of the test set


def test_the_paper_config_plans_both_datasets_both_splits_and_their_baselines_with_three_seeds():
    from sparsecl.experiments import load_schema, plan_runs

    root = Path(__file__).resolve().parents[1]
    config = yaml.safe_load((root / "config/papers/multistep.yaml").read_text())
    runs = [p.run for p in plan_runs(config, load_schema(root / "workflow/schemas/config.schema.yaml"))]
    assert len(runs) == 16 * 3 and {r.seed for r in runs} == {0, 1, 2}
    assert {(r.dataset, r.backbone) for r in runs} == {("cifar100", "resnet110"), ("tiny_imagenet", "mobilenetv2")}
    assert {r.scenario.chunks for r in runs} == {(1, 1), (1, 1, 1, 1)} and {r.train.batch_size for r in runs} == {256}
    for name, experiment in config["experiments"].items():
        if experiment["method"] != "multistep":
            continue
        table, claim, budget_claim = experiment["reported"]
        assert len(table["curve"]) == experiment["scenario"]["num_tasks"] and table["kind"] == "table"
        for entry in (claim, budget_claim):
            assert entry["left"] == f"{name}/default" and entry["right"].split("/")[0] in config["experiments"]
            assert config["experiments"][entry["right"].split("/")[0]]["method"] == "finetune"
        budget = config["experiments"][budget_claim["right"].split("/")[0]]["train"]["epochs"]
        assert budget == 2 * experiment["train"]["epochs"]  # train + sst, aod + sst_msl per step


def test_the_demo_fine_tunes_its_chunks_also_with_multisteps_epochs_a_step():
    root = Path(__file__).resolve().parents[1]
    demo = yaml.safe_load((root / "config/config.yaml").read_text())["experiments"]
    method, budget = demo["multistep"], demo["multistep_finetune_budget"]
    assert budget["method"] == "finetune" and "stage_train" not in method.get("method_args", {})
    for key in ("dataset", "backbone", "backbone_args", "scenario"):
        assert budget[key] == method[key], key
    assert budget["train"] == {**method["train"], "epochs": 2 * method["train"]["epochs"]}  # two stages a step
