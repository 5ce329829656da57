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

from .config import load_run_config
from .io import provenance, read_parquet_provenance, write_parquet, write_text
from .metrics import accuracy_matrix, summarize_matrix

EVAL_COLUMNS = {"task_trained", "task_eval", "n", "acc_til", "acc_cil"}


def settings_of(kind: str) -> tuple[str, ...]:
    return ("data",) if kind == "data" else ("til", "cil")


def summarize(run_config: Path, eval_paths: list[Path], out_metrics: Path, out_matrix: Path, out_curves: Path) -> None:
    run = load_run_config(run_config)
    frames = [pd.read_parquet(p) for p in eval_paths]
    rows = pd.concat(frames).to_dict("records")
    T, kind = run.scenario.num_tasks, run.scenario.kind
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
