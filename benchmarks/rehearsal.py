"""A paper configuration's rehearsal, measured, and the projected cost of its real run.

    python benchmarks/rehearsal.py run config/papers/focil.yaml      # rehearse in a scratch folder
    python benchmarks/rehearsal.py table DIR config/papers/focil.yaml  # summarise a rehearsal in DIR
    python benchmarks/rehearsal.py project config/papers/focil.yaml  # the real run's training passes
    python benchmarks/rehearsal.py project config/papers/focil.yaml --gpu-rates OUTDIR/gpu_check.json

`run` and `table` print the rehearsal's jobs, wall time and, per rule, the job seconds Snakemake's
`benchmark:` files recorded and the peak memory: the larger of the benchmark's and, for a job the
stage server ran, the peak its forked process wrote as its log's last line. `project` counts the training image passes of the
real run (images x epochs, x FOCIL's trials, + the tickets' retraining rounds; every multistep
stage a full pass) and its evaluation's forward passes (FOCIL's grow with the square of the task
count), per backbone, and divides them by a throughput measured here (forward and
backward of the backbone at the dataset's input size on this machine's CPU) and, given the
`gpu_check.json` of a GPU check, by the rate it measured for the same backbone, input size and
batch size (bf16 autocast, as the engine trains on CUDA). Retrieval and the per-job start are not in it.
"""

from __future__ import annotations

import json
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
# Test images per class of the real datasets (miniImageNet: the 100 its prepare step holds out).
TEST_PER_CLASS = {
    "cifar10": 1000, "cifar100": 100, "mnist": 1000, "fashion_mnist": 1000,
    "tiny_imagenet": 50, "mini_imagenet": 100, "mini_imagenet84": 100,
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


def evaluation_passes(run) -> float:
    """Forward image passes of one real run's evaluations (module docstring): after task t, one
    model over the test images of tasks 0..t; FOCIL's every expert over them (see
    docs/methods/focil.md): standard only what is new (2t+1 task blocks), faithful all (t+1)^2, its
    labelled batches, and after the last task the published BWT's second evaluation."""
    spec, per_class = run.scenario, TEST_PER_CLASS[run.dataset]
    from sparsecl.data import get_dataset

    classes = get_dataset(run.dataset).num_classes
    if spec.kind == "data":
        return spec.num_tasks * classes * per_class * (MULTISTEP_STAGES + 1 if run.method == "multistep" else 1)
    task, tasks = spec.classes_per_task * per_class, range(spec.num_tasks)
    if run.method != "focil":
        return sum((t + 1) * task for t in tasks)
    if run.protocol == "standard":
        return sum((2 * t + 1) * task for t in tasks)
    batch = min(run.method_args.get("selection_batch", 10), task)
    once = [(t + 1) ** 2 * task + (t + 1) * (t + 2) // 2 * batch for t in tasks]
    return sum(once) + once[-1]


def throughput(
    backbone: str,
    args: dict,
    shape: tuple[int, int, int],
    classes: int,
    batch: int = 32,
    device: str = "cpu",
    steps: int = 3,
) -> float:
    """Training images per second (forward + backward + SGD step): on the CPU in fp32, on CUDA
    under the engine's bf16 autocast, timed between device synchronisations after a warm-up."""
    import torch

    from sparsecl.engine import autocast
    from sparsecl.models import create_backbone

    torch.manual_seed(0)
    target = torch.device(device)
    model = create_backbone(backbone, classes, shape, **args).to(target)
    optimiser = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.rand(batch, shape[2], shape[0], shape[1], device=target)
    if backbone == "mlp":
        x = x.flatten(1)
    y = torch.randint(0, classes, (batch,), device=target)

    def step():
        optimiser.zero_grad()
        with autocast(target):
            out = model(x)
            out = out if isinstance(out, torch.Tensor) else out[0]
            loss = torch.nn.functional.cross_entropy(out[:, :classes], y)
        loss.backward()
        optimiser.step()

    for _ in range(1 if target.type == "cpu" else 3):
        step()
    if target.type == "cuda":
        torch.cuda.synchronize(target)
    started = time.perf_counter()
    for _ in range(steps):
        step()
    if target.type == "cuda":
        torch.cuda.synchronize(target)
    return steps * batch / (time.perf_counter() - started)


def training_shapes(config: Path) -> dict[tuple[str, str, str], tuple[float, float, int]]:
    """(backbone, its args as one YAML line, dataset) -> (training and evaluation image passes of
    the real runs, their most common training batch size)."""
    from sparsecl.experiments import load_schema, plan_runs

    schema = load_schema(ROOT / "workflow/schemas/config.schema.yaml")
    planned = plan_runs(yaml.safe_load(config.read_text()), schema)
    image_passes: dict[tuple, float] = defaultdict(float)
    evaluated: dict[tuple, float] = defaultdict(float)
    batches: dict[tuple, list[int]] = defaultdict(list)
    for p in planned:
        run = p.run
        key = (run.backbone, yaml.safe_dump(run.backbone_args, default_flow_style=True).strip(), run.dataset)
        image_passes[key] += passes(run)
        evaluated[key] += evaluation_passes(run)
        batches[key].append(run.train.batch_size)
    return {key: (n, evaluated[key], statistics.mode(batches[key])) for key, n in image_passes.items()}


def rate_key(backbone: str, args: str, dataset: str, batch: int) -> str:
    """How a measured rate is named in `--gpu-rates`' JSON (`gpu_check.json`'s `paper_rates`)."""
    return f"{backbone} {args} {dataset} batch {batch}"


def paper_rates(device: str, steps: int, backbones: tuple[str, ...] | None = None) -> dict[str, dict]:
    """The training throughput of every (backbone, dataset) of every paper configuration (of
    `backbones` only, where given), at its runs' batch size, on `device`: what `project --gpu-rates`
    reads."""
    from sparsecl.data import get_dataset

    rates = {}
    for config in sorted((ROOT / "config/papers").glob("*.yaml")):
        for (backbone, args, dataset), (_, _, batch) in sorted(training_shapes(config).items()):
            key = rate_key(backbone, args, dataset, batch)
            if key not in rates and (backbones is None or backbone in backbones):
                spec = get_dataset(dataset)
                rate = throughput(backbone, yaml.safe_load(args) or {}, spec.image_shape, spec.num_classes, batch,
                                  device, steps)  # fmt: skip
                rates[key] = {"images_per_s": round(rate, 1)}
    return rates


def project(config: Path, gpu_rates: dict[str, dict] | None = None) -> None:
    """The real run's cost per backbone: on this machine's CPU, or (given a GPU check's
    `paper_rates`) on that GPU, where a loaded CPU's figure would only add noise. Evaluation is
    priced at the training rate: an upper bound, since a forward pass costs less than a step."""
    from sparsecl.data import get_dataset

    shapes = training_shapes(config)
    where = "GPU" if gpu_rates is not None else "CPU (here)"
    print(f"`{config.name}`: {len(yaml.safe_load(config.read_text())['experiments'])} experiments")
    print()
    print(
        f"| backbone (args) | dataset | batch | training image passes | evaluation image passes | {where} img/s"
        f" (training) | {where} hours, training | evaluation, at most |"
    )
    print("|---|---|---|---|---|---|---|---|")
    total, evaluation, missing = 0.0, 0.0, False
    for (backbone, args, dataset), (n, e, batch) in sorted(shapes.items()):
        if gpu_rates is None:
            spec = get_dataset(dataset)
            rate = throughput(backbone, yaml.safe_load(args) or {}, spec.image_shape, spec.num_classes, batch)
        else:
            rate = gpu_rates.get(rate_key(backbone, args, dataset, batch), {}).get("images_per_s")
        if rate is None:
            missing = True
            print(f"| {backbone} `{args}` | {dataset} | {batch} | {n:.3g} | {e:.3g} | not measured | — | — |")
            continue
        total, evaluation = total + n / rate / 3600, evaluation + e / rate / 3600
        print(
            f"| {backbone} `{args}` | {dataset} | {batch} | {n:.3g} | {e:.3g} | {rate:,.0f} | {n / rate / 3600:,.1f}"
            f" | {e / rate / 3600:,.1f} |"
        )
    print(f"| **total** | | | | | | {'at least ' if missing else ''}**{total:,.1f}** | **{evaluation:,.1f}** |")


if __name__ == "__main__":
    command, *rest = sys.argv[1:]
    if command == "run":
        run(Path(rest[0]))
    elif command == "table":
        table(Path(rest[0]), yaml.safe_load(Path(rest[1]).read_text())["name"])
    else:  # project CONFIG [--gpu-rates gpu_check.json]
        rates = json.loads(Path(rest[2]).read_text())["paper_rates"] if rest[1:2] == ["--gpu-rates"] else None
        project(Path(rest[0]), rates)
