"""Fetching raw files: resumable HTTP, retries, checksums, local sources, manual files."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sparsecl.data.download import Checksum, download
from sparsecl.data.sources import SourceOverride, fetch_raw, raw_paths, source_names
from sparsecl.errors import ConfigError, DataError

from .fixtures.http_server import file_server

PAYLOAD = os.urandom(300_000)
MD5 = hashlib.md5(PAYLOAD).hexdigest()


@pytest.fixture
def server():
    with file_server() as state:
        yield state


def quiet(_: str) -> None:
    pass


def test_download_writes_the_verified_file_and_no_part_file(server, tmp_path):
    url = server.add("blob.bin", PAYLOAD)
    lines: list[str] = []
    digests = download(url, tmp_path / "blob.bin", Checksum("md5", MD5), log=lines.append)
    assert (tmp_path / "blob.bin").read_bytes() == PAYLOAD
    assert digests["md5"] == MD5
    assert not (tmp_path / "blob.bin.part").exists()
    assert any("100%" in line for line in lines), lines


def test_checksum_mismatch_names_file_and_both_hashes_and_leaves_nothing(server, tmp_path):
    url = server.add("blob.bin", PAYLOAD)
    wrong = "0" * 32
    with pytest.raises(DataError) as err:
        download(url, tmp_path / "blob.bin", Checksum("md5", wrong), log=quiet)
    message = str(err.value)
    assert "\n" not in message
    assert "blob.bin" in message and wrong in message and MD5 in message
    assert list(tmp_path.iterdir()) == []


def test_interrupted_download_resumes_on_rerun_with_a_range_request(server, tmp_path):
    url = server.add("blob.bin", PAYLOAD, cut_after=[100_000])
    dest = tmp_path / "blob.bin"
    with pytest.raises(DataError, match="rerun to resume"):
        download(url, dest, Checksum("md5", MD5), log=quiet, retries=0)
    assert not dest.exists()
    assert (tmp_path / "blob.bin.part").stat().st_size == 100_000

    lines: list[str] = []
    download(url, dest, Checksum("md5", MD5), log=lines.append, retries=0)
    assert dest.read_bytes() == PAYLOAD
    assert server.ranges("blob.bin") == [None, "bytes=100000-"]
    assert any("resuming" in line for line in lines)


def test_a_dropped_connection_is_retried_within_one_call(server, tmp_path):
    url = server.add("blob.bin", PAYLOAD, cut_after=[50_000, 70_000], fail_with=[503])
    download(url, tmp_path / "blob.bin", Checksum("md5", MD5), log=quiet, retries=3, backoff=0)
    assert (tmp_path / "blob.bin").read_bytes() == PAYLOAD
    assert server.ranges("blob.bin") == [None, None, "bytes=50000-", "bytes=120000-"]


def test_a_server_without_range_support_restarts_from_zero(server, tmp_path):
    url = server.add("blob.bin", PAYLOAD, honour_range=False)
    (tmp_path / "blob.bin.part").write_bytes(PAYLOAD[:1000])
    download(url, tmp_path / "blob.bin", Checksum("md5", MD5), log=quiet)
    assert (tmp_path / "blob.bin").read_bytes() == PAYLOAD


def test_a_complete_part_file_is_verified_without_downloading_again(server, tmp_path):
    url = server.add("blob.bin", PAYLOAD)
    (tmp_path / "blob.bin.part").write_bytes(PAYLOAD)
    download(url, tmp_path / "blob.bin", Checksum("md5", MD5), log=quiet)
    assert (tmp_path / "blob.bin").read_bytes() == PAYLOAD
    assert server.ranges("blob.bin") == [f"bytes={len(PAYLOAD)}-"]


def test_http_errors_name_the_url_and_are_not_retried(server, tmp_path):
    url = f"{server.base_url}/missing.bin"
    with pytest.raises(DataError, match=f"^{url}: HTTP 404"):
        download(url, tmp_path / "missing.bin", None, log=quiet, retries=3, backoff=0)
    assert len(server.requests) == 1


def test_override_url_and_checksum_go_through_the_same_code_path(server, tmp_path):
    url = server.add("mirror/cifar.tgz", PAYLOAD)
    overrides = {"cifar100": {"url": url, "checksums": {"cifar-100-python.tar.gz": f"md5:{MD5}"}}}
    out = tmp_path / "raw" / "cifar-100-python.tar.gz"
    fetch_raw("cifar100", "cifar-100-python.tar.gz", out, overrides, log=quiet)
    assert out.read_bytes() == PAYLOAD


def test_without_a_checksum_override_the_published_checksum_is_verified(server, tmp_path):
    url = server.add("cifar.tgz", PAYLOAD)
    with pytest.raises(DataError, match="c58f30108f718f92721af3b95e74349a"):
        fetch_raw("cifar10", "cifar-10-python.tar.gz", tmp_path / "x.tar.gz", {"cifar10": {"url": url}}, log=quiet)


def test_multi_file_url_override_is_a_base_url(server, tmp_path):
    server.add("mnist/t10k-labels-idx1-ubyte.gz", PAYLOAD)
    overrides = {"mnist": {"url": f"{server.base_url}/mnist/", "checksums": {"t10k-labels-idx1-ubyte.gz": MD5}}}
    fetch_raw("mnist", "t10k-labels-idx1-ubyte.gz", tmp_path / "f.gz", overrides, log=quiet)
    assert (tmp_path / "f.gz").read_bytes() == PAYLOAD


def test_local_path_override_is_linked_or_copied_and_verified(tmp_path):
    src = tmp_path / "mine.tar.gz"
    src.write_bytes(PAYLOAD)
    overrides = {"cifar10": {"path": str(src), "checksums": {"cifar-10-python.tar.gz": MD5}}}
    out = tmp_path / "raw" / "cifar-10-python.tar.gz"
    fetch_raw("cifar10", "cifar-10-python.tar.gz", out, overrides, log=quiet)
    assert out.read_bytes() == PAYLOAD
    assert src.read_bytes() == PAYLOAD  # the user's file is untouched


def test_missing_manual_file_message_says_where_to_get_it_and_where_to_put_it(tmp_path):
    with pytest.raises(DataError) as err:
        fetch_raw("mini_imagenet", "miniImageNet.zip", tmp_path / "raw.zip", manual_dir=tmp_path / "manual", log=quiet)
    message = str(err.value)
    assert "\n" not in message
    assert str(tmp_path / "manual" / "miniImageNet.zip") in message
    assert "kaggle.com/datasets/arjunashok33/miniimagenet" in message


def test_manual_file_present_is_taken_from_the_manual_directory(tmp_path):
    (tmp_path / "manual").mkdir()
    (tmp_path / "manual" / "tiny_images_150k.pkl").write_bytes(PAYLOAD)
    fetch_raw("tiny_images", "tiny_images_150k.pkl", tmp_path / "raw.pkl", manual_dir=tmp_path / "manual", log=quiet)
    assert (tmp_path / "raw.pkl").read_bytes() == PAYLOAD


@pytest.mark.parametrize(
    "entry, problem",
    [
        ({"url": "http://a", "path": "/b"}, "either url or path"),
        ({"checksums": {"nope.tgz": "0" * 32}}, r"checksums\.nope\.tgz: unknown file"),
        ({"checksums": {"cifar-10-python.tar.gz": "xyz"}}, "expected an md5"),
    ],
)
def test_bad_overrides_are_one_line_config_errors(entry, problem):
    with pytest.raises(ConfigError, match=problem):
        SourceOverride.from_config("cifar10", entry)


def test_every_dataset_with_raw_files_has_a_download_source():
    assert set(source_names()) == {
        "cifar10",
        "cifar100",
        "fashion_mnist",
        "mini_imagenet",
        "mnist",
        "tiny_imagenet",
        "tiny_images",
    }
    assert (
        raw_paths("mini_imagenet84") == raw_paths("mini_imagenet") == ["resources/raw/mini_imagenet/miniImageNet.zip"]
    )
    assert raw_paths("digits") == []


def test_cli_prints_one_error_line_and_exits_1(tmp_path):
    sparsecl = Path(sys.executable).parent / "sparsecl"
    result = subprocess.run(
        [str(sparsecl), "data", "download", "mini_imagenet", "--file", "miniImageNet.zip", "--out", str(tmp_path / "x.zip"),
         "--manual-dir", str(tmp_path / "manual")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.startswith("sparsecl: error: mini_imagenet: ")
    assert result.stderr.count("\n") == 1


def test_only_http_urls_are_accepted(tmp_path):
    with pytest.raises(DataError, match="^ftp://host/x: expected an http:// or https:// URL"):
        download("ftp://host/x", tmp_path / "x", None, log=quiet)
