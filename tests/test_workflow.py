"""End to end: the real `snakemake` on a tiny config, then what reruns after each kind of change."""

from __future__ import annotations

import copy

import pandas as pd
import pytest

from .workflow_helpers import planned_jobs, snakemake, write_config

pytestmark = pytest.mark.slow

TINY = {
    "seeds": [0],
    "experiments": {
        "ft": {
            "method": "finetune",
            "dataset": "digits",
            "scenario": {"num_tasks": 3, "classes_per_task": 2},
            "train": {"epochs": 3, "batch_size": 32, "lr": 0.05},
        },
        "jt": {
            "method": "joint",
            "dataset": "digits",
            "scenario": {"num_tasks": 3, "classes_per_task": 2},
            "train": {"epochs": 3, "batch_size": 32, "lr": 0.05},
        },
    },
    "report": {"decimals": 1},
}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("workflow")
    write_config(workdir, TINY)
    snakemake(workdir, "all", "--cores", "2")
    return workdir


def test_the_run_writes_tables_plots_and_per_task_files(finished_run):
    tables = finished_run / "results" / "tables"
    for name in ("summary.md", "summary.csv", "summary.parquet", "reproduction.md"):
        assert (tables / name).stat().st_size > 0
    assert (finished_run / "results/plots/ft/default/accuracy_matrix.png").read_bytes()[:4] == b"\x89PNG"
    assert (finished_run / "results/plots/jt/accuracy_curve.png").exists()
    run = finished_run / "results/runs/ft/default/seed0"
    for t in range(3):
        for name in ("model.pt", "masks.pt", "train_log.parquet", "eval.parquet"):
            assert (run / f"task{t}" / name).exists()
    assert "no published value" in (tables / "reproduction.md").read_text()
    # The report's pages: rendered tables, the summary opening with the ledger's verdicts.
    summary, ledger = (tables / "summary.html").read_text(), (tables / "reproduction.html").read_text()
    assert "<table>" in summary and "<table>" in ledger
    assert summary.index("verdict per paper") < summary.index("Headline")
    for setting in ("til", "cil"):
        assert (finished_run / f"results/plots/comparison/{setting}.png").read_bytes()[:4] == b"\x89PNG"


def test_accuracies_are_above_chance_and_finetune_forgets(finished_run):
    summary = pd.read_csv(finished_run / "results/tables/summary.csv").set_index(["experiment", "setting"])
    # 3 tasks x 2 classes: chance is 50% task-IL and 1/6 class-IL.
    assert summary.loc[("jt", "til"), "acc_mean"] > 90
    assert summary.loc[("jt", "cil"), "acc_mean"] > 80
    assert summary.loc[("ft", "til"), "acc_mean"] > 50
    assert summary.loc[("ft", "cil"), "bwt_mean"] < 0
    assert summary.loc[("ft", "cil"), "acc_mean"] < summary.loc[("ft", "til"), "acc_mean"]


def test_a_finished_run_has_nothing_left_to_do(finished_run):
    assert planned_jobs(snakemake(finished_run, "-n", "all").stdout) == []


def test_changing_a_report_setting_reruns_only_the_report(finished_run):
    config = copy.deepcopy(TINY)
    config["report"]["decimals"] = 2
    write_config(finished_run, config)
    try:
        rules = {rule for rule, _ in planned_jobs(snakemake(finished_run, "-n", "all").stdout)}
    finally:
        write_config(finished_run, TINY)
    assert rules == {"report", "all"}


def test_changing_one_experiments_hyperparameter_reruns_only_that_experiment(finished_run):
    config = copy.deepcopy(TINY)
    config["experiments"]["jt"]["train"]["lr"] = 0.02
    write_config(finished_run, config)
    try:
        jobs = planned_jobs(snakemake(finished_run, "-n", "all").stdout)
    finally:
        write_config(finished_run, TINY)
    experiments = {wc.get("experiment") for _, wc in jobs if wc}
    assert experiments == {"jt"}
    assert sum(rule == "joint_train" for rule, _ in jobs) == 3


def test_a_bad_config_fails_before_any_job_runs(tmp_path):
    config = copy.deepcopy(TINY)
    config["experiments"]["ft"]["scenario"]["num_tasks"] = 7
    write_config(tmp_path, config)
    result = snakemake(tmp_path, "all", "--cores", "1", check=False)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert (
        "config error: experiments.ft.scenario: num_tasks x classes_per_task = 7 x 2 = 14 exceeds the dataset's 10 classes"
        in output
    )
    assert not (tmp_path / "results").exists() and not (tmp_path / "resources").exists()


def test_the_workflow_passes_snakemakes_linter(tmp_path):
    write_config(tmp_path, TINY)
    result = snakemake(tmp_path, "--lint")
    assert "Congratulations, your workflow is in a good condition!" in result.stdout + result.stderr
