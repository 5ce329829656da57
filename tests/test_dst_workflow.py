"""End to end: `dst_train` in the real workflow, beside finetune, on digits."""

from __future__ import annotations

import pandas as pd
import pytest

from .workflow_helpers import planned_jobs, snakemake, write_config

pytestmark = pytest.mark.slow

SCENARIO = {"num_tasks": 3, "classes_per_task": 2}
CONFIG = {
    "seeds": [0],
    "experiments": {
        "ft": {
            "method": "finetune",
            "dataset": "digits",
            "backbone_args": {"hidden": [64, 64]},
            "scenario": SCENARIO,
            "train": {"epochs": 5, "batch_size": 32, "lr": 0.05},
        },
        "dst": {
            "method": "dst",
            "dataset": "digits",
            "backbone_args": {"hidden": [64, 64]},
            "protocol": "standard",
            "scenario": {**SCENARIO, "validation_fraction": 0.1},
            "train": {"epochs": 5, "batch_size": 32, "optimizer": "adam", "lr": 0.002, "loss_scope": "task"},
            "method_args": {"density": 0.2, "init": "ERK", "growth": "momentum", "update_frequency": 5},
        },
    },
}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("dst_workflow")
    write_config(workdir, CONFIG)
    jobs = planned_jobs(snakemake(workdir, "-n", "all").stdout)
    assert sorted(w["task"] for rule, w in jobs if rule == "dst_train") == ["0", "1", "2"]
    snakemake(workdir, "all", "--cores", "2")
    return workdir


def test_dst_never_forgets_in_task_il_and_beats_finetune(finished_run):
    summary = pd.read_csv(finished_run / "results/tables/summary.csv").set_index(["experiment", "setting"])
    assert summary.loc[("dst", "til"), "bwt_mean"] == 0.0
    assert summary.loc[("dst", "til"), "acc_mean"] > summary.loc[("ft", "til"), "acc_mean"]


def test_every_task_has_its_own_masks_file_and_the_tables_show_mask_statistics(finished_run):
    run = finished_run / "results/runs/dst/default/seed0"
    assert all((run / f"task{t}" / name).exists() for t in range(3) for name in ("masks.pt", "topology.parquet"))
    summary = pd.read_csv(finished_run / "results/tables/summary.csv")
    row = summary[(summary["experiment"] == "dst") & (summary["setting"] == "til")].iloc[0]
    assert 10 < row["density_pct_mean"] < 30 and row["capacity_used_pct_mean"] > row["density_pct_mean"]
    log = pd.read_parquet(run / "task1" / "train_log.parquet")
    assert {"dst_updates", "pruned", "grown", "density"} <= set(log.columns)
