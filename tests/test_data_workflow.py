"""Done-when: from nothing but the config, the real workflow downloads, verifies, prepares, splits
and trains on CIFAR-100 and Tiny-ImageNet (served by a local mirror), and a missing manual file
stops it with one line that says what to do."""

from __future__ import annotations

import hashlib
import os
import stat

import pytest

from sparsecl.data.synth import write_cifar100, write_tiny_imagenet

from .fixtures.http_server import file_server
from .workflow_helpers import planned_jobs, snakemake, write_config

pytestmark = pytest.mark.slow

RUN = {
    "method": "finetune",
    "backbone": "mlp",
    "backbone_args": {"hidden": [16]},
    "scenario": {"num_tasks": 1, "classes_per_task": 2},
    "train": {"epochs": 1, "batch_size": 4},
}


def mirror(server, name: str, path) -> dict:
    """A data.sources entry: the local URL plus the checksum of the generated file."""
    data = path.read_bytes()
    return {"url": server.add(name, data), "checksums": {name: hashlib.md5(data).hexdigest()}}


def test_pipeline_from_download_to_a_trained_task(tmp_path):
    write_cifar100(tmp_path / "c100.tar.gz", train_per_class=2, test_per_class=1)
    write_tiny_imagenet(tmp_path / "tiny.zip", ["n02", "n01", "n03"], train_per_class=2, val_per_class=1)
    workdir = tmp_path / "work"
    workdir.mkdir()
    targets = [
        "results/runs/c100/default/seed0/task0/model.pt",
        "results/runs/tiny/default/seed0/task0/model.pt",
        "resources/data/unlabeled/cifar100/pool.npy",
    ]
    with file_server() as server:
        write_config(
            workdir,
            {
                "seeds": [0],
                "device": "cpu",
                "data": {
                    "sources": {
                        "cifar100": mirror(server, "cifar-100-python.tar.gz", tmp_path / "c100.tar.gz"),
                        "tiny_imagenet": mirror(server, "tiny-imagenet-200.zip", tmp_path / "tiny.zip"),
                    },
                },
                "experiments": {"c100": {**RUN, "dataset": "cifar100"}, "tiny": {**RUN, "dataset": "tiny_imagenet"}},
            },
        )
        snakemake(workdir, *targets, "--cores", "2")
        assert {path for path, _ in server.requests} == {"/cifar-100-python.tar.gz", "/tiny-imagenet-200.zip"}

    for target in targets:
        assert (workdir / target).stat().st_size > 0
    for raw in ("cifar100/cifar-100-python.tar.gz", "tiny_imagenet/tiny-imagenet-200.zip"):
        mode = (workdir / "resources/raw" / raw).stat().st_mode
        assert not mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH), f"{raw} is not write-protected"
        assert "verified (md5 " in (workdir / "results/logs/download" / f"{raw}.log").read_text()
    assert (workdir / "resources/scenarios/tiny_imagenet/class-t1k2-natural-s0.json").exists()
    assert not list((workdir / "resources/raw").rglob("*.part"))


def test_missing_manual_file_stops_the_workflow_with_one_clear_line(tmp_path):
    write_config(
        tmp_path,
        {"seeds": [0], "device": "cpu", "experiments": {"mini": {**RUN, "dataset": "mini_imagenet"}}},
    )
    result = snakemake(tmp_path, "resources/data/mini_imagenet/meta.json", "--cores", "1", check=False)
    assert result.returncode != 0
    expected = os.path.join(tmp_path, "resources/manual/miniImageNet.zip")
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("sparsecl: error:")]
    assert len(lines) == 1 and expected in lines[0] and "kaggle.com" in lines[0], result.stderr[-3000:]


def test_dag_fetches_each_raw_file_once_and_shares_the_miniimagenet_zip(tmp_path):
    write_config(tmp_path, {"experiments": {"mnist": {**RUN, "dataset": "mnist"}}})
    targets = [
        "resources/data/mini_imagenet/meta.json",
        "resources/data/mini_imagenet84/meta.json",
        "resources/data/mnist/meta.json",
        "resources/data/unlabeled/tiny_images/pool.npy",
    ]
    jobs = planned_jobs(snakemake(tmp_path, "-n", *targets).stdout)
    downloads = sorted((w["dataset"], w["filename"]) for rule, w in jobs if rule == "download")
    assert downloads == [
        ("mini_imagenet", "miniImageNet.zip"),
        ("mnist", "t10k-images-idx3-ubyte.gz"),
        ("mnist", "t10k-labels-idx1-ubyte.gz"),
        ("mnist", "train-images-idx3-ubyte.gz"),
        ("mnist", "train-labels-idx1-ubyte.gz"),
        ("tiny_images", "tiny_images_150k.pkl"),
    ]
    assert sorted(w["dataset"] for rule, w in jobs if rule == "prepare_data") == [
        "mini_imagenet",
        "mini_imagenet84",
        "mnist",
    ]


def test_a_bad_source_override_fails_before_any_job_runs(tmp_path):
    config = {"experiments": {"c": {**RUN, "dataset": "cifar10"}}}
    config["data"] = {"sources": {"cifar10": {"url": "http://a", "checksums": {"cifar10.tgz": "0" * 32}}}}
    write_config(tmp_path, config)
    result = snakemake(tmp_path, "-n", "resources/data/cifar10/meta.json", check=False)
    assert result.returncode != 0
    assert "config error: data.sources.cifar10.checksums.cifar10.tgz: unknown file" in result.stdout + result.stderr
