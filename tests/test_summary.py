"""A run's evaluations become its metrics, accuracy matrix and per-task curves."""

import json

import pandas as pd
import pytest

from sparsecl import summary as summary_module
from sparsecl.config import RunConfig, TrainConfig, write_run_config
from sparsecl.errors import DataError
from sparsecl.io import write_parquet
from sparsecl.scenarios import ScenarioSpec
from sparsecl.summary import summarize


def run_config(tmp_path, scenario: ScenarioSpec):
    run = RunConfig(
        run_id="e/p/seed0", experiment="e", point="p", seed=0, method="finetune", dataset="digits",
        backbone="mlp", scenario=scenario, train=TrainConfig(),
    )  # fmt: skip
    path = tmp_path / "config.yaml"
    write_run_config(json.dumps(run.to_dict()), path)
    return path


def write_evals(tmp_path, rows_per_task, run_id="e/p/seed0"):
    paths = []
    for t, rows in enumerate(rows_per_task):
        path = tmp_path / f"task{t}.parquet"
        write_parquet(path, pd.DataFrame(rows), {"run_id": run_id, "task": t})
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


def two_tasks(acc_of_task1_on_task0=80.0):
    row = {"n": 10, "acc_til": 90.0, "acc_cil": 90.0}
    return [
        [{"task_trained": 0, "task_eval": 0, **row}],
        [
            {"task_trained": 1, "task_eval": 0, **row, "acc_til": acc_of_task1_on_task0},
            {"task_trained": 1, "task_eval": 1, **row},
        ],
    ]


def duplicated_row(evals):
    evals[1].append(dict(evals[1][0]))
    return evals


def without(column):
    return lambda evals: [[{k: v for k, v in row.items() if k != column} for row in rows] for rows in evals]


def text_accuracy(evals):
    for row in evals[1]:
        row["acc_cil"] = "90.0"
    return evals


def out_of_range_task(evals):
    evals[1][1]["task_eval"] = 5
    return evals


BAD_EVALUATIONS = [
    ("a duplicated row", duplicated_row, {}, "task1.parquet: rows for tasks [0, 1, 0] after task [1]; expected one row per task [0, 1]"),
    ("no accuracy column", without("acc_til"), {}, "task0.parquet: no 'acc_til' column"),
    ("an accuracy that is text", text_accuracy, {}, "task1.parquet: column 'acc_cil' holds"),
    ("a task index out of range", out_of_range_task, {}, "task1.parquet: rows for tasks [0, 5]"),
    ("an accuracy above 100", lambda e: two_tasks(180.0), {}, "task1.parquet: accuracies outside [0, 100]"),
    ("another run's evaluations", lambda e: e, {"run_id": "e/p/seed1"}, "task0.parquet: evaluation of run 'e/p/seed1', not of this run 'e/p/seed0'"),
    ("files out of task order", lambda e: e, {"reverse": True}, "task1.parquet: evaluation after task 1, expected task 0 (files in task order)"),
    ("one file too few", lambda e: e, {"drop": True}, "--eval: 1 evaluation files for e/p/seed0, expected 2 (one per task)"),
    ("a zero-byte file", lambda e: e, {"empty": True}, "task0.parquet: not a parquet evaluation file"),
]  # fmt: skip


@pytest.mark.parametrize("change, how, message", [c[1:] for c in BAD_EVALUATIONS], ids=[c[0] for c in BAD_EVALUATIONS])
def test_a_summary_refuses_evaluations_that_are_not_this_runs_one_row_per_task(tmp_path, change, how, message):
    config = run_config(tmp_path, ScenarioSpec(num_tasks=2, classes_per_task=2))
    evals = write_evals(tmp_path, change(two_tasks()), run_id=how.get("run_id", "e/p/seed0"))
    if how.get("reverse"):
        evals.reverse()
    if how.get("drop"):
        evals.pop()
    if how.get("empty"):
        evals[0].write_bytes(b"")
    out = tmp_path / "out"
    with pytest.raises(DataError) as err:
        summarize(config, evals, out / "metrics.parquet", out / "matrix.csv", out / "curves.parquet")
    assert message in str(err.value) and "\n" not in str(err.value)
    assert not out.exists() or not list(out.iterdir())


def test_a_summary_that_cannot_write_one_output_leaves_none(tmp_path, monkeypatch):
    config = run_config(tmp_path, ScenarioSpec(num_tasks=2, classes_per_task=2))
    evals = write_evals(tmp_path, two_tasks())
    out = tmp_path / "out"
    real = summary_module.write_text

    def disk_full(path, text):
        raise DataError(f"{path}: cannot write: no space left on device")

    monkeypatch.setattr(summary_module, "write_text", disk_full)
    with pytest.raises(DataError, match="matrix.csv: cannot write"):
        summarize(config, evals, out / "metrics.parquet", out / "matrix.csv", out / "curves.parquet")
    assert sorted(p.name for p in out.iterdir()) == []
    monkeypatch.setattr(summary_module, "write_text", real)
