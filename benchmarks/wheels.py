"""Wheels for a machine without a package index: fetch them here, install them there.

`download DIR`: the dependency closure of the packages the workflow needs beyond the scientific
stack (snakemake, optuna, jsonschema), at the versions installed in this environment, as wheels
for CPython 3.12 on manylinux x86_64. A package published only as a source archive is built into
a wheel here, which must then be pure Python. numpy is left out (every PyTorch machine has it).

`install DIR --target SITE`: installs, without an index, the wheels whose distribution the running
interpreter lacks; if the result does not import, or a requirement is unmet, it installs every
wheel (the carried versions then shadow the machine's own) and checks again. Writes a JSON report.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

ROOTS = ("snakemake", "optuna", "jsonschema")
LEAVE_OUT = {"numpy"}
PYTHON = "3.12"
MARKERS = {"python_version": PYTHON, "python_full_version": f"{PYTHON}.3", "sys_platform": "linux",
           "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix", "implementation_name": "cpython",
           "platform_python_implementation": "CPython", "extra": ""}  # fmt: skip
PLATFORMS = [f"manylinux_2_{n}_x86_64" for n in range(17, 40)] + ["manylinux2014_x86_64", "manylinux1_x86_64"]
IMPORTS = "import snakemake.cli, optuna, jsonschema"


def canonical(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def closure(roots=ROOTS) -> dict[str, str]:
    """name -> installed version of every distribution the roots need on the target platform."""
    from packaging.requirements import Requirement

    found: dict[str, str] = {}
    todo = list(roots)
    while todo:
        name = canonical(todo.pop())
        if name in found or name in LEAVE_OUT:
            continue
        found[name] = metadata.version(name)
        for line in metadata.requires(name) or []:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate(MARKERS):
                todo.append(requirement.name)
    return dict(sorted(found.items()))


def download(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    target = ["--python-version", PYTHON, "--implementation", "cp", *(f"--platform={p}" for p in PLATFORMS)]
    for name, version in closure().items():
        pin = f"{name}=={version}"
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "-q",
            "--no-deps",
            "--only-binary=:all:",
            *target,
            "-d",
            str(out),
        ]
        if subprocess.run([*cmd, pin], capture_output=True).returncode != 0:
            print(f"{pin}: no wheel published; building one from the source archive", flush=True)
            subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), pin], check=True)
    impure = [w.name for w in out.glob("*.whl") if not installable(w)]
    if impure:
        raise SystemExit(f"wheels that will not install on CPython {PYTHON}: {', '.join(impure)}")
    size = sum(w.stat().st_size for w in out.glob("*.whl"))
    print(f"{len(list(out.glob('*.whl')))} wheels, {size / 2**20:.1f} MiB in {out}")


def installable(wheel: Path) -> bool:
    """Whether the wheel's tags fit CPython 3.12 on manylinux x86_64."""
    _, abi, platform = wheel.name.removesuffix(".whl").split("-")[-3:]
    if platform == "any":
        return True
    return abi in (f"cp{PYTHON.replace('.', '')}", "abi3", "none") and all(
        p.startswith("manylinux") and p.endswith("x86_64") for p in platform.split(".")
    )


def wheel_name(wheel: Path) -> str:
    return canonical(wheel.name.split("-")[0])


def installed(name: str) -> bool:
    try:
        metadata.version(name)
        return True
    except metadata.PackageNotFoundError:
        return False


def verify(site: Path) -> str | None:
    """None if the roots import and every requirement in the closure is met, else what failed."""
    code = f"""
import sys
{IMPORTS}
from importlib import metadata
from packaging.requirements import Requirement
markers = {MARKERS!r}
unmet, todo, seen = [], {list(ROOTS)!r}, set()
while todo:
    name = todo.pop()
    if name in seen:
        continue
    seen.add(name)
    for line in metadata.requires(name) or []:
        req = Requirement(line)
        if req.marker is not None and not req.marker.evaluate(markers):
            continue
        try:
            version = metadata.version(req.name)
        except metadata.PackageNotFoundError:
            unmet.append(f"{{name}} needs {{req}}: not installed")
            continue
        if not req.specifier.contains(version, prereleases=True):
            unmet.append(f"{{name}} needs {{req}}: {{version}} installed")
        todo.append(req.name)
sys.exit("; ".join(unmet) if unmet else 0)
"""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    return None if result.returncode == 0 else (result.stderr.strip().splitlines() or ["failed"])[-1]


def install(wheels: Path, site: Path, report: Path | None) -> None:
    begun = time.time()
    every = sorted(wheels.glob("*.whl"))
    if not every:
        raise SystemExit(f"{wheels}: no wheels (run benchmarks/wheels.sh on a machine with an index)")
    missing = [w for w in every if not installed(wheel_name(w))]
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile", "--upgrade"]
    chosen, problem = missing, None
    if missing:
        subprocess.run([*pip, "--target", str(site), *map(str, missing)], check=True)
    problem = verify(site)
    if problem:
        print(f"with the machine's own packages: {problem}; installing every carried wheel", flush=True)
        chosen = every
        subprocess.run([*pip, "--target", str(site), *map(str, every)], check=True)
        problem = verify(site)
    summary = {
        "wheels": len(every),
        "wheels_mib": round(sum(w.stat().st_size for w in every) / 2**20, 1),
        "installed": [w.name for w in chosen],
        "already_there": sorted({wheel_name(w) for w in every} - {wheel_name(w) for w in chosen}),
        "install_s": round(time.time() - begun, 1),
        "problem": problem,
    }
    print(f"installed {len(chosen)} of {len(every)} wheels ({summary['wheels_mib']} MiB) into {site}"
          f" in {summary['install_s']}s; {problem or 'imports and requirements OK'}", flush=True)  # fmt: skip
    if report:
        report.write_text(json.dumps(summary, indent=1))
    if problem:
        raise SystemExit(f"carried wheels do not make a working environment: {problem}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("download").add_argument("dir", type=Path)
    inst = sub.add_parser("install")
    inst.add_argument("dir", type=Path)
    inst.add_argument("--target", type=Path, required=True)
    inst.add_argument("--report", type=Path)
    args = parser.parse_args()
    if args.command == "download":
        download(args.dir)
    else:
        install(args.dir, args.target, args.report)


if __name__ == "__main__":
    main()
