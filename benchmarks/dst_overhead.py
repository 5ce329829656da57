"""What dynamic sparse training costs on top of a plain training step.

For each network it times, on synthetic data:
  * a plain step: forward, backward, Adam step;
  * the per-step mask work of a sparse task: gradient isolation (30% of the weights owned by
    earlier tasks) before the step and W <- W * M after it;
  * one DST topology update (magnitude prune + regrowth of every maskable tensor), per growth
    criterion, in exact (standard) and in-expectation (faithful) mode where they differ.
Each figure is the fastest of several runs. The update cost is also shown amortised over `update_frequency` steps (the paper's 100 and 400).
Run by hand; `--write` replaces this script's section of benchmarks/README.md.

    python benchmarks/dst_overhead.py --write benchmarks/README.md
"""

from __future__ import annotations

import argparse
import os
import platform
import re
from pathlib import Path

import torch
from harness import fastest_seconds

from sparsecl.engine import select_device
from sparsecl.io import device_name
from sparsecl.models import create_backbone
from sparsecl.sparse import layer_densities, maskable_parameters, random_masks
from sparsecl.sparse.trainer import DSTSchedule, SparseTrainer

NETWORKS = {
    # name: (backbone, image shape HWC, classes, batch, timed runs of each operation)
    "resnet18_seed 32x32, batch 64": ("resnet18_seed", (32, 32, 3), 100, 64, 5),
    "mlp 784-300-100-10, batch 64": ("mlp", (28, 28, 1), 10, 64, 50),
}
GROWTHS = (("random", True), ("random", False), ("unfired", True), ("gradient", True), ("momentum", True))
SECTION = "## DST overhead per step"


def measure(name: str, device: torch.device, density: float) -> list[str]:
    backbone, shape, classes, batch, repeats = NETWORKS[name]
    torch.manual_seed(0)
    generator = torch.Generator(device=device).manual_seed(0)
    model = create_backbone(backbone, classes, shape).to(device)
    params = maskable_parameters(model)
    shapes = {n: tuple(p.shape) for n, p in params.items()}
    masks = random_masks(params, layer_densities("ERK", shapes, density), generator)
    frozen = {n: torch.rand(p.shape, generator=generator, device=device) < 0.3 for n, p in params.items()}
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.randn(batch, shape[2], shape[0], shape[1], device=device)
    y = torch.randint(0, classes, (batch,), device=device)
    trainer = SparseTrainer(params, masks, optimizer, generator, frozen=frozen)

    def plain_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()

    def mask_work() -> None:
        trainer.after_backward()
        trainer.apply()

    plain_step()  # warm-up; creates the Adam moments that momentum growth reads
    step = fastest_seconds(plain_step, repeats, device)
    masking = fastest_seconds(mask_work, 4 * repeats, device)
    rows = [
        f"| {name} | plain step | {1e3 * step:.2f} ms | 100% | |",
        f"| | isolation + mask apply | {1e3 * masking:.2f} ms | {100 * masking / step:.1f}% | every step |",
    ]
    for growth, exact in GROWTHS:
        update = update_seconds(trainer, growth, exact, repeats, device)
        label = f"DST update, {growth}" + ("" if exact else " (in expectation)")
        amortised = ", ".join(f"{100 * update / (f * step):.2f}% at f={f}" for f in (100, 400))
        rows.append(f"| | {label} | {1e3 * update:.1f} ms | {100 * update / step:.0f}% | {amortised} |")
    return rows


def update_seconds(trainer: SparseTrainer, growth: str, exact: bool, repeats: int, device: torch.device) -> float:
    """The fastest of `repeats` topology updates of every tensor, early in a long task (prune
    fraction near 0.5); the trainer's masks and weights are restored afterwards."""
    trainer.schedule = DSTSchedule(growth=growth, update_frequency=1, total_steps=1000, exact=exact)
    saved = {n: m.clone() for n, m in trainer.masks.items()}
    weights = {n: p.detach().clone() for n, p in trainer.params.items()}
    update = fastest_seconds(trainer.update, repeats, device)
    trainer.masks, trainer.fired = saved, {n: m.clone() for n, m in saved.items()}
    with torch.no_grad():
        for n, p in trainer.params.items():
            p.copy_(weights[n])
    return update


def section(device: torch.device, density: float, threads: int) -> str:
    header = [
        SECTION,
        "",
        f"Machine: {device_name(device)}, {torch.get_num_threads()} torch threads (of {threads} requested),"
        f" torch {torch.__version__}, Python {platform.python_version()}; ERK masks at density {density},"
        " 30% of the weights frozen; each time is the fastest of 5 (ResNet) or 50 (MLP) runs; load average"
        f" {os.getloadavg()[0]:.1f} when it started (`python benchmarks/dst_overhead.py`).",
        "",
        "| network | what | time | vs plain step | amortised / note |",
        "|---|---|---|---|---|",
    ]
    body = [row for name in NETWORKS for row in measure(name, device, density)]
    return "\n".join(header + body) + "\n"


def write_section(path: Path, text: str) -> None:
    """Replace this benchmark's section of `path` (up to the next `## ` heading), or append it."""
    old = path.read_text() if path.exists() else "# Dynamic sparse training benchmarks\n\n"
    pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.S | re.M)
    new = pattern.sub(lambda _: text + "\n", old) if pattern.search(old) else old.rstrip("\n") + "\n\n" + text
    path.write_text(new)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--density", type=float, default=0.1)
    parser.add_argument("--write", type=Path, help="markdown file whose DST section is replaced")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    text = section(select_device(args.device), args.density, args.threads)
    print(text)
    if args.write:
        write_section(args.write, text)


if __name__ == "__main__":
    main()
