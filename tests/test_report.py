"""Seed aggregation, the summary tables and the reproduction ledger, from hand-made metrics."""

import copy
import warnings

import numpy as np
import pandas as pd
import pytest
import yaml

from sparsecl.errors import ConfigError
from sparsecl.experiments import load_schema, plan_ledger, plan_runs, validate
from sparsecl.report import plots
from sparsecl.report.build import papers_of
from sparsecl.report.html import markdown_page
from sparsecl.report.ledger import Results, ledger_rows, no_value_rows, verdict_lines
from sparsecl.report.tables import aggregate, aggregate_curves, summary_markdown

from .workflow_helpers import ROOT

IDS = {"method": "dst", "protocol": "standard", "dataset": "digits", "num_tasks": 3}


def metrics_rows(experiment="e", point="p", accs=(60.0, 64.0), bwts=(0.0, 0.0)):
    rows = []
    for seed, (acc, bwt) in enumerate(zip(accs, bwts)):
        for setting, shift in (("til", 0.0), ("cil", -40.0)):
            rows.append(
                {"run_id": f"{experiment}/{point}/seed{seed}", "experiment": experiment, "point": point, **IDS,
                 "seed": seed, "setting": setting, "acc": acc + shift, "bwt": bwt, "forgetting": -bwt,
                 "learning_acc": 90.0}
            )  # fmt: skip
    return pd.DataFrame(rows)


def curve_rows(experiment="e", point="p", per_seed=((50.0, 55.0, 60.0), (52.0, 57.0, 64.0))):
    rows = []
    for seed, values in enumerate(per_seed):
        for t, value in enumerate(values):
            for setting in ("til", "cil"):
                rows.append(
                    {"run_id": f"{experiment}/{point}/seed{seed}", "experiment": experiment, "point": point, **IDS,
                     "seed": seed, "setting": setting, "after_task": t, "metric": "acc", "value": value}
                )  # fmt: skip
    return pd.DataFrame(rows)


def results_of(*pairs):
    metrics = pd.concat([m for m, _ in pairs], ignore_index=True)
    curves = pd.concat([c for _, c in pairs], ignore_index=True)
    return aggregate(metrics), Results(aggregate(metrics), aggregate_curves(curves))


def entry(**kw):
    return {"paper": "Paper", "experiment": "e", "point": "p", "source": "Table 1", **kw}


def verdicts(rows):
    return [r["verdict"] for r in rows]


def test_aggregate_gives_mean_and_sample_std_over_seeds():
    agg = aggregate(metrics_rows()).set_index("setting")
    assert agg.loc["til", "acc_mean"] == 62.0
    assert round(agg.loc["til", "acc_std"], 4) == round(pd.Series([60.0, 64.0]).std(), 4)
    assert agg.loc["cil", "acc_mean"] == 22.0
    assert agg.loc["til", "seeds"] == 2


def test_summary_shows_the_headline_setting_first_with_mean_plus_minus_std():
    agg, results = results_of((metrics_rows(), curve_rows()))
    text = summary_markdown(agg, results.curves.reset_index(), decimals=1)
    headline = text.split("## Headline")[1].split("## Task-incremental")[0]
    assert "| e | p | dst | standard | digits | til |" in headline  # dst's paper measures task-IL
    assert "62.0 ± 2.8" in headline and "22.0 ± 2.8" not in headline
    assert "22.0 ± 2.8" in text.split("## Class-incremental")[1]
    header = next(line for line in headline.splitlines() if line.startswith("| experiment"))
    assert "| ACC % | BWT % | forgetting % | LA % |" in header  # every accuracy column carries its unit


def test_runs_of_different_task_counts_sit_in_tables_of_their_own():
    three = metrics_rows("three")
    five = metrics_rows("five", accs=(70.0, 74.0)).assign(num_tasks=5)
    agg, results = results_of((three, curve_rows("three")), (five, curve_rows("five")))
    text = summary_markdown(agg, results.curves.reset_index(), decimals=1)
    assert "### dst, 3 tasks" in text and "### dst, 5 tasks" in text
    cil_three = text.split("## Class-incremental (all seen classes compete), 3 tasks")[1].split("##")[0]
    cil_five = text.split("## Class-incremental (all seen classes compete), 5 tasks")[1].split("##")[0]
    assert "| three |" in cil_three and "| five |" not in cil_three
    assert "| five |" in cil_five and "| three |" not in cil_five


def test_routing_diagnostics_leave_the_headline_for_a_table_of_their_own():
    metrics = metrics_rows().assign(
        method="focil", labelfree_expert_acc=90.0, route_max_acc=55.0, route_max_expert_acc=88.0
    )
    agg, results = results_of((metrics, curve_rows()))
    text = summary_markdown(agg, results.curves.reset_index(), decimals=1)
    headline, diagnostics = text.split("## Headline")[1].split("## Task-incremental")[0].split("#### focil")
    assert "labelfree_expert_acc" in headline and "route_" not in headline.split("|", 1)[1]
    header = next(line for line in diagnostics.splitlines() if line.startswith("| experiment"))
    assert header == "| experiment | point | route_max_acc | route_max_expert_acc |"
    assert "Why a label-free rule can beat the labelled one here: " in diagnostics
    plain = summary_markdown(aggregate(metrics_rows()), results.curves.reset_index(), decimals=1)
    assert "Why a label-free rule" not in plain


def test_the_headline_shows_a_tickets_remaining_weights_after_every_task_as_a_percentage():
    metrics = metrics_rows().assign(method="tickets_bu", remaining_weights=40.96)
    curves = curve_rows().assign(method="tickets_bu")
    sizes = curves.assign(metric="remaining_weights", value=curves["after_task"].map({0: 80.0, 1: 64.0, 2: 40.96}))
    agg = aggregate(metrics)
    text = summary_markdown(agg, aggregate_curves(pd.concat([curves, sizes])), decimals=1)
    headline = text.split("## Headline")[1].split("## Task-incremental")[0]
    header = next(line for line in headline.splitlines() if line.startswith("| experiment"))
    assert header.endswith(
        "| remaining_weights | remaining % after task 1 | remaining % after task 2 | remaining % after task 3 |"
    )
    assert "| 41.0 ± 0.0 | 80.0 ± 0.0 | 64.0 ± 0.0 | 41.0 ± 0.0 |" in headline  # cil, the tickets' headline setting
    assert "remaining %" not in text.split("## Task-incremental")[1]


def test_a_sparsity_stage_short_of_its_floor_is_a_warning_line_under_its_headline_row():
    metrics = metrics_rows().assign(method="multistep")
    metrics = metrics[metrics["setting"] == "til"].assign(setting="data")
    curves = curve_rows().assign(method="multistep")
    curves = curves[curves["setting"] == "til"].assign(setting="data")
    step = curves["after_task"]
    # seed 0 reaches the floor at step 1 and misses it at step 2; seed 1 misses it at step 1 only
    values = {(0, 0): 60.0, (0, 1): 10.0, (1, 0): 20.0, (1, 1): 80.0}
    silenced = curves[step < 2].assign(metric="silenced_pct")
    silenced["value"] = [values[(seed, t)] for seed, t in zip(silenced["seed"], silenced["after_task"])]
    floor = silenced.assign(metric="silenced_floor_pct", value=25.0)
    text = summary_markdown(aggregate(metrics), aggregate_curves(pd.concat([curves, silenced, floor])), decimals=1)
    warnings = [line for line in text.splitlines() if "WARNING" in line]
    assert warnings == [
        "> **WARNING** e / p, step 1: the sparsity stage switched off 20.0 % of its selected channels in its"
        " lowest seed (mean 40.0 % over 2), below `silenced_floor` 25.0 %: its sparsity term missed its target"
        " (raise `s` or the stage's epochs).",
        "> **WARNING** e / p, step 2: the sparsity stage switched off 10.0 % of its selected channels in its"
        " lowest seed (mean 45.0 % over 2), below `silenced_floor` 25.0 %: its sparsity term missed its target"
        " (raise `s` or the stage's epochs).",
    ]
    header = next(line for line in text.splitlines() if line.startswith("| experiment"))
    assert "| S silenced % after step 1 | S silenced % after step 2 |" in header


def test_a_table_value_passes_within_tolerance_and_fails_outside_it():
    _, results = results_of((metrics_rows(), curve_rows()))
    rows = ledger_rows(
        [entry(kind="table", metric="acc_til", value=61.0), entry(kind="table", metric="acc_cil", value=30.0)],
        results,
        tolerance=2.0,
        decimals=1,
    )
    assert verdicts(rows) == ["pass", "fail"]
    assert rows[0]["ours"] == "62.0 ± 2.8 (n=2)" and rows[0]["delta"] == "+1.0"
    assert rows[1]["delta"] == "-8.0"


def test_a_figure_value_is_allowed_its_reading_uncertainty_on_top_of_the_tolerance():
    _, results = results_of((metrics_rows(), curve_rows()))
    near = entry(kind="figure", metric="acc_til", value=58.5, uncertainty=1.5)  # delta 3.5 = 2 + 1.5
    far = entry(kind="figure", metric="acc_til", value=58.4, uncertainty=1.5)
    assert verdicts(ledger_rows([near, far], results, tolerance=2.0, decimals=1)) == ["pass", "fail"]


def test_a_code_value_is_compared_to_its_printed_precision():
    _, results = results_of((metrics_rows(accs=(64.001, 64.003)), curve_rows()))
    same = entry(kind="code", metric="acc_til", value=64.00, decimals=2)
    other = entry(kind="code", metric="acc_til", value=64.01, decimals=2)
    assert verdicts(ledger_rows([same, other], results, tolerance=2.0, decimals=1)) == ["pass", "fail"]


def test_a_curve_is_compared_task_by_task_and_reference_rows_are_not_targets():
    _, results = results_of((metrics_rows(), curve_rows()))
    curve = entry(kind="figure", metric="acc_cil", curve=[51.0, 50.0, 62.0], uncertainty=0.5)
    reference = entry(kind="reference", metric="acc_cil", curve=[0.0, 0.0, 0.0])
    rows = ledger_rows([curve, reference], results, tolerance=2.0, decimals=1)
    assert [r["metric"] for r in rows[:3]] == [f"acc_cil after task {t}" for t in (1, 2, 3)]
    assert verdicts(rows) == ["pass", "fail", "pass"] + ["reference"] * 3


def test_a_claim_across_experiments_passes_fails_or_is_within_noise():
    pairs = (
        (metrics_rows("dst", accs=(90.0, 92.0), bwts=(0.0, 0.0)), curve_rows("dst")),
        (metrics_rows("ft", accs=(60.0, 61.0), bwts=(-30.0, -34.0)), curve_rows("ft")),
        (metrics_rows("close", accs=(89.0, 93.0), bwts=(-1.0, 1.0)), curve_rows("close")),
    )
    _, results = results_of(*pairs)

    def claim(left, op, right):
        return entry(kind="claim", claim="c", metric="acc_til", left=left, op=op, right=right)

    rows = ledger_rows(
        [claim("dst/p", ">=", "ft/p"), claim("dst/p", "<=", "ft/p"), claim("dst/p", ">=", "close/p")],
        results,
        tolerance=2.0,
        decimals=1,
    )
    assert verdicts(rows) == ["pass", "fail", "within noise"]
    assert rows[0]["ours"] == "91.0 ± 1.4 (n=2) vs 60.5 ± 0.7 (n=2)"


def test_a_claim_whose_side_was_not_run_says_so_and_a_bound_claim_checks_the_mean():
    _, results = results_of((metrics_rows(bwts=(-0.5, 0.3)), curve_rows()))
    missing = entry(kind="claim", claim="c", metric="acc_til", left="e/p", op=">=", right="baseline/default")
    bound = entry(kind="claim", claim="|BWT| <= 1", metric="bwt_cil", left="e/p", min=-1, max=1)
    outside = entry(kind="claim", claim="keeps 3-8%", metric="acc_til", left="e/p", min=3, max=8)
    assert verdicts(ledger_rows([missing, bound, outside], results, 2.0, 1)) == ["not run", "pass", "fail"]


def test_a_spread_claim_needs_some_group_to_differ_beyond_noise():
    pairs = [(metrics_rows(e, accs=a), curve_rows(e)) for e, a in (("a", (80, 81)), ("b", (70, 71)), ("c", (79, 82)))]
    _, results = results_of(*pairs)
    apart = entry(kind="claim", claim="growth matters", metric="acc_til", spread=[["a/p", "c/p"], ["a/p", "b/p"]])
    close = entry(kind="claim", claim="growth matters", metric="acc_til", spread=[["a/p", "c/p"]])
    assert verdicts(ledger_rows([apart, close], results, 2.0, 1)) == ["pass", "within noise"]


def test_an_experiment_no_entry_speaks_of_has_no_published_value_and_the_verdict_line_counts():
    agg, results = results_of((metrics_rows("e"), curve_rows("e")), (metrics_rows("other"), curve_rows("other")))
    entries = [entry(kind="table", metric="acc_til", value=61.0), entry(kind="table", metric="acc_cil", value=30.0)]
    rows = ledger_rows(entries, results, 2.0, 1) + no_value_rows(agg, entries, {})
    assert rows[-1]["experiment/point"] == "other (1 point)" and rows[-1]["verdict"] == "no published value"
    lines = verdict_lines(rows, {"Paper": {"note": "tables are not public"}})
    assert lines[0].startswith("- **Paper**: 2 checks: 1 pass, 1 fail, 0 within noise, 0 not run; evidence: ")
    assert "2 published numbers compared (1 reproduced)" in lines[0]
    assert "0 of 0 claims holding" in lines[0] and "0 sanity checks" in lines[0]
    assert "  tables are not public" in lines
    assert any(line.endswith("; 1 experiment without a published value.") for line in lines)


def test_the_verdict_line_keeps_sanity_checks_and_claims_apart_from_reproduced_numbers():
    _, results = results_of((metrics_rows("e", accs=(80, 81)), curve_rows("e")))
    by_construction = entry(kind="code", metric="acc_til", value=80.5, decimals=1)
    claim = entry(kind="claim", claim="keeps 3-90%", metric="acc_til", left="e/p", min=3, max=90)
    (line,) = verdict_lines(ledger_rows([by_construction, claim], results, 2.0, 1), {})
    assert line.startswith("- **Paper**: 2 checks: 2 pass,")
    assert "0 published numbers compared (0 reproduced)" in line
    assert "1 of 1 claim holding" in line and "1 sanity check (true by construction)" in line


def test_a_demo_check_is_checked_like_a_claim_but_counted_apart_from_the_papers_claims():
    _, results = results_of(
        (metrics_rows("e", accs=(80, 81)), curve_rows("e")), (metrics_rows("b", accs=(20, 21)), curve_rows("b"))
    )
    demo = entry(kind="demo", claim="e beats b", metric="acc_til", left="e/p", op=">=", right="b/p")
    claim = entry(kind="claim", claim="b beats e", metric="acc_til", left="b/p", op=">=", right="e/p")
    rows = ledger_rows([demo, claim], results, 2.0, 1)
    assert [(r["kind"], r["verdict"]) for r in rows] == [("demo", "pass"), ("claim", "fail")]
    (line,) = verdict_lines(rows, {})
    assert "0 of 1 claim holding" in line
    assert "1 of 1 demo check holding (the demo's own, not the paper's)" in line


def test_the_demos_dst_premise_is_a_demo_check(demo_config):
    schema = load_schema(ROOT / "workflow/schemas/config.schema.yaml")
    checked = validate(demo_config, schema)
    entries = plan_ledger(checked, plan_runs(checked, schema))
    dst = [(e["kind"], e["claim"]) for e in entries if e["experiment"] == "dst"]
    assert dst == [("demo", "dst forgets less than finetune in task-IL")]


def test_a_failing_row_on_toy_data_says_so_in_its_papers_verdict_line():
    toy = metrics_rows("e")
    real = metrics_rows("r").assign(dataset="cifar100")
    _, results = results_of((toy, curve_rows("e")), (real, curve_rows("r")))
    on_toy = entry(kind="table", metric="acc_til", value=90.0)
    on_real = entry(kind="table", metric="acc_til", value=90.0, experiment="r")
    (line,) = verdict_lines(ledger_rows([on_toy, on_real], results, 2.0, 1), {})
    assert "2 fail" in line
    assert "1 of the failing or within-noise rows is on toy data (digits)" in line


def test_ledger_plots_label_their_axes_and_draw_the_papers_values_above_ours(monkeypatch, tmp_path):
    _, results = results_of((metrics_rows("e"), curve_rows("e")))
    drawn = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: drawn.append(fig))
    curve = entry(kind="figure", metric="acc_cil", curve=[50.0, 55.0, 60.0], uncertainty=1.0)
    plots.ledger_curves("Paper", [curve], results, tmp_path / "x.png")
    (ax,) = drawn[0].axes
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("after task", "acc_cil (%)")
    paper = next(line for line in ax.get_lines() if line.get_label().startswith("paper"))
    ours = next(c for c in ax.containers if c.get_label().startswith("ours"))
    assert paper.get_zorder() > ours.lines[0].get_zorder() and paper.get_marker() != ours.lines[0].get_marker()


def test_matrix_heatmaps_number_tasks_and_data_steps_from_one(monkeypatch, tmp_path):
    drawn = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: drawn.append(fig))
    plots.matrix_heatmaps({"til": np.eye(3) * 90, "cil": np.eye(3) * 50}, "t", tmp_path / "x.png")
    til, cil = drawn[0].axes[:2]
    assert [t.get_text() for t in cil.get_yticklabels()] == ["1", "2", "3"]
    assert [t.get_text() for t in cil.get_xticklabels()] == ["1", "2", "3"]
    assert til.get_ylabel() == "after training task i"


def test_a_data_incremental_matrix_is_one_row_of_steps_not_a_squeezed_column(monkeypatch, tmp_path):
    drawn = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: drawn.append(fig))
    plots.matrix_heatmaps({"data": np.array([[40.0], [50.0], [60.0], [70.0]])}, "t", tmp_path / "x.png")
    data = drawn[0].axes[0]
    width, height = drawn[0].get_size_inches()
    assert width > 2 * height
    assert data.get_xlabel() == "after data step"
    assert [t.get_text() for t in data.get_xticklabels()] == ["1", "2", "3", "4"]
    assert [t.get_text() for t in data.texts] == ["40.0", "50.0", "60.0", "70.0"]


def test_a_comparison_plot_draws_every_experiment_of_a_setting_on_one_axis_with_its_seed_band(monkeypatch, tmp_path):
    drawn = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: drawn.append(fig))
    stats = pd.DataFrame(
        {"experiment": ["a", "a", "b", "b", "b", "b"], "point": ["p", "p", "x", "x", "y", "y"],
         "after_task": [0, 1, 0, 1, 0, 1], "mean": [90.0, 80.0, 70.0, 60.0, 75.0, 65.0], "std": [1.0, 2.0, 0.5, 0.5, 1, 1]}
    )  # fmt: skip
    plots.comparison(stats, "cil", tmp_path / "x.png")
    (ax,) = drawn[0].axes
    assert [line.get_label() for line in ax.get_lines()] == ["a", "b/x", "b/y"]
    assert list(ax.get_lines()[0].get_xdata()) == [1, 2]
    assert len(ax.collections) == 3  # one ± std band per line
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("after task", "average accuracy on seen tasks (%)")
    plots.comparison(stats, "data", tmp_path / "y.png")
    (ax,) = drawn[1].axes
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("after data step", "top-1 on the whole test set (%)")


def test_a_report_page_renders_its_tables_and_shows_raw_html_in_the_text_as_text():
    page = markdown_page("Results", "# Results\n\n- **P**: 1 check\n\n| a | b |\n|---|---|\n| <b>x</b> | 2 |\n")
    assert page.startswith("<!DOCTYPE html>")
    assert "<table>" in page and "<th>a</th>" in page and "<td>2</td>" in page
    assert "<strong>P</strong>" in page
    assert "&lt;b&gt;x&lt;/b&gt;" in page and "<b>x</b>" not in page


def test_a_data_incremental_curve_is_labelled_in_steps_and_whole_test_set_accuracy(monkeypatch, tmp_path):
    drawn = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: drawn.append(fig))
    stats = pd.DataFrame({"point": "p", "setting": "data", "after_task": [0, 1], "mean": [50.0, 60.0], "std": 1.0})
    plots.accuracy_curves(stats, "t", tmp_path / "x.png")
    plots.accuracy_curves(stats.assign(setting="cil"), "t", tmp_path / "y.png")
    (data,), (cil,) = drawn[0].axes, drawn[1].axes
    assert (data.get_xlabel(), data.get_ylabel()) == ("data steps learned", "top-1 on the whole test set (%)")
    assert (cil.get_xlabel(), cil.get_ylabel()) == ("tasks learned", "average accuracy on seen tasks (%)")


def test_an_experiment_without_reference_entries_sits_under_its_methods_paper():
    agg, _ = results_of((metrics_rows("e"), curve_rows("e")), (metrics_rows("other"), curve_rows("other")))
    entries = [entry(kind="table", metric="acc_til", value=61.0)]
    assert papers_of(agg, entries) == {"e": "Paper", "other": "CL-with-DST (CPAL 2024)"}
    (row,) = no_value_rows(agg, entries, papers_of(agg, entries))
    assert row["paper"] == "CL-with-DST (CPAL 2024)" and row["verdict"] == "no published value"


@pytest.fixture(scope="module")
def demo_config():
    return yaml.safe_load((ROOT / "config/config.yaml").read_text())


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"kind": "tabel", "metric": "acc_til", "value": 1, "source": "s"}, "reported.0.kind: 'tabel' is not allowed"),
        (
            {"kind": "claim", "claim": "c", "metric": "acc_til", "op": ">=", "right": "dst/default", "source": "s"},
            "reported.0: 'left' is a required property",
        ),
        (
            {"kind": "table", "metric": "acc_til", "curve": [1, 2], "source": "s"},
            "reported.0.curve: expected 5 values (one per task), got 2",
        ),
        (
            {"kind": "figure", "metric": "acc_til", "value": 1, "source": "s"},
            "reported.0: 'uncertainty' is a required property",
        ),
        (
            {"kind": "table", "metric": "acc_til", "value": 1, "left": "dst/default", "source": "s"},
            "reported.0.left: not allowed here (kind 'table')",
        ),
        (
            {
                "kind": "claim",
                "claim": "c",
                "metric": "acc_til",
                "left": "dst/typo",
                "op": ">=",
                "right": "dst/default",
                "source": "s",
            },
            "reported.0.left: 'typo' is not a grid point of dst",
        ),  # fmt: skip
    ],
)
def test_a_malformed_reported_entry_is_one_config_error_naming_the_key(demo_config, bad, message):
    config = copy.deepcopy(demo_config)
    config["experiments"]["dst"]["reported"] = [bad]
    schema = load_schema(ROOT / "workflow/schemas/config.schema.yaml")
    with pytest.raises(ConfigError) as err:
        checked = validate(config, schema)
        plan_ledger(checked, plan_runs(checked, schema))
    assert f"experiments.dst.{message}" in str(err.value)
    assert "\n" not in str(err.value)


@pytest.fixture
def one_experiment(tmp_path):
    """Two seeds' metrics, curves and accuracy matrices, as `summarize` writes them."""
    metrics, curves = metrics_rows(), curve_rows()
    paths = {"metrics": [], "matrix": [], "curves": []}
    for seed in (0, 1):
        run = tmp_path / f"seed{seed}"
        run.mkdir()
        metrics[metrics["seed"] == seed].to_parquet(run / "metrics.parquet")
        curves[curves["seed"] == seed].to_parquet(run / "curves.parquet")
        matrix = pd.DataFrame({"setting": ["til"] * 3, "after_task": range(3), "task0": [90.0] * 3})
        matrix.to_csv(run / "matrix.csv", index=False)
        for kind, name in (("metrics", "metrics.parquet"), ("matrix", "matrix.csv"), ("curves", "curves.parquet")):
            paths[kind].append(run / name)
    return paths


def report_call(paths, tmp_path, ledger='{"entries": []}'):
    from sparsecl.report.build import build_report

    build_report(paths["metrics"], paths["matrix"], paths["curves"], ledger, tmp_path / "tables", tmp_path / "plots")


def test_a_report_keeps_only_its_own_plots_in_the_plots_folder(one_experiment, tmp_path):
    stale = [tmp_path / "plots/dropped/p/accuracy_matrix.png", tmp_path / "plots/comparison/data.png"]
    for path in stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"\x89PNG from an earlier config")
    report_call(one_experiment, tmp_path)
    plots = sorted(str(p.relative_to(tmp_path / "plots")) for p in (tmp_path / "plots").rglob("*.png"))
    assert plots == ["comparison/cil.png", "comparison/til.png", "e/accuracy_curve.png", "e/p/accuracy_matrix.png"]
    assert not (tmp_path / "plots/dropped").exists()


def test_a_report_of_good_files_writes_every_table(one_experiment, tmp_path):
    report_call(one_experiment, tmp_path)
    assert sorted(p.name for p in (tmp_path / "tables").iterdir()) == sorted(
        [
            "summary.parquet",
            "summary.csv",
            "summary.md",
            "summary.html",
            "reproduction.csv",
            "reproduction.md",
            "reproduction.html",
        ]  # fmt: skip
    )


BAD_REPORT_INPUTS = [
    ("a ledger that is not JSON", "ledger", "{entries: []}", "--ledger: expected the ledger as JSON"),
    ("a ledger that is a list", "ledger", "[1, 2]", "--ledger: expected a JSON object with an 'entries' list"),
    ("a zero-byte metrics file", "metrics", b"", "metrics.parquet: not a readable parquet metrics file"),
    ("a text curves file", "curves", b"after_task,value\n0,1\n", "curves.parquet: not a readable parquet curves file"),
    ("a garbage accuracy matrix", "matrix", b"\x00\x01garbage", "matrix.csv: expected an accuracy matrix with columns"),
]  # fmt: skip


@pytest.mark.parametrize(
    "what, content, message", [c[1:] for c in BAD_REPORT_INPUTS], ids=[c[0] for c in BAD_REPORT_INPUTS]
)
def test_a_report_refuses_a_damaged_input_in_one_line_and_writes_no_table(
    one_experiment, tmp_path, what, content, message
):
    from sparsecl.errors import DataError

    ledger = '{"entries": []}'
    if what == "ledger":
        ledger = content
    else:
        one_experiment[what][-1].write_bytes(content)
    with pytest.raises(DataError) as err:
        report_call(one_experiment, tmp_path, ledger)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "tables").exists() or list((tmp_path / "tables").iterdir()) == []


def test_a_report_whose_plots_fail_leaves_no_summary_behind(one_experiment, tmp_path, monkeypatch):
    from sparsecl.errors import DataError
    from sparsecl.report import build

    def no_space(*args, **kwargs):
        raise DataError("plots/e/p/accuracy_matrix.png: cannot write: no space left on device")

    monkeypatch.setattr(build, "matrix_heatmaps", no_space)
    with pytest.raises(DataError, match="no space left on device"):
        report_call(one_experiment, tmp_path)
    assert list((tmp_path / "tables").iterdir()) == []


def test_a_heatmap_cell_of_a_task_not_trained_yet_stays_empty_without_a_numpy_warning(one_experiment, tmp_path):
    matrix = pd.DataFrame(
        {"setting": ["til"] * 3, "after_task": range(3), "task0": [90.0] * 3, "task1": [np.nan, 80.0, 70.0]}
    )
    for path in one_experiment["matrix"]:
        matrix.to_csv(path, index=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # numpy's "Mean of empty slice" is one
        report_call(one_experiment, tmp_path)
    assert (tmp_path / "plots/e/p/accuracy_matrix.png").stat().st_size > 0
