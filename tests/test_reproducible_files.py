"""Two runs of the same config and seed write byte-identical weights and masks files, and parquet
files whose tables and provenance agree except where they time the run."""

from __future__ import annotations

import pandas as pd
import pytest

from sparsecl import io

from .stage_helpers import evaluate_task, make_run, train_task

DST = {"density": 0.2, "init": "ERK", "growth": "momentum", "update_frequency": 3}


def twice(tmp_path, method: str, method_args: dict, train: dict):
    config, data, scenario = make_run(tmp_path, method, num_tasks=2, method_args=method_args, train=train)
    runs = (tmp_path / "first", tmp_path / "second")
    for out in runs:
        for task in range(2):
            train_task(config, data, scenario, task, out)
            evaluate_task(config, data, scenario, task, out)
    return runs


@pytest.mark.parametrize(
    "method, method_args, train",
    [("finetune", {}, {"epochs": 2}), ("dst", DST, {"epochs": 2, "optimizer": "adam", "lr": 0.003})],
    ids=["finetune", "dst"],
)
def test_the_same_config_and_seed_write_the_same_files(tmp_path, method, method_args, train):
    first, second = twice(tmp_path, method, method_args, train)
    for task in range(2):
        a, b = first / f"task{task}", second / f"task{task}"
        for name in ("model.pt", "masks.pt"):
            assert io.sha256_file(a / name) == io.sha256_file(b / name), f"task{task}/{name} differs"
        tables = sorted(p.name for p in a.glob("*.parquet"))
        assert tables == sorted(p.name for p in b.glob("*.parquet")) and "eval.parquet" in tables
        for name in tables:
            pd.testing.assert_frame_equal(pd.read_parquet(a / name), pd.read_parquet(b / name))
            prov_a, prov_b = io.read_parquet_provenance(a / name), io.read_parquet_provenance(b / name)
            assert "wall_time_s" in prov_a
            assert {k: v for k, v in prov_a.items() if k not in io.TIMING_FIELDS} == {
                k: v for k, v in prov_b.items() if k not in io.TIMING_FIELDS
            }
