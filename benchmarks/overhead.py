"""Per-job overhead: what a stage costs before it trains, how long planning takes, the default run.

    python benchmarks/overhead.py stage        # fixed cost of a stage vs `import torch`
    python benchmarks/overhead.py plan         # `snakemake -n` of the DST paper grid at 1/4, 1/2, 1
    python benchmarks/overhead.py demo         # the README's main command in a fresh clone, per rule

Each prints a markdown section for benchmarks/README.md. Run on an otherwise idle machine.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def timed(cmd: list[str], repeat: int = 5, **kwargs) -> float:
    """Median wall seconds of `cmd` over `repeat` runs."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, **kwargs)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


# The stage's own process up to its first training step: the CLI exactly as `sparsecl train`
# runs it, with the epoch loop replaced by an immediate exit.
TO_FIRST_STEP = """
import os, sys
from sparsecl.methods import training
training.train_epoch = lambda *args, **kwargs: os._exit(0)
sys.argv = ["sparsecl", *sys.argv[1:]]
from sparsecl.cli import main
main()
"""


def stage() -> None:
    """A digits training stage of one epoch (fixed cost dominates) as a fresh process and through
    the stage server, and the same process up to its first training step, against a bare
    `python -c "import torch"`."""
    from stage_helpers import make_run

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        config, data, scenario = make_run(root, "finetune", num_tasks=1, train={"epochs": 1})
        out = root / "out"
        train = [
            "train", "--config", str(config), "--data-dir", str(data), "--scenario", str(scenario), "--task", "0",
            "--out-model", str(out / "m.pt"), "--out-masks", str(out / "k.pt"), "--out-log", str(out / "l.parquet"),
            "--resume", str(out / "r.pt"), "--device", "cpu",
        ]  # fmt: skip
        torch_import = timed([sys.executable, "-c", "import torch"])
        env = {k: v for k, v in os.environ.items() if k != "SPARSECL_SERVER"}
        fresh = timed([sys.executable, "-m", "sparsecl.launcher", *train], env=env)
        first_step = timed([sys.executable, "-c", TO_FIRST_STEP, *train], env=env)
        address = root / "server.sock"
        server = subprocess.Popen([sys.executable, "-m", "sparsecl.cli", "serve", "--socket", str(address)])
        while not address.exists():
            time.sleep(0.1)
        served = timed([sys.executable, "-m", "sparsecl.launcher", *train], env=env | {"SPARSECL_SERVER": str(address)})
        server.terminate()
        help_time = timed([sys.executable, "-m", "sparsecl.launcher", "--help"], env=env)
    print("| what (median of 5, wall) | seconds | vs `import torch` |")
    print("|---|---|---|")
    print(f"| `python -c 'import torch'` | {torch_import:.2f} | 1.00x |")
    print(f"| digits train stage, own process, start to its first training step | {first_step:.2f} |"
          f" {first_step / torch_import:.2f}x |")  # fmt: skip
    print(f"| digits train stage, 1 epoch, own process | {fresh:.2f} | {fresh / torch_import:.2f}x |")
    print(f"| the same through the stage server | {served:.2f} | {served / torch_import:.2f}x |")
    print(f"| `sparsecl --help` | {help_time:.2f} | {help_time / torch_import:.2f}x |")


BARE_SNAKEFILE = """
import json
TASKS = json.load(open(config["tasks"]))  # run id -> number of tasks
rule all:
    input: [f"r/{run}/metrics" for run in TASKS]
rule data:
    output: "d/meta.json", "d/scenario.json"
    shell: "touch {output}"
rule run_config:
    output: "r/{e}/{p}/{s}/config.yaml"
    shell: "touch {output}"
def task_inputs(w):
    files = {"config": f"r/{w.e}/{w.p}/{w.s}/config.yaml", "meta": "d/meta.json", "scenario": "d/scenario.json"}
    if int(w.t):
        files |= {n: f"r/{w.e}/{w.p}/{w.s}/task{int(w.t) - 1}/{n}" for n in ("model", "masks")}
    return files
rule train:
    input: unpack(task_inputs)
    output: model="r/{e}/{p}/{s}/task{t}/model", masks="r/{e}/{p}/{s}/task{t}/masks", log="r/{e}/{p}/{s}/task{t}/log", evaluation="r/{e}/{p}/{s}/task{t}/eval"
    shell: "touch {output}"
rule summarize:
    input: lambda w: [f"r/{w.e}/{w.p}/{w.s}/task{t}/eval" for t in range(TASKS[f"{w.e}/{w.p}/{w.s}"])]
    output: "r/{e}/{p}/{s}/metrics"
    shell: "touch {output}"
"""


def dry_run(snakefile: Path, workdir: str, config: list[str], *flags: str) -> tuple[int, float]:
    """Jobs and wall seconds of `snakemake -n all`, in the tests' local environment: where SLURM is
    installed but no controller runs, the SLURM plugin's import-time `scontrol` call would add a
    10 s wait that a machine without SLURM (or a cluster's login node) does not have."""
    from workflow_helpers import local_env

    cmd = [sys.executable, "-m", "snakemake", "-n", "all", *flags, "--snakefile", str(snakefile),
           "--directory", workdir, *config]  # fmt: skip
    started = time.perf_counter()
    result = subprocess.run(cmd, capture_output=True, text=True, check=True, env=local_env())
    seconds = time.perf_counter() - started
    totals = [line.split()[-1] for line in result.stdout.splitlines() if line.startswith("total")]
    return (int(totals[0]) if totals else 0), seconds  # `--quiet` prints no job table


def plan() -> None:
    """`snakemake -n` of the CL-with-DST paper grid and of parts of it (the README settings plus
    one or two of the four sweeps), to show that planning grows linearly with the jobs; and, as
    the floor, a bare Snakefile with the same runs, tasks and files per task (no params,
    resources, logs or config checks): what Snakemake itself costs for a DAG of that shape."""
    from sparsecl.experiments import load_schema, plan_runs

    paper = yaml.safe_load((ROOT / "config/papers/cl-with-dst.yaml").read_text())
    schema = load_schema(ROOT / "workflow/schemas/config.schema.yaml")
    names = list(paper["experiments"])
    readme = [n for n in names if not n.startswith("sweep_")]
    sweeps = [n for n in names if n.startswith("sweep_")]
    print(
        "| grid | jobs | `snakemake -n` (s) | ms per job | with `--quiet` (s) | bare Snakefile, same shape: jobs, s |"
    )
    print("|---|---|---|---|---|---|")
    for label, keep in (("README + 1 sweep", readme + sweeps[:1]), ("README + 2 sweeps", readme + sweeps[:2]),
                        ("full", names)):  # fmt: skip
        config = dict(paper, experiments={n: paper["experiments"][n] for n in keep})
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "config.yaml"
            path.write_text(yaml.safe_dump(config, sort_keys=False))
            jobs, seconds = dry_run(ROOT / "Snakefile", tmp, ["--configfile", str(path)])
            _, quiet = dry_run(ROOT / "Snakefile", tmp, ["--configfile", str(path)], "--quiet")
            tasks = {p.run.run_id: p.run.scenario.num_tasks for p in plan_runs(config, schema)}
            (Path(tmp) / "tasks.json").write_text(json.dumps(tasks))
            (Path(tmp) / "Snakefile").write_text(BARE_SNAKEFILE)
            bare_jobs, bare = dry_run(Path(tmp) / "Snakefile", tmp, ["--config", f"tasks={tmp}/tasks.json"])
        print(
            f"| {label} | {jobs} | {seconds:.1f} | {1000 * seconds / jobs:.2f} | {quiet:.1f} | {bare_jobs}, {bare:.1f} |"
        )


def demo() -> None:
    """The README's main command on a fresh clone (this venv's packages, the tests' local
    environment as for `plan`), with the per-rule time."""
    from workflow_helpers import local_env

    with tempfile.TemporaryDirectory() as tmp:
        clone = Path(tmp) / "clone"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "snakemake", "all", "--cores", "4", "--resources", "gpu=1"],
            cwd=clone, check=True, capture_output=True, env=local_env(),
        )  # fmt: skip
        wall = time.perf_counter() - started
        per_rule: dict[str, list[float]] = defaultdict(list)
        for tsv in (clone / "results/benchmarks").rglob("*.tsv"):
            rule = tsv.relative_to(clone / "results/benchmarks").parts[0]
            per_rule[rule].append(float(tsv.read_text().splitlines()[1].split("\t")[0]))
        logs = defaultdict(int)
        for log in (clone / "results/logs").rglob("*.log"):
            parts = log.relative_to(clone / "results/logs").parts
            if len(parts) > 1:  # results/logs/<rule>/...; not the stage server's own log
                logs[parts[0]] += 1
    print(
        f"`snakemake all --cores 4 --resources gpu=1` on a fresh clone: **{wall:.0f} s** wall, {sum(logs.values())} jobs"
    )
    print()
    print("| rule | jobs | job seconds (sum) | mean |")
    print("|---|---|---|---|")
    for rule in sorted(logs):
        times = per_rule.get(rule, [])
        total = f"{sum(times):.1f}" if times else "—"
        mean = f"{statistics.mean(times):.2f}" if times else "—"
        print(f"| {rule} | {logs[rule]} | {total} | {mean} |")


if __name__ == "__main__":
    {"stage": stage, "plan": plan, "demo": demo}[sys.argv[1] if len(sys.argv) > 1 else "stage"]()
