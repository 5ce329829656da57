"""`sparsecl data synth`: format-exact synthetic sources through the real fetch -> verify -> prepare path."""

from __future__ import annotations

import numpy as np
import pytest

from sparsecl.data import get_dataset, load_meta, load_split
from sparsecl.data.sources import fetch_raw, raw_files, raw_source
from sparsecl.data.synth import CHECKSUMS, SOURCES, SynthSize, synth
from sparsecl.data.unlabeled import prepare_pool
from sparsecl.errors import DataError
from sparsecl.rehearsal import PER_CLASS

DATASETS = ["cifar10", "cifar100", "mnist", "fashion_mnist", "tiny_imagenet", "mini_imagenet", "mini_imagenet84"]


def test_every_raw_source_of_a_paper_dataset_has_a_generator_and_a_recorded_checksum():
    for dataset in DATASETS:
        assert raw_source(dataset) in SOURCES
    assert set(CHECKSUMS) == set(SOURCES)
    for source in SOURCES:
        assert set(CHECKSUMS[source]) == {f.filename for f in raw_files(source)}


@pytest.mark.parametrize("dataset", DATASETS)
def test_a_synthetic_source_prepares_to_the_documented_arrays_through_the_verified_fetch(tmp_path, dataset):
    source = raw_source(dataset)
    digests = synth(source, tmp_path / "synth")
    assert digests == CHECKSUMS[source]  # deterministic: the checksum the rehearsal verifies
    several = len(digests) > 1
    path = tmp_path / "synth" if several else tmp_path / "synth" / next(iter(digests))
    overrides = {source: {"path": str(path), "checksums": digests}}
    for name in digests:
        fetch_raw(source, name, tmp_path / "raw" / name, overrides, log=lambda _: None)
    spec = get_dataset(dataset)
    spec.prepare(tmp_path / "raw", tmp_path / "data", 0)
    meta = load_meta(tmp_path / "data")
    assert len(meta["class_names"]) == spec.num_classes
    for split in ("train", "test"):
        prepared = load_split(tmp_path / "data", split)
        assert prepared.images.dtype == np.uint8 and prepared.images.shape[1:] == spec.image_shape
        assert sorted(set(prepared.labels.tolist())) == list(range(spec.num_classes))
    train = load_split(tmp_path / "data", "train")
    assert len(train.labels) == SynthSize().train_per_class * spec.num_classes


def test_a_synthetic_file_that_differs_from_its_recorded_checksum_is_refused(tmp_path):
    synth("cifar10", tmp_path / "synth", SynthSize(train_per_class=3))
    overrides = {
        "cifar10": {"path": str(tmp_path / "synth" / "cifar-10-python.tar.gz"), "checksums": CHECKSUMS["cifar10"]}
    }
    with pytest.raises(DataError, match="cifar-10-python.tar.gz"):
        fetch_raw("cifar10", "cifar-10-python.tar.gz", tmp_path / "raw.tar.gz", overrides, log=lambda _: None)
    assert not (tmp_path / "raw.tar.gz").exists()


def test_the_synthetic_tiny_images_pool_prepares_to_unlabeled_32x32_images(tmp_path):
    (name,) = synth("tiny_images", tmp_path / "synth")
    prepare_pool("tiny_images", tmp_path / "synth" / name, tmp_path / "pool")
    pool = np.load(tmp_path / "pool" / "pool.npy")
    assert pool.dtype == np.uint8 and pool.shape[1:] == (32, 32, 3) and len(pool) > 0


def test_an_unknown_source_is_one_clear_error(tmp_path):
    with pytest.raises(DataError, match="no synthetic data for 'svhn'; expected one of: cifar10"):
        synth("svhn", tmp_path)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("dataset", ["mini_imagenet", "cifar100"])
def test_a_rehearsals_cap_keeps_every_class_in_each_split_with_at_most_its_images_per_class(tmp_path, dataset):
    source = raw_source(dataset)
    digests = synth(source, tmp_path / "raw")
    spec = get_dataset(dataset)
    spec.prepare(tmp_path / "raw", tmp_path / "full", 0)
    spec.prepare(tmp_path / "raw", tmp_path / "capped", 0, PER_CLASS)
    assert load_meta(tmp_path / "capped")["per_class_cap"] == PER_CLASS and len(digests) == 1
    for split in ("train", "test"):
        full, capped = load_split(tmp_path / "full", split), load_split(tmp_path / "capped", split)
        counts = np.bincount(capped.labels, minlength=spec.num_classes)
        assert counts.tolist() == np.minimum(np.bincount(full.labels), PER_CLASS).tolist()
        for c in range(spec.num_classes):  # each class's first images, in the split's order
            np.testing.assert_array_equal(capped.images[capped.labels == c], full.images[full.labels == c][:PER_CLASS])
    if dataset == "mini_imagenet":  # its prepare holds out 100 test images per class; the cap keeps PER_CLASS
        assert len(load_split(tmp_path / "full", "test").labels) == 100 * spec.num_classes
