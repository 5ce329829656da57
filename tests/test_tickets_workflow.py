"""End to end: the tickets_td and tickets_bu demo experiments of config/config.yaml in the real workflow.

Every stage of the procedure is a job (training, each prune round, each IMP and regrowth round);
the bottom-up rounds appear through checkpoints as their decisions come in.
"""

from __future__ import annotations

import copy
import json

import pandas as pd
import pytest
import yaml

from sparsecl.io import load_torch

from .workflow_helpers import ROOT, planned_jobs, snakemake, write_config

pytestmark = pytest.mark.slow

DEMO = yaml.safe_load((ROOT / "config/config.yaml").read_text())
CONFIG = {
    "seeds": [0],
    "experiments": {name: DEMO["experiments"][name] for name in ("tickets_td", "tickets_bu")},
}
RUNS = "results/runs/{}/default/seed0"


def jobs_of(output: str) -> list[tuple[str, str, str]]:
    return sorted((rule, w.get("task", ""), w.get("round", "")) for rule, w in planned_jobs(output) if w)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("tickets_workflow")
    write_config(workdir, CONFIG)
    planned = jobs_of(snakemake(workdir, "-n", "all").stdout)
    snakemake(workdir, "all", "--cores", "2")
    return workdir, planned


def test_the_top_down_dag_shows_every_training_and_prune_round_before_anything_runs(finished):
    _, planned = finished
    td = [job for job in planned if job[0].startswith("tickets_td") and job[0] != "tickets_td_retrieve"]
    assert td == [
        ("tickets_td_final", "2", ""),
        ("tickets_td_prune", "0", "1"),
        ("tickets_td_prune", "1", "1"),
        ("tickets_td_prune", "2", "1"),
        ("tickets_td_prune", "2", "2"),
        ("tickets_td_train", "1", ""),
        ("tickets_td_train", "2", ""),
        ("tickets_td_train_task0", "0", ""),
    ]
    assert [job for job in planned if job[0] == "tickets_td_retrieve"] == [("tickets_td_retrieve", t, "") for t in "12"]
    bu = [job for job in planned if job[0].startswith("tickets_bu")]
    assert bu == [("tickets_bu_imp", "0", "1"), ("tickets_bu_train", "0", "")]  # the rest follow the decisions


def test_the_tables_carry_standard_accuracy_and_remaining_weights_per_task(finished):
    workdir, _ = finished
    summary = pd.read_csv(workdir / "results/tables/summary.csv").set_index(["experiment", "setting"])
    for name in ("tickets_td", "tickets_bu"):
        row = summary.loc[(name, "cil")]
        assert 100 / 6 < row["acc_mean"] <= 100 and 0 < row["remaining_weights_mean"] <= 100
    curves = pd.read_parquet(workdir / RUNS.format("tickets_td") / "curves.parquet")
    weights = curves[(curves["setting"] == "cil") & (curves["metric"] == "remaining_weights")]["value"]
    assert [round(v, 2) for v in weights] == [80.00, 64.00, 40.96]
    assert "remaining_weights" in (workdir / "results/tables/summary.md").read_text()


def kept_stage(run, task: int, prefix: str, before: str) -> str:
    """The round a bottom-up loop kept: follow its decisions to the one that stops ("kept" 0: `before`)."""
    round_ = 1
    while not (decision := json.loads((run / f"task{task}/{prefix}{round_}/decision.json").read_text()))["stop"]:
        round_ += 1
    return f"{prefix}{decision['kept']}" if decision["kept"] else before


def test_bottom_up_rounds_ran_as_their_decisions_asked_and_the_tickets_only_grow(finished):
    workdir, _ = finished
    run = workdir / RUNS.format("tickets_bu")
    masks = [load_torch(run / f"task0/{kept_stage(run, 0, 'imp', 'train')}/masks.pt")["mask"]]
    for task in (1, 2):
        stage = "ticket"
        if json.loads((run / f"task{task}/ticket/decision.json").read_text())["regrow"]:
            stage = kept_stage(run, task, "regrow", "ticket")
        assert (run / f"task{task}/{stage}/eval.parquet").exists()
        masks.append(load_torch(run / f"task{task}/{stage}/masks.pt")["mask"])
    for before, after in zip(masks, masks[1:]):
        assert all(not (before[n] & ~after[n]).any() for n in before)


def test_the_bottom_up_demo_ends_with_a_small_ticket_that_keeps_its_accuracy(finished):
    workdir, _ = finished
    summary = pd.read_csv(workdir / "results/tables/summary.csv").set_index(["experiment", "setting"])
    bu = summary.loc[("tickets_bu", "cil")]
    assert bu["remaining_weights_mean"] < 70  # seed 0 ends at 50.4% of its conv weights
    assert bu["acc_mean"] > 40  # class-IL, 6 classes: chance is 16.7% (seed 0: 49.7% with torch 2.14.1)


def test_a_finished_run_has_nothing_left_to_do(finished):
    workdir, _ = finished
    assert planned_jobs(snakemake(workdir, "-n", "all").stdout) == []


@pytest.mark.parametrize("key, value", [("deacc", 0.5), ("max_rounds", 3)])
def test_a_bottom_up_stopping_argument_reruns_its_rounds_and_no_dense_stage(finished, key, value):
    workdir, _ = finished
    config = copy.deepcopy(CONFIG)
    config["experiments"]["tickets_bu"]["method_args"][key] = value
    write_config(workdir, config)
    try:
        jobs = planned_jobs(snakemake(workdir, "-n", "all").stdout)
    finally:
        write_config(workdir, CONFIG)
    rules = {rule for rule, _ in jobs}
    assert ("tickets_bu_imp", "1") in {(r, w.get("round")) for r, w in jobs}
    assert not {"tickets_bu_train", "tickets_bu_retrieve"} & rules
    assert not [w for r, w in jobs if r == "evaluate" and w["stage"] == "train"]
    assert "imp" in {w["stage"] for r, w in jobs if r == "stage_config"} <= {"imp", "regrow"}
    assert {w.get("experiment") for _, w in jobs if w} == {"tickets_bu"}


def test_a_new_top_down_schedule_reprunes_but_keeps_the_first_dense_training_and_its_retrieval(finished):
    workdir, _ = finished
    config = copy.deepcopy(CONFIG)
    config["experiments"]["tickets_td"]["method_args"]["prune_schedule"] = [1, 1, 3]
    write_config(workdir, config)
    try:
        jobs = planned_jobs(snakemake(workdir, "-n", "all").stdout)
    finally:
        write_config(workdir, CONFIG)
    trained = {(rule, w.get("task"), w.get("round")) for rule, w in jobs}
    assert ("tickets_td_prune", "2", "3") in trained and ("tickets_td_prune", "0", "1") in trained
    assert not {("tickets_td_train_task0", "0", None), ("tickets_td_retrieve", "1", None)} & trained
    assert {w["stage"] for r, w in jobs if r == "stage_config"} == {"prune", "final"}


def test_faithful_runs_prune_the_last_epoch_and_declare_the_test_split_for_stopping_rules(tmp_path):
    config = copy.deepcopy(CONFIG)
    for experiment in config["experiments"].values():
        experiment["protocol"] = "faithful"
    write_config(tmp_path, config)
    output = snakemake(tmp_path, "-n", "-p", "all").stdout
    prune = next(block for block in output.split("\n\n") if "--stage prune1" in block and "--task 0" in block)
    assert "task0/train/last.pt" in prune and "--input ranked=" not in prune
    later = next(block for block in output.split("\n\n") if "--stage prune1" in block and "--task 1" in block)
    assert (
        "task1/train/last.pt" in later and f"--input ranked={RUNS.format('tickets_td')}/task1/train/model.pt" in later
    )
    imp = next(block for block in output.split("\n\n") if "--stage imp1" in block)
    assert "--input test_images=resources/data/digits/test/images.npy" in imp
    assert not any("test_images" in block for block in output.split("\n\n") if "--stage train" in block)


def test_without_a_pool_a_digits_run_reads_an_empty_pool_made_in_the_digits_image_shape(tmp_path):
    config = {**copy.deepcopy(CONFIG), "data": {"unlabeled_pool": "none"}}
    config["experiments"]["tickets_td"]["method_args"]["unlabeled_source"] = "pool"
    write_config(tmp_path, config)
    output = snakemake(tmp_path, "-n", "-p", "all").stdout
    prepare = next(block for block in output.split("\n\n") if "sparsecl data unlabeled" in block)
    assert (
        "sparsecl data unlabeled none --source resources/data/digits --out-dir resources/data/unlabeled/none/digits"
        in prepare
    )
    retrieve = next(block for block in output.split("\n\n") if "--stage retrieve" in block)
    assert "pool=resources/data/unlabeled/none/digits/pool.npy" in retrieve
