"""Seed aggregation, tables and the reproduction ledger."""

import pandas as pd

from sparsecl.report.tables import aggregate, reproduction_markdown, summary_markdown


def metrics_rows():
    rows = []
    for seed, acc in ((0, 60.0), (1, 64.0)):
        for setting, shift in (("til", 0.0), ("cil", -40.0)):
            rows.append(
                {"run_id": f"e/p/seed{seed}", "experiment": "e", "point": "p", "method": "dst", "protocol": "standard",
                 "dataset": "digits", "num_tasks": 5, "seed": seed, "setting": setting, "acc": acc + shift,
                 "bwt": 0.0, "forgetting": 0.0, "learning_acc": 90.0}
            )  # fmt: skip
    return pd.DataFrame(rows)


def test_aggregate_gives_mean_and_sample_std_over_seeds():
    agg = aggregate(metrics_rows()).set_index("setting")
    assert agg.loc["til", "acc_mean"] == 62.0
    assert round(agg.loc["til", "acc_std"], 4) == round(pd.Series([60.0, 64.0]).std(), 4)
    assert agg.loc["cil", "acc_mean"] == 22.0
    assert agg.loc["til", "seeds"] == 2


def test_summary_table_shows_mean_plus_minus_std():
    text = summary_markdown(aggregate(metrics_rows()), decimals=1)
    assert "62.0 ± 2.8" in text and "22.0 ± 2.8" in text


def test_ledger_puts_the_paper_value_beside_ours_with_the_delta():
    reported = {"e": {"p": {"values": {"acc_til": 61.0, "acc_cil": 30.0}, "source": "Table 1"}}}
    text = reproduction_markdown(aggregate(metrics_rows()), reported, decimals=1, tolerance=2.0)
    assert "| e | p | acc_til | 61.0 | 62.0 ± 2.8 | +1.0 | yes | Table 1 |" in text
    assert "| e | p | acc_cil | 30.0 | 22.0 ± 2.8 | -8.0 | no | Table 1 |" in text


def test_ledger_says_not_transcribed_rather_than_inventing_a_value():
    text = reproduction_markdown(aggregate(metrics_rows()), {"e": {"p": {"values": {}, "source": ""}}}, 1, 2.0)
    assert "not transcribed" in text
