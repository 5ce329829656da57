"""Killed at any moment, a run leaves nothing half-written and a rerun finishes it as if nothing happened."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from sparsecl.errors import DataError
from sparsecl.io import load_torch, save_torch

from .stage_helpers import kill_in_epoch, make_run, train_task
from .workflow_helpers import ROOT, local_env, snakemake, write_config


def test_a_job_deletes_the_temporaries_a_killed_save_of_any_of_its_outputs_left(tmp_path):
    config, data, scenario = make_run(tmp_path, "finetune", num_tasks=1)
    out = tmp_path / "out"
    resume = out / "resume" / "task0.pt"
    outputs = [
        resume,
        *(out / "task0" / name for name in ("model.pt", "masks.pt", "train_log.parquet", "eval.parquet")),
    ]
    stale = [path.parent / f".{path.name}.k1ll3d.tmp" for path in outputs]
    for path in stale:  # what a kill between a temporary write and its rename leaves
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"\0" * 4096)
    neighbour = resume.parent / ".task1.pt.x.tmp"  # another task's save in progress: not ours to delete
    neighbour.write_bytes(b"")
    train_task(config, data, scenario, 0, out, evaluate=True)
    assert [path for path in stale if path.exists()] == [] and neighbour.exists()
    assert not resume.exists()  # the finished task needs no resume state


def test_an_atomic_save_killed_before_its_rename_leaves_the_previous_file(tmp_path, monkeypatch):
    target = tmp_path / "state.pt"
    save_torch(target, {"epoch": 1})
    monkeypatch.setattr(os, "replace", lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        save_torch(target, {"epoch": 2})
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.pt"]  # no temporary left, the old state intact


def test_a_resume_made_under_another_learning_rate_is_discarded_and_the_task_starts_afresh(
    tmp_path, monkeypatch, capsys
):
    old_config, data, scenario = make_run(tmp_path / "old", num_tasks=1, train={"epochs": 4, "lr": 0.05})
    new_config, _, _ = make_run(tmp_path / "new", num_tasks=1, train={"epochs": 4, "lr": 0.2})
    restore = kill_in_epoch(monkeypatch, epoch=3)
    with pytest.raises(KeyboardInterrupt):
        train_task(old_config, data, scenario, 0, tmp_path / "out")
    restore()
    assert (tmp_path / "out" / "resume" / "task0.pt").exists()  # epochs 1-2 under lr 0.05
    capsys.readouterr()
    task_dir = train_task(new_config, data, scenario, 0, tmp_path / "out")  # the user changed lr and reran
    logged = capsys.readouterr().out
    assert "it was made under another run config; the task starts afresh" in logged
    assert "resumed task 0" not in logged
    fresh = train_task(new_config, data, scenario, 0, tmp_path / "fresh")
    log, expected = (pd.read_parquet(d / "train_log.parquet") for d in (task_dir, fresh))
    assert log["lr"].tolist() == expected["lr"].tolist() == pytest.approx([0.2, 0.2, 0.02, 0.002])
    pd.testing.assert_frame_equal(log, expected)


def test_a_resume_file_without_its_optimiser_state_is_one_line(tmp_path, monkeypatch):
    config, data, scenario = make_run(tmp_path, num_tasks=1, train={"epochs": 4})
    restore = kill_in_epoch(monkeypatch, epoch=3)
    with pytest.raises(KeyboardInterrupt):
        train_task(config, data, scenario, 0, tmp_path / "out")
    restore()
    path = tmp_path / "out" / "resume" / "task0.pt"
    saved = load_torch(path)
    del saved["optimizer"]
    save_torch(path, saved)
    with pytest.raises(
        DataError, match=r"task0.pt: resume file without 'optimizer'; delete it to start the task afresh"
    ):
        train_task(config, data, scenario, 0, tmp_path / "out")
    assert not (tmp_path / "out" / "task0" / "model.pt").exists()


CONFIG = {
    "seeds": [0],
    "experiments": {
        "ft": {
            "method": "finetune",
            "dataset": "digits",
            "backbone_args": {"hidden": [32]},
            "scenario": {"num_tasks": 3, "classes_per_task": 2},
            "train": {"epochs": 4, "batch_size": 16},
        },
    },
}


@pytest.mark.slow
def test_a_killed_snakemake_reruns_to_the_tables_of_an_uninterrupted_run(tmp_path):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    for workdir in (whole, killed):
        workdir.mkdir()
        write_config(workdir, CONFIG)
    snakemake(whole, "all", "--cores", "2")
    cmd = [sys.executable, "-m", "snakemake", "all", "--cores", "2", "--snakefile", str(ROOT / "Snakefile"),
           "--directory", str(killed), "--configfile", str(killed / "config.yaml")]  # fmt: skip
    tree = subprocess.Popen(
        cmd, cwd=killed, env=local_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.time() + 300
    while not (killed / "results/runs/ft/default/seed0/task0/model.pt").exists() and time.time() < deadline:
        time.sleep(0.2)
    os.killpg(tree.pid, signal.SIGKILL)  # Snakemake and every job it started, at once
    tree.wait()
    assert not (killed / "results/tables/summary.csv").exists()
    rerun = snakemake(killed, "all", "--cores", "2", "--rerun-incomplete", check=False)
    if rerun.returncode != 0:  # the kill left the directory locked: the README's `--unlock`, then the same command
        assert "locked" in (rerun.stdout + rerun.stderr).lower()
        snakemake(killed, "--unlock")
        snakemake(killed, "all", "--cores", "2", "--rerun-incomplete")
    for name in ("summary.csv", "reproduction.csv"):
        assert (killed / "results/tables" / name).read_text() == (whole / "results/tables" / name).read_text()
    metrics = [pd.read_parquet(d / "results/runs/ft/default/seed0/metrics.parquet") for d in (whole, killed)]
    pd.testing.assert_frame_equal(*metrics)
    assert not list((killed / "results").rglob(".*.tmp"))
