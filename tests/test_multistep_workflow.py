"""End to end: the multistep rules in the real workflow on digits.

Specification: a 4-chunk run is exactly the paper's seven stage jobs, each reading the files of
the one before it (and its teachers'); every stage is evaluated; the summary's curve is top-1
after each chunk; a setting reruns the stages that depend on it and what follows them, nothing
before them.
"""

from __future__ import annotations

import copy
import re

import pandas as pd
import pytest

from .workflow_helpers import planned_jobs, snakemake, write_config

pytestmark = pytest.mark.slow

SCENARIO = {"kind": "data", "num_tasks": 4, "chunks": [1, 1, 1, 1]}
COMMON = {
    "dataset": "digits",
    "backbone": "resnet110",
    "backbone_args": {"blocks": 1, "width": 0.5},
    "scenario": SCENARIO,
    "train": {"epochs": 2, "batch_size": 64, "lr": 0.05},
}
CONFIG = {
    "seeds": [0],
    "experiments": {
        "ms": {"method": "multistep", **COMMON, "method_args": {"ratio": 0.2, "s": 0.1}},
        "other": {"method": "multistep", **COMMON, "scenario": {**SCENARIO, "num_tasks": 2, "chunks": [1, 1]}},
    },
}
RUN = "results/runs/ms/default/seed0"
TARGETS = [f"{RUN}/metrics.parquet"]
PROCEDURE = [(0, "train"), (0, "sst"), (1, "aod"), (1, "sst_msl"), (2, "aod"), (2, "sst_msl"), (3, "aod")]


def option(command: str, name: str) -> str | None:
    found = re.search(rf"--{name} (\S+)", command)
    return found.group(1) if found else None


def stage_commands(dry_run: str) -> list[str]:
    """The `sparsecl train` commands of the multistep run in a `snakemake -n -p` output."""
    return [
        line[line.index("sparsecl train") :]
        for line in dry_run.splitlines()
        if "sparsecl train" in line and "/ms/" in line
    ]


def dry_run_jobs(workdir, config) -> list[tuple[str, dict[str, str]]]:
    write_config(workdir, config)
    try:
        return planned_jobs(snakemake(workdir, "-n", *TARGETS).stdout)
    finally:
        write_config(workdir, CONFIG)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("multistep_workflow")
    write_config(workdir, CONFIG)
    dry_run = snakemake(workdir, "-n", "-p", *TARGETS).stdout
    snakemake(workdir, *TARGETS, "--cores", "2")
    return workdir, dry_run


def test_a_four_chunk_run_is_the_seven_stage_jobs_each_reading_its_predecessor(finished_run):
    _, dry_run = finished_run
    jobs = planned_jobs(dry_run)
    stage_rules = {"multistep_train", "multistep_sst", "multistep_aod", "multistep_sst_msl"}
    assert sorted((int(w["task"]), r.removeprefix("multistep_")) for r, w in jobs if r in stage_rules) == sorted(
        PROCEDURE
    )
    assert sum(r == "evaluate" for r, _ in jobs) == 7
    commands = {(int(option(c, "task")), option(c, "stage")): c for c in stage_commands(dry_run)}
    assert sorted(commands) == sorted(PROCEDURE)
    chain, current = [], next(key for key, c in commands.items() if option(c, "prev-model") is None)
    while current:  # follow --out-model -> --prev-model from the stage that reads nothing
        chain.append(current)
        out = option(commands[current], "out-model")
        current = next((key for key, c in commands.items() if option(c, "prev-model") == out), None)
    assert chain == PROCEDURE
    assert "--input teacher=results/runs/ms/default/seed0/task0/sst/model.pt" in commands[(1, "aod")]
    msl = commands[(2, "sst_msl")]
    assert re.findall(r"--input (\S+)", msl) == [
        "teacher0=results/runs/ms/default/seed0/task0/sst/model.pt",
        "teacher1=results/runs/ms/default/seed0/task1/sst_msl/model.pt",
    ]
    assert all("stage_configs/" in option(c, "config") for c in commands.values())


def test_every_stage_is_evaluated_and_the_curve_is_top1_after_each_chunk(finished_run):
    workdir, _ = finished_run
    run = workdir / RUN
    evals = {key: pd.read_parquet(run / f"task{key[0]}" / key[1] / "eval.parquet") for key in PROCEDURE}
    n_test = {int(e["n"].iloc[0]) for e in evals.values()}
    assert len(n_test) == 1 and n_test.pop() > 400  # the whole digits test split, every time
    curves = pd.read_parquet(run / "curves.parquet")
    acc = curves[curves["metric"] == "acc"]
    assert acc["setting"].unique().tolist() == ["data"] and acc["after_task"].tolist() == [0, 1, 2, 3]
    assert (acc["value"] > 20).all()  # well above chance (10 classes)
    finals = [evals[(0, "sst")], evals[(1, "sst_msl")], evals[(2, "sst_msl")], evals[(3, "aod")]]
    assert acc["value"].tolist() == pytest.approx([float(e["acc_cil"].iloc[0]) for e in finals])
    assert not (workdir / "results/runs/other").exists()
    masks = pd.read_parquet(run / "task0/sst/channels.parquet")
    assert masks["selected"].sum() > 0 and (run / "stage_configs/sst_msl.yaml").exists()


def test_a_finished_run_has_nothing_left_to_do(finished_run):
    workdir, _ = finished_run
    assert planned_jobs(snakemake(workdir, "-n", *TARGETS).stdout) == []


def test_a_new_ratio_reruns_from_sst_on_and_never_train(finished_run):
    workdir, _ = finished_run
    config = copy.deepcopy(CONFIG)
    config["experiments"]["ms"]["method_args"]["ratio"] = 0.3
    jobs = dry_run_jobs(workdir, config)
    stages = {(r, w.get("task"), w.get("stage")) for r, w in jobs}
    assert {(r, t) for r, t, _ in stages if r in ("multistep_sst", "multistep_aod", "multistep_sst_msl")} == {
        ("multistep_sst", "0"), ("multistep_aod", "1"), ("multistep_sst_msl", "1"), ("multistep_aod", "2"),
        ("multistep_sst_msl", "2"), ("multistep_aod", "3"),
    }  # fmt: skip
    assert not any(r == "multistep_train" or s == "train" for r, _, s in stages)
    assert {w["stage"] for r, w in jobs if r == "stage_config"} == {"sst", "sst_msl"}
    assert {w.get("experiment") for _, w in jobs if w} == {"ms"}


def test_a_stage_specific_setting_reruns_that_stage_and_what_follows(finished_run):
    workdir, _ = finished_run
    config = copy.deepcopy(CONFIG)
    config["experiments"]["ms"]["method_args"]["stage_train"] = {"aod": {"epochs": 1}}
    trained = {(r, w["task"]) for r, w in dry_run_jobs(workdir, config) if r.startswith("multistep_") and "task" in w}
    assert ("multistep_aod", "1") in trained and ("multistep_sst_msl", "2") in trained
    assert not {("multistep_train", "0"), ("multistep_sst", "0")} & trained


def test_previous_only_snapshots_change_the_inputs_of_sst_msl(finished_run):
    workdir, _ = finished_run
    config = copy.deepcopy(CONFIG)
    config["experiments"]["ms"]["method_args"]["msl_teachers"] = "previous"
    write_config(workdir, config)
    try:
        dry_run = snakemake(workdir, "-n", "-p", *TARGETS).stdout
    finally:
        write_config(workdir, CONFIG)
    msl = next(c for c in stage_commands(dry_run) if option(c, "stage") == "sst_msl" and option(c, "task") == "2")
    assert re.findall(r"--input (\S+)", msl) == ["teacher1=results/runs/ms/default/seed0/task1/sst_msl/model.pt"]


def test_a_single_step_run_is_train_sst_aod_and_its_summary_reads_sst_then_aod(finished_run):
    workdir, _ = finished_run
    dry_run = snakemake(workdir, "-n", "-p", "results/runs/other/default/seed0/metrics.parquet").stdout
    jobs = planned_jobs(dry_run)
    assert sorted((int(w["task"]), r) for r, w in jobs if r in ("multistep_train", "multistep_sst", "multistep_aod")) == [
        (0, "multistep_sst"), (0, "multistep_train"), (1, "multistep_aod"),
    ]  # fmt: skip
    summarize = next(line for line in dry_run.splitlines() if "sparsecl summarize" in line)
    assert re.findall(r"seed0/(task\d/\w+)/eval.parquet", summarize) == ["task0/sst", "task1/aod"]
