"""Reading raw archives safely: tar/zip members, pickles restricted to plain data, images.

Every failure of a corrupt or truncated file becomes one DataError line that names the file.
"""

from __future__ import annotations

import contextlib
import io
import pickle
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError
from .download import file_digests

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")

# A pickle can run arbitrary code; these are the only globals plain-data pickles need.
_PICKLE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
    ("collections", "OrderedDict"),
}


class _DataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _PICKLE_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def load_pickle(fh: Any, where: str) -> Any:
    """Unpickle plain data (dicts, lists, numpy arrays), written by Python 2 or 3; str keys."""
    try:
        obj = _DataUnpickler(fh, encoding="latin1").load()
    except Exception as err:  # pickle raises many types on a damaged stream
        raise DataError(f"{where}: not a readable data pickle ({type(err).__name__}: {err})") from None
    if isinstance(obj, dict):
        obj = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}
    return obj


def refetch_hint(path: str | Path) -> str:
    """How to replace a bad raw file: the download rule writes raw files read-only."""
    return f"remove it (chmod u+w {path} && rm {path}) and rerun to fetch it again"


@contextlib.contextmanager
def archive_errors(path: str | Path) -> Iterator[None]:
    """Turn the many exceptions of a truncated or corrupt archive into one DataError line."""
    try:
        yield
    except DataError:
        raise
    except (tarfile.TarError, zipfile.BadZipFile, zlib.error, EOFError, OSError) as err:
        detail = str(err) or type(err).__name__
        raise DataError(f"{path}: corrupt or truncated archive ({detail}); {refetch_hint(path)}") from None


def tar_members(path: str | Path, names: list[str]) -> dict[str, bytes]:
    """Read the named members (paths inside the archive) of a .tar.gz in one pass."""
    wanted, found = set(names), {}
    with archive_errors(path), tarfile.open(path, mode="r:gz") as tar:
        for member in tar:
            if member.name in wanted and member.isfile():
                found[member.name] = tar.extractfile(member).read()
    missing = sorted(wanted - set(found))
    if missing:
        raise DataError(f"{path}: archive lacks {', '.join(missing)}")
    return found


def open_zip(path: str | Path) -> zipfile.ZipFile:
    with archive_errors(path):
        return zipfile.ZipFile(path)


def read_zip_member(zf: zipfile.ZipFile, name: str, path: str | Path) -> bytes:
    try:
        info = zf.getinfo(name)
    except KeyError:
        raise DataError(f"{path}: archive lacks {name}") from None
    with archive_errors(path):
        return zf.read(info)


def is_image(name: str) -> bool:
    """An image member; macOS resource forks (`__MACOSX/`, `._x.jpg`) are not."""
    base = name.rsplit("/", 1)[-1]
    return name.lower().endswith(IMAGE_SUFFIXES) and not base.startswith("._") and "__MACOSX/" not in name


def decode_rgb(data: bytes, where: str, size_hint: int | None = None):
    """Decode a JPEG/PNG to an RGB PIL image (grayscale and palette images are converted).

    `size_hint` lets the JPEG decoder scale down by a power of two while keeping both sides at
    least twice `size_hint`: much faster for large photos, and invisible after the final resize.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(io.BytesIO(data))
        if size_hint:
            image.draft("RGB", (2 * size_hint, 2 * size_hint))
        return image.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise DataError(f"{where}: not a readable image ({err})") from None


def shorter_side_center_crop(image, size: int) -> np.ndarray:
    """Resize so the shorter side is `size` (bilinear, antialiased), then keep the central square.

    Deterministic stand-in for "Resize(size) then crop": the prepared array never depends on a
    random crop; training augmentation still crops and flips at random on the device.
    """
    from PIL import Image

    width, height = image.size
    scale = size / min(width, height)
    new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
    if (new_w, new_h) != (width, height):
        image = image.resize((new_w, new_h), Image.BILINEAR)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return np.asarray(image.crop((left, top, left + size, top + size)), dtype=np.uint8)


def source_record(paths: list[Path]) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """(`sources` for meta.json: file -> "md5:<hex>", extra: file -> sha256) of the raw files."""
    digests = {p.name: file_digests(p) for p in paths}
    return {n: f"md5:{d['md5']}" for n, d in digests.items()}, {n: d["sha256"] for n, d in digests.items()}


def require_files(raw_dir: Path, names: list[str]) -> list[Path]:
    paths = [Path(raw_dir) / n for n in names]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise DataError(f"{missing[0]}: raw file not found (run the download rule first)")
    return paths


def decode_zip_images(
    zf: zipfile.ZipFile,
    path: str | Path,
    names: list[str],
    shape: tuple[int, int, int],
    to_array: Callable[[Any, str], np.ndarray],
    size_hint: int | None = None,
    log: Callable[[str], None] = print,
) -> np.ndarray:
    """Decode the named zip members into one uint8 [N, *shape] array, in the given order."""
    out = np.empty((len(names), *shape), dtype=np.uint8)
    step = max(1, len(names) // 10)
    for i, name in enumerate(names):
        where = f"{path}:{name}"
        array = to_array(decode_rgb(read_zip_member(zf, name, path), where, size_hint), where)
        if array.shape != shape:
            raise DataError(f"{where}: expected a {shape[1]}x{shape[0]} image, got {array.shape[1]}x{array.shape[0]}")
        out[i] = array
        if (i + 1) % step == 0 or i + 1 == len(names):
            log(f"{Path(path).name}: decoded {i + 1} of {len(names)} images")
    return out
