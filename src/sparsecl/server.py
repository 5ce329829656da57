"""The warm stage server behind `sparsecl serve`: imported once, forked once per job.

It imports what stages use (torch, numpy, pyarrow, pandas, matplotlib, the package's modules,
and what torch loads on a job's first optimiser step), runs nothing else with them (no thread
pool, no CUDA, so forking is safe), and listens on a Unix socket. For each request it forks a
child that takes over the job's standard streams, working directory, environment and argument
list and runs the command's entry (`run`: the CLI's `main`, handed over by `sparsecl serve`, so
that this module does not import the CLI that imports it) exactly as a fresh process would;
the child reports its pid, then its exit status, and dies with its job if the job goes away.
A job that succeeds ends its log with its peak resident memory (PEAK_RSS): Snakemake's `benchmark:` file
measures the forwarding client, not the process that ran the job.
The server exits when its parent (the Snakemake process) does, or after `idle` seconds
without a request.
"""

from __future__ import annotations

import array
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from .errors import DataError
from .fingerprint import parse_all
from .wire import HEADER, STATUS

PEAK_RSS = "sparsecl: peak RSS of the job's process (MB):"

PRELOAD = (
    "torch",
    "numpy",
    "pyarrow.parquet",
    "pandas",
    "yaml",
    "sparsecl.stages",
    "sparsecl.summary",
    "sparsecl.methods",
    "sparsecl.models",
    "sparsecl.data",
)


def start(log: Path, parent: int, wait: float = 60.0) -> tuple[subprocess.Popen, Path] | None:
    """Start `sparsecl serve` as a process of its own, logging to `log`, and wait until it listens:
    (the process, its socket), or None if it did not come up (jobs then run in their own process)."""
    address = Path(tempfile.gettempdir()) / f"sparsecl-{parent}.sock"
    try:
        log.parent.mkdir(parents=True, exist_ok=True)
        out = open(log, "ab")
    except OSError as err:
        raise DataError(f"{log}: cannot be written ({err.strerror}); expected a writable results directory") from None
    command = [sys.executable, "-m", "sparsecl.cli", "serve", "--socket", str(address), "--parent", str(parent)]
    with out:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True)
    deadline = time.monotonic() + wait
    while not address.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    return (process, address) if address.exists() else None


def serve(run: Callable[[], None], address: Path, idle: float = 600.0, parent: int | None = None) -> None:
    """Run `run` (reading `sys.argv`) in a fork for every request on `address`.

    `parent`: the pid of the process the server lives for, given by it, so that a parent that
    dies while the server still imports torch is not mistaken for init adopting the server."""
    import importlib

    parent = os.getppid() if parent is None else parent
    address = Path(address)
    if not address.parent.is_dir():
        raise DataError(f"{address}: no directory {address.parent} for the server's socket")
    import matplotlib

    matplotlib.use("Agg")
    for name in PRELOAD:
        importlib.import_module(name)
    _warm_up()
    parse_all()
    address.unlink(missing_ok=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(address))
    listener.listen(64)
    listener.settimeout(1.0)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
    signal.signal(signal.SIGTERM, _stop)  # the workflow's end: clean up the socket on the way out
    waited = 0.0
    try:
        while os.getppid() == parent and waited < idle:
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                waited += 1.0
                continue
            waited = 0.0
            if os.fork() == 0:
                listener.close()
                _child(conn, run)  # never returns
            conn.close()
    finally:
        listener.close()
        address.unlink(missing_ok=True)


def _warm_up() -> None:
    """Load what torch imports lazily on a job's first optimiser step and its deterministic-kernels
    switch (the compiler stack: about as long as importing torch), through the same public calls,
    on one-element tensors that start no thread pool, and leave torch's settings as they were."""
    import torch

    torch.use_deterministic_algorithms(
        torch.are_deterministic_algorithms_enabled(), warn_only=torch.is_deterministic_algorithms_warn_only_enabled()
    )
    weight = torch.zeros(1, requires_grad=True)
    for optimizer in (torch.optim.SGD([weight], lr=0.1, momentum=0.9), torch.optim.Adam([weight])):
        weight.grad = torch.ones(1)
        optimizer.step()
        optimizer.zero_grad()
        optimizer.load_state_dict(optimizer.state_dict())


def _stop(_signum, _frame) -> None:
    raise SystemExit(0)


def _child(conn: socket.socket, run: Callable[[], None]) -> None:
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    status = 1
    try:
        conn.settimeout(None)
        request = _request(conn)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        sys.argv = ["sparsecl", *request["argv"]]
        conn.sendall(STATUS.pack(0, os.getpid()))
        threading.Thread(target=_die_with_the_job, args=(conn,), daemon=True).start()
        try:
            run()
            status = 0
        except SystemExit as done:
            status = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    except BaseException as err:  # report, never take the server's traceback to the job's log
        print(f"sparsecl: internal error: {type(err).__name__}: {err}", file=sys.stderr)
    finally:
        try:
            if status == 0:  # an error stays the one line it is
                print(f"{PEAK_RSS} {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f}", file=sys.stderr)
            sys.stdout.flush()
            sys.stderr.flush()
            conn.sendall(STATUS.pack(1, status))
        finally:
            os._exit(status)


def _request(conn: socket.socket) -> dict:
    """The job's request, and its standard streams installed as this process's fds 0, 1, 2."""
    fds = array.array("i")
    message, ancillary, _, _ = conn.recvmsg(1 << 20, socket.CMSG_LEN(3 * fds.itemsize))
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
    (length,) = HEADER.unpack(message[: HEADER.size])
    body = message[HEADER.size :]
    while len(body) < length:
        body += conn.recv(length - len(body))
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    return json.loads(body)


def _die_with_the_job(conn: socket.socket) -> None:
    """The job's end of the socket closes only when the job is gone: then stop working for it."""
    try:
        while conn.recv(1):
            pass
    except OSError:
        pass
    os.kill(os.getpid(), signal.SIGKILL)
