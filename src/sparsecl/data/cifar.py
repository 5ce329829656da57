"""CIFAR-10 and CIFAR-100 from the official python-pickle tarballs (cs.toronto.edu).

Each batch pickle holds `data` (uint8 [N, 3072], channel planes R, G, B, each 32x32 row-major)
and the labels; the class ids are the official label indices (alphabetical names), so explicit
class orders in configs (e.g. 9, 8, 7, ... for CIFAR-10) keep their published meaning.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from ..errors import DataError
from .archives import load_pickle, require_files, source_record, tar_members
from .registry import DATASETS, DatasetSpec, RemoteFile
from .store import PreparedSplit, write_prepared


@dataclass(frozen=True)
class CifarLayout:
    file: RemoteFile
    folder: str  # top-level folder inside the tarball
    train: tuple[str, ...]
    test: tuple[str, ...]
    meta: str
    label_key: str
    names_key: str


CIFAR10 = CifarLayout(
    file=RemoteFile(
        "cifar-10-python.tar.gz",
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        md5="c58f30108f718f92721af3b95e74349a",
        size=170498071,
    ),
    folder="cifar-10-batches-py",
    train=tuple(f"data_batch_{i}" for i in range(1, 6)),
    test=("test_batch",),
    meta="batches.meta",
    label_key="labels",
    names_key="label_names",
)
CIFAR100 = CifarLayout(
    file=RemoteFile(
        "cifar-100-python.tar.gz",
        "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        md5="eb9058c3a382ffc7106e4002c42a8d85",
        size=169001437,
    ),
    folder="cifar-100-python",
    train=("train",),
    test=("test",),
    meta="meta",
    label_key="fine_labels",
    names_key="fine_label_names",
)


def prepare_cifar(
    layout: CifarLayout,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    raw_dir: Path,
    out_dir: Path,
    seed: int,
    per_class: int | None = None,
) -> None:
    (archive,) = require_files(raw_dir, [layout.file.filename])
    names = [f"{layout.folder}/{n}" for n in (*layout.train, *layout.test, layout.meta)]
    members = tar_members(archive, names)

    def batches(which: tuple[str, ...]) -> PreparedSplit:
        parts = [_read_batch(members[f"{layout.folder}/{n}"], f"{archive}:{n}", layout.label_key) for n in which]
        return PreparedSplit(np.concatenate([p.images for p in parts]), np.concatenate([p.labels for p in parts]))

    meta = load_pickle(io.BytesIO(members[f"{layout.folder}/{layout.meta}"]), f"{archive}:{layout.meta}")
    class_names = [n.decode() if isinstance(n, bytes) else str(n) for n in meta[layout.names_key]]
    sources, sha256 = source_record([archive])
    write_prepared(
        out_dir,
        batches(layout.train),
        batches(layout.test),
        class_names,
        mean=mean,
        std=std,
        sources=sources,
        extra={"source_sha256": sha256},
        per_class=per_class,
    )


def _read_batch(blob: bytes, where: str, label_key: str) -> PreparedSplit:
    batch = load_pickle(io.BytesIO(blob), where)
    try:
        data, labels = np.asarray(batch["data"]), np.asarray(batch[label_key], dtype=np.int64)
    except (KeyError, TypeError):
        raise DataError(f"{where}: expected a dict with keys 'data' and {label_key!r}") from None
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(labels) != len(data):
        raise DataError(
            f"{where}: expected uint8 data [N, 3072] and N labels, got {data.dtype} {data.shape} and {labels.shape}"
        )
    return PreparedSplit(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels)


def _register(
    name: str, layout: CifarLayout, num_classes: int, mean: tuple[float, ...], std: tuple[float, ...]
) -> None:
    DATASETS.register(name)(
        DatasetSpec(
            name=name,
            num_classes=num_classes,
            image_shape=(32, 32, 3),
            prepare=partial(prepare_cifar, layout, mean, std),
            files=(layout.file,),
            mean=mean,
            std=std,
        )
    )


# Normalisation constants as the CL-with-DST / FOCIL code uses them.
_register("cifar10", CIFAR10, 10, (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))
_register("cifar100", CIFAR100, 100, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))
