"""The GPU path in one run: correctness on CUDA (`pytest -m gpu`), training throughput, the cost of
a DST update, the training rate of every paper configuration's backbone at its input size and batch
(`rehearsal.py project --gpu-rates`), the paper runs' projected wall times and their targets, and the workflow end to end
on a synthetic CIFAR-100; one JSON and one log. Started by `gpu_check.sh`, which prepares the
environment (see benchmarks/README.md, "GPU"). With `--rehearsals`, only the named paper
configurations' rehearsals, on the GPU when there is one.

On the GPU every section has a time cap and the whole check a deadline (the plan's budget,
counted from `--started`, when the shell script began); the JSON is rewritten after every
section, so a check cut short still reports what it measured. The CPU smoke has no clock: each
throughput cell runs a fixed number of steps and every section runs to its end, so what it
reports never depends on the machine's load.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import torch
import yaml
from gpu_throughput import UPDATE_GROWTHS_ALL, SpeedPlan, compile_probe, dst_updates, projections, targets, throughput
from rehearsal import paper_rates  # every paper config's (backbone, dataset, batch): the projections' GPU column

from sparsecl.data.synth import write_cifar100  # the exact upstream tarball format
from sparsecl.io import read_parquet_provenance, write_json

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Plan:
    mode: str
    device: str
    budget_s: float | None  # the whole check, wheel installation included; None: no deadline
    caps: dict[str, float]  # seconds per section (unused without a deadline)
    speed: SpeedPlan
    workflow_images: tuple[int, int]  # train and test images per class of the synthetic CIFAR-100
    workflow_backbone: dict  # backbone and backbone_args of both experiments
    workflow_tasks: int
    workflow_cores: int
    compile: bool
    paper_backbones: tuple[str, ...] | None  # the paper configs' backbones whose rates are measured; None: all
    paper_steps: int  # timed training steps per paper-rate measurement


BACKBONES = ("resnet18_seed", "mobilenetv2_seed", "preact_resnet18_tickets", "resnet110")
GPU = Plan(
    mode="gpu", device="cuda", budget_s=465,
    caps={"correctness": 110, "throughput": 140, "dst_update": 25, "paper_rates": 45, "workflow": 130, "compile": 90},
    speed=SpeedPlan(backbones=BACKBONES, measured=BACKBONES, batches=(64, 128, 256), precisions=("fp32", "bf16"),
                    target_batch=128, focil_batch=10, images=5000, workers=2, seconds=1.0, steps=None, warmup=5,
                    update_growths=UPDATE_GROWTHS_ALL, update_repeats=3),
    workflow_images=(10, 4), workflow_backbone={"backbone": "resnet18_seed"}, workflow_tasks=2, workflow_cores=8,
    compile=True, paper_backbones=None, paper_steps=10,
)  # fmt: skip
SMOKE = Plan(  # idle, it needs about a minute
    mode="cpu-smoke", device="cpu", budget_s=None, caps={},
    speed=SpeedPlan(backbones=BACKBONES, measured=("resnet18_seed", "mobilenetv2_seed"), batches=(8,),
                    precisions=("fp32", "bf16"), target_batch=8, focil_batch=4, images=64, workers=0, seconds=0.0,
                    steps=3, warmup=1, update_growths=(("random", False),), update_repeats=1),
    workflow_images=(2, 1), workflow_backbone={"backbone": "mlp", "backbone_args": {"hidden": [32]}},
    workflow_tasks=1, workflow_cores=2, compile=False, paper_backbones=("mlp",), paper_steps=1,
)  # fmt: skip
LATER = ("correctness", "throughput", "dst_update", "paper_rates", "workflow")  # mandatory sections, in order


class Check:
    """Holds the report, the clock and the log; each section writes the JSON when it ends."""

    def __init__(self, plan: Plan, out: Path, started: float) -> None:
        self.plan, self.out, self.started = plan, out, started
        self.deadline = None if plan.budget_s is None else started + plan.budget_s
        self.report: dict = {"mode": plan.mode, "sections_s": {}}

    def log(self, message: str) -> None:
        print(f"[{time.time() - self.started:6.1f}s] {message}", flush=True)

    def cap(self, name: str) -> float | None:
        """The section's deadline: its cap, and never into the time the mandatory sections after it
        need; None without a deadline."""
        if self.deadline is None:
            return None
        after = LATER[LATER.index(name) + 1 :] if name in LATER else ()
        reserve = sum(self.plan.caps[n] for n in after)
        return min(time.time() + self.plan.caps[name], self.deadline - reserve)

    def section(self, name: str, fn) -> None:
        begun = time.time()
        self.log(f"== {name}")
        try:
            self.report[name] = fn()
        except Exception as err:  # a broken section is reported, and the others still run
            self.report[name] = {"status": f"error: {type(err).__name__}: {err}"}
            traceback.print_exc()
        self.report["sections_s"][name] = round(time.time() - begun, 1)
        self.report["elapsed_s"] = round(time.time() - self.started, 1)
        self.log(f"== {name} done in {time.time() - begun:.1f}s")
        write_json(self.out / "gpu_check.json", self.report)


def environment(device: torch.device) -> dict:
    env = {"python": platform.python_version(), "torch": torch.__version__, "cuda_available": torch.cuda.is_available(),
           "cpus": os.cpu_count(), "host": platform.node()}  # fmt: skip
    for name in ("torchvision", "snakemake", "optuna", "jsonschema"):
        try:
            env[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            env[name] = "not installed"
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env |= {"gpu": props.name, "capability": f"{props.major}.{props.minor}", "sms": props.multi_processor_count,
                "memory_gib": round(props.total_memory / 2**30, 1), "cuda": torch.version.cuda,
                "cudnn": torch.backends.cudnn.version()}  # fmt: skip
    return env


def run_killable(cmd: list[str], until: float | None, **kwargs) -> tuple[int | None, str]:
    """Run `cmd` in its own process group; at `until` (epoch seconds; None: never) the whole group
    is killed (rc None)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            **kwargs)  # fmt: skip
    try:
        output, _ = proc.communicate(timeout=None if until is None else max(until - time.time(), 1))
        return proc.returncode, output
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        return None, output


def correctness(check: Check) -> dict:
    """`pytest -m gpu`, one verdict per test as each finishes (so that a cut-short run keeps its verdicts)."""
    cmd = [sys.executable, "-m", "pytest", "tests/test_gpu.py", "-m", "gpu", "-v", "-p", "no:cacheprovider"]
    env = dict(os.environ, CUBLAS_WORKSPACE_CONFIG=":4096:8")  # for the tests that ask for deterministic kernels
    if check.plan.device == "cpu":  # the tests themselves, on the CPU, but for the two slowest (whole tasks)
        env["SPARSECL_GPU_TESTS_ON_CPU"] = "1"
        cmd += ["-k", "not bit_identical and not resumes_to_the_uninterrupted"]
    rc, output = run_killable(cmd, check.cap("correctness"), cwd=ROOT, env=env)
    print(output[-8000:], flush=True)
    verdict = re.compile(r"^tests/test_gpu\.py::(\S+) (PASSED|FAILED|SKIPPED|ERROR)")
    tests = {m[1]: m[2].lower() for m in map(verdict.match, output.splitlines()) if m}
    counts = {k: sum(v == k for v in tests.values()) for k in ("passed", "failed", "error", "skipped")}
    return {"returncode": rc, "timed_out": rc is None, "counts": counts, "tests": tests}


def workflow(check: Check) -> dict:
    """`snakemake all` for one dst and one focil experiment on a synthetic CIFAR-100 tarball."""
    work = Path(tempfile.mkdtemp(prefix="sparsecl-gpu-check-"))
    archive = work / "cifar-100-python.tar.gz"
    train, test = check.plan.workflow_images
    write_cifar100(archive, train_per_class=train, test_per_class=test)
    common = {"dataset": "cifar100", **check.plan.workflow_backbone, "protocol": "standard",
              "scenario": {"num_tasks": check.plan.workflow_tasks, "classes_per_task": 5}}  # fmt: skip
    config = {
        "seeds": [0],
        "device": check.plan.device,
        "data": {"sources": {"cifar100": {"path": str(archive),
                                          "checksums": {archive.name: hashlib.md5(archive.read_bytes()).hexdigest()}}}},
        "experiments": {
            "dst": common | {"method": "dst",
                             "train": {"epochs": 2, "batch_size": 16, "optimizer": "adam", "lr": 0.001, "loss_scope": "task"},
                             "method_args": {"density": 0.2, "init": "ERK", "growth": "random", "update_frequency": 2}},
            "focil": common | {"method": "focil",
                               "train": {"epochs": 1, "batch_size": 10, "momentum": 0.9, "nesterov": True,
                                         "weight_decay": 0.0005, "loss_scope": "task"},
                               "method_args": {"trials": 3, "report_every": 2}},
        },
    }  # fmt: skip
    (work / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    cmd = [sys.executable, "-m", "snakemake", "all", "--cores", str(check.plan.workflow_cores), "--snakefile",
           str(ROOT / "Snakefile"), "--directory", str(work), "--resources", "gpu=4", "--configfile",
           str(work / "config.yaml")]  # fmt: skip
    begun = time.time()
    rc, output = run_killable(cmd, check.cap("workflow"), cwd=work)
    print(output[-4000:], flush=True)
    evals = sorted(work.glob("results/runs/*/*/seed*/task*/eval.parquet"))
    devices = {str(p.relative_to(work / "results/runs")): read_parquet_provenance(p).get("device") for p in evals}
    gpu = torch.cuda.get_device_name() if check.plan.device == "cuda" else None
    summary = (work / "results/tables/summary.md").exists()
    if rc == 0:
        shutil.rmtree(work)  # kept for inspection when the run failed
    return {
        "returncode": rc, "timed_out": rc is None, "seconds": round(time.time() - begun, 1), "workdir": str(work),
        "eval_files": len(evals), "expected_eval_files": len(config["experiments"]) * check.plan.workflow_tasks,
        "summary_exists": summary,
        "provenance_device": devices,
        "gpu_name_recorded": bool(evals) and all(d == f"cuda:{gpu}" for d in devices.values()) if gpu else None,
    }  # fmt: skip


REHEARSALS_BUDGET_S = 530  # all rehearsals together, inside one 10-minute call with the wheel installation


def rehearsals(names: list[str], started: float, budget_s: float | None, log) -> dict:
    """Each named paper configuration's rehearsal (`--config rehearse=true`), on the device its
    `device: auto` resolves to, with every job its own process sharing the GPU (`gpu` resource = the
    cores): completed or not, its steps, wall time, and the device every `eval.parquet` records.
    With a budget, each rehearsal gets an equal share of what is left when it starts."""
    cores = os.cpu_count() or 2
    report = {}
    for i, name in enumerate(names):
        work = Path(tempfile.mkdtemp(prefix=f"sparsecl-rehearsal-{name}-"))
        shutil.copy(ROOT / "config/papers" / f"{name}.yaml", work / "config.yaml")
        until = None
        if budget_s is not None:
            until = time.time() + (started + budget_s - time.time()) / (len(names) - i)
        cmd = [sys.executable, "-m", "snakemake", "all", "--cores", str(cores), "--resources", f"gpu={cores}",
               "--snakefile", str(ROOT / "Snakefile"), "--directory", str(work), "--configfile",
               str(work / "config.yaml"), "--config", "rehearse=true"]  # fmt: skip
        begun = time.time()
        rc, output = run_killable(cmd, until, cwd=work)
        seconds = round(time.time() - begun, 1)
        steps = re.findall(r"^(\d+) of (\d+) steps", output, re.MULTILINE)
        root = work / "results/rehearsal" / yaml.safe_load((work / "config.yaml").read_text())["name"]
        evals = sorted(root.glob("runs/**/eval.parquet"))
        devices = sorted({str(read_parquet_provenance(p).get("device")) for p in evals})
        log(f"{name}: rc {rc}, {steps[-1] if steps else 'no step'} done, {seconds} s, devices {devices}")
        if rc != 0:
            print(output[-3000:], flush=True)
        report[name] = {
            "returncode": rc, "timed_out": rc is None, "seconds": seconds,
            "steps_done": int(steps[-1][0]) if steps else 0, "steps": int(steps[-1][1]) if steps else None,
            "eval_files": len(evals), "devices": devices,
            "ledger_first_line": (root / "tables/reproduction.md").read_text().splitlines()[0]
            if (root / "tables/reproduction.md").exists() else None,
        }  # fmt: skip
        shutil.rmtree(work, ignore_errors=True)
    return report


def run_compile_probe(check: Check) -> dict:
    if not check.plan.compile:
        return {"status": "skipped in this mode"}
    left = min(check.plan.caps["compile"], check.deadline - time.time() - 10)
    if left < 60:
        return {"status": f"skipped: {left:.0f}s left"}
    cmd = [sys.executable, str(Path(__file__)), "--compile-probe"]
    rc, output = run_killable(cmd, time.time() + left, cwd=ROOT)
    lines = [line for line in output.splitlines() if line.startswith("{")]
    if rc == 0 and lines:
        return {"status": "ok"} | json.loads(lines[-1])
    print(output[-3000:], flush=True)
    return {"status": "timed out" if rc is None else f"failed ({rc})"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path)
    parser.add_argument("--cpu-smoke", action="store_true")
    parser.add_argument("--started", type=float, default=time.time(), help="epoch seconds the check began")
    parser.add_argument("--setup", type=Path, help="JSON written by the wheel installation")
    parser.add_argument("--compile-probe", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--rehearsals", help="only these paper configs' rehearsals (comma-separated names)")
    args = parser.parse_args()
    if args.compile_probe:
        torch.backends.cudnn.benchmark = True
        print(json.dumps(compile_probe(torch.device("cuda"), GPU.speed.seconds)), flush=True)
        return
    if args.rehearsals:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        check = Check(SMOKE if device.type == "cpu" else GPU, args.out, args.started)
        check.report["setup"] = json.loads(args.setup.read_text()) if args.setup and args.setup.exists() else {}
        check.section("environment", lambda: environment(device))
        budget = REHEARSALS_BUDGET_S if device.type == "cuda" else None
        check.section("rehearsals", lambda: rehearsals(args.rehearsals.split(","), args.started, budget, check.log))
        return
    plan = SMOKE if args.cpu_smoke else GPU
    device = torch.device(plan.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as training runs (seed_everything)
    check = Check(plan, args.out, args.started)
    check.report["setup"] = json.loads(args.setup.read_text()) if args.setup and args.setup.exists() else {}
    check.section("environment", lambda: environment(device))
    check.section("correctness", lambda: correctness(check))
    check.section("throughput", lambda: throughput(plan.speed, device, check.cap("throughput"), check.log))
    check.section("dst_update", lambda: dst_updates(plan.speed, device, check.log))
    tp, updates = check.report.get("throughput", {}), check.report.get("dst_update", {})
    check.section("paper_rates", lambda: paper_rates(plan.device, plan.paper_steps, plan.paper_backbones))
    check.section("projections", lambda: projections(tp, updates, plan.speed))
    check.section("targets", lambda: targets(tp, check.report["projections"], plan.speed, plan.mode == "gpu"))
    check.section("workflow", lambda: workflow(check))
    check.section("compile", lambda: run_compile_probe(check))
    check.log(f"wrote {args.out / 'gpu_check.json'}")
    print(json.dumps({k: check.report.get(k) for k in ("targets", "projections")}, indent=1), flush=True)


if __name__ == "__main__":
    main()
