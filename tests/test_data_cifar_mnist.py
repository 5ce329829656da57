"""CIFAR-10/100 tarballs and MNIST/Fashion-MNIST idx files: fetched, verified, prepared exactly."""

from __future__ import annotations

import dataclasses
import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from sparsecl.data import get_dataset, load_meta
from sparsecl.data.mnist import FASHION_NAMES
from sparsecl.data.synth import write_cifar10, write_cifar100, write_mnist
from sparsecl.errors import DataError
from sparsecl.scenarios import ScenarioSpec, load_scenario, make_scenario

from .fixtures.http_server import file_server
from .fixtures.pipeline import assert_prepared, serve_fetch_prepare


@pytest.fixture
def server():
    with file_server() as state:
        yield state


@pytest.mark.parametrize("bytes_keys", [False, True])
def test_cifar10_prepares_the_generated_pixels_and_labels(server, tmp_path, bytes_keys):
    expected = write_cifar10(tmp_path / "c10.tar.gz", bytes_keys=bytes_keys)
    out = serve_fetch_prepare(
        server, "cifar10", {"cifar-10-python.tar.gz": (tmp_path / "c10.tar.gz").read_bytes()}, tmp_path
    )
    assert_prepared(out, expected)
    meta = load_meta(out)
    assert meta["mean"] == [0.4914, 0.4822, 0.4465] and meta["std"] == [0.2023, 0.1994, 0.2010]
    assert meta["sources"]["cifar-10-python.tar.gz"].startswith("md5:")


def test_cifar100_prepares_fine_labels_and_records_the_source_checksum(server, tmp_path):
    archive = tmp_path / "c100.tar.gz"
    expected = write_cifar100(archive)
    out = serve_fetch_prepare(server, "cifar100", {"cifar-100-python.tar.gz": archive.read_bytes()}, tmp_path)
    assert_prepared(out, expected)
    meta = load_meta(out)
    assert meta["num_classes"] == 100 and meta["image_shape"] == [32, 32, 3]
    assert len(meta["source_sha256"]["cifar-100-python.tar.gz"]) == 64


@pytest.mark.parametrize("dataset", ["mnist", "fashion_mnist"])
def test_mnist_like_idx_files_prepare_to_28x28x1(server, tmp_path, dataset):
    expected = write_mnist(tmp_path / "idx")
    files = {p.name: p.read_bytes() for p in sorted((tmp_path / "idx").iterdir())}
    out = serve_fetch_prepare(server, dataset, files, tmp_path)
    if dataset == "fashion_mnist":
        expected.class_names = FASHION_NAMES
    assert_prepared(out, expected)
    assert load_meta(out)["mean"] == [0.1307]


def test_a_cifar100_file_with_a_subset_of_classes_serves_the_scenarios_within_it(tmp_path):
    archive = tmp_path / "raw" / "cifar-100-python.tar.gz"
    archive.parent.mkdir()
    write_cifar100(archive, train_per_class=4, test_per_class=2, classes=20)
    get_dataset("cifar100").prepare(archive.parent, tmp_path / "data", 0)
    meta = load_meta(tmp_path / "data")
    assert meta["num_classes"] == 100
    assert meta["classes_present"] == {"train": list(range(20)), "test": list(range(20))}

    def scenario(num_tasks: int, **spec) -> Path:
        spec = ScenarioSpec(num_tasks=num_tasks, classes_per_task=10, validation_fraction=0.0, **spec)
        out = tmp_path / f"{spec.id}.json"
        make_scenario("cifar100", tmp_path / "data", json.dumps(dataclasses.asdict(spec)), out)
        return out

    assert load_scenario(scenario(2)).class_order == list(range(20))
    assert load_scenario(scenario(2, class_order=list(range(19, -1, -1)))).class_order == list(range(19, -1, -1))
    with pytest.raises(DataError) as err:
        scenario(3)  # classes 20-29 have no images
    assert str(err.value).startswith(f"{tmp_path / 'data' / 'meta.json'}: class 'fine_020' (id 20) has no images")
    assert "\n" not in str(err.value) and "20 of 100 classes present" in str(err.value)


def test_truncated_cifar_archive_is_a_clear_error(tmp_path):
    archive = tmp_path / "raw" / "cifar-100-python.tar.gz"
    archive.parent.mkdir()
    write_cifar100(archive)
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(DataError, match="corrupt or truncated archive") as err:
        get_dataset("cifar100").prepare(archive.parent, tmp_path / "out", 0)
    assert str(archive) in str(err.value)
    assert not (tmp_path / "out" / "meta.json").exists()


def test_cifar_pickle_with_code_is_refused(tmp_path):
    import pickle
    import tarfile

    archive = tmp_path / "raw" / "cifar-10-python.tar.gz"
    archive.parent.mkdir()
    write_cifar10(archive)
    evil = tmp_path / "evil"
    evil.write_bytes(pickle.dumps({"data": print}))
    with tarfile.open(archive, "w:gz") as tar:  # same names, one member replaced
        tar.add(evil, "cifar-10-batches-py/batches.meta")
        for n in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]:
            tar.add(evil, f"cifar-10-batches-py/{n}")
    with pytest.raises(DataError, match="refusing to load builtins.print"):
        get_dataset("cifar10").prepare(archive.parent, tmp_path / "out", 0)


def test_idx_file_with_wrong_magic_or_size_is_a_clear_error(tmp_path):
    write_mnist(tmp_path)
    labels = tmp_path / "t10k-labels-idx1-ubyte.gz"
    raw = gzip.decompress(labels.read_bytes())
    labels.write_bytes(gzip.compress(np.uint32(2051).byteswap().tobytes() + raw[4:]))
    with pytest.raises(DataError, match="expected idx magic number 2049, got 2051"):
        get_dataset("mnist").prepare(tmp_path, tmp_path / "out", 0)
    labels.write_bytes(gzip.compress(raw[:-3]))
    with pytest.raises(DataError, match="expected 10 values"):
        get_dataset("mnist").prepare(tmp_path, tmp_path / "out", 0)
    labels.write_bytes(labels.read_bytes()[:10])
    with pytest.raises(DataError, match="corrupt or truncated"):
        get_dataset("mnist").prepare(tmp_path, tmp_path / "out", 0)


def test_missing_raw_file_names_the_path(tmp_path):
    with pytest.raises(DataError, match=f"{tmp_path}/cifar-10-python.tar.gz: raw file not found"):
        get_dataset("cifar10").prepare(tmp_path, tmp_path / "out", 0)
