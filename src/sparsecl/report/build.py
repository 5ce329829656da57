"""Read every run's metrics, curves and accuracy matrix; write tables, the ledger and plots."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import DataError
from ..experiments import PAPERS, paper_slug
from ..io import all_or_none, check_writable, provenance, write_parquet, write_text
from ..roots import NOTICE, REHEARSAL
from .html import markdown_page
from .ledger import Results, ledger_rows, no_value_rows, verdict_lines
from .plots import accuracy_curves, comparison, ledger_curves, matrix_heatmaps
from .tables import aggregate, aggregate_curves, markdown_table, summary_markdown

LEDGER_COLUMNS = [
    "paper", "experiment/point", "metric", "protocol", "kind", "paper value", "ours", "delta", "verdict", "source",
]  # fmt: skip


def build_report(
    metrics_paths: list[Path],
    matrix_paths: list[Path],
    curve_paths: list[Path],
    ledger_json: str,
    tables_dir: Path,
    plots_dir: Path,
    *,
    decimals: int = 1,
    tolerance: float = 2.0,
) -> None:
    if not len(metrics_paths) == len(matrix_paths) == len(curve_paths):
        raise DataError(
            f"report: {len(metrics_paths)} metrics files, {len(matrix_paths)} matrices and {len(curve_paths)} curve files"
        )
    ledger = _ledger_spec(ledger_json)
    rehearsal = bool(ledger.get("rehearsal"))
    if not rehearsal:
        _refuse_rehearsal_results(metrics_paths + matrix_paths + curve_paths)
    metrics = pd.concat([_read(p, pd.read_parquet, "parquet metrics") for p in metrics_paths], ignore_index=True)
    curves = pd.concat([_read(p, pd.read_parquet, "parquet curves") for p in curve_paths], ignore_index=True)
    agg, agg_curves = aggregate(metrics), aggregate_curves(curves)
    tables_dir, plots_dir = Path(tables_dir), Path(plots_dir)
    tables = [tables_dir / name for name in TABLES]
    check_writable(*tables)
    with all_or_none(*tables):
        prov = provenance({"runs": sorted(metrics["run_id"].unique())})
        write_parquet(tables_dir / "summary.parquet", agg, prov)
        write_text(tables_dir / "summary.csv", agg.to_csv(index=False, float_format="%.4f"))
        notice = f"> **{NOTICE}**\n\n" if rehearsal else ""
        summary = notice + summary_markdown(agg, agg_curves, decimals)
        write_text(tables_dir / "summary.md", summary)

        entries, notes = ledger["entries"], ledger.get("papers", {})
        results = Results(agg, agg_curves)
        rows = ledger_rows(entries, results, tolerance, decimals) + no_value_rows(agg, entries, papers_of(agg, entries))
        table = pd.DataFrame(rows, columns=LEDGER_COLUMNS)
        write_text(tables_dir / "reproduction.csv", (f"# {NOTICE}\n" if rehearsal else "") + table.to_csv(index=False))
        ledger_md = notice + _ledger_markdown(table, rows, notes, tolerance)
        write_text(tables_dir / "reproduction.md", ledger_md)
        # The report's pages: the summary opens with the ledger's verdict lines, the headline at a glance.
        verdicts = "\n".join(["## Reproduction ledger: verdict per paper", "", *verdict_lines(rows, notes), ""])
        first, _, rest = summary.partition("\n## ")
        write_text(
            tables_dir / "summary.html", markdown_page("Results", f"{first}\n{verdicts}\n## {rest}", numbers=True)
        )
        write_text(tables_dir / "reproduction.html", markdown_page("Reproduction ledger", ledger_md))

        written = _plots(metrics, curves, matrix_paths, plots_dir)
        for paper in sorted({e["paper"] for e in entries if "curve" in e}):
            curve_entries = [e for e in entries if e["paper"] == paper and "curve" in e]
            written.append(plots_dir / "ledger" / f"{paper_slug(paper)}.png")
            ledger_curves(paper, curve_entries, results, written[-1])
        _remove_stale_plots(plots_dir, written)


TABLES = (
    "summary.parquet", "summary.csv", "summary.md", "summary.html", "reproduction.csv", "reproduction.md",
    "reproduction.html",
)  # fmt: skip


def _ledger_spec(ledger_json: str) -> dict:
    """--ledger: {"entries": [...], "papers": {...}, "rehearsal": bool}, as the workflow writes it."""
    try:
        ledger = json.loads(ledger_json)
    except json.JSONDecodeError as err:
        raise DataError(f"--ledger: expected the ledger as JSON ({err.msg} at column {err.colno})") from None
    if not isinstance(ledger, dict) or not isinstance(ledger.get("entries"), list):
        raise DataError(f"--ledger: expected a JSON object with an 'entries' list, got {ledger_json[:60]!r}")
    if not isinstance(ledger.get("papers", {}), dict):
        raise DataError("--ledger: 'papers' must be a JSON object of notes per paper")
    return ledger


def _read(path: Path, reader, what: str) -> pd.DataFrame:
    """A run's summary file, or one line naming it: missing, or not what it claims to be."""
    if not Path(path).is_file():
        raise DataError(f"{path}: {what} file missing (the report reads it)")
    try:
        return reader(path)
    except Exception as err:  # pandas and pyarrow raise many types for a damaged file
        raise DataError(f"{path}: not a readable {what} file ({type(err).__name__})") from None


def _remove_stale_plots(plots_dir: Path, written: list[Path]) -> None:
    """The plots folder holds this report's plots only: a PNG left by an experiment, point, setting
    or paper the config no longer has is removed, with the folders it leaves empty."""
    keep = {Path(p).resolve() for p in written}
    for png in sorted(plots_dir.rglob("*.png")):
        if png.resolve() not in keep:
            png.unlink()
    for folder in sorted((d for d in plots_dir.rglob("*") if d.is_dir()), key=lambda d: len(d.parts), reverse=True):
        if not any(folder.iterdir()):
            folder.rmdir()


def papers_of(agg: pd.DataFrame, entries: list[dict]) -> dict[str, str]:
    """Each experiment's paper: its entries' paper, else its method's, so that an experiment
    without a reference value still sits under the paper it reproduces."""
    papers = {r.experiment: PAPERS.get(r.method, "") for r in agg.itertuples()}
    return papers | {e["experiment"]: e["paper"] for e in entries}


def _refuse_rehearsal_results(paths: list[Path]) -> None:
    """A real report never reads a rehearsal's files (they live under a `rehearsal` folder)."""
    for path in paths:
        if REHEARSAL in Path(path).parts:
            raise DataError(f"{path}: a rehearsal's result; a real report reads only real runs")


def _ledger_markdown(table: pd.DataFrame, rows: list[dict], notes: dict, tolerance: float) -> str:
    header = [
        "# Reproduction ledger",
        "",
        "Each row is one reference value: a number printed in a paper's table (`table`, within"
        f" {tolerance:g} points), a value read off a figure (`figure`, within its reading uncertainty plus"
        f" {tolerance:g}), a value the published code produces by construction (`code`, to the printed"
        " precision), a row shown for comparison (`reference`), or a statement of the paper checked on our"
        " own runs (`claim`: `within noise` when the two mean ± std intervals overlap), or a check written"
        " for a demo config (`demo`, checked like a claim but no statement of the paper). Ours: mean ± std"
        " over n seeds. Each verdict line counts the evidence apart: only a `table` or `figure` row that"
        " passes is a reproduced number; a `code` row holds by construction and is a sanity check; a"
        " `demo` row is a demo check.",
        "",
        "## Verdicts",
        "",
        *verdict_lines(rows, notes),
        "",
        "## Rows",
        "",
    ]
    return "\n".join(header + [markdown_table(table) if len(table) else "(no runs)", ""])


def _plots(metrics: pd.DataFrame, curves: pd.DataFrame, matrix_paths: list[Path], plots_dir: Path) -> list[Path]:
    """Every run's heatmap, curve and comparison plot; returns the paths written."""
    written = []
    runs = metrics.drop_duplicates("run_id")[["run_id", "experiment", "point"]].reset_index(drop=True)
    matrices = []
    for run, path in zip(runs.itertuples(index=False), matrix_paths):
        frame = _read(path, pd.read_csv, "CSV accuracy-matrix")
        if not {"setting", "after_task"} <= set(frame.columns) or not any(c.startswith("task") for c in frame.columns):
            raise DataError(f"{path}: expected an accuracy matrix with columns setting, after_task, task0, ...")
        frame["experiment"], frame["point"], frame["run_id"] = run.experiment, run.point, run.run_id
        matrices.append(frame)
    allm = pd.concat(matrices, ignore_index=True)
    for (experiment, point), group in allm.groupby(["experiment", "point"], sort=True):
        per_setting = {}
        for setting, sgroup in group.groupby("setting", sort=False):
            task_cols = [c for c in sgroup.columns if c.startswith("task") and sgroup[c].notna().any()]
            stacked = np.stack([g[task_cols].to_numpy(float) for _, g in sgroup.groupby("run_id")])
            # the mean over seeds; a cell no seed has (a task not trained yet) stays NaN, without
            # numpy's empty-slice warning in every report's log
            seen = (~np.isnan(stacked)).sum(axis=0)
            per_setting[setting] = np.where(seen > 0, np.nansum(stacked, axis=0) / np.maximum(seen, 1), np.nan)
        written.append(plots_dir / experiment / point / "accuracy_matrix.png")
        matrix_heatmaps(per_setting, f"{experiment} / {point}: R[i, j] (mean over seeds)", written[-1])
    acc = curves[curves["metric"] == "acc"]
    stats = acc.groupby(["experiment", "point", "setting", "after_task"])["value"].agg(["mean", "std"]).reset_index()
    for setting, group in stats.groupby("setting", sort=True):
        written.append(plots_dir / "comparison" / f"{setting}.png")
        comparison(group, setting, written[-1])
    for experiment, group in acc.groupby("experiment", sort=True):
        stats = group.groupby(["point", "setting", "after_task"])["value"].agg(["mean", "std"]).reset_index()
        written.append(plots_dir / experiment / "accuracy_curve.png")
        accuracy_curves(stats, f"{experiment}: accuracy on seen tasks", written[-1])
    return written
