"""Getting one raw file onto disk, verified: resumable HTTP (standard library only) or a local copy.

A transfer writes `<dest>.part`, verifies the checksum, then renames onto `dest`, so `dest` only
ever exists complete and verified. An interrupted HTTP transfer keeps its `.part` file and the
next attempt (in the same call, after a backoff, or in a later run) continues it with a Range
request. A checksum mismatch deletes the `.part` file: a bad file is never kept.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .. import __version__
from ..errors import DataError

Log = Callable[[str], None]
CHUNK = 1 << 20
RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}
PROGRESS_STEP = 5  # percent between progress lines
PROGRESS_SECONDS = 10.0  # at the latest, when the size is unknown or the transfer is slow


@dataclass(frozen=True)
class Checksum:
    """An expected digest: md5 (what the datasets publish) or sha256."""

    algorithm: str  # "md5" | "sha256"
    hexdigest: str

    @classmethod
    def parse(cls, value: str, where: str) -> Checksum:
        """Accept a bare hex digest (32 chars: md5, 64: sha256), optionally prefixed `md5:`/`sha256:`."""
        algorithm, _, digest = value.strip().lower().rpartition(":")
        expected = {32: "md5", 64: "sha256"}.get(len(digest))
        if expected is None or algorithm not in ("", expected) or any(c not in "0123456789abcdef" for c in digest):
            raise DataError(f"{where}: expected an md5 (32 hex digits) or sha256 (64 hex digits), got {value!r}")
        return cls(expected, digest)

    def __str__(self) -> str:
        return f"{self.algorithm} {self.hexdigest}"


def file_digests(path: str | os.PathLike) -> dict[str, str]:
    """md5 and sha256 of a file in one read."""
    md5, sha256 = hashlib.md5(usedforsecurity=False), hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(CHUNK):
            md5.update(block)
            sha256.update(block)
    return {"md5": md5.hexdigest(), "sha256": sha256.hexdigest()}


def part_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


class ChecksumMismatch(DataError):
    """A fetched file is not the expected one; `found` is its digest (what would accept it)."""

    def __init__(self, message: str, found: Checksum) -> None:
        super().__init__(message)
        self.found = found


def verify_and_commit(part: Path, dest: Path, checksum: Checksum | None, origin: str, copy: str) -> dict[str, str]:
    """Check `part` against `checksum`, then rename it onto `dest`; a mismatch deletes `part`
    (`copy` says what `part` is, for the message)."""
    digests = file_digests(part)
    if checksum is not None and digests[checksum.algorithm] != checksum.hexdigest:
        part.unlink()
        found = Checksum(checksum.algorithm, digests[checksum.algorithm])
        raise ChecksumMismatch(
            f"{dest.name}: checksum mismatch: expected {checksum}, got {found} (from {origin}); deleted {copy}",
            found,
        )
    os.replace(part, dest)
    return digests


def copy_local(
    src: str | os.PathLike, dest: str | os.PathLike, checksum: Checksum | None, log: Log = print
) -> dict[str, str]:
    """Link (same filesystem) or copy a local file to `dest`, verified like a download."""
    src, dest = Path(src), Path(dest)
    if not src.is_file():
        raise DataError(f"{src}: file not found")
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = part_path(dest)
    part.unlink(missing_ok=True)
    try:
        os.link(src, part)
        log(f"{dest.name}: linked {src}")
    except OSError:
        shutil.copyfile(src, part)
        log(f"{dest.name}: copied {src}")
    return verify_and_commit(part, dest, checksum, origin=str(src), copy=f"the copy {part} (your {src} is untouched)")


def download(
    url: str,
    dest: str | os.PathLike,
    checksum: Checksum | None,
    *,
    log: Log = print,
    retries: int = 5,
    backoff: float = 2.0,
    timeout: float = 60.0,
    size_hint: int | None = None,
) -> dict[str, str]:
    """Fetch `url` into `dest`, resuming `<dest>.part`; returns the file's md5 and sha256.

    Connection problems, truncated bodies and 5xx/429 answers are retried `retries` times with
    exponential backoff; other HTTP errors fail at once with the URL in the message.
    """
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise DataError(f"{url}: expected an http:// or https:// URL")
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = part_path(dest)
    problem = ""
    for attempt in range(retries + 1):
        if attempt:
            wait = min(backoff * 2 ** (attempt - 1), 60.0)
            log(f"{dest.name}: {problem}; retrying in {wait:g} s (attempt {attempt + 1} of {retries + 1})")
            time.sleep(wait)
        try:
            if _transfer(url, part, log, timeout, size_hint):
                return verify_and_commit(part, dest, checksum, origin=url, copy=f"the downloaded copy {part}")
            problem = "the server sent fewer bytes than announced"
        except urllib.error.HTTPError as err:
            if err.code not in RETRY_STATUS:
                raise DataError(f"{url}: HTTP {err.code} {err.reason}") from None
            problem = f"HTTP {err.code} {err.reason}"
        except (urllib.error.URLError, http.client.HTTPException, OSError) as err:
            problem = _describe(err)
    raise DataError(f"{url}: download failed after {retries + 1} attempts ({problem}); rerun to resume")


def _transfer(url: str, part: Path, log: Log, timeout: float, size_hint: int | None) -> bool:
    """One HTTP request continuing `part`; True when the body arrived complete."""
    name = part.name.removesuffix(".part")
    have = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": f"sparsecl/{__version__}"}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:  # nothing left to send: the part file is already whole
            return True
        raise
    with response:
        start = _resume_offset(response, url, have)
        if have:
            log(f"{name}: resuming at {_mib(have)}" if start else f"{name}: the server cannot resume; starting over")
        length = response.headers.get("Content-Length")
        total = start + int(length) if length is not None else size_hint
        progress = _Progress(name, total, start, log)
        received = start
        with open(part, "r+b" if start else "wb") as fh:
            fh.seek(start)
            fh.truncate()
            while block := response.read(CHUNK):
                fh.write(block)
                received += len(block)
                progress.update(received)
            fh.flush()
            os.fsync(fh.fileno())
    progress.done(received)
    return length is None or received == total


def _resume_offset(response, url: str, have: int) -> int:
    """Where the body starts in the file: `have` for a 206 answer, 0 when the server sent it all."""
    if response.status != 206:
        return 0
    content_range = response.headers.get("Content-Range", "")  # "bytes START-END/TOTAL"
    try:
        start = int(content_range.split()[1].split("-")[0])
    except (IndexError, ValueError):
        start = -1
    if start != have:
        raise DataError(f"{url}: asked to resume at byte {have}, got Content-Range {content_range!r}")
    return start


def _describe(err: BaseException) -> str:
    if isinstance(err, urllib.error.URLError) and not isinstance(err, urllib.error.HTTPError):
        err = err.reason if isinstance(err.reason, BaseException) else err
    if isinstance(err, (socket.timeout, TimeoutError)):
        return "connection timed out"
    return f"{type(err).__name__}: {err}" if str(err) else type(err).__name__


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


class _Progress:
    """Plain-text progress lines for a log file: every few percent, or every few seconds."""

    def __init__(self, name: str, total: int | None, start: int, log: Log) -> None:
        self.name, self.total, self.log = name, total, log
        self.started, self.start = time.monotonic(), start
        self.last_time, self.last_pct = self.started, self._pct(start)

    def _pct(self, received: int) -> int:
        return int(100 * received / self.total) if self.total else 0

    def update(self, received: int) -> None:
        now, pct = time.monotonic(), self._pct(received)
        if pct >= self.last_pct + PROGRESS_STEP or now - self.last_time >= PROGRESS_SECONDS:
            self.last_time, self.last_pct = now, pct
            self.log(self._line(received, now))

    def done(self, received: int) -> None:
        self.log(self._line(received, time.monotonic()))

    def _line(self, received: int, now: float) -> str:
        rate = (received - self.start) / max(now - self.started, 1e-6)
        if not self.total:
            return f"{self.name}: {_mib(received)} at {_mib(int(rate))}/s"
        filled = min(20, 20 * received // self.total)
        bar = "#" * filled + "." * (20 - filled)
        return f"{self.name}: [{bar}] {self._pct(received):3d}% {_mib(received)} of {_mib(self.total)} at {_mib(int(rate))}/s"
