"""Tiny-ImageNet (200 classes, 64x64) from the official tiny-imagenet-200.zip.

Train: `train/<wnid>/images/*.JPEG` (500 per class). Test: the official validation set (50 per
class), labelled by `val/val_annotations.txt`; the official test set has no labels. Class ids
are the positions of the wnids in sorted order, whatever order the zip or wnids.txt lists.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import DataError
from .archives import decode_zip_images, is_image, open_zip, read_zip_member, require_files, source_record
from .registry import DATASETS, DatasetSpec, RemoteFile
from .store import PreparedSplit, write_prepared

TINY = RemoteFile(
    "tiny-imagenet-200.zip",
    "http://cs231n.stanford.edu/tiny-imagenet-200.zip",
    md5="90528d7ca1a48142e341f4ef8d21d0de",
    size=248100043,
)
SIZE = 64
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def prepare_tiny_imagenet(raw_dir: Path, out_dir: Path, seed: int, per_class: int | None = None) -> None:
    (archive,) = require_files(raw_dir, [TINY.filename])
    with open_zip(archive) as zf:
        names = zf.namelist()
        root = _root(names, archive)

        def text(member: str) -> list[str]:
            return read_zip_member(zf, root + member, archive).decode("utf-8").splitlines()

        wnids = sorted({line.strip() for line in text("wnids.txt") if line.strip()})
        label_of = {w: i for i, w in enumerate(wnids)}
        train = sorted((label_of.get(n.split("/")[-3], -1), n) for n in names if _is_train_image(n, root))
        unknown = [n for label, n in train if label < 0]
        if unknown:
            raise DataError(f"{archive}: {unknown[0]} belongs to no class of wnids.txt")
        val = sorted(_val_annotations(text("val/val_annotations.txt"), label_of, archive).items())
        missing = sorted({root + "val/images/" + f for f, _ in val} - set(names))
        if missing:
            raise DataError(f"{archive}: val_annotations.txt lists {missing[0]}, which the zip lacks")
        in_train, in_val = {label for label, _ in train}, {label for _, label in val}
        for label, wnid in enumerate(wnids):  # a class without images would make an empty task
            if label not in in_train:
                raise DataError(f"{archive}: class {wnid} of wnids.txt has no images in {root}train/{wnid}/images/")
            if label not in in_val:
                raise DataError(f"{archive}: class {wnid} of wnids.txt has no images in val/val_annotations.txt")

        def split(members: list[str], labels: list[int]) -> PreparedSplit:
            images = decode_zip_images(zf, archive, members, (SIZE, SIZE, 3), _as_array)
            return PreparedSplit(images, np.asarray(labels, dtype=np.int64))

        train_split = split([n for _, n in train], [label for label, _ in train])
        test_split = split([root + "val/images/" + f for f, _ in val], [label for _, label in val])
        descriptions = _descriptions(text("words.txt"), wnids) if root + "words.txt" in names else {}
    sources, sha256 = source_record([archive])
    write_prepared(
        out_dir,
        train_split,
        test_split,
        wnids,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        sources=sources,
        extra={"source_sha256": sha256, "test_split": "official validation set", "class_descriptions": descriptions},
        per_class=per_class,
    )


def _root(names: list[str], archive: Path) -> str:
    """The folder holding wnids.txt (`tiny-imagenet-200/` in the official zip)."""
    roots = sorted((n[: -len("wnids.txt")] for n in names if n.rsplit("/", 1)[-1] == "wnids.txt"), key=len)
    if not roots:
        raise DataError(f"{archive}: no wnids.txt; expected the tiny-imagenet-200 layout")
    return roots[0]


def _is_train_image(name: str, root: str) -> bool:
    parts = name[len(root) :].split("/") if name.startswith(root) else []
    return len(parts) == 4 and parts[0] == "train" and parts[2] == "images" and is_image(name)


def _val_annotations(lines: list[str], label_of: dict[str, int], archive: Path) -> dict[str, int]:
    """val_annotations.txt: `<file>\\t<wnid>\\t<bbox...>` per line -> {file: class id}."""
    out = {}
    for number, line in enumerate(lines, 1):
        fields = line.split("\t")
        if not line.strip():
            continue
        if len(fields) < 2:
            raise DataError(
                f"{archive}: val_annotations.txt line {number}: expected '<file>\\t<wnid>...', got {line!r}"
            )
        if fields[1] not in label_of:
            raise DataError(
                f"{archive}: val_annotations.txt line {number}: wnid {fields[1]!r} (of {fields[0]}) is not in wnids.txt"
            )
        out[fields[0]] = label_of[fields[1]]
    return out


def _descriptions(lines: list[str], wnids: list[str]) -> dict[str, str]:
    """words.txt maps every ImageNet wnid to its synonyms; keep ours."""
    wanted = set(wnids)
    pairs = (line.split("\t", 1) for line in lines if "\t" in line)
    return {w: d.strip() for w, d in pairs if w in wanted}


def _as_array(image, where: str) -> np.ndarray:
    return np.asarray(image, dtype=np.uint8)


DATASETS.register("tiny_imagenet")(
    DatasetSpec(
        name="tiny_imagenet",
        num_classes=200,
        image_shape=(SIZE, SIZE, 3),
        prepare=prepare_tiny_imagenet,
        files=(TINY,),
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
    )
)
