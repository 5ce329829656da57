"""Small learnable datasets in the exact raw formats of the official distributions.

The tests feed them through the real prepare code; a rehearsal feeds them through the real
download -> verify -> prepare path in place of the real files. Every writer is deterministic
(no timestamps in the gzip, tar or zip headers), so a file's SHA-256 is known in advance and the
rehearsal verifies it as the real download verifies the published checksum.

Each image is its class's colour plus noise, so a network can learn the classes from very few
images. Each writer returns what a correct preparer must produce from the file (pixels, labels,
class names, in the documented order).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import tarfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import DataError
from ..io import atomic_path

ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # the earliest date a zip header holds: no build time in the file


@dataclass
class Expected:
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    class_names: list[str]


def _images(rng: np.random.Generator, labels: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """One image per label: the class's colour (a fixed function of the label) plus noise."""
    channels = shape[2] if len(shape) == 3 else 1
    palette = (np.arange(channels) * 97 + 61) * (np.asarray(labels)[:, None] + 1) % 192  # [N, C]
    noise = rng.integers(0, 64, size=(len(labels), *shape), dtype=np.uint8)
    colour = palette.reshape(len(labels), *([1] * (len(shape) - 1)), -1) if channels > 1 else palette[:, :, None]
    return (noise + colour.astype(np.uint8)).astype(np.uint8)


def _labels(rng: np.random.Generator, n: int, classes: int = 10, start: int = 0) -> np.ndarray:
    """Shuffled labels that cycle through the classes from `start`: together, consecutive batches
    of a split hold every class, as every real split does."""
    return rng.permutation((np.arange(n) + start) % classes)


def _pickle(obj: dict, bytes_keys: bool = False) -> bytes:
    if bytes_keys:
        obj = {k.encode(): v for k, v in obj.items()}
    return pickle.dumps(obj, protocol=2)


def _tar_gz(path: Path, members: dict[str, bytes]) -> Path:
    """A gzipped tar with zero timestamps: the same bytes on every run."""
    with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
        with tarfile.open(fileobj=gz, mode="w", format=tarfile.GNU_FORMAT) as tar:
            for name, data in members.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


def _zip_member(zf: zipfile.ZipFile, name: str, data: bytes | str) -> None:
    zf.writestr(zipfile.ZipInfo(name, date_time=ZIP_DATE), data, compress_type=zipfile.ZIP_DEFLATED)


def _cifar_rows(images: np.ndarray) -> np.ndarray:
    """NHWC -> the CIFAR row format: [N, 3072] with the R, G, B planes one after another."""
    return images.transpose(0, 3, 1, 2).reshape(len(images), -1)


def write_cifar10(path: Path, per_batch: int = 6, test: int = 10, seed: int = 0, bytes_keys: bool = False) -> Expected:
    """cifar-10-python.tar.gz: cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}."""
    rng = np.random.default_rng(seed)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    members, train = {}, []
    for b, count in enumerate([per_batch] * 5 + [test], 1):
        labels = _labels(rng, count, start=(b - 1) * count)
        images = _images(rng, labels, (32, 32, 3))
        batch = {
            "batch_label": f"training batch {b} of 5" if b <= 5 else "testing batch 1 of 1",
            "labels": [int(v) for v in labels],
            "data": _cifar_rows(images),
            "filenames": [f"img_{b}_{i}.png" for i in range(count)],
        }
        members[f"cifar-10-batches-py/{f'data_batch_{b}' if b <= 5 else 'test_batch'}"] = _pickle(batch, bytes_keys)
        train.append((images, labels))
    meta = {"label_names": names, "num_cases_per_batch": per_batch, "num_vis": 3072}
    members["cifar-10-batches-py/batches.meta"] = _pickle(meta, bytes_keys)
    _tar_gz(path, members)
    (test_images, test_labels) = train.pop()
    return Expected(
        np.concatenate([i for i, _ in train]),
        np.concatenate([lab for _, lab in train]),
        test_images,
        test_labels,
        names,
    )


def write_cifar100(
    path: Path, train_per_class: int = 3, test_per_class: int = 1, seed: int = 0, classes: int = 100
) -> Expected:
    """cifar-100-python.tar.gz: cifar-100-python/{train, test, meta} with fine and coarse labels;
    images for the first `classes` of the 100 only (a subset file, as a user's smoke set is)."""
    rng = np.random.default_rng(seed)
    names = [f"fine_{i:03d}" for i in range(100)]
    members, splits = {}, []
    for split, per_class in (("train", train_per_class), ("test", test_per_class)):
        labels = rng.permutation(np.repeat(np.arange(classes), per_class))
        images = _images(rng, labels, (32, 32, 3))
        members[f"cifar-100-python/{split}"] = _pickle(
            {
                "filenames": [f"{split}_{i}.png" for i in range(len(labels))],
                "batch_label": f"{split}ing batch 1 of 1",
                "fine_labels": [int(v) for v in labels],
                "coarse_labels": [int(v) // 5 for v in labels],
                "data": _cifar_rows(images),
            }
        )
        splits.append((images, labels))
    members["cifar-100-python/meta"] = _pickle(
        {"fine_label_names": names, "coarse_label_names": [f"coarse_{i:02d}" for i in range(20)]}
    )
    _tar_gz(path, members)
    (train_images, train_labels), (test_images, test_labels) = splits
    return Expected(train_images, train_labels, test_images, test_labels, names)


def _idx(magic: int, array: np.ndarray) -> bytes:
    header = np.array([magic, *array.shape], dtype=">u4").tobytes()
    return gzip.compress(header + array.astype(np.uint8).tobytes(), mtime=0)


def write_mnist(directory: Path, train: int = 20, test: int = 10, seed: int = 0) -> Expected:
    """The four gzipped idx files of MNIST or Fashion-MNIST (big-endian; magic 2051 images, 2049 labels)."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    expected = []
    for prefix, count in (("train", train), ("t10k", test)):
        labels = _labels(rng, count)
        images = _images(rng, labels, (28, 28))
        (directory / f"{prefix}-images-idx3-ubyte.gz").write_bytes(_idx(2051, images))
        (directory / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(_idx(2049, labels))
        expected.append((images[..., None], labels))
    (tr_i, tr_l), (te_i, te_l) = expected
    return Expected(tr_i, tr_l, te_i, te_l, [str(d) for d in range(10)])


def _jpeg(image: np.ndarray, mode: str = "RGB") -> tuple[bytes, np.ndarray]:
    """JPEG bytes of `image` and the RGB pixels a decoder returns for them."""
    buffer = io.BytesIO()
    Image.fromarray(image, mode=mode).save(buffer, format="JPEG", quality=90)
    decoded = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))
    return buffer.getvalue(), decoded


def write_tiny_imagenet(
    path: Path, wnids: list[str], train_per_class: int = 3, val_per_class: int = 2, seed: int = 0
) -> Expected:
    """tiny-imagenet-200.zip; wnids.txt lists the classes in the given (unsorted) order.

    The first training image of the first listed class is grayscale, as some real ones are.
    """
    rng = np.random.default_rng(seed)
    root = "tiny-imagenet-200/"
    label_of = {w: i for i, w in enumerate(sorted(wnids))}
    train: list[tuple[int, str, np.ndarray]] = []
    val: list[tuple[str, int, np.ndarray]] = []

    def image(w: str, gray: bool = False) -> tuple[bytes, np.ndarray]:
        pixels = _images(rng, np.array([label_of[w]]), (64, 64, 3))[0]
        return _jpeg(pixels[..., 0], "L") if gray else _jpeg(pixels)

    with zipfile.ZipFile(path, "w") as zf:
        _zip_member(zf, root + "wnids.txt", "\n".join(wnids) + "\n")
        _zip_member(zf, root + "words.txt", "".join(f"{w}\tthing {w}\n" for w in wnids) + "n99999999\tunused\n")
        for w in wnids:
            boxes = []
            for i in range(train_per_class):
                data, pixels = image(w, gray=w == wnids[0] and i == 0)
                name = f"{root}train/{w}/images/{w}_{i}.JPEG"
                _zip_member(zf, name, data)
                train.append((label_of[w], name, pixels))
                boxes.append(f"{w}_{i}.JPEG\t0\t0\t63\t63")
            _zip_member(zf, f"{root}train/{w}/{w}_boxes.txt", "\n".join(boxes) + "\n")
        annotations, j = [], 0
        for _ in range(val_per_class):
            for w in wnids:
                data, pixels = image(w)
                _zip_member(zf, f"{root}val/images/val_{j}.JPEG", data)
                annotations.append(f"val_{j}.JPEG\t{w}\t1\t2\t60\t61")
                val.append((f"val_{j}.JPEG", label_of[w], pixels))
                j += 1
        _zip_member(zf, root + "val/val_annotations.txt", "\n".join(annotations) + "\n")
        _zip_member(zf, root + "test/images/test_0.JPEG", image(wnids[0])[0])
    train.sort(key=lambda t: (t[0], t[1]))
    val.sort(key=lambda t: t[0])
    return Expected(
        np.stack([p for _, _, p in train]),
        np.array([lab for lab, _, _ in train]),
        np.stack([p for _, _, p in val]),
        np.array([lab for _, lab, _ in val]),
        sorted(wnids),
    )


def identity_colour(class_index: int, image_index: int) -> tuple[int, int, int]:
    """A solid colour that names its image, robust to JPEG rounding (channels 16+ apart)."""
    return 40 + 40 * (class_index % 6), 8 + 16 * (image_index // 16 % 16), 8 + 16 * (image_index % 16)


def identity_of(pixels: np.ndarray) -> tuple[int, int]:
    """(class index, image index) of a prepared image of solid identity colour (first 6 classes, 256 images)."""
    r, g, b = (int(v) for v in pixels.reshape(-1, 3).mean(0).round())
    return round((r - 40) / 40), 16 * round((g - 8) / 16) + round((b - 8) / 16)


def write_mini_imagenet(
    path: Path,
    wnids: list[str],
    per_class: list[int],
    nested_in: str | None = None,
    sizes=((40, 30), (30, 44), (36, 36)),
) -> None:
    """miniImageNet zip: `<wnid>/<wnid><index>.jpg` at the root, or under `nested_in/`.

    Images are non-square (`sizes` in turn) with their identity colour; the last image of each
    class is a PNG.
    """
    prefix = f"{nested_in}/" if nested_in else ""
    with zipfile.ZipFile(path, "w") as zf:
        _zip_member(zf, "__MACOSX/._junk.jpg", b"not an image")
        for c, (w, count) in enumerate(zip(wnids, per_class, strict=True)):
            for i in range(count):
                image = Image.new("RGB", sizes[i % len(sizes)], identity_colour(c, i))
                buffer = io.BytesIO()
                png = i == count - 1
                image.save(buffer, format="PNG" if png else "JPEG", quality=95)
                _zip_member(zf, f"{prefix}{w}/{w}{i:08d}.{'png' if png else 'jpg'}", buffer.getvalue())


def write_tickets_pool(path: Path, n: int = 12, seed: int = 0) -> np.ndarray:
    """The Lifelong Tickets unlabeled pickle: {'data': uint8 [N,32,32,3], 'label': [N]}."""
    labels = np.arange(n)
    images = _images(np.random.default_rng(seed), labels % 10, (32, 32, 3))
    path.write_bytes(pickle.dumps({"data": images, "label": labels}, protocol=2))
    return images


# --- whole sources, as `sparsecl data synth` and a rehearsal write them ---------------------------


@dataclass(frozen=True)
class SynthSize:
    """Images per class of a synthetic source (miniImageNet adds the 100 it holds out per class)."""

    train_per_class: int = 2
    test_per_class: int = 1


def _wnids(n: int) -> list[str]:
    return [f"n{9_000_000 + 7919 * i:08d}" for i in range(n)]


def _mnist_like(out: Path, size: SynthSize, seed: int) -> None:
    write_mnist(out, train=10 * size.train_per_class, test=10 * size.test_per_class, seed=seed)


def _mini(out: Path, size: SynthSize, seed: int) -> None:
    from .mini_imagenet import TEST_PER_CLASS

    count = TEST_PER_CLASS + size.train_per_class
    write_mini_imagenet(out / "miniImageNet.zip", _wnids(100), [count] * 100, sizes=((12, 10), (10, 14)))


SOURCES: dict[str, Callable[[Path, SynthSize, int], object]] = {
    "cifar10": lambda out, size, seed: write_cifar10(
        out / "cifar-10-python.tar.gz", per_batch=2 * size.train_per_class, test=10 * size.test_per_class, seed=seed
    ),
    "cifar100": lambda out, size, seed: write_cifar100(
        out / "cifar-100-python.tar.gz", size.train_per_class, size.test_per_class, seed
    ),
    "mnist": _mnist_like,
    "fashion_mnist": _mnist_like,
    "tiny_imagenet": lambda out, size, seed: write_tiny_imagenet(
        out / "tiny-imagenet-200.zip", _wnids(200), size.train_per_class, size.test_per_class, seed
    ),
    "mini_imagenet": _mini,
    "tiny_images": lambda out, size, seed: write_tickets_pool(
        out / "tiny_images_150k.pkl", n=50 * size.train_per_class, seed=seed
    ),
}


# SHA-256 of each file `synth(source)` writes at the default size and seed 0: a rehearsal verifies
# its synthetic downloads against these, as a real run verifies the published checksums.
CHECKSUMS: dict[str, dict[str, str]] = {
    "cifar10": {"cifar-10-python.tar.gz": "390177e557ff134943e2a75d2a95719b928c6d0a61fd3537214bb1c226b68de0"},
    "cifar100": {"cifar-100-python.tar.gz": "4856b6cb4418377b6fc70674d9b6903eb40adba7a3f2e1646bfe6f8742c51f64"},
    "mnist": {
        "train-images-idx3-ubyte.gz": "8910ed364a59cb85166525d4d5d893ccbe39dd8e05838b8686df144ed827536f",
        "train-labels-idx1-ubyte.gz": "ef3f717f21248829fb07797056ec935057225a9829d8796bc236e208476d3b24",
        "t10k-images-idx3-ubyte.gz": "f531fc3814114c84e7ef88547b4b23cb161c10379998e745ff5b0233894180e4",
        "t10k-labels-idx1-ubyte.gz": "80d2777592387cee6a256aa3536bc8eca62fd37dad205592c41d7292a6721b74",
    },
    "tiny_imagenet": {"tiny-imagenet-200.zip": "526074019615ef6a8859f8ca18aabfe5dbec6ac92ba8a6fdb19ef396593abc2f"},
    "mini_imagenet": {"miniImageNet.zip": "8b4d6eec20c2e7949321404059cea5d773a3d70957bef777cc5c4064a3ed8b7e"},
    "tiny_images": {"tiny_images_150k.pkl": "924896ce56bd2cffe304183b56b4cba9af1fe46d00965015e7b1f611073db13e"},
}
CHECKSUMS["fashion_mnist"] = CHECKSUMS["mnist"]  # the same generator: only the class names differ


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def synth(source: str, out_dir: str | Path, size: SynthSize = SynthSize(), seed: int = 0) -> dict[str, str]:
    """Write `source`'s raw files into `out_dir` under their real names; returns {file name: sha256}.

    The files are written in a scratch folder and moved into place only when all are complete.
    """
    from .sources import raw_files

    if source not in SOURCES:
        raise DataError(f"synth: no synthetic data for {source!r}; expected one of: {', '.join(SOURCES)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    scratch = out_dir / f".synth-{source}.tmp"
    scratch.mkdir(exist_ok=True)
    try:
        SOURCES[source](scratch, size, seed)
        names = [f.filename for f in raw_files(source)]
        digests = {name: sha256_of(scratch / name) for name in names}
        for name in names:
            with atomic_path(out_dir / name) as tmp:
                (scratch / name).replace(tmp)
    finally:
        for leftover in scratch.iterdir():
            leftover.unlink()
        scratch.rmdir()
    return digests
