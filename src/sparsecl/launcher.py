"""The `sparsecl` command's entry point: run in this process, or in a fork of a warm stage server.

Most of a small stage's time is spent importing torch and its company. A local Snakemake run
starts one stage server (`sparsecl serve`, from the Snakefile's `onstart`) that has imported
them, and exports its socket as SPARSECL_SERVER; every `sparsecl` job then hands its argument
list, working directory, environment and standard streams to the server, which forks a child
that runs exactly what the command would have run, and the job exits with the child's status.
Signals sent to the job (Snakemake stopping it) are passed on to the child. Without a server,
or when it cannot be reached, the command runs in this process, as it always can.

This module imports only the standard library, so a job's own start-up stays a few milliseconds.
"""

from __future__ import annotations

import array
import json
import os
import signal
import socket
import sys

from .wire import HEADER, STATUS

SERVER_ENV = "SPARSECL_SERVER"


def main() -> None:
    address = os.environ.get(SERVER_ENV)
    if address:
        status = run_on_server(address, sys.argv[1:])
        if status is not None:
            sys.exit(status)
    from .cli import main as cli_main

    cli_main()


def run_on_server(address: str, argv: list[str]) -> int | None:
    """Exit status of `argv` run by the server, or None if no server answered (run it here)."""
    try:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.connect(address)
    except OSError:
        return None
    with conn:
        request = json.dumps({"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ)}).encode()
        fds = array.array("i", [0, 1, 2])
        try:
            conn.sendmsg([HEADER.pack(len(request)) + request], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)])
            kind, child = _receive(conn)
        except OSError:
            return None
        if kind != 0:
            return None
        forward = {sig: signal.signal(sig, lambda s, _f: _signal_child(child, s)) for sig in FORWARDED}
        try:
            kind, status = _receive(conn)
        except OSError:
            kind, status = 1, 1
        finally:
            for sig, handler in forward.items():
                signal.signal(sig, handler)
        return status if kind == 1 else 1


FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def _signal_child(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _receive(conn: socket.socket) -> tuple[int, int]:
    data = b""
    while len(data) < STATUS.size:
        chunk = conn.recv(STATUS.size - len(data))
        if not chunk:  # the server or the child went away without a word (e.g. killed)
            return 1, 1
        data += chunk
    return STATUS.unpack(data)


if __name__ == "__main__":
    main()
