"""A paper configuration's rehearsal, measured, and the projected cost of its real run.

    python benchmarks/rehearsal.py run config/papers/focil.yaml      # rehearse in a scratch folder
    python benchmarks/rehearsal.py table DIR config/papers/focil.yaml  # summarise a rehearsal in DIR
    python benchmarks/rehearsal.py project config/papers/focil.yaml  # the real run's training passes

`run` and `table` print the rehearsal's jobs, wall time and, per rule, the job seconds Snakemake's
`benchmark:` files recorded and the peak memory: the larger of the benchmark's and, for a job the
stage server ran, the peak its forked process wrote as its log's last line. `project` counts the training image passes of the
real run (images x epochs, x FOCIL's trials, + the tickets' retraining rounds; every multistep
stage a full pass), per backbone, and divides them by a throughput measured here (forward and
backward of the backbone at the dataset's input size on this machine's CPU); the GPU column is
left for a GPU check to fill. Evaluation, retrieval and the per-job start are not in it.
"""

from __future__ import annotations

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
sys.path.insert(0, str(ROOT / "src"))

from sparsecl.server import PEAK_RSS  # noqa: E402

# Training images per class of the real datasets (their published train splits; miniImageNet
# keeps 500 of its 600 per class after the 100 held out for test).
TRAIN_PER_CLASS = {
    "cifar10": 5000, "cifar100": 500, "mnist": 6000, "fashion_mnist": 6000,
    "tiny_imagenet": 500, "mini_imagenet": 500, "mini_imagenet84": 500,
}  # fmt: skip
MULTISTEP_STAGES = 3  # multistep's train / sparsity-training / distillation stages per task, counted as passes


def run(config: Path) -> None:
    from workflow_helpers import local_env

    name = yaml.safe_load(config.read_text())["name"]
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "snakemake", "all", "--cores", "2", "--resources", "gpu=1", "--snakefile",
             str(ROOT / "Snakefile"), "--directory", tmp, "--configfile", str(config.resolve()), "--config", "rehearse=true"],
            cwd=tmp, check=True, capture_output=True, env=local_env(),
        )  # fmt: skip
        table(Path(tmp), name, time.perf_counter() - started)


def table(workdir: Path, name: str, wall: float | None = None) -> None:
    root = workdir / "results" / "rehearsal" / name
    per_rule: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for tsv in (root / "benchmarks").rglob("*.tsv"):
        row = tsv.read_text().splitlines()[1].split("\t")
        per_rule[tsv.relative_to(root / "benchmarks").parts[0]].append((float(row[0]), float(row[2])))
    jobs: dict[str, int] = defaultdict(int)
    served: dict[str, float] = defaultdict(float)  # a served job's own peak, from its log's last line
    for log in (root / "logs").rglob("*.log"):
        parts = log.relative_to(root / "logs").parts
        if len(parts) > 1:
            jobs[parts[0]] += 1
            for line in log.read_text(errors="replace").splitlines()[-1:]:
                if line.startswith(PEAK_RSS):
                    served[parts[0]] = max(served[parts[0]], float(line.removeprefix(PEAK_RSS)))
    took = f"**{wall / 60:.1f} min** wall, " if wall else ""
    print(f"`{name}` rehearsal: {took}{sum(jobs.values())} jobs")
    print()
    print("| rule (log directory) | jobs | job seconds (sum) | mean | slowest | peak RSS (MB) |")
    print("|---|---|---|---|---|---|")
    for rule in sorted(jobs):
        rows = per_rule.get(rule, [])
        if not rows:
            print(f"| {rule} | {jobs[rule]} | host jobs | — | — | — |")
            continue
        seconds = [s for s, _ in rows]
        peak = max(served[rule], *(r for _, r in rows))
        print(
            f"| {rule} | {jobs[rule]} | {sum(seconds):.0f} | {statistics.mean(seconds):.1f} | {max(seconds):.0f}"
            f" | {peak:.0f} |"
        )


def passes(run) -> float:
    """Training image passes of one real run (see the module docstring for what counts)."""
    spec, per_class = run.scenario, TRAIN_PER_CLASS[run.dataset]
    from sparsecl.data import get_dataset

    classes = get_dataset(run.dataset).num_classes
    if spec.kind == "data":
        task_images = [classes * per_class * c / sum(spec.chunks) for c in spec.chunks]
    else:
        task_images = [spec.classes_per_task * per_class] * spec.num_tasks
    if run.method == "joint":
        task_images = [sum(task_images[: t + 1]) for t in range(len(task_images))]
    epochs, args = run.train.epochs, run.method_args
    factor = float(epochs)
    if run.method == "focil":
        factor *= args.get("trials", 20) if args.get("search", "adaptive") == "adaptive" else 1
    if run.method == "tickets_td":
        factor += sum(args.get("prune_schedule", [1])) / len(task_images) * args.get("retrain_epochs", 30)
    if run.method == "tickets_bu":
        factor += args.get("max_rounds", 26) * args.get("retrain_epochs", 30)
    if run.method == "multistep":
        factor *= MULTISTEP_STAGES
    return sum(task_images) * factor


def throughput(backbone: str, args: dict, shape: tuple[int, int, int], classes: int, batch: int = 32) -> float:
    """Training images per second (forward + backward + SGD step) on this machine's CPU."""
    import torch

    from sparsecl.models import create_backbone

    torch.manual_seed(0)
    model = create_backbone(backbone, classes, shape, **args)
    optimiser = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.rand(batch, shape[2], shape[0], shape[1])
    if backbone == "mlp":
        x = x.flatten(1)
    y = torch.randint(0, classes, (batch,))

    def step():
        optimiser.zero_grad()
        out = model(x)
        out = out if isinstance(out, torch.Tensor) else out[0]
        torch.nn.functional.cross_entropy(out[:, :classes], y).backward()
        optimiser.step()

    step()
    started, steps = time.perf_counter(), 3
    for _ in range(steps):
        step()
    return steps * batch / (time.perf_counter() - started)


def project(config: Path) -> None:
    from sparsecl.data import get_dataset
    from sparsecl.experiments import load_schema, plan_runs

    schema = load_schema(ROOT / "workflow/schemas/config.schema.yaml")
    planned = plan_runs(yaml.safe_load(config.read_text()), schema)
    by_backbone: dict[tuple, float] = defaultdict(float)
    for p in planned:
        run = p.run
        key = (run.backbone, yaml.safe_dump(run.backbone_args, default_flow_style=True).strip(), run.dataset)
        by_backbone[key] += passes(run)
    print(f"`{config.name}`: {len(planned)} runs")
    print()
    print(
        "| backbone (args) | dataset | training image passes | CPU img/s (here) | CPU hours | GPU img/s | GPU hours |"
    )
    print("|---|---|---|---|---|---|---|")
    total = 0.0
    for (backbone, args, dataset), n in sorted(by_backbone.items()):
        spec = get_dataset(dataset)
        rate = throughput(backbone, yaml.safe_load(args) or {}, spec.image_shape, spec.num_classes)
        total += n / rate / 3600
        print(f"| {backbone} `{args}` | {dataset} | {n:.3g} | {rate:.0f} | {n / rate / 3600:,.0f} | — | — |")
    print(f"| **total** | | | | **{total:,.0f}** | | |")


if __name__ == "__main__":
    command, *rest = sys.argv[1:]
    if command == "run":
        run(Path(rest[0]))
    elif command == "table":
        table(Path(rest[0]), yaml.safe_load(Path(rest[1]).read_text())["name"])
    else:
        project(Path(rest[0]))
