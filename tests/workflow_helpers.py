"""Run the real workflow in a temporary directory (shared by the integration tests)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def local_env() -> dict[str, str]:
    """The environment of a local (non-SLURM) Snakemake run: this venv first on PATH, and an
    `scontrol` that fails at once. Importing the SLURM executor plugin runs `scontrol show
    config`, which waits 10 s for a controller where SLURM is installed but not running (as
    outside tests/test_slurm.py); the plugin treats the failure as "no cluster"."""
    stub = Path(tempfile.gettempdir()) / "sparsecl-tests-no-slurm"
    stub.mkdir(exist_ok=True)
    scontrol = stub / "scontrol"
    if not scontrol.exists():  # written whole, then renamed: parallel test runs may race here
        partial = stub / f"scontrol.{os.getpid()}"
        partial.write_text("#!/bin/sh\nexit 1\n")
        partial.chmod(0o755)
        partial.replace(scontrol)
    path = os.pathsep.join([str(stub), str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    return dict(os.environ, PATH=path)


def snakemake(workdir: Path, *args: str, check: bool = True, timeout: int = 600) -> subprocess.CompletedProcess:
    """`snakemake` on the repository's Snakefile with `workdir` as the working directory."""
    env = local_env()
    # Targets and flags first: --configfile (like --resources) takes every word after it.
    cmd = [
        sys.executable, "-m", "snakemake", *args, "--snakefile", str(ROOT / "Snakefile"), "--directory", str(workdir),
        "--configfile", str(workdir / "config.yaml"),
    ]  # fmt: skip
    result = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(
            f"snakemake {' '.join(args)} failed ({result.returncode}):\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
        )
    return result


def write_config(workdir: Path, config: dict) -> None:
    (workdir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


def planned_jobs(dry_run_output: str) -> list[tuple[str, dict[str, str]]]:
    """(rule, wildcards) of every job a `snakemake -n` run would execute."""
    jobs = []
    for block in re.split(r"\n(?=\[[^\]]+\]\n|rule |localrule |checkpoint |localcheckpoint )", dry_run_output):
        match = re.search(r"^(?:local)?(?:rule|checkpoint) (\w+):", block, re.M)
        if not match:
            continue
        wildcards = {}
        wc = re.search(r"^\s+wildcards: (.*)$", block, re.M)
        if wc:
            wildcards = dict(item.split("=", 1) for item in wc.group(1).split(", "))
        jobs.append((match.group(1), wildcards))
    return jobs
