"""Tiny-ImageNet (downloaded zip) and miniImageNet (user-supplied zip, two layouts, two sizes)."""

from __future__ import annotations

import zipfile
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from sparsecl.data import get_dataset, load_meta, load_split
from sparsecl.data.archives import shorter_side_center_crop
from sparsecl.data.synth import identity_of, write_mini_imagenet, write_tiny_imagenet
from sparsecl.errors import DataError

from .fixtures.http_server import file_server
from .fixtures.pipeline import assert_prepared, serve_fetch_prepare

WNIDS = ["n09999999", "n01443537", "n04067472"]  # listed unsorted on purpose


@pytest.fixture
def server():
    with file_server() as state:
        yield state


def test_tiny_imagenet_train_and_official_val_with_sorted_wnids(server, tmp_path):
    expected = write_tiny_imagenet(tmp_path / "tiny.zip", WNIDS)
    out = serve_fetch_prepare(
        server, "tiny_imagenet", {"tiny-imagenet-200.zip": (tmp_path / "tiny.zip").read_bytes()}, tmp_path
    )
    assert_prepared(out, expected)
    meta = load_meta(out)
    assert meta["class_names"] == sorted(WNIDS)
    assert meta["class_descriptions"]["n01443537"] == "thing n01443537"
    gray = load_split(out, "train").images[2 * 3]  # first image of n09999999, the last sorted class
    assert np.array_equal(gray[..., 0], gray[..., 1]) and np.array_equal(gray[..., 1], gray[..., 2])


def test_images_of_a_class_missing_from_wnids_txt_are_a_clear_error(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    write_tiny_imagenet(tmp_path / "full.zip", WNIDS)
    with zipfile.ZipFile(tmp_path / "full.zip") as src, zipfile.ZipFile(raw / "tiny-imagenet-200.zip", "w") as dst:
        for name in src.namelist():  # the same zip, with one class missing from wnids.txt
            data = src.read(name)
            dst.writestr(name, "\n".join(WNIDS[:2]) if name.endswith("wnids.txt") else data)
    with pytest.raises(DataError, match="belongs to no class of wnids.txt"):
        get_dataset("tiny_imagenet").prepare(raw, tmp_path / "out", 0)


def test_truncated_zip_is_a_clear_error(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    path = raw / "tiny-imagenet-200.zip"
    write_tiny_imagenet(path, WNIDS)
    path.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(DataError, match="corrupt or truncated archive"):
        get_dataset("tiny_imagenet").prepare(raw, tmp_path / "out", 0)


MINI = ["n01532829", "n01558993", "n01704323"]
PER_CLASS = [102, 101, 103]


def prepare_mini(tmp_path, dataset="mini_imagenet", seed=0, nested_in=None):
    raw = tmp_path / "raw"
    raw.mkdir(exist_ok=True)
    write_mini_imagenet(raw / "miniImageNet.zip", MINI, PER_CLASS, nested_in=nested_in)
    out = tmp_path / f"{dataset}-{seed}-{nested_in}"
    get_dataset(dataset).prepare(raw, out, seed)
    return out


def identities(out, split):
    prepared = load_split(out, split)
    found = [identity_of(image) for image in prepared.images]
    assert [c for c, _ in found] == prepared.labels.tolist()  # each image carries its own class
    return found


@pytest.mark.parametrize("nested_in", [None, "miniImageNet"])
def test_mini_imagenet_both_layouts_give_100_test_images_per_class(tmp_path, nested_in):
    out = prepare_mini(tmp_path, nested_in=nested_in)
    train, test = identities(out, "train"), identities(out, "test")
    assert Counter(c for c, _ in test) == {0: 100, 1: 100, 2: 100}
    assert Counter(c for c, _ in train) == {0: 2, 1: 1, 2: 3}
    assert set(train).isdisjoint(test)
    assert set(train) | set(test) == {(c, i) for c, n in enumerate(PER_CLASS) for i in range(n)}
    meta = load_meta(out)
    assert meta["class_names"] == MINI and meta["image_shape"] == [32, 32, 3]
    assert ("inside miniImageNet/" if nested_in else "at the zip root") in meta["zip_layout"]


def test_mini_imagenet_split_is_seeded_and_same_across_layouts(tmp_path):
    root = identities(prepare_mini(tmp_path, seed=3), "train")
    nested = identities(prepare_mini(tmp_path, seed=3, nested_in="top"), "train")
    other_seed = identities(prepare_mini(tmp_path, seed=4), "train")
    assert root == nested
    assert root != other_seed


def test_mini_imagenet84_has_84x84_images_from_the_same_zip(tmp_path):
    out = prepare_mini(tmp_path, dataset="mini_imagenet84")
    assert load_split(out, "test").images.shape == (300, 84, 84, 3)
    assert identities(out, "train") == identities(prepare_mini(tmp_path), "train")


def test_a_class_with_100_images_or_fewer_is_a_clear_error(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    write_mini_imagenet(raw / "miniImageNet.zip", MINI[:1], [100])
    with pytest.raises(DataError, match="class n01532829: 100 images; expected more than 100"):
        get_dataset("mini_imagenet").prepare(raw, tmp_path / "out", 0)


def test_images_outside_one_folder_level_are_refused(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    with zipfile.ZipFile(raw / "miniImageNet.zip", "w") as zf:
        zf.writestr("train/n01/a.jpg", b"x")
        zf.writestr("test/n01/b.jpg", b"x")
    with pytest.raises(DataError, match="expected class folders at the zip root or inside one top folder"):
        get_dataset("mini_imagenet").prepare(raw, tmp_path / "out", 0)


def test_resize_policy_is_shorter_side_then_central_crop():
    stripes = np.zeros((32, 64, 3), np.uint8)  # H=32, W=64: black | white (16..47) | black
    stripes[:, 16:48] = 255
    np.testing.assert_array_equal(shorter_side_center_crop(Image.fromarray(stripes), 32), np.full((32, 32, 3), 255))
    large = Image.fromarray(stripes).resize((256, 128), Image.NEAREST)
    crop = shorter_side_center_crop(large, 32)
    assert crop.shape == (32, 32, 3)
    assert crop[:, 2:-2].min() == 255  # the central square, away from the blended edges
