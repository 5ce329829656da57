"""The warm stage server runs a `sparsecl` command exactly as a fresh process would."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from sparsecl.server import PEAK_RSS

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


def test_a_served_job_that_succeeds_ends_its_log_with_its_own_peak_memory(server, tmp_path):
    config, _, _ = make_run(tmp_path / "setup")
    settings = yaml.safe_load(config.read_text())
    settings.pop("config_hash")
    args = ["run-config", "--json", json.dumps(settings), "--out", "c.yaml"]
    served, local = sparsecl(args, tmp_path, server), sparsecl(args, tmp_path)
    assert served.returncode == local.returncode == 0
    *_, last = served.stderr.splitlines()
    assert last.startswith(PEAK_RSS) and float(last.removeprefix(PEAK_RSS)) > 50  # torch is loaded in it
    assert PEAK_RSS not in local.stderr  # a job in its own process: the benchmark file measures it


def test_without_a_reachable_server_the_command_runs_in_its_own_process(tmp_path):
    result = sparsecl(["train", "--task", "abc"], tmp_path, server=Path(tmp_path) / "nobody.sock")
    assert result.returncode == 2 and "Invalid value for '--task'" in result.stderr


WRAPPER = """
import subprocess, sys, time
server = subprocess.Popen([sys.executable, "-m", "sparsecl.cli", "serve", "--socket", sys.argv[1], "--idle", "3600",
                           "--parent", str(__import__("os").getpid())], start_new_session=True)
print(server.pid, flush=True)
time.sleep(3600)
"""


def test_a_server_whose_run_is_killed_while_it_starts_exits_on_its_own(tmp_path):
    """The run that starts the server (here a stand-in for Snakemake) is SIGKILLed at once, before
    the server has even imported torch: the server must not stay for its idle timeout."""
    wrapper = subprocess.Popen(
        [sys.executable, "-c", WRAPPER, str(tmp_path / "s.sock")], stdout=subprocess.PIPE, text=True
    )
    server_pid = int(wrapper.stdout.readline())
    wrapper.kill()
    wrapper.wait()
    for _ in range(3000):  # polled, not timed: the server's imports take what the machine's load makes them
        try:
            os.kill(server_pid, 0)
        except ProcessLookupError:
            break
        if Path(f"/proc/{server_pid}/stat").read_text().split()[2] == "Z":
            break  # exited, waiting for init to reap it
        time.sleep(0.2)
    else:
        os.kill(server_pid, 9)
        pytest.fail("the stage server outlived the run that started it by 10 minutes")
    assert not (tmp_path / "s.sock").exists()


def test_a_socket_in_a_missing_directory_is_one_line_naming_it(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "sparsecl.cli", "serve", "--socket", str(tmp_path / "nowhere" / "s.sock")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 1
    assert (
        done.stderr.strip()
        == f"sparsecl: error: {tmp_path}/nowhere/s.sock: no directory {tmp_path}/nowhere for the server's socket"
    )
