"""The reproduction ledger: every reference value beside our result, with a verdict.

Each `reported` entry of the config (planned by `experiments.plan_ledger`) becomes rows:
  * a value (`table`, `figure`, `code`, `reference`) is one row against our final metric; a curve
    is one row per task against our per-task curve;
  * a claim (or a demo check, a claim written for a demo config) is one row: `left op right` on
    the seed means, a bound on `left`, or a spread (some group's best and worst differ by more
    than their noise).
Verdicts: `pass` / `fail`; `within noise` for a claim whose two mean ± std intervals overlap;
`not run` when our side of the comparison is missing from this config's results; `reference`
for rows shown but not targeted; `no published value` for an experiment without entries.
Tolerances: `table` |delta| <= tolerance, `figure` |delta| <= uncertainty + tolerance, `code`
equal to the printed precision.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from ..experiments import CLAIM_KINDS
from .tables import fmt

VERDICTS = ("pass", "fail", "within noise", "not run")
# Datasets far smaller than any paper's (8x8 digits): a gap a paper reports need not show on them.
TOY_DATA = frozenset({"digits"})


@dataclass(frozen=True)
class Ours:
    mean: float
    std: float
    seeds: int

    @property
    def low(self) -> float:
        return self.mean - _zero(self.std)

    @property
    def high(self) -> float:
        return self.mean + _zero(self.std)

    def text(self, decimals: int) -> str:
        return f"{fmt(self.mean, self.std, decimals)} (n={self.seeds})"


def _zero(value: float) -> float:
    return 0.0 if value is None or math.isnan(value) else value


class Results:
    """Lookup of our mean ± std by (experiment, point, metric key) from the aggregated tables."""

    def __init__(self, agg: pd.DataFrame, curves: pd.DataFrame) -> None:
        self.agg = agg.set_index(["experiment", "point", "setting"]).sort_index()
        self.curves = curves.set_index(["experiment", "point", "setting", "metric"]).sort_index()

    def datasets(self, experiment: str) -> set[str]:
        try:
            return set(self.agg.loc[experiment]["dataset"])
        except KeyError:
            return set()

    def protocol(self, experiment: str, point: str) -> str:
        try:
            return str(self.agg.loc[(experiment, point)]["protocol"].iloc[0])
        except KeyError:
            return "—"

    def final(self, ref: str, key: str) -> Ours | None:
        experiment, _, point = ref.partition("/")
        metric, _, setting = key.rpartition("_")
        try:
            row = self.agg.loc[(experiment, point, setting)]
        except KeyError:
            return None
        if f"{metric}_mean" not in row or pd.isna(row[f"{metric}_mean"]):
            return None
        return Ours(float(row[f"{metric}_mean"]), float(row[f"{metric}_std"]), int(row["seeds"]))

    def curve(self, experiment: str, point: str, key: str) -> pd.DataFrame | None:
        metric, _, setting = key.rpartition("_")
        try:
            return self.curves.loc[(experiment, point, setting, metric)].set_index("after_task")
        except KeyError:
            return None


def ledger_rows(entries: list[dict], results: Results, tolerance: float, decimals: int) -> list[dict]:
    rows = []
    for entry in entries:
        if entry["kind"] in CLAIM_KINDS:
            rows.append(_claim_row(entry, results, decimals))
        elif "curve" in entry:
            table = results.curve(entry["experiment"], entry["point"], entry["metric"])
            for t, paper in enumerate(entry["curve"]):
                ours = None
                if table is not None and t in table.index:
                    ours = Ours(float(table.loc[t, "mean"]), float(table.loc[t, "std"]), int(table.loc[t, "seeds"]))
                rows.append(_value_row(entry, paper, ours, results, tolerance, decimals, task=t))
        else:
            ours = results.final(f"{entry['experiment']}/{entry['point']}", entry["metric"])
            rows.append(_value_row(entry, entry["value"], ours, results, tolerance, decimals))
    return rows


def _base(entry: dict, results: Results, what: str, metric: str) -> dict:
    return {
        "paper": entry["paper"] or "—",
        "experiment/point": what,
        "metric": metric,
        "protocol": results.protocol(*what.partition("/")[::2]) if "/" in what else "—",
        "kind": entry["kind"],
        "source": entry["source"],
        "toy data": bool(results.datasets(entry["experiment"]) & TOY_DATA),
    }


def _value_row(
    entry: dict, paper: float, ours: Ours | None, results: Results, tolerance: float, decimals: int, task=None
) -> dict:
    metric = entry["metric"] if task is None else f"{entry['metric']} after task {task + 1}"
    row = _base(entry, results, f"{entry['experiment']}/{entry['point']}", metric)
    kind, uncertainty = entry["kind"], entry.get("uncertainty", 0.0)
    places = entry.get("decimals", 2) if kind == "code" else decimals
    row["paper value"] = f"{paper:.{places}f}" + (f" ± {uncertainty:g}" if kind == "figure" else "")
    row["ours"] = ours.text(places) if ours else "—"
    row["delta"] = f"{ours.mean - paper:+.{places}f}" if ours else "—"
    if kind == "reference":
        row["verdict"] = "reference"
    elif ours is None:
        row["verdict"] = "not run"
    elif kind == "code":
        row["verdict"] = "pass" if abs(ours.mean - paper) <= 0.5 * 10 ** (-places) + 1e-9 else "fail"
    else:
        allowed = tolerance + (uncertainty if kind == "figure" else 0.0)
        row["verdict"] = "pass" if abs(ours.mean - paper) <= allowed + 1e-9 else "fail"
    return row


def _claim_row(entry: dict, results: Results, decimals: int) -> dict:
    metric = entry["metric"]
    if "spread" in entry:
        return _spread_row(entry, results, decimals)
    left = results.final(entry["left"], metric)
    row = _base(entry, results, entry["left"], metric)
    if "right" in entry:
        right = results.final(entry["right"], metric)
        row["paper value"] = f"{entry['claim']}: {entry['left']} {entry['op']} {entry['right']}"
        row["ours"] = f"{left.text(decimals) if left else '—'} vs {right.text(decimals) if right else '—'}"
        row["delta"] = f"{left.mean - right.mean:+.{decimals}f}" if left and right else "—"
        if left is None or right is None:
            row["verdict"] = "not run"
        elif left.low <= right.high and right.low <= left.high:
            row["verdict"] = "within noise"
        else:
            holds = left.mean >= right.mean if entry["op"] == ">=" else left.mean <= right.mean
            row["verdict"] = "pass" if holds else "fail"
        return row
    bounds = [f">= {entry['min']:g}" if "min" in entry else "", f"<= {entry['max']:g}" if "max" in entry else ""]
    row["paper value"] = f"{entry['claim']}: {' and '.join(b for b in bounds if b)}"
    row["ours"] = left.text(decimals) if left else "—"
    row["delta"] = "—"
    if left is None:
        row["verdict"] = "not run"
    else:
        inside = entry.get("min", -math.inf) <= left.mean <= entry.get("max", math.inf)
        row["verdict"] = "pass" if inside else "fail"
    return row


def _spread_row(entry: dict, results: Results, decimals: int) -> dict:
    """Pass when some group's best and worst mean ± std intervals are disjoint."""
    row = _base(entry, results, f"{len(entry['spread'])} groups of {entry['experiment']}", entry["metric"])
    widest, complete = None, True
    for group in entry["spread"]:
        found = [(ref, results.final(ref, entry["metric"])) for ref in group]
        if any(ours is None for _, ours in found):
            complete = False
            continue
        best = max(found, key=lambda r: r[1].mean)
        worst = min(found, key=lambda r: r[1].mean)
        gap = best[1].low - worst[1].high
        if widest is None or gap > widest[0]:
            widest = (gap, best, worst)
    row["paper value"] = f"{entry['claim']}: best and worst differ beyond seed noise in some group"
    if widest is None:
        row.update(ours="—", delta="—", verdict="not run")
        return row
    gap, best, worst = widest
    row["ours"] = f"best {best[0]} {best[1].text(decimals)}, worst {worst[0]} {worst[1].text(decimals)}"
    row["delta"] = f"{best[1].mean - worst[1].mean:+.{decimals}f}"
    row["verdict"] = "pass" if gap > 0 else ("within noise" if complete else "not run")
    return row


def no_value_rows(agg: pd.DataFrame, entries: list[dict], papers_of: dict[str, str]) -> list[dict]:
    """One row per experiment that no entry speaks about."""
    covered = {e["experiment"] for e in entries}
    covered |= {ref.partition("/")[0] for e in entries for ref in (e.get("left"), e.get("right")) if ref}
    covered |= {ref.partition("/")[0] for e in entries for group in e.get("spread", []) for ref in group}
    rows = []
    for experiment, group in agg.groupby("experiment", sort=True):
        if experiment in covered:
            continue
        points = group["point"].nunique()
        rows.append(
            {
                "paper": papers_of.get(experiment) or "—",
                "experiment/point": f"{experiment} ({points} point{'s' if points > 1 else ''})",
                "metric": "—",
                "protocol": ", ".join(sorted(group["protocol"].unique())),
                "kind": "—",
                "source": "—",
                "paper value": "—",
                "ours": "see the summary",
                "delta": "—",
                "verdict": "no published value",
            }
        )
    return rows


EVIDENCE = {
    "table": "reproduced",
    "figure": "reproduced",
    "claim": "claim holds",
    "code": "sanity check",
    "demo": "demo check",
}


def _count(n: int, noun: str) -> str:
    """'1 check', '2 checks': the noun in the number it counts."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}es" if noun.endswith("ch") else f"{n} {noun}s"


def verdict_lines(rows: list[dict], notes: dict[str, dict]) -> list[str]:
    """One line per paper: its checks by verdict, then by strength of evidence, so that a passing
    sanity check (a value the code gives by construction) never reads as a reproduced number."""
    lines = []
    for paper in sorted({r["paper"] for r in rows}):
        mine = [r for r in rows if r["paper"] == paper]
        counts = {v: sum(r["verdict"] == v for r in mine) for v in VERDICTS}
        checked = [r for r in mine if r["verdict"] in VERDICTS]
        published = [r for r in checked if EVIDENCE.get(r["kind"]) == "reproduced"]
        reproduced = sum(r["verdict"] == "pass" for r in published)
        claims = [r for r in checked if r["kind"] == "claim"]
        sanity = [r for r in checked if r["kind"] == "code"]
        demos = [r for r in checked if r["kind"] == "demo"]
        evidence = [
            f"{_count(len(published), 'published number')} compared ({reproduced} reproduced)",
            f"{sum(r['verdict'] == 'pass' for r in claims)} of {_count(len(claims), 'claim')} holding",
            f"{_count(len(sanity), 'sanity check')} (true by construction)",
        ]
        if demos:
            passing = sum(r["verdict"] == "pass" for r in demos)
            evidence.append(
                f"{passing} of {_count(len(demos), 'demo check')} holding (the demo's own, not the paper's)"
            )
        extras = []
        if toy := sum(r.get("toy data", False) and r["verdict"] in ("fail", "within noise") for r in mine):
            extras.append(
                f"{toy} of the failing or within-noise rows {'is' if toy == 1 else 'are'} on toy data"
                f" ({', '.join(sorted(TOY_DATA))}), where a paper's gap need not show"
            )
        if references := sum(r["verdict"] == "reference" for r in mine):
            extras.append(_count(references, "reference row"))
        if unpublished := sum(r["verdict"] == "no published value" for r in mine):
            extras.append(f"{_count(unpublished, 'experiment')} without a published value")
        name = "Reference points and experiments of no paper" if paper == "—" else paper
        line = f"- **{name}**: {_count(len(checked), 'check')}: " + ", ".join(f"{counts[v]} {v}" for v in VERDICTS)
        line += "; evidence: " + ", ".join(evidence)
        lines.append(line + (f"; {', '.join(extras)}" if extras else "") + ".")
        if note := notes.get(paper, {}).get("note"):
            lines.append(f"  {note}")
    return lines
