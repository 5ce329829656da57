"""The warm stage server runs a `sparsecl` command exactly as a fresh process would."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from .stage_helpers import make_run

LAUNCHER = [sys.executable, "-m", "sparsecl.launcher"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    address = tmp_path_factory.mktemp("server") / "s.sock"
    process = subprocess.Popen(
        [sys.executable, "-m", "sparsecl.cli", "serve", "--socket", str(address), "--idle", "120"]
    )
    deadline = time.time() + 120
    while not address.exists() and time.time() < deadline:
        time.sleep(0.2)
    assert address.exists(), "the server never listened"
    yield address
    process.terminate()
    process.wait(timeout=30)
    assert not address.exists()  # it cleans up its socket


def sparsecl(args, cwd, server=None):
    env = {k: v for k, v in os.environ.items() if k != "SPARSECL_SERVER"}
    if server is not None:
        env["SPARSECL_SERVER"] = str(server)
    return subprocess.run([*LAUNCHER, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_a_user_error_is_the_same_one_line_answer_through_the_server(server, tmp_path):
    args = ["train", "--config", "missing.yaml", "--data-dir", "d", "--scenario", "s", "--task", "0",
            "--out-model", "m", "--out-masks", "k", "--out-log", "l", "--resume", "r"]  # fmt: skip
    served, local = sparsecl(args, tmp_path, server), sparsecl(args, tmp_path)
    assert served.returncode == local.returncode == 1
    assert served.stderr == local.stderr == "sparsecl: error: missing.yaml: run config not found\n"


def test_usage_errors_keep_their_exit_status(server, tmp_path):
    assert sparsecl(["train", "--task", "abc"], tmp_path, server).returncode == 2


def test_a_stage_run_by_the_server_writes_the_same_bytes_in_the_jobs_directory(server, tmp_path):
    config, _, _ = make_run(tmp_path / "setup")
    settings = yaml.safe_load(config.read_text())
    settings.pop("config_hash")
    payload = json.dumps(settings)
    for name, via in (("served", server), ("local", None)):
        result = sparsecl(["run-config", "--json", payload, "--out", f"{name}.yaml"], tmp_path, via)
        assert result.returncode == 0, result.stderr
    assert (tmp_path / "served.yaml").read_bytes() == (tmp_path / "local.yaml").read_bytes()


def test_without_a_reachable_server_the_command_runs_in_its_own_process(tmp_path):
    result = sparsecl(["train", "--task", "abc"], tmp_path, server=Path(tmp_path) / "nobody.sock")
    assert result.returncode == 2 and "Invalid value for '--task'" in result.stderr
