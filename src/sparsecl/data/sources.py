"""Where each raw file comes from: its official URL, a config override, or the user's manual copy.

Raw files live in `resources/raw/<source>/<file name>`. A source is a dataset name, or a name a
module registers for raw data that is not a dataset of its own (the Tiny Images unlabeled pool).
Two datasets may share one source (`mini_imagenet84` reads `mini_imagenet`'s zip).

Config override, per source (`data.sources.<source>`):
  url:        download from here instead (several files: a base URL, each file name appended)
  path:       link or copy this local file instead (several files: a directory holding them)
  checksums:  {file name: md5 or sha256}; replaces the published checksum of that file. Without
              it the published checksum is always verified, whatever the url or path.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError, DataError
from .download import Checksum, ChecksumMismatch, Log, copy_local, download
from .registry import DATASETS, ManualFile, RemoteFile, get_dataset

RAW_ROOT = "resources/raw"
MANUAL_ROOT = "resources/manual"
RawFile = RemoteFile | ManualFile

_EXTRA_SOURCES: dict[str, tuple[RawFile, ...]] = {}
_SHARED: dict[str, str] = {}


def register_raw_source(name: str, files: tuple[RawFile, ...]) -> None:
    """Declare raw files that belong to no dataset of their own (downloaded by the same rule)."""
    if name in _EXTRA_SOURCES or name in DATASETS:
        raise ValueError(f"raw source {name!r} is registered twice")
    _EXTRA_SOURCES[name] = files


def share_raw_source(dataset: str, source: str) -> None:
    """`dataset` is prepared from `source`'s raw files (one download, one override)."""
    _SHARED[dataset] = source


def raw_source(dataset: str) -> str:
    return _SHARED.get(dataset, dataset)


def raw_files(source: str) -> tuple[RawFile, ...]:
    if source in _EXTRA_SOURCES:
        return _EXTRA_SOURCES[source]
    spec = get_dataset(source)
    return spec.files + ((spec.manual,) if spec.manual else ())


def source_names() -> list[str]:
    """Every source that has raw files (the download rule's possible `dataset` wildcards)."""
    names = [n for n in DATASETS if n not in _SHARED and raw_files(n)]
    return sorted(names + list(_EXTRA_SOURCES))


def raw_dir(dataset: str, root: str = RAW_ROOT) -> str:
    return f"{root}/{raw_source(dataset)}"


def raw_paths(dataset: str, root: str = RAW_ROOT) -> list[str]:
    """The raw files a dataset's prepare step reads ([] for built-in datasets)."""
    return [f"{raw_dir(dataset, root)}/{f.filename}" for f in raw_files(raw_source(dataset))]


@dataclass(frozen=True)
class SourceOverride:
    url: str | None = None
    path: str | None = None
    checksums: dict[str, Checksum] = field(default_factory=dict)

    @classmethod
    def from_config(cls, source: str, entry: Mapping | None) -> SourceOverride:
        """Validate `data.sources.<source>`; a problem is a one-line ConfigError naming the key."""
        where = f"data.sources.{source}"
        if not entry:
            return cls()
        if source not in source_names():
            raise ConfigError(f"{where}: {source!r} has no raw files; expected one of: {', '.join(source_names())}")
        if entry.get("url") and entry.get("path"):
            raise ConfigError(f"{where}: set either url or path, not both")
        names = [f.filename for f in raw_files(source)]
        checksums = {}
        for name, value in (entry.get("checksums") or {}).items():
            if name not in names:
                raise ConfigError(f"{where}.checksums.{name}: unknown file; expected one of: {', '.join(names)}")
            try:
                checksums[name] = Checksum.parse(str(value), f"{where}.checksums.{name}")
            except DataError as err:
                raise ConfigError(str(err)) from None
        return cls(url=entry.get("url") or None, path=entry.get("path") or None, checksums=checksums)


def check_overrides(sources: Mapping[str, Mapping]) -> None:
    """Validate every override at DAG-build time, so a typo fails before any job runs."""
    for source, entry in sources.items():
        SourceOverride.from_config(source, entry)


def expected_checksum(file: RawFile, override: SourceOverride) -> Checksum | None:
    if file.filename in override.checksums:
        return override.checksums[file.filename]
    if isinstance(file, RemoteFile) and file.sha256:
        return Checksum("sha256", file.sha256)
    if isinstance(file, RemoteFile) and file.md5:
        return Checksum("md5", file.md5)
    return None


def manual_missing_message(source: str, file: ManualFile, path: Path) -> str:
    return (
        f"{source}: {path} not found; {file.instructions} and save it as {path}"
        f" (or set data.sources.{source}.path to your copy)"
    )


def fetch_raw(
    source: str,
    filename: str,
    out: str | os.PathLike,
    overrides: Mapping[str, Mapping] | None = None,
    manual_dir: str | os.PathLike = MANUAL_ROOT,
    log: Log = print,
    **http,
) -> dict[str, str]:
    """Put `source`'s raw file `filename` at `out`, verified; returns its md5 and sha256.

    Precedence: the override's path, the override's url, the official URL (downloadable files)
    or the manual copy in `manual_dir` (files behind a login). `http` goes to `download`.
    """
    files = {f.filename: f for f in raw_files(source)}
    if not files:
        raise DataError(
            f"{source}: has no raw files to download (it is built in); sources with raw files: {', '.join(source_names())}"
        )
    if filename not in files:
        raise DataError(f"{source}: no raw file {filename!r}; expected one of: {', '.join(files)}")
    file = files[filename]
    check_overrides(overrides or {})  # as the workflow does: a typo in any source is an error
    override = SourceOverride.from_config(source, (overrides or {}).get(source))
    checksum = expected_checksum(file, override)
    several = len(files) > 1
    try:
        if override.path:
            local = Path(override.path) / filename if several else Path(override.path)
            if not local.is_file():
                holding = f"a directory holding {filename}" if several else f"your copy of {filename}"
                raise DataError(f"data.sources.{source}.path: {local} not found; expected {holding}")
            digests = copy_local(local, out, checksum, log)
        elif override.url:
            url = f"{override.url.rstrip('/')}/{filename}" if several else override.url
            digests = download(url, out, checksum, log=log, **http)
        elif isinstance(file, RemoteFile):
            digests = download(file.url, out, checksum, log=log, size_hint=file.size, **http)
        else:
            manual = Path(manual_dir).absolute() / file.filename
            if not manual.is_file():
                raise DataError(manual_missing_message(source, file, manual))
            digests = copy_local(manual, out, checksum, log)
    except ChecksumMismatch as err:
        raise DataError(
            f"{err}; if that file is a re-packed copy you trust, accept it with"
            f" data.sources.{source}.checksums: {{{filename}: '{err.found.algorithm}:{err.found.hexdigest}'}}"
        ) from None
    log(
        f"{filename}: verified ({checksum or 'no published checksum'}); md5 {digests['md5']} sha256 {digests['sha256']}"
    )
    return digests
