"""MNIST and Fashion-MNIST from the gzipped idx files of their public mirrors.

idx format: a big-endian header (magic 2051 for images with count, rows, cols; 2049 for labels
with count) followed by uint8 values. Images become uint8 [N, 28, 28, 1].
"""

from __future__ import annotations

import gzip
from functools import partial
from pathlib import Path

import numpy as np

from ..errors import DataError
from .archives import archive_errors, refetch_hint, require_files, source_record
from .registry import DATASETS, DatasetSpec, RemoteFile
from .store import PreparedSplit, write_prepared

IMAGES_MAGIC, LABELS_MAGIC = 2051, 2049
FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)

# MNIST's LeCun site is unreliable; torchvision's first mirror serves the same files.
MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
FASHION_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
MNIST_MD5 = (
    "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "d53e105ee54ea40749a09fcbcd1e9432",
    "9fb629c4189551a2d022fa330f9573f3",
    "ec29112dd5afa0611ce80d1b7f02629c",
)
FASHION_MD5 = (
    "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "25c81989df183df01b3e8a0aad5dffbe",
    "bef4ecab320f06d8554ea6380940ec79",
    "bb300cfdad3c16e7a12a480ee83cd310",
)
MNIST_SIZES = (9912422, 28881, 1648877, 4542)
FASHION_SIZES = (26421880, 29515, 4422102, 5148)
FASHION_NAMES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]

# FOCIL normalises both datasets with the MNIST constants.
MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)


def read_idx(path: Path, magic: int) -> np.ndarray:
    """Images [N, rows, cols] (magic 2051) or labels [N] (magic 2049) of one .gz idx file."""
    with archive_errors(path), gzip.open(path, "rb") as fh:
        data = fh.read()
    header_ints = 4 if magic == IMAGES_MAGIC else 2
    if len(data) < 4 * header_ints:
        raise DataError(f"{path}: truncated idx header; {refetch_hint(path)}")
    header = np.frombuffer(data, dtype=">u4", count=header_ints)
    if int(header[0]) != magic:
        raise DataError(f"{path}: expected idx magic number {magic}, got {int(header[0])}; {refetch_hint(path)}")
    shape = tuple(int(v) for v in header[1:])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 * header_ints)
    if body.size != int(np.prod(shape)):
        raise DataError(
            f"{path}: expected {int(np.prod(shape))} values for shape {list(shape)}, got {body.size}; {refetch_hint(path)}"
        )
    return body.reshape(shape)


def prepare_mnist(
    class_names: list[str], raw_dir: Path, out_dir: Path, seed: int, per_class: int | None = None
) -> None:
    paths = require_files(raw_dir, list(FILES))
    splits = []
    for images_path, labels_path in (paths[:2], paths[2:]):
        images, labels = read_idx(images_path, IMAGES_MAGIC), read_idx(labels_path, LABELS_MAGIC)
        if len(images) != len(labels):
            raise DataError(f"{labels_path}: {len(labels)} labels for {len(images)} images in {images_path.name}")
        splits.append(PreparedSplit(images[..., None].copy(), labels.astype(np.int64)))
    sources, sha256 = source_record(paths)
    write_prepared(
        out_dir,
        *splits,
        class_names,
        mean=MNIST_MEAN,
        std=MNIST_STD,
        sources=sources,
        extra={"source_sha256": sha256},
        per_class=per_class,
    )


def _register(name: str, base_url: str, md5s: tuple[str, ...], sizes: tuple[int, ...], class_names: list[str]) -> None:
    files = tuple(RemoteFile(f, base_url + f, md5=m, size=s) for f, m, s in zip(FILES, md5s, sizes, strict=True))
    DATASETS.register(name)(
        DatasetSpec(
            name=name,
            num_classes=10,
            image_shape=(28, 28, 1),
            prepare=partial(prepare_mnist, class_names),
            crop_padding=0,  # the online-CL code trains MNIST-like data without augmentation
            hflip=False,
            files=files,
            mean=MNIST_MEAN,
            std=MNIST_STD,
        )
    )


_register("mnist", MNIST_URL, MNIST_MD5, MNIST_SIZES, [str(d) for d in range(10)])
_register("fashion_mnist", FASHION_URL, FASHION_MD5, FASHION_SIZES, FASHION_NAMES)
