"""The speed half of `gpu_check.py`: training images/s per backbone, batch, precision and pipeline
(`harness.py` describes the pipelines), the cost of one DST topology update, the paper runs' wall
times projected from them, and the targets those figures are held to.

On the GPU every measurement is time-boxed and the grid's most important cells run first, so a
check that runs out of time loses the least useful numbers; a cell that did not run says why,
never a number. A plan with fixed `steps` (the CPU smoke) runs every cell, whatever the clock.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from dst_overhead import update_seconds
from harness import (
    ceiling_runner,
    dataloader,
    dataloader_runner,
    device_data,
    engine_precision,
    engine_runner,
    fastest_seconds,
    fixed_steps_rate,
    sparse_trainer,
    synthetic_cifar,
    time_boxed_rate,
    train_step,
)

from sparsecl.config import TrainConfig
from sparsecl.engine import make_optimizer
from sparsecl.engine.device import prepare_model
from sparsecl.engine.loop import sliced_cross_entropy
from sparsecl.models import BACKBONES, create_backbone

ROOT = Path(__file__).resolve().parents[1]
CLASSES = 100
ADAM = TrainConfig(optimizer="adam", lr=1e-3)  # the dst papers' optimiser
ONLINE_SGD = TrainConfig(optimizer="sgd", lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)  # FOCIL's
UPDATE_GROWTHS_ALL = (("random", False), ("random", True), ("momentum", True), ("gradient", True), ("unfired", True))
DST_PAPER = ("config/papers/cl-with-dst.yaml", "readme_cifar100_10task")
FOCIL_PAPER = ("config/papers/focil.yaml", "readme_cifar100_20task")
TARGETS = {"engine_vs_ceiling": 0.8, "engine_vs_dataloader": 5.0, "dst_10task_minutes": 5.0}


@dataclass(frozen=True)
class SpeedPlan:
    """What the speed sections measure, and how long each measurement may take."""

    backbones: tuple[str, ...]  # looked up by name; an unregistered one is reported as missing
    measured: tuple[str, ...]  # the backbones actually timed in this mode
    batches: tuple[int, ...]
    precisions: tuple[str, ...]
    target_batch: int  # the batch the targets are read at
    focil_batch: int  # FOCIL's online batch
    images: int  # synthetic training images held by the engine and the DataLoader
    workers: int  # DataLoader workers
    seconds: float  # timed seconds per cell (x1.5 for the DataLoader)
    steps: int | None  # instead: exactly this many timed steps per cell, and no deadline (the CPU smoke)
    warmup: int  # untimed steps before each cell (cuDNN's algorithm search, allocator growth)
    update_growths: tuple[tuple[str, bool], ...]
    update_repeats: int


@dataclass(frozen=True)
class Cell:
    backbone: str
    batch: int
    precision: str
    pipeline: str  # ceiling | engine | dataloader
    optimizer: str = "adam"

    def key(self) -> str:
        return f"{self.backbone}/b{self.batch}/{self.precision}/{self.pipeline}" + (
            f"/{self.optimizer}" if self.optimizer != "adam" else ""
        )


PIPELINES = ("ceiling", "engine", "dataloader")


def grid(plan: SpeedPlan) -> list[Cell]:
    """Every cell, the ones that the targets and projections read first; plus FOCIL's online step
    (engine, SGD, its batch) for its projection."""
    cells = [
        Cell(b, n, p, pipe) for b in plan.backbones for n in plan.batches for p in plan.precisions for pipe in PIPELINES
    ]
    dst = paper_experiment(DST_PAPER)
    first = [Cell("resnet18_seed", plan.target_batch, "bf16", pipe) for pipe in PIPELINES]
    first += [Cell(dst["backbone"], n, "bf16", "engine") for n in plan.batches]
    first = [c for c in dict.fromkeys(first) if c in cells]
    return [*first, Cell("resnet18_seed", plan.focil_batch, "bf16", "engine", "sgd")] + [
        c for c in cells if c not in first
    ]


def measure_cell(cell: Cell, plan: SpeedPlan, device, data, images, labels, loaders, budget_s: float) -> dict:
    torch.manual_seed(0)
    model = prepare_model(create_backbone(cell.backbone, CLASSES, (32, 32, 3)), device)
    optimizer = make_optimizer(model.parameters(), ONLINE_SGD if cell.optimizer == "sgd" else ADAM)
    if cell.pipeline == "ceiling":
        run = ceiling_runner(model, optimizer, data, cell.batch, CLASSES, device, cell.precision)
    else:
        trainer = sparse_trainer(model, optimizer, device)
        if cell.pipeline == "engine":
            run = engine_runner(model, optimizer, data, trainer, cell.batch, CLASSES)
        else:
            if cell.batch not in loaders:
                loaders[cell.batch] = dataloader(images, labels, cell.batch, plan.workers, device)
            run = dataloader_runner(model, optimizer, loaders[cell.batch], trainer, CLASSES, device, cell.precision)
    with engine_precision(cell.precision):
        if plan.steps is not None:
            return fixed_steps_rate(run, cell.batch, plan.steps, device, plan.warmup).to_dict()
        return time_boxed_rate(run, cell.batch, budget_s, device, plan.warmup, plan.warmup).to_dict()


def throughput(plan: SpeedPlan, device, deadline: float | None, log) -> dict:
    """The grid, each cell time-boxed to its share of what is left before `deadline`; every cell
    its fixed steps where the plan fixes them (then `deadline` is None)."""
    images, labels = synthetic_cifar(plan.images, CLASSES)
    data = device_data(images, labels, device)
    loaders: dict[int, torch.utils.data.DataLoader] = {}
    cells = grid(plan)
    todo = [c for c in cells if c.backbone in BACKBONES and c.backbone in plan.measured]
    results: dict[str, dict] = {}
    for cell in cells:
        entry = {"backbone": cell.backbone, "batch": cell.batch, "precision": cell.precision,
                 "pipeline": cell.pipeline, "optimizer": cell.optimizer}  # fmt: skip
        if cell.backbone not in BACKBONES:
            entry["status"] = "missing"  # not registered in this tree
        elif cell.backbone not in plan.measured:
            entry["status"] = "not measured in this mode"
        else:
            share = math.inf if deadline is None else (deadline - time.time()) / (len(todo) - todo.index(cell))
            budget = min(plan.seconds * (1.5 if cell.pipeline == "dataloader" else 1.0), share / 3)
            if share < 0.5:
                entry["status"] = "skipped: out of time"
            else:
                try:
                    measured = measure_cell(cell, plan, device, data, images, labels, loaders, budget)
                    entry |= measured | {"status": "ok"}
                except Exception as err:  # one cell's failure (e.g. out of memory) must not stop the check
                    entry["status"] = f"error: {type(err).__name__}: {str(err).splitlines()[0][:200]}"
                if device.type == "cuda":
                    torch.cuda.empty_cache()
        results[cell.key()] = entry
        rate = f"{entry['images_per_s']:>10,.0f} img/s" if entry["status"] == "ok" else entry["status"]
        log(f"  {cell.key():<48} {rate}")
    return {
        "settings": {"images": plan.images, "classes": CLASSES, "dataloader_workers": plan.workers,
                     "seconds_per_cell": plan.seconds if plan.steps is None else None, "steps_per_cell": plan.steps, "masks": "ERK density 0.1, 30% of weights frozen (engine and dataloader)",
                     "fp32": f"autocast off; cudnn.allow_tf32={torch.backends.cudnn.allow_tf32}, "
                     f"matmul.allow_tf32={torch.backends.cuda.matmul.allow_tf32}"},
        "results": results,
    }  # fmt: skip


def dst_updates(plan: SpeedPlan, device, log) -> dict:
    """Seconds of one topology update of every tensor per growth criterion (fastest of a few), on
    resnet18_seed and on the backbone of the projected dst run; and of the per-step mask work
    (isolation before the optimiser step, masking after it; fastest of 20)."""
    out = {}
    for backbone in dict.fromkeys(("resnet18_seed", paper_experiment(DST_PAPER)["backbone"])):
        if backbone not in BACKBONES:
            out[backbone] = {"status": "missing"}
            continue
        torch.manual_seed(0)
        model = prepare_model(create_backbone(backbone, CLASSES, (32, 32, 3)), device)
        optimizer = make_optimizer(model.parameters(), ADAM)
        trainer = sparse_trainer(model, optimizer, device, density=0.2)
        x = torch.randn(64, 3, 32, 32, device=device)
        y = torch.randint(0, CLASSES, (64,), device=device)
        train_step(model, optimizer, x, y, sliced_cross_entropy(0, CLASSES), device, "bf16", trainer)  # grads, moments
        times = {
            "isolation_per_step": round(fastest_seconds(trainer.after_backward, 20, device), 6),
            "mask_apply_per_step": round(fastest_seconds(trainer.apply, 20, device), 6),
        }
        log(f"  {backbone} per step: isolation {1e3 * times['isolation_per_step']:.3f} ms, masks"
            f" {1e3 * times['mask_apply_per_step']:.3f} ms")  # fmt: skip
        for growth, exact in plan.update_growths:
            label = growth + ("" if exact else "_in_expectation")
            times[label] = round(update_seconds(trainer, growth, exact, plan.update_repeats, device), 5)
            log(f"  {backbone} DST update {label}: {1e3 * times[label]:.1f} ms")
        out[backbone] = {"status": "ok", "seconds": times}
    return out


def paper_experiment(where: tuple[str, str]) -> dict:
    path, name = where
    return yaml.safe_load((ROOT / path).read_text())["experiments"][name]


def engine_rate(results: dict, backbone: str, batch: int, optimizer: str = "adam") -> tuple[float | None, int | None]:
    """The bf16 engine rate at `batch`, else at the nearest batch measured (and which batch that was)."""
    measured = {
        e["batch"]: e["images_per_s"]
        for e in results.values()
        if e["status"] == "ok" and e["backbone"] == backbone and e["precision"] == "bf16"
        and e["pipeline"] == "engine" and e["optimizer"] == optimizer
    }  # fmt: skip
    if not measured:
        return None, None
    nearest = min(measured, key=lambda n: (abs(n - batch), n))
    return measured[nearest], nearest


def projections(tp: dict, updates: dict, plan: SpeedPlan) -> dict:
    """Training wall time of the two paper runs at the measured rates (evaluation jobs not included)."""
    results = tp["results"]
    dst = paper_experiment(DST_PAPER)
    backbone, batch, epochs = dst["backbone"], dst["train"]["batch_size"], dst["train"]["epochs"]
    frequency, growth = dst["method_args"]["update_frequency"], dst["method_args"]["growth"]
    faithful_random = dst.get("protocol") == "faithful" and growth == "random"
    growth_key = growth + ("_in_expectation" if faithful_random else "")
    tasks, per_task = dst["scenario"]["num_tasks"], 5000
    steps = math.ceil(per_task / batch) * epochs
    rate, rate_batch = engine_rate(results, backbone, batch)
    update = updates.get(backbone, {}).get("seconds", {}).get(growth_key)
    dst_out = {"experiment": ": ".join(DST_PAPER), "backbone": backbone, "batch": batch, "tasks": tasks,
               "images_per_task": per_task, "epochs": epochs, "updates_per_task": steps // frequency,
               "growth": growth_key, "engine_images_per_s": rate, "rate_measured_at_batch": rate_batch,
               "update_s": update}  # fmt: skip
    if rate and update is not None:
        train_s, update_s = tasks * per_task * epochs / rate, tasks * (steps // frequency) * update
        dst_out |= {"train_s": round(train_s, 1), "updates_s": round(update_s, 2),
                    "minutes": round((train_s + update_s) / 60, 2)}  # fmt: skip
    focil = paper_experiment(FOCIL_PAPER)
    trials = focil.get("method_args", {}).get("trials", 20)
    f_tasks, f_per_task = focil["scenario"]["num_tasks"], 2500
    f_rate, f_batch = engine_rate(results, focil["backbone"], plan.focil_batch, "sgd")
    focil_out = {"experiment": ": ".join(FOCIL_PAPER), "backbone": focil["backbone"], "batch": plan.focil_batch,
                 "tasks": f_tasks, "images_per_task": f_per_task, "trials": trials,
                 "note": "every trial a full pass (the pruner only shortens this)", "engine_images_per_s": f_rate,
                 "rate_measured_at_batch": f_batch}  # fmt: skip
    if f_rate:
        focil_out["minutes"] = round(f_tasks * f_per_task * trials / f_rate / 60, 2)
    return {"dst_10task": dst_out, "focil_20task": focil_out}


def targets(tp: dict, proj: dict, plan: SpeedPlan, evaluated: bool) -> dict:
    results = tp["results"]
    ceiling, engine, loader = (rate_of(results, Cell("resnet18_seed", plan.target_batch, "bf16", p)) for p in PIPELINES)
    figures = {
        "engine_vs_ceiling": engine / ceiling if engine and ceiling else None,
        "engine_vs_dataloader": engine / loader if engine and loader else None,
        "dst_10task_minutes": proj["dst_10task"].get("minutes"),
    }
    out = {"read_at": f"resnet18_seed, batch {plan.target_batch}, bf16"}
    for name, value in figures.items():
        at_most = name.endswith("minutes")
        passed = (
            None if value is None or not evaluated else (value <= TARGETS[name] if at_most else value >= TARGETS[name])
        )
        out[name] = {"value": None if value is None else round(value, 3),
                     "target": f"{'<=' if at_most else '>='} {TARGETS[name]}", "pass": passed}  # fmt: skip
    if not evaluated:
        out["note"] = "CPU smoke run: figures computed, targets not evaluated"
    return out


def rate_of(results: dict, cell: Cell) -> float | None:
    entry = results.get(cell.key(), {})
    return entry.get("images_per_s") if entry.get("status") == "ok" else None


def compile_probe(device, seconds: float) -> dict:
    """resnet18_seed at batch 128 in bf16, model only, eager and `torch.compile`d."""
    images, labels = synthetic_cifar(1024, CLASSES)
    data = device_data(images, labels, device)
    out = {}
    for mode in ("eager", "compiled"):
        torch.manual_seed(0)
        model = prepare_model(create_backbone("resnet18_seed", CLASSES, (32, 32, 3)), device)
        optimizer = make_optimizer(model.parameters(), ADAM)
        started = time.time()
        net = torch.compile(model) if mode == "compiled" else model
        run = ceiling_runner(net, optimizer, data, 128, CLASSES, device, "bf16")
        rate = time_boxed_rate(run, 128, seconds, device).to_dict()
        out[mode] = rate | {"wall_s_with_compilation": round(time.time() - started, 1)}
    return out
