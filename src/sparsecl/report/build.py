"""Read every run's metrics and accuracy matrix; write tables, ledger and plots."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import DataError
from ..io import provenance, write_parquet, write_text
from .plots import accuracy_curves, matrix_heatmaps
from .tables import aggregate, reproduction_markdown, summary_markdown


def build_report(
    metrics_paths: list[Path],
    matrix_paths: list[Path],
    reported_json: str,
    tables_dir: Path,
    plots_dir: Path,
    *,
    decimals: int = 1,
    tolerance: float = 2.0,
) -> None:
    if len(metrics_paths) != len(matrix_paths):
        raise DataError(f"report: {len(metrics_paths)} metrics files but {len(matrix_paths)} matrices")
    metrics = pd.concat([pd.read_parquet(p) for p in metrics_paths], ignore_index=True)
    agg = aggregate(metrics)
    tables_dir, plots_dir = Path(tables_dir), Path(plots_dir)
    prov = provenance({"runs": sorted(metrics["run_id"].unique())})
    write_parquet(tables_dir / "summary.parquet", agg, prov)
    write_text(tables_dir / "summary.csv", agg.to_csv(index=False, float_format="%.4f"))
    write_text(tables_dir / "summary.md", summary_markdown(agg, decimals))
    write_text(
        tables_dir / "reproduction.md", reproduction_markdown(agg, json.loads(reported_json), decimals, tolerance)
    )
    _plots(metrics, matrix_paths, plots_dir)


def _plots(metrics: pd.DataFrame, matrix_paths: list[Path], plots_dir: Path) -> None:
    runs = metrics.drop_duplicates("run_id")[["run_id", "experiment", "point"]].reset_index(drop=True)
    matrices = []
    for run, path in zip(runs.itertuples(index=False), matrix_paths):
        frame = pd.read_csv(path)
        frame["experiment"], frame["point"], frame["run_id"] = run.experiment, run.point, run.run_id
        matrices.append(frame)
    allm = pd.concat(matrices, ignore_index=True)
    task_cols = [c for c in allm.columns if c.startswith("task")]
    curve_rows = []
    for (experiment, point), group in allm.groupby(["experiment", "point"], sort=True):
        per_setting = {}
        for setting, sgroup in group.groupby("setting", sort=False):
            stacked = np.stack([g[task_cols].to_numpy(float) for _, g in sgroup.groupby("run_id")])
            per_setting[setting] = np.nanmean(stacked, axis=0) if len(stacked) else stacked
            for run_id, g in sgroup.groupby("run_id"):
                R = g[task_cols].to_numpy(float)
                for i in range(R.shape[0]):
                    curve_rows.append(
                        {
                            "experiment": experiment,
                            "point": point,
                            "setting": setting,
                            "run_id": run_id,
                            "after_task": i,
                            "acc": float(np.nanmean(R[i, : i + 1])),
                        }
                    )
        matrix_heatmaps(
            {k: per_setting[k] for k in ("til", "cil") if k in per_setting},
            f"{experiment} / {point}: R[i, j] (mean over seeds)",
            plots_dir / experiment / point / "accuracy_matrix.png",
        )
    curves = pd.DataFrame(curve_rows)
    for experiment, group in curves.groupby("experiment", sort=True):
        stats = group.groupby(["point", "setting", "after_task"])["acc"].agg(["mean", "std"]).reset_index()
        accuracy_curves(stats, f"{experiment}: accuracy on seen tasks", plots_dir / experiment / "accuracy_curve.png")
