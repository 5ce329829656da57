"""Seed aggregation (mean ± std) and the markdown/CSV/parquet tables."""

from __future__ import annotations

import math

import pandas as pd

METRICS = ("acc", "bwt", "forgetting", "learning_acc")
GROUP = ["experiment", "point", "method", "protocol", "dataset", "num_tasks", "setting"]


def aggregate(metrics: pd.DataFrame) -> pd.DataFrame:
    """One row per (experiment, point, setting): mean and std over seeds of every numeric metric."""
    value_cols = [
        c for c in metrics.columns if c not in GROUP + ["run_id", "seed"] and pd.api.types.is_numeric_dtype(metrics[c])
    ]
    grouped = metrics.groupby(GROUP, sort=True)
    out = grouped[value_cols].agg(["mean", "std"])
    out.columns = [f"{col}_{stat}" for col, stat in out.columns]
    out["seeds"] = grouped["seed"].nunique()
    return out.reset_index()


def fmt(mean: float, std: float, decimals: int) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "—"
    if std is None or (isinstance(std, float) and math.isnan(std)):
        return f"{mean:.{decimals}f}"
    return f"{mean:.{decimals}f} ± {std:.{decimals}f}"


def markdown_table(frame: pd.DataFrame) -> str:
    header = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join(str(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body])


def summary_markdown(agg: pd.DataFrame, decimals: int) -> str:
    """Task-IL and class-IL side by side, one row per experiment and grid point."""
    extra = sorted({c[: -len("_mean")] for c in agg.columns if c.endswith("_mean")} - set(METRICS))
    sections = [
        "# Results",
        "",
        "Accuracies in %, mean ± std over seeds. ACC: average accuracy after the last task;"
        " BWT: backward transfer; LA: learning accuracy (accuracy on each task right after learning it).",
        "",
    ]
    for setting, title in (
        ("til", "Task-incremental (task identity given)"),
        ("cil", "Class-incremental (all seen classes compete)"),
    ):
        part = agg[agg["setting"] == setting]
        rows = []
        for r in part.itertuples(index=False):
            d = r._asdict()
            row = {
                "experiment": d["experiment"],
                "point": d["point"],
                "method": d["method"],
                "protocol": d["protocol"],
                "dataset": d["dataset"],
                "tasks": d["num_tasks"],
                "seeds": d["seeds"],
                "ACC": fmt(d["acc_mean"], d["acc_std"], decimals),
                "BWT": fmt(d["bwt_mean"], d["bwt_std"], decimals),
                "forgetting": fmt(d["forgetting_mean"], d["forgetting_std"], decimals),
                "LA": fmt(d["learning_acc_mean"], d["learning_acc_std"], decimals),
            }
            for key in extra:
                row[key] = fmt(d[f"{key}_mean"], d[f"{key}_std"], decimals)
            rows.append(row)
        sections += [f"## {title}", "", markdown_table(pd.DataFrame(rows)) if rows else "(no runs)", ""]
    return "\n".join(sections)


def reproduction_markdown(agg: pd.DataFrame, reported: dict, decimals: int, tolerance: float) -> str:
    """Paper value beside ours, the difference, and whether it is within `tolerance` points.

    `reported[experiment][point] = {"values": {"acc_til": 61.2, ...}, "source": "..."}`; a metric
    key is `<metric>_<setting>`. Experiments with no values are listed as not transcribed.
    """
    rows = []
    for (experiment, point), group in agg.groupby(["experiment", "point"], sort=True):
        entry = reported.get(experiment, {}).get(point, {})
        values, source = entry.get("values", {}), entry.get("source", "")
        if not values:
            rows.append(
                {
                    "experiment": experiment,
                    "point": point,
                    "metric": "—",
                    "paper": "not transcribed",
                    "ours": "—",
                    "delta": "—",
                    "within tolerance": "—",
                    "source": source or "—",
                }
            )
            continue
        for key, paper in sorted(values.items()):
            metric, _, setting = key.rpartition("_")
            match = group[group["setting"] == setting]
            if match.empty or f"{metric}_mean" not in match:
                ours, delta, ok = "missing", "—", "no"
            else:
                mean, std = float(match[f"{metric}_mean"].iloc[0]), float(match[f"{metric}_std"].iloc[0])
                ours = fmt(mean, std, decimals)
                delta = f"{mean - paper:+.{decimals}f}"
                ok = "yes" if abs(mean - paper) <= tolerance else "no"
            rows.append(
                {
                    "experiment": experiment,
                    "point": point,
                    "metric": key,
                    "paper": f"{paper:.{decimals}f}",
                    "ours": ours,
                    "delta": delta,
                    "within tolerance": ok,
                    "source": source or "—",
                }
            )
    header = [
        "# Reproduction ledger",
        "",
        f"Paper values beside ours (mean ± std over seeds); within tolerance means |delta| <= {tolerance:g} points.",
        "",
    ]
    return "\n".join(header + [markdown_table(pd.DataFrame(rows)) if rows else "(no runs)", ""])
