"""The unlabeled pool of Lifelong Tickets: the published pickle, or a recorded substitute."""

from __future__ import annotations

import pickle
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from sparsecl.data import get_dataset
from sparsecl.data.synth import write_cifar10, write_tickets_pool
from sparsecl.data.unlabeled import pool_dir, prepare_pool, resolve_pool
from sparsecl.errors import ConfigError, DataError
from sparsecl.io import read_json
from sparsecl.methods.tickets_unlabeled import load_pool, pool_images


def test_published_pickle_becomes_the_pool_with_no_deviation(tmp_path):
    images = write_tickets_pool(tmp_path / "pool.pkl")
    prepare_pool("tiny_images", tmp_path / "pool.pkl", tmp_path / "out")
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "pool.npy"), images)
    meta = read_json(tmp_path / "out" / "meta.json")
    assert meta["pool"] == "tiny_images" and meta["deviation"] is None and meta["num_images"] == len(images)
    assert meta["sources"]["pool.pkl"].startswith("md5:")


def test_cifar_substitute_is_the_training_images_and_records_the_deviation(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    expected = write_cifar10(raw / "cifar-10-python.tar.gz")
    get_dataset("cifar10").prepare(raw, tmp_path / "cifar10", 0)
    prepare_pool("cifar10", tmp_path / "cifar10", tmp_path / "out")
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "pool.npy"), expected.train_images)
    meta = read_json(tmp_path / "out" / "meta.json")
    assert "substitute" in meta["deviation"] and meta["sources"]["cifar-10-python.tar.gz"].startswith("md5:")


def test_a_capped_pool_keeps_its_first_images_and_records_the_cap(tmp_path):
    images = write_tickets_pool(tmp_path / "pool.pkl")
    prepare_pool("tiny_images", tmp_path / "pool.pkl", tmp_path / "out", limit=3)
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "pool.npy"), images[:3])
    meta = read_json(tmp_path / "out" / "meta.json")
    assert meta["num_images"] == 3 and meta["limit"] == 3 and meta["deviation"] is None


def test_no_pool_is_an_empty_pool_with_its_deviation(tmp_path):
    prepare_pool("none", None, tmp_path / "out")
    assert np.load(tmp_path / "out" / "pool.npy").shape == (0, 32, 32, 3)
    assert read_json(tmp_path / "out" / "meta.json")["deviation"] == "no unlabeled pool (ablation)"


def test_an_empty_pool_for_digits_has_the_digits_image_shape_and_a_tickets_run_reads_it(tmp_path):
    digits = get_dataset("digits")
    digits.prepare(tmp_path / "raw", tmp_path / "digits", 0)
    out = tmp_path / pool_dir("none", "digits", "")
    prepare_pool("none", tmp_path / "digits", out)
    pool = np.load(out / "pool.npy")
    assert pool.shape == (0, 8, 8, 1) and pool.dtype == np.uint8
    assert read_json(out / "meta.json")["image_shape"] == [8, 8, 1]
    assert load_pool(out / "pool.npy", (1, 8, 8)).shape == (0, 8, 8, 1)


def test_a_pickle_of_the_wrong_shape_is_a_clear_error(tmp_path):
    (tmp_path / "pool.pkl").write_bytes(pickle.dumps({"data": np.zeros((3, 28, 28), np.uint8)}))
    with pytest.raises(DataError, match=r"expected a dict with 'data' uint8 \[N, 32, 32, 3\], got uint8 \[3, 28, 28\]"):
        prepare_pool("tiny_images", tmp_path / "pool.pkl", tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "choice, dataset, pool",
    [
        ("other_cifar", "cifar10", "cifar100"),
        ("other_cifar", "cifar100", "cifar10"),
        ("tiny_images", "cifar10", "tiny_images"),
        ("none", "cifar100", "none"),
    ],
)
def test_pool_choice_resolves_per_dataset(choice, dataset, pool):
    assert resolve_pool(choice, dataset) == pool


def test_a_pool_made_of_the_runs_own_training_set_is_refused():
    with pytest.raises(ConfigError, match="data.unlabeled_pool: cifar10 would reuse the cifar10 training images"):
        resolve_pool("cifar10", "cifar10")


def test_the_whole_pool_is_read_into_a_writable_tensor_without_a_warning(tmp_path):
    images = write_tickets_pool(tmp_path / "pool.pkl")
    prepare_pool("tiny_images", tmp_path / "pool.pkl", tmp_path / "out")
    data = SimpleNamespace(images=torch.zeros((1, 3, 32, 32), dtype=torch.uint8))
    inputs = {"pool": str(tmp_path / "out" / "pool.npy"), "pool_meta": str(tmp_path / "out" / "meta.json")}
    ctx = SimpleNamespace(data=data, inputs=inputs, device=torch.device("cpu"), stage="retrieve")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch warns on a read-only (memory-mapped) array
        pool = pool_images(ctx, "pool")
    np.testing.assert_array_equal(pool.images.permute(0, 2, 3, 1).numpy(), images)
    pool.images[0] = 0  # its own memory, not the file's
    assert np.load(tmp_path / "out" / "pool.npy")[0].any()
