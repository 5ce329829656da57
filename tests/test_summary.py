"""A run's evaluations become its metrics, accuracy matrix and per-task curves."""

import json

import pandas as pd
import pytest

from sparsecl import stages
from sparsecl.config import RunConfig, TrainConfig
from sparsecl.io import write_parquet
from sparsecl.scenarios import ScenarioSpec
from sparsecl.summary import summarize


def run_config(tmp_path, scenario: ScenarioSpec):
    run = RunConfig(
        run_id="e/p/seed0", experiment="e", point="p", seed=0, method="finetune", dataset="digits",
        backbone="mlp", scenario=scenario, train=TrainConfig(),
    )  # fmt: skip
    path = tmp_path / "config.yaml"
    stages.write_run_config(json.dumps(run.to_dict()), path)
    return path


def write_evals(tmp_path, rows_per_task):
    paths = []
    for t, rows in enumerate(rows_per_task):
        path = tmp_path / f"task{t}.parquet"
        write_parquet(path, pd.DataFrame(rows))
        paths.append(path)
    return paths


def test_a_data_incremental_run_is_top1_after_each_step(tmp_path):
    config = run_config(tmp_path, ScenarioSpec(kind="data", num_tasks=3, chunks=(1, 1, 1)))
    evals = write_evals(
        tmp_path,
        [[{"task_trained": t, "task_eval": 0, "n": 100, "acc_til": acc, "acc_cil": acc}] for t, acc in
         enumerate((50.0, 60.0, 65.0))],
    )  # fmt: skip
    out = tmp_path / "out"
    summarize(config, evals, out / "metrics.parquet", out / "matrix.csv", out / "curves.parquet")
    metrics = pd.read_parquet(out / "metrics.parquet")
    assert metrics["setting"].tolist() == ["data"]
    assert metrics["acc"].iloc[0] == 65.0 and metrics["learning_acc"].iloc[0] == pytest.approx(175 / 3)
    assert metrics["bwt"].isna().all()
    curves = pd.read_parquet(out / "curves.parquet")
    assert curves[curves["metric"] == "acc"]["value"].tolist() == [50.0, 60.0, 65.0]


def test_curves_carry_each_tasks_own_method_column_after_that_task(tmp_path):
    config = run_config(tmp_path, ScenarioSpec(num_tasks=2, classes_per_task=2))
    evals = write_evals(
        tmp_path,
        [
            [{"task_trained": 0, "task_eval": 0, "n": 10, "acc_til": 90.0, "acc_cil": 90.0, "selected_sparsity": 92.0}],
            [
                {
                    "task_trained": 1,
                    "task_eval": 0,
                    "n": 10,
                    "acc_til": 80.0,
                    "acc_cil": 40.0,
                    "selected_sparsity": 92.0,
                },
                {
                    "task_trained": 1,
                    "task_eval": 1,
                    "n": 10,
                    "acc_til": 70.0,
                    "acc_cil": 60.0,
                    "selected_sparsity": 98.0,
                },
            ],
        ],
    )
    out = tmp_path / "out"
    summarize(config, evals, out / "metrics.parquet", out / "matrix.csv", out / "curves.parquet")
    curves = pd.read_parquet(out / "curves.parquet").set_index(["setting", "metric", "after_task"])["value"]
    assert curves[("cil", "acc", 1)] == 50.0 and curves[("til", "acc", 1)] == 75.0
    assert curves[("cil", "selected_sparsity", 0)] == 92.0 and curves[("cil", "selected_sparsity", 1)] == 98.0
    metrics = pd.read_parquet(out / "metrics.parquet").set_index("setting")
    assert metrics.loc["cil", "bwt"] == -50.0 and metrics.loc["cil", "selected_sparsity"] == 95.0
