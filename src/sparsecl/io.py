"""Atomic file writes, the on-disk formats shared by all stages, and provenance.

Every output is written to a temporary file in the same directory and renamed into
place, so a killed job never leaves a half-written file behind.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import platform
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .errors import DataError

# Write failures the user can act on (a full disk, a read-only or unwritable place): one line each.
WRITE_ERRORS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EISDIR: "a directory of that name is in the way",
}


def _temporary(path: Path) -> Path:
    """An empty temporary file next to `path` (creating its directory); a failure names `path`."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except (FileExistsError, NotADirectoryError):
        raise DataError(f"{path}: cannot create it: a parent of it is a file, not a directory") from None
    except OSError as err:
        raise DataError(f"{path}: cannot write: {WRITE_ERRORS.get(err.errno, err.strerror)}") from None
    os.close(fd)
    return Path(tmp)


def check_writable(*paths: str | os.PathLike) -> None:
    """Fail before a long job, not after it, when one of its outputs cannot be written; and delete
    the temporaries a killed earlier attempt at writing them left behind."""
    for path in paths:
        remove_stale_temporaries(path)
        if Path(path).is_dir():
            raise DataError(f"{path}: cannot write: {WRITE_ERRORS[errno.EISDIR]}")
        _temporary(Path(path)).unlink()


@contextlib.contextmanager
def all_or_none(*paths: str | os.PathLike) -> Iterator[None]:
    """The outputs of one stage: if writing any of them fails, none of them is left behind."""
    try:
        yield
    except BaseException:
        for path in paths:
            with contextlib.suppress(OSError):  # cleaning up must not hide why the write failed
                Path(path).unlink()
        raise


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    tmp_path = _temporary(path)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except OSError as err:
        if err.errno is None and "requested and" in str(err):  # numpy's C writer: a short write, no errno
            raise DataError(
                f"{path}: cannot write: only part of it was written ({err}); no space left on device?"
            ) from None
        if err.errno not in WRITE_ERRORS:
            raise
        raise DataError(f"{path}: cannot write: {WRITE_ERRORS[err.errno]}") from None
    finally:
        tmp_path.unlink(missing_ok=True)


def remove_stale_temporaries(path: str | os.PathLike) -> None:
    """Delete temporary files an interrupted atomic write of `path` left behind."""
    path = Path(path)
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        stale.unlink(missing_ok=True)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from None


def write_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, array)


def save_torch(path: str | os.PathLike, obj: Any) -> None:
    """`torch.save` into memory, then one atomic write: the archive's inner folder is always
    `archive/` (torch names it after the file otherwise), so equal objects give equal bytes."""
    import io

    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getvalue())


def load_torch(path: str | os.PathLike, map_location: Any = "cpu") -> Any:
    import torch

    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except Exception as err:  # torch raises many types for a corrupt file
        raise DataError(
            f"{path}: not a readable torch file ({type(err).__name__}: truncated or not written by sparsecl);"
            " remove it and rerun snakemake, which remakes it"
        ) from None


def write_parquet(path: str | os.PathLike, frame: Any, provenance: dict | None = None) -> None:
    """Write a pandas frame, or a list of row dicts (no pandas needed); provenance goes into the
    parquet key-value metadata."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = (
        pa.Table.from_pylist(frame) if isinstance(frame, list) else pa.Table.from_pandas(frame, preserve_index=False)
    )
    if provenance is not None:
        meta = dict(table.schema.metadata or {})
        meta[b"sparsecl.provenance"] = json.dumps(provenance, sort_keys=True, default=_json_default).encode()
        table = table.replace_schema_metadata(meta)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def read_parquet_provenance(path: str | os.PathLike) -> dict:
    import pyarrow.parquet as pq

    meta = pq.read_schema(path).metadata or {}
    raw = meta.get(b"sparsecl.provenance")
    return json.loads(raw) if raw else {}


def config_hash(config: Any) -> str:
    """A short, stable hash of a JSON-able config (key order does not matter)."""
    blob = json.dumps(config, sort_keys=True, default=_json_default).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def provenance(config: Any = None, seed: int | None = None, device: Any = None, started: float | None = None) -> dict:
    """What produced a result: config hash, seed, versions, device, host and wall time."""
    record = {
        "sparsecl_version": __version__,
        "torch_version": _torch_version(),
        "numpy_version": np.__version__,
        "python_version": platform.python_version(),
        "host": socket.gethostname(),
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if config is not None:
        record["config_hash"] = config_hash(config)
    if seed is not None:
        record["seed"] = seed
    if device is not None:
        record["device"] = device_name(device)
    if started is not None:
        record["wall_time_s"] = round(time.time() - started, 3)
    scheduler = {key.lower(): os.environ[key] for key in SCHEDULER_ENV if key in os.environ}
    if scheduler:
        record["scheduler"] = scheduler
    return record


# Provenance fields that differ between two runs of the same config and seed on the same machine:
# when and where (scheduler job), how long, and the per-row timings a stage measured (e.g. each
# epoch's throughput), which stages keep here rather than in their tables.
TIMING_COLUMNS = ("images_per_s", "seconds")
TIMING_FIELDS = ("created_utc", "wall_time_s", "scheduler", *TIMING_COLUMNS)


def split_timing(rows: list[dict]) -> tuple[list[dict], dict[str, list]]:
    """Rows without their timing columns, and those columns as lists (for the provenance)."""
    timing: dict[str, list] = {}
    for row in rows:
        for key in TIMING_COLUMNS:
            if key in row:
                timing.setdefault(key, []).append(row[key])
    return [{k: v for k, v in row.items() if k not in TIMING_COLUMNS} for row in rows], timing


# Where a job ran, when a cluster scheduler started it (SLURM job id and the GPUs it was allocated).
SCHEDULER_ENV = ("SLURM_JOB_ID", "SLURM_JOB_NODELIST", "SLURM_JOB_GPUS", "CUDA_VISIBLE_DEVICES")


def _torch_version() -> str:
    """Torch's installed version (its package metadata: one spelling whether or not this process
    imported torch, e.g. `2.14.1`; the CUDA build shows in `device`)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("torch")
    except PackageNotFoundError:
        return "not installed"


def device_name(device: Any) -> str:
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return f"cpu:{platform.processor() or platform.machine()}"


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
