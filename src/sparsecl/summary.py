"""One run's evaluations -> its accuracy matrix, scalar metrics and per-task curves (torch-free).

Class-incremental runs have two settings, task-IL (`til`) and class-IL (`cil`), each with the
matrix R[i, j] (accuracy on task j after task i) and ACC, BWT, forgetting and learning accuracy.
A data-incremental run has one setting, `data`: every step is scored once on the whole test set,
so R is a column and the metric is top-1 accuracy after the last step (BWT and forgetting have
no meaning there and are left empty).

`curves.parquet` is the long form the report plots and the ledger compares curves with: per
setting and task t, `acc` (average accuracy on the tasks seen after t; top-1 for `data`) and
each numeric method column of the evaluation after t, read on the row of task t itself (e.g.
the sparsity FOCIL selected for task t, the remaining weights of a ticket after task t).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .config import RunConfig, load_run_config
from .errors import DataError
from .io import all_or_none, check_writable, provenance, read_parquet_provenance, write_parquet, write_text
from .metrics import accuracy_matrix, summarize_matrix

EVAL_COLUMNS = {"task_trained", "task_eval", "n", "acc_til", "acc_cil"}


def settings_of(kind: str) -> tuple[str, ...]:
    return ("data",) if kind == "data" else ("til", "cil")


def load_eval(path: Path, run: RunConfig, task: int) -> pd.DataFrame:
    """The evaluation after `task` of this run: one row per task seen (one for a data step), the
    accuracies numbers in [0, 100]; anything else is one line naming the file."""
    if not Path(path).is_file():
        raise DataError(f"{path}: evaluation file missing (the summary of {run.run_id} reads it)")
    try:
        frame, prov = pd.read_parquet(path), read_parquet_provenance(path)
    except Exception as err:  # pyarrow raises several types for a file that is not parquet
        raise DataError(f"{path}: not a parquet evaluation file ({type(err).__name__})") from None
    if prov.get("run_id") != run.run_id:
        raise DataError(f"{path}: evaluation of run {prov.get('run_id')!r}, not of this run {run.run_id!r}")
    if prov.get("task") != task:
        raise DataError(f"{path}: evaluation after task {prov.get('task')}, expected task {task} (files in task order)")
    missing = sorted(EVAL_COLUMNS - set(frame.columns))
    if missing:
        raise DataError(f"{path}: no {missing[0]!r} column; expected {', '.join(sorted(EVAL_COLUMNS))}")
    for column in sorted(EVAL_COLUMNS):
        values = pd.to_numeric(frame[column], errors="coerce")
        if not pd.api.types.is_numeric_dtype(frame[column]) or values.isna().any() or not np.isfinite(values).all():
            raise DataError(f"{path}: column {column!r} holds {frame[column].tolist()[:3]}..., expected finite numbers")
    if not frame[["acc_til", "acc_cil"]].stack().between(0, 100).all():
        raise DataError(f"{path}: accuracies outside [0, 100]")
    seen = [0] if run.scenario.kind == "data" else list(range(task + 1))
    if sorted(frame["task_eval"].astype(int).tolist()) != seen or set(frame["task_trained"]) != {task}:
        raise DataError(
            f"{path}: rows for tasks {frame['task_eval'].tolist()} after task {sorted(set(frame['task_trained']))};"
            f" expected one row per task {seen} after task {task}"
        )
    return frame


def summarize(
    run_config: Path,
    eval_paths: list[Path],
    out_metrics: Path,
    out_matrix: Path,
    out_curves: Path,
    config_hash: str | None = None,
) -> None:
    run = load_run_config(run_config, config_hash)
    T, kind = run.scenario.num_tasks, run.scenario.kind
    if len(eval_paths) != T:
        raise DataError(f"--eval: {len(eval_paths)} evaluation files for {run.run_id}, expected {T} (one per task)")
    frames = [load_eval(p, run, t) for t, p in enumerate(eval_paths)]
    check_writable(out_metrics, out_curves, out_matrix)
    rows = pd.concat(frames).to_dict("records")
    records, matrices, curves = [], [], []
    for setting in settings_of(kind):
        key = "acc_cil" if setting == "data" else f"acc_{setting}"
        columns = 1 if kind == "data" else T
        R = accuracy_matrix(rows, key, T, columns)
        summary = _data_metrics(R) if kind == "data" else summarize_matrix(R)
        records.append({"setting": setting, **summary})
        matrix = pd.DataFrame(R, columns=[f"task{j}" for j in range(columns)])
        matrix.insert(0, "after_task", range(T))
        matrix.insert(0, "setting", setting)
        matrices.append(matrix)
        for t in range(T):
            curves.append(
                {"setting": setting, "after_task": t, "metric": "acc", "value": float(np.mean(R[t, : t + 1]))}
            )
    for t, frame in enumerate(frames):
        own = frame[frame["task_eval"] == (0 if kind == "data" else t)]
        for column, value in _method_columns(own).items():
            curves += [{"setting": s, "after_task": t, "metric": column, "value": value} for s in settings_of(kind)]
    metrics = pd.DataFrame(records)
    for key, value in _method_columns(frames[-1]).items():
        metrics[key] = value
    ids = {
        "run_id": run.run_id,
        "experiment": run.experiment,
        "point": run.point,
        "seed": run.seed,
        "method": run.method,
        "protocol": run.protocol,
        "dataset": run.dataset,
        "num_tasks": T,
    }
    curve_frame = pd.DataFrame(curves)
    for frame in (metrics, curve_frame):
        for key, value in ids.items():
            frame[key] = value
    prov = provenance(run.to_dict(), seed=run.seed)
    prov.update(run_id=run.run_id, final_evaluation=read_parquet_provenance(eval_paths[-1]))
    with all_or_none(out_metrics, out_curves, out_matrix):
        write_parquet(out_metrics, metrics, prov)
        write_parquet(out_curves, curve_frame, prov)
        write_text(out_matrix, pd.concat(matrices).to_csv(index=False, float_format="%.4f"))


def _data_metrics(R: np.ndarray) -> dict[str, float]:
    """Top-1 after the last step; LA is the mean over steps; BWT and forgetting are undefined."""
    if np.isnan(R).any():
        raise ValueError("accuracy column has missing steps")
    return {"acc": float(R[-1, 0]), "bwt": float("nan"), "forgetting": float("nan"), "learning_acc": float(R.mean())}


def _method_columns(frame: pd.DataFrame) -> dict[str, float]:
    """Method-specific numeric columns of an evaluation (e.g. expert-selection accuracy), averaged."""
    return {
        c: float(frame[c].mean())
        for c in frame.columns
        if c not in EVAL_COLUMNS and pd.api.types.is_numeric_dtype(frame[c]) and not frame[c].isna().all()
    }
