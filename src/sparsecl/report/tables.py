"""Seed aggregation (mean ± std) and the markdown/CSV/parquet summary tables."""

from __future__ import annotations

import math

import pandas as pd

METRICS = ("acc", "bwt", "forgetting", "learning_acc")
GROUP = ["experiment", "point", "method", "protocol", "dataset", "num_tasks", "setting"]
SETTING_TITLES = {
    "til": "Task-incremental (task identity given)",
    "cil": "Class-incremental (all seen classes compete)",
    "data": "Data-incremental (top-1 on the whole test set after each step)",
}
# The setting a method's paper measures, shown first; method columns appear only there.
HEADLINE = {"dst": "til"}
# Curves shown task by task in the headline (metric -> column prefix): a ticket's size after each task.
PER_TASK = {"remaining_weights": "remaining % after task", "silenced_pct": "S silenced % after step"}
# Method columns that are diagnostics (every FOCIL routing rule), shown in a table of their own.
DIAGNOSTIC = "route_"
WHY_LABEL_FREE = (
    "Why a label-free rule can beat the labelled one here: the labelled rule picks one expert per task"
    " from its accuracy on a single small labelled batch (`selection_batch` images; a tie goes to the"
    " earliest expert), so one unlucky pick costs the whole task, while a label-free rule picks again for"
    " every group of images, and on small, well-separated tasks an expert's confidence on its own"
    " classes finds the right expert almost every time."
)


def headline_setting(method: str, settings: set[str]) -> str:
    if "data" in settings:
        return "data"
    return HEADLINE.get(method, "cil")


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


def aggregate_curves(curves: pd.DataFrame) -> pd.DataFrame:
    """Per (experiment, point, setting, metric, task): mean, std, the lowest seed's value and the
    number of seeds."""
    keys = ["experiment", "point", "setting", "metric", "after_task"]
    grouped = curves.groupby(keys, sort=True)["value"]
    return grouped.agg(mean="mean", std="std", low="min", seeds="count").reset_index()


def fmt(mean: float, std: float, decimals: int) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "—"
    if std is None or (isinstance(std, float) and math.isnan(std)):
        return f"{mean:.{decimals}f}"
    return f"{mean:.{decimals}f} ± {std:.{decimals}f}"


def markdown_table(frame: pd.DataFrame) -> str:
    def cell(value) -> str:
        return str(value).replace("|", "\\|")

    header = "| " + " | ".join(map(cell, frame.columns)) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body])


def _count(n: int, unit: str) -> str:
    """'1 task', '5 tasks'."""
    return f"{n} {unit if n != 1 else unit[:-1]}"


def _row(d: dict, decimals: int, extra: list[str]) -> dict:
    row = {
        "experiment": d["experiment"],
        "point": d["point"],
        "method": d["method"],
        "protocol": d["protocol"],
        "dataset": d["dataset"],
        "setting": d["setting"],
        "tasks": d["num_tasks"],
        "seeds": d["seeds"],
        "ACC %": fmt(d["acc_mean"], d["acc_std"], decimals),
    }
    if d["setting"] != "data":
        row["BWT %"] = fmt(d["bwt_mean"], d["bwt_std"], decimals)
        row["forgetting %"] = fmt(d["forgetting_mean"], d["forgetting_std"], decimals)
        row["LA %"] = fmt(d["learning_acc_mean"], d["learning_acc_std"], decimals)
    for key in extra:
        if f"{key}_mean" in d and not pd.isna(d[f"{key}_mean"]):
            row[key] = fmt(d[f"{key}_mean"], d[f"{key}_std"], decimals)
    return row


def _per_task(curves: pd.DataFrame, row: dict, decimals: int) -> dict[str, str]:
    """The PER_TASK curves of one headline row, one column per task (tasks counted from 1)."""
    out = {}
    for metric, prefix in PER_TASK.items():
        mine = curves[
            (curves["experiment"] == row["experiment"])
            & (curves["point"] == row["point"])
            & (curves["setting"] == row["setting"])
            & (curves["metric"] == metric)
        ]
        for c in mine.sort_values("after_task").itertuples(index=False):
            out[f"{prefix} {c.after_task + 1}"] = fmt(c.mean, c.std, decimals)
    return out


def short_of_the_floor(curves: pd.DataFrame, rows: list[dict], decimals: int) -> list[str]:
    """A warning line per step whose sparsity stage, in any seed, switched off less of its selected
    channels than the method's `silenced_floor`: that stage trained on without reaching the target
    its next step's re-initialisation assumes (a mean over seeds could hide one such seed)."""
    lines = []
    for row in rows:
        mine = curves[(curves["experiment"] == row["experiment"]) & (curves["point"] == row["point"])]
        mine = mine[mine["setting"] == row["setting"]].set_index(["metric", "after_task"])
        if "silenced_pct" not in mine.index or "silenced_floor_pct" not in mine.index:
            continue
        silenced, floor = mine.loc["silenced_pct"], mine.loc["silenced_floor_pct"]["mean"]
        for step, s in silenced.iterrows():
            if s["low"] < floor.get(step, float("nan")):
                lines.append(
                    f"> **WARNING** {row['experiment']} / {row['point']}, step {step + 1}: the sparsity stage switched"
                    f" off {s['low']:.{decimals}f} % of its selected channels in its lowest seed (mean"
                    f" {s['mean']:.{decimals}f} % over {int(s['seeds'])}), below `silenced_floor`"
                    f" {floor[step]:.{decimals}f} %: its sparsity term missed its target (raise `s` or the stage's epochs)."
                )
    return [*lines, ""] if lines else []


def summary_markdown(agg: pd.DataFrame, curves: pd.DataFrame, decimals: int) -> str:
    """Headline results first (each method in the setting its paper measures, with its own columns),
    then every setting in full; data-incremental runs get their accuracy after each step."""
    extra = sorted({c[: -len("_mean")] for c in agg.columns if c.endswith("_mean")} - set(METRICS))
    settings_of = agg.groupby(["experiment", "point"])["setting"].agg(set).to_dict()
    headline = [
        _row(r._asdict(), decimals, extra)
        for r in agg.itertuples(index=False)
        if r.setting == headline_setting(r.method, settings_of[(r.experiment, r.point)])
    ]
    sections = [
        "# Results",
        "",
        "Accuracies in %, mean ± std over seeds. ACC: average accuracy after the last task (top-1 after"
        " the last step, data-incremental); BWT: backward transfer; LA: learning accuracy (accuracy on"
        " each task right after learning it).",
        "",
        "## Headline: each method in the setting its paper reports, with its own columns",
        "",
    ]
    for row in headline:
        row.update(_per_task(curves, row, decimals))
    # Runs of different task counts are never mixed in one table: one table per count.
    for method, tasks in sorted({(row["method"], row["tasks"]) for row in headline}):
        mine = [row for row in headline if (row["method"], row["tasks"]) == (method, tasks)]
        rows = pd.DataFrame(mine).dropna(axis=1, how="all")
        unit = "steps" if mine[0]["setting"] == "data" else "tasks"
        diagnostics = [c for c in rows.columns if c.startswith(DIAGNOSTIC)]
        headline_rows = rows.drop(columns=diagnostics).fillna("—")
        sections += [f"### {method}, {_count(tasks, unit)}", "", markdown_table(headline_rows), ""]
        sections += [*short_of_the_floor(curves, mine, decimals)]
        if diagnostics:
            sections += [
                f"#### {method}, {_count(tasks, unit)}: every routing rule",
                "",
                "Each rule's accuracy and its share of test groups sent to the right expert (`route_<rule>_acc`,"
                " `route_<rule>_expert_acc`; `_val_` on validation images); the headline shows the rule in use.",
                "",
                WHY_LABEL_FREE,
                "",
                markdown_table(rows[["experiment", "point", *diagnostics]].fillna("—")),
                "",
            ]
    for (setting, title), tasks in ((s, n) for s in SETTING_TITLES.items() for n in sorted(set(agg["num_tasks"]))):
        part = agg[(agg["setting"] == setting) & (agg["num_tasks"] == tasks)]
        if part.empty:
            continue
        rows = [_row(r._asdict(), decimals, []) for r in part.itertuples(index=False)]
        if setting == "data":
            steps = curves[(curves["setting"] == "data") & (curves["metric"] == "acc")]
            for row in rows:
                mine = steps[(steps["experiment"] == row["experiment"]) & (steps["point"] == row["point"])]
                for s in mine.itertuples(index=False):
                    row[f"after step {s.after_task + 1} %"] = fmt(s.mean, s.std, decimals)
        unit = "steps" if setting == "data" else "tasks"
        sections += [f"## {title}, {_count(tasks, unit)}", "", markdown_table(pd.DataFrame(rows)), ""]
    return "\n".join(sections)
