"""The prepared-data format shared by every dataset.

resources/data/<dataset>/{train,test}/images.npy   uint8 [N, H, W, C]
resources/data/<dataset>/{train,test}/labels.npy   int64 [N], class ids 0..C-1
resources/data/<dataset>/meta.json                 class names, mean/std, source checksums
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..io import provenance, read_json, write_json, write_npy

SPLITS = ("train", "test")


@dataclass(frozen=True)
class PreparedSplit:
    images: np.ndarray  # uint8 [N, H, W, C]
    labels: np.ndarray  # int64 [N]


def write_prepared(
    out_dir: str | Path,
    train: PreparedSplit,
    test: PreparedSplit,
    class_names: list[str],
    *,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
    sources: dict[str, str] | None = None,
    extra: dict | None = None,
) -> None:
    """Validate and write both splits plus meta.json; meta.json is written last (it marks completion)."""
    out_dir = Path(out_dir)
    for name, split in (("train", train), ("test", test)):
        _check_split(name, split, len(class_names))
    if mean is None or std is None:
        pixels = train.images.reshape(-1, train.images.shape[-1]).astype(np.float64) / 255.0
        mean = tuple(float(v) for v in pixels.mean(0))
        std = tuple(float(v) for v in pixels.std(0))
    for name, split in (("train", train), ("test", test)):
        write_npy(out_dir / name / "images.npy", np.ascontiguousarray(split.images, dtype=np.uint8))
        write_npy(out_dir / name / "labels.npy", split.labels.astype(np.int64))
    meta = {
        "class_names": list(class_names),
        "num_classes": len(class_names),
        "image_shape": list(train.images.shape[1:]),
        "num_train": int(len(train.labels)),
        "num_test": int(len(test.labels)),
        "mean": list(mean),
        "std": list(std),
        "sources": sources or {},
        **(extra or {}),
        "provenance": provenance(),
    }
    write_json(out_dir / "meta.json", meta)


def _check_split(name: str, split: PreparedSplit, num_classes: int) -> None:
    if split.images.dtype != np.uint8 or split.images.ndim != 4:
        raise DataError(f"{name} images: expected uint8 [N,H,W,C], got {split.images.dtype} {split.images.shape}")
    if split.labels.shape != (len(split.images),):
        raise DataError(f"{name} labels: expected shape ({len(split.images)},), got {split.labels.shape}")
    if len(split.labels) and (split.labels.min() < 0 or split.labels.max() >= num_classes):
        raise DataError(
            f"{name} labels: expected ids in [0, {num_classes}), got [{split.labels.min()}, {split.labels.max()}]"
        )


def load_meta(data_dir: str | Path) -> dict:
    return read_json(Path(data_dir) / "meta.json")


def load_split(data_dir: str | Path, split: str, mmap: bool = True) -> PreparedSplit:
    """Load one split (memory-mapped by default); a missing or malformed file is a DataError."""
    root = Path(data_dir) / split
    try:
        images = np.load(root / "images.npy", mmap_mode="r" if mmap else None)
        labels = np.load(root / "labels.npy")
    except FileNotFoundError as err:
        raise DataError(f"{err.filename}: prepared data not found (run the prepare rule)") from None
    except ValueError as err:
        raise DataError(f"{root}: not a valid .npy file ({err})") from None
    if images.dtype != np.uint8 or images.ndim != 4 or len(images) != len(labels):
        raise DataError(f"{root}: expected uint8 images [N,H,W,C] and N labels, got {images.dtype} {images.shape}")
    return PreparedSplit(images=images, labels=labels.astype(np.int64))
