"""miniImageNet (100 classes x 600 images) from the user's zip: no public direct URL exists.

Accepted layouts: class folders `<wnid>/<image>` at the zip root (the Kaggle archive
`arjunashok33/miniimagenet`, and what the CL-with-DST code reads) or inside one top folder
(`miniImageNet/<wnid>/<image>`, a re-zipped download). The Kaggle images keep their ImageNet
resolution, so every image is resized: shorter side to S (bilinear, antialiased), central SxS
crop. S = 32 for `mini_imagenet` (the CL-with-DST setting), 84 for `mini_imagenet84` (the
usual few-shot resolution). Per class, a seeded draw puts 100 images in test, the rest in train
(500 of the usual 600). Class ids are the positions of the folder names in sorted order.
"""

from __future__ import annotations

import zlib
from functools import partial
from pathlib import Path

import numpy as np

from ..errors import DataError
from .archives import decode_zip_images, is_image, open_zip, require_files, shorter_side_center_crop, source_record
from .registry import DATASETS, DatasetSpec, ManualFile
from .sources import share_raw_source
from .store import PreparedSplit, write_prepared

MINI_ZIP = ManualFile(
    "miniImageNet.zip",
    "download the miniImageNet archive (Kaggle login required) from https://www.kaggle.com/datasets/arjunashok33/miniimagenet",
)
TEST_PER_CLASS = 100
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def class_folders(names: list[str], archive: Path) -> tuple[str, dict[str, list[str]]]:
    """(layout, {class name: sorted image members}) of a zip with one folder per class."""
    by_class: dict[str, list[str]] = {}
    parents = set()
    for name in filter(is_image, names):
        folders = name.split("/")[:-1]
        if not folders:
            raise DataError(f"{archive}: image {name} is not inside a class folder")
        parents.add("/".join(folders[:-1]))
        by_class.setdefault(folders[-1], []).append(name)
    if not by_class:
        raise DataError(f"{archive}: no .jpg/.jpeg/.png images found")
    if len(parents) != 1 or "/" in next(iter(parents)):
        found = ", ".join(sorted(p or "<root>" for p in parents)[:3])
        raise DataError(
            f"{archive}: expected class folders at the zip root or inside one top folder, found them under {found}"
        )
    parent = parents.pop()
    layout = f"class folders inside {parent}/" if parent else "class folders at the zip root"
    return layout, {c: sorted(m) for c, m in sorted(by_class.items())}


def split_class(members: list[str], class_name: str, seed: int) -> tuple[list[str], list[str]]:
    """(train, test) members of one class: a seeded draw of TEST_PER_CLASS test images.

    The draw depends only on the seed and the class name, never on the other classes.
    """
    if len(members) <= TEST_PER_CLASS:
        raise DataError(
            f"class {class_name}: {len(members)} images; expected more than {TEST_PER_CLASS} ({TEST_PER_CLASS} are held out for test)"
        )
    order = np.random.default_rng([seed, zlib.crc32(class_name.encode())]).permutation(len(members))
    test = set(order[:TEST_PER_CLASS].tolist())
    return [m for i, m in enumerate(members) if i not in test], [m for i, m in enumerate(members) if i in test]


def prepare_mini_imagenet(size: int, raw_dir: Path, out_dir: Path, seed: int, per_class: int | None = None) -> None:
    (archive,) = require_files(raw_dir, [MINI_ZIP.filename])
    with open_zip(archive) as zf:
        layout, by_class = class_folders(zf.namelist(), archive)
        members: dict[str, list[str]] = {"train": [], "test": []}
        labels: dict[str, list[int]] = {"train": [], "test": []}
        for label, (class_name, images) in enumerate(by_class.items()):
            try:
                parts = split_class(images, class_name, seed)
            except DataError as err:
                raise DataError(f"{archive}: {err}") from None
            for which, part in zip(("train", "test"), parts, strict=True):
                members[which] += part
                labels[which] += [label] * len(part)
        to_array = partial(_resize, size)
        splits = [
            PreparedSplit(
                decode_zip_images(zf, archive, members[w], (size, size, 3), to_array, size_hint=size),
                np.asarray(labels[w], dtype=np.int64),
            )
            for w in ("train", "test")
        ]
    print(f"{archive.name}: {layout}, {len(by_class)} classes")
    sources, sha256 = source_record([archive])
    write_prepared(
        out_dir,
        *splits,
        list(by_class),
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        sources=sources,
        extra={
            "source_sha256": sha256,
            "zip_layout": layout,
            "image_policy": f"shorter side resized to {size} (bilinear, antialiased), central {size}x{size} crop",
            "test_per_class": TEST_PER_CLASS,
            "split_seed": seed,
        },
        per_class=per_class,
    )


def _resize(size: int, image, where: str) -> np.ndarray:
    return shorter_side_center_crop(image, size)


for _name, _size in (("mini_imagenet", 32), ("mini_imagenet84", 84)):
    DATASETS.register(_name)(
        DatasetSpec(
            name=_name,
            num_classes=100,
            image_shape=(_size, _size, 3),
            prepare=partial(prepare_mini_imagenet, _size),
            manual=MINI_ZIP,
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
        )
    )
share_raw_source("mini_imagenet84", "mini_imagenet")
