"""Atomic outputs and provenance."""

import pandas as pd
import pytest

from sparsecl.io import atomic_path, provenance, read_parquet_provenance, write_json, write_parquet


def test_an_interrupted_write_leaves_no_output_file(tmp_path):
    target = tmp_path / "out" / "model.pt"
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half of a checkpoint")
            raise KeyboardInterrupt  # the job is killed mid-write
    assert not target.exists()
    assert list(target.parent.iterdir()) == []  # no temporary file left behind either


def test_an_interrupted_rewrite_keeps_the_previous_complete_file(tmp_path):
    target = tmp_path / "metrics.json"
    write_json(target, {"acc": 1.0})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("{trunc")
            raise RuntimeError("disk full")
    assert target.read_text().strip().startswith("{")
    assert '"acc": 1.0' in target.read_text()


def test_provenance_names_config_seed_versions_and_device(tmp_path):
    record = provenance({"lr": 0.1}, seed=3, device="cpu", started=0.0)
    assert record["seed"] == 3
    assert len(record["config_hash"]) == 12
    assert record["device"].startswith("cpu")
    for key in ("sparsecl_version", "torch_version", "python_version", "wall_time_s"):
        assert key in record
    assert provenance({"lr": 0.1})["config_hash"] == provenance({"lr": 0.1})["config_hash"]
    assert provenance({"lr": 0.2})["config_hash"] != record["config_hash"]


def test_parquet_files_carry_their_provenance(tmp_path):
    path = tmp_path / "eval.parquet"
    write_parquet(path, pd.DataFrame({"acc": [50.0]}), {"seed": 7})
    assert read_parquet_provenance(path) == {"seed": 7}
    assert pd.read_parquet(path)["acc"].tolist() == [50.0]
