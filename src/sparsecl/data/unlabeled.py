"""Unlabeled image pools for Lifelong Tickets (distillation on retrieved unlabeled images).

The published pool is 150k 32x32 images sampled from 80M Tiny Images, a set its authors
withdrew in 2020; it exists only as a pickle the user may already have. Substitutes, each a
recorded deviation: the training images of the other CIFAR (labels dropped), or no pool at all
(the unlabeled terms vanish). The pool is prepared to

    resources/data/unlabeled/<pool>/pool.npy    uint8 [N, 32, 32, 3]
    resources/data/unlabeled/<pool>/meta.json   pool, size, provenance, deviation (null: the published pool)

The empty pool (`none`) is written per dataset, under unlabeled/none/<dataset>/, in that
dataset's image shape (digits: [0, 8, 8, 1]), so the reader's shape check holds for every run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ConfigError, DataError
from ..io import write_json, write_npy
from .archives import load_pickle, source_record
from .registry import ManualFile
from .sources import raw_paths, register_raw_source
from .store import load_meta, load_split

TINY_IMAGES = ManualFile(
    "tiny_images_150k.pkl",
    "copy the 150k-image pool of the Lifelong Tickets data release (its cifar10_80m_150k.pkl or"
    " cifar100_80m_150k.pkl, a dict with 'data' uint8 [N,32,32,3] and 'label'; 80M Tiny Images itself is withdrawn)",
)
register_raw_source("tiny_images", (TINY_IMAGES,))
SHAPE = (32, 32, 3)


@dataclass(frozen=True)
class Pool:
    name: str
    description: str
    deviation: str | None  # None: the published pool


POOLS = {
    "tiny_images": Pool("tiny_images", "150k images sampled from 80M Tiny Images (the published pool)", None),
    "cifar10": Pool(
        "cifar10",
        "CIFAR-10 training images (50k), labels dropped",
        "substitute pool: CIFAR-10 train instead of 80M Tiny Images",
    ),
    "cifar100": Pool(
        "cifar100",
        "CIFAR-100 training images (50k), labels dropped",
        "substitute pool: CIFAR-100 train instead of 80M Tiny Images",
    ),
    "none": Pool(
        "none", "no unlabeled images: the unlabeled distillation terms are dropped", "no unlabeled pool (ablation)"
    ),
}
CHOICES = (*POOLS, "other_cifar")


def resolve_pool(choice: str, dataset: str) -> str:
    """The pool a run on `dataset` uses; `other_cifar` is CIFAR-10 for CIFAR-100 runs, else CIFAR-100."""
    if choice not in CHOICES:
        raise ConfigError(f"data.unlabeled_pool: {choice!r} is not allowed; expected one of: {', '.join(CHOICES)}")
    pool = ("cifar10" if dataset == "cifar100" else "cifar100") if choice == "other_cifar" else choice
    if pool == dataset:
        raise ConfigError(
            f"data.unlabeled_pool: {choice} would reuse the {dataset} training images as unlabeled data; use other_cifar"
        )
    return pool


def pool_dir(pool: str, dataset: str, data_root: str = "resources/data") -> str:
    """Where `pool` is prepared for runs on `dataset`; the empty pool has one per dataset (its image shape)."""
    return f"{data_root}/unlabeled/none/{dataset}" if pool == "none" else f"{data_root}/unlabeled/{pool}"


def pool_sources(folder: str, resources: str) -> list[str]:
    """What preparing the pool of `folder` (as under data/unlabeled/) reads: the Tiny Images pickle,
    the prepared CIFAR training images, or for the empty pool (`none/<dataset>`) the prepared
    dataset whose image shape it takes. `sparsecl data unlabeled --source` is the first one's
    folder, or the pickle itself."""
    if folder == "tiny_images":
        return raw_paths("tiny_images", f"{resources}/raw")
    if folder.startswith("none/"):
        return [f"{resources}/data/{folder.split('/')[1]}/meta.json"]
    return [f"{resources}/data/{folder}/meta.json", f"{resources}/data/{folder}/train/images.npy"]


def prepare_pool(pool: str, source: Path | None, out_dir: Path, limit: int | None = None) -> None:
    """Write pool.npy and meta.json (last, it marks completion) for `pool`.

    `source`: the Tiny Images pickle, a prepared CIFAR directory, or for `none` the prepared
    dataset whose image shape the empty pool takes (None: 32x32x3). `limit`: keep the first that
    many images (a rehearsal's pool: retrieval embeds the whole pool with the full-size network).
    """
    if pool not in POOLS:
        raise DataError(f"unknown unlabeled pool {pool!r}; expected one of: {', '.join(POOLS)}")
    if pool != "none" and source is None:
        wanted = "the Tiny Images pickle" if pool == "tiny_images" else f"the prepared {pool} directory"
        raise DataError(f"--source: the {pool} pool is read from {wanted}; none was given")
    provenance: dict = {}
    shape = SHAPE
    if pool == "none":
        if source is not None:
            shape = tuple(load_meta(source)["image_shape"])
        images = np.zeros((0, *shape), dtype=np.uint8)
    elif pool == "tiny_images":
        images = _read_tiny_images(Path(source))
        sources, sha256 = source_record([Path(source)])
        provenance = {"sources": sources, "source_sha256": sha256}
    else:
        images = np.asarray(load_split(source, "train").images)
        provenance = {"sources": load_meta(source).get("sources", {}), "derived_from": f"{pool} train split"}
        if images.shape[1:] != SHAPE:
            raise DataError(f"{source}: expected {SHAPE} images for the pool, got {images.shape[1:]}")
    if limit is not None:
        images, provenance = images[:limit], {**provenance, "limit": limit}
    write_npy(Path(out_dir) / "pool.npy", np.ascontiguousarray(images))
    info = POOLS[pool]
    write_json(
        Path(out_dir) / "meta.json",
        {
            "pool": pool,
            "description": info.description,
            "deviation": info.deviation,
            "num_images": int(len(images)),
            "image_shape": list(shape),
            **provenance,
        },
    )


def _read_tiny_images(path: Path) -> np.ndarray:
    if not path.is_file():
        raise DataError(f"{path}: raw file not found (run the download rule first)")
    with open(path, "rb") as fh:
        obj = load_pickle(fh, str(path))
    data = obj.get("data") if isinstance(obj, dict) else None
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.shape[1:] != SHAPE:
        found = f"{data.dtype} {list(data.shape)}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(f"{path}: expected a dict with 'data' uint8 [N, 32, 32, 3], got {found}")
    return data
