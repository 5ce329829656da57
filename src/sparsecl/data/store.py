"""The prepared-data format shared by every dataset.

resources/data/<dataset>/{train,test}/images.npy   uint8 [N, H, W, C]
resources/data/<dataset>/{train,test}/labels.npy   int64 [N], class ids 0..C-1
resources/data/<dataset>/meta.json                 class names, the classes with images in each
                                                   split, mean/std, source checksums, and the
                                                   shape, dtype and sha256 of every array

A file may hold a subset of the dataset's classes (a user's smoke set); a scenario that needs a
class without images is refused when it is built (`check_classes_present`).

A stage that loads a split checks it against meta.json first, so an array truncated, converted
or replaced after preparation is a one-line error instead of a silent difference.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..io import all_or_none, provenance, read_json, sha256_file, write_json, write_npy

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
    per_class: int | None = None,
) -> None:
    """Validate and write both splits plus meta.json; meta.json is written last (it marks completion).

    `per_class` keeps each split's first images of every class (a rehearsal's cap), in their order."""
    out_dir = Path(out_dir)
    if per_class is not None:
        train, test = cap_per_class(train, per_class), cap_per_class(test, per_class)
        extra = {**(extra or {}), "per_class_cap": per_class}
    present = {name: _check_split(name, split, list(class_names)) for name, split in (("train", train), ("test", test))}
    if mean is None or std is None:
        pixels = train.images.reshape(-1, train.images.shape[-1]).astype(np.float64) / 255.0
        mean = tuple(float(v) for v in pixels.mean(0))
        std = tuple(float(v) for v in pixels.std(0))
    arrays = {}
    outputs = [out_dir / name / f"{kind}.npy" for name in SPLITS for kind in ("images", "labels")]
    with all_or_none(*outputs, out_dir / "meta.json"):  # a failed write leaves no half-prepared dataset
        for name, split in (("train", train), ("test", test)):
            for kind, array in (
                ("images", np.ascontiguousarray(split.images, dtype=np.uint8)),
                ("labels", split.labels),
            ):
                path = out_dir / name / f"{kind}.npy"
                write_npy(path, array.astype(np.int64) if kind == "labels" else array)
                arrays[f"{name}/{kind}.npy"] = {
                    "shape": list(array.shape),
                    "dtype": "uint8" if kind == "images" else "int64",
                    "sha256": sha256_file(path),
                }
        meta = {
            "class_names": list(class_names),
            "num_classes": len(class_names),
            "classes_present": present,
            "image_shape": list(train.images.shape[1:]),
            "num_train": int(len(train.labels)),
            "num_test": int(len(test.labels)),
            "mean": list(mean),
            "std": list(std),
            "sources": sources or {},
            "arrays": arrays,
            **(extra or {}),
            "provenance": provenance(),
        }
        write_json(out_dir / "meta.json", meta)


def cap_per_class(split: PreparedSplit, per_class: int) -> PreparedSplit:
    """The split's first `per_class` images of each class, in the split's order."""
    if per_class < 1:
        raise DataError(f"per-class cap: expected at least 1 image per class, got {per_class}")
    labels = np.asarray(split.labels)
    rank = np.zeros(len(labels), dtype=np.int64)  # each image's position among its class's images
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        rank[rows] = np.arange(len(rows))
    keep = np.flatnonzero(rank < per_class)
    return PreparedSplit(split.images[keep], labels[keep])


def _check_split(name: str, split: PreparedSplit, class_names: list[str]) -> list[int]:
    """The ids of the classes that have images in the split."""
    if split.images.dtype != np.uint8 or split.images.ndim != 4:
        raise DataError(f"{name} images: expected uint8 [N,H,W,C], got {split.images.dtype} {split.images.shape}")
    _check_labels(f"{name} labels", split.labels, len(split.images), len(class_names))
    present = np.flatnonzero(np.bincount(split.labels, minlength=len(class_names)))
    if len(present) == 0:
        raise DataError(f"{name} split: no images")
    return [int(c) for c in present]


def check_classes_present(data_dir: str | Path, meta: dict, classes: list[int]) -> None:
    """A one-line error naming the first of `classes` that has no images in a split.

    meta.json files written before subsets were accepted held every class, and say nothing."""
    for split, present in meta.get("classes_present", {}).items():
        missing = sorted(set(classes) - set(present))
        if missing:
            names = meta.get("class_names") or []
            name = names[missing[0]] if missing[0] < len(names) else str(missing[0])
            raise DataError(
                f"{Path(data_dir) / 'meta.json'}: class {name!r} (id {missing[0]}) has no images in the {split}"
                f" split, and the scenario uses it ({len(present)} of {meta['num_classes']} classes present);"
                " choose a class_order within the classes present"
            )


def _check_labels(where: str, labels: np.ndarray, count: int, num_classes: int) -> None:
    if not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{where}: expected integer class ids, got {labels.dtype}")
    if labels.shape != (count,):
        raise DataError(f"{where}: expected shape ({count},), got {labels.shape}")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(f"{where}: expected ids in [0, {num_classes}), got [{labels.min()}, {labels.max()}]")


# What every stage reads from meta.json (a file without them was not written by the prepare rule).
META_KEYS = ("num_classes", "image_shape", "mean", "std")


def load_meta(data_dir: str | Path) -> dict:
    path = Path(data_dir) / "meta.json"
    meta = read_json(path)
    missing = [key for key in META_KEYS if key not in meta] if isinstance(meta, dict) else list(META_KEYS)
    if missing:
        raise DataError(
            f"{path}: expected the meta.json of a prepared dataset (no {missing[0]!r}); rerun the prepare rule"
        )
    return meta


def load_split(data_dir: str | Path, split: str, mmap: bool = True, meta: dict | None = None) -> PreparedSplit:
    """Load one split (memory-mapped by default), checked against meta.json (shape, dtype, sha256,
    label range); a missing, malformed or altered file is a DataError naming it."""
    root = Path(data_dir) / split
    meta = load_meta(data_dir) if meta is None else meta
    recorded = meta.get("arrays")
    if not recorded:
        raise DataError(
            f"{Path(data_dir) / 'meta.json'}: no array checksums (prepared by an older version); delete {data_dir} and rerun"
        )
    arrays = {}
    for kind in ("images", "labels"):
        path = root / f"{kind}.npy"
        expected = recorded.get(f"{split}/{kind}.npy", {})
        try:
            arrays[kind] = np.load(path, mmap_mode="r" if mmap and kind == "images" else None)
        except FileNotFoundError:
            raise DataError(f"{path}: prepared data not found (run the prepare rule)") from None
        except ValueError as err:
            raise DataError(f"{path}: not a valid .npy file ({err})") from None
        found = {"shape": list(arrays[kind].shape), "dtype": str(arrays[kind].dtype)}
        if found != {"shape": expected.get("shape"), "dtype": expected.get("dtype")}:
            raise DataError(
                f"{path}: {found['dtype']} {found['shape']} does not match meta.json's"
                f" {expected.get('dtype')} {expected.get('shape')}; delete {data_dir} and rerun the prepare rule"
            )
        if sha256_file(path) != expected.get("sha256"):
            raise DataError(
                f"{path}: content changed since it was prepared (sha256 mismatch); delete {data_dir} and rerun"
            )
    images, labels = arrays["images"], arrays["labels"]
    if images.dtype != np.uint8 or images.ndim != 4 or list(images.shape[1:]) != list(meta["image_shape"]):
        raise DataError(
            f"{root / 'images.npy'}: expected uint8 images [N, {', '.join(map(str, meta['image_shape']))}]"
            f" (meta.json's image_shape), got {images.dtype} {list(images.shape)}"
        )
    _check_labels(str(root / "labels.npy"), labels, len(images), int(meta["num_classes"]))
    return PreparedSplit(images=images, labels=labels.astype(np.int64))
