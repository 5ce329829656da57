"""Dense weight x {0, 1} mask: the representation every peer uses, and the papers assume.

Task t's mask says which weights task t's subnetwork uses. The owner map records, for every
weight, the first task that used it (`FREE` if none): weights owned by an earlier task are
frozen while later tasks train ("isolation"), and the union of all masks is `owner != FREE`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn

FREE = 255  # owner-map value of a weight no task has used yet (uint8 allows 255 tasks)


def uniform_densities(shapes: dict[str, tuple[int, ...]], density: float) -> dict[str, float]:
    return {name: density for name in shapes}


def erk_densities(shapes: dict[str, tuple[int, ...]], density: float) -> dict[str, float]:
    """Erdős–Rényi-Kernel densities: layer l gets eps * r_l with r_l = sum(shape) / numel.

    eps is solved so that the expected number of kept weights is `density` of the total; a layer
    whose density would exceed 1 becomes dense (all layers sharing the largest r_l at once) and
    eps is solved again for the rest.
    """
    numel = {n: math.prod(s) for n, s in shapes.items()}
    raw = {n: sum(s) / numel[n] for n, s in shapes.items()}
    dense: set[str] = set()
    while True:
        sparse = [n for n in shapes if n not in dense]
        budget = density * sum(numel[n] for n in sparse) - (1 - density) * sum(numel[n] for n in dense)
        eps = budget / sum(raw[n] * numel[n] for n in sparse)
        largest = max(raw[n] for n in sparse)
        if eps * largest <= 1:
            break
        dense |= {n for n in sparse if raw[n] == largest}
        if len(dense) == len(shapes):
            break
    return {n: 1.0 if n in dense else eps * raw[n] for n in shapes}


DENSITY_INITS = {"uniform": uniform_densities, "ERK": erk_densities}


def layer_densities(init: str, shapes: dict[str, tuple[int, ...]], density: float) -> dict[str, float]:
    return DENSITY_INITS[init](shapes, density)


def random_masks(
    params: dict[str, torch.Tensor], densities: dict[str, float], generator: torch.Generator
) -> dict[str, torch.Tensor]:
    """Independent Bernoulli(p_l) draws per weight, reproducible from the generator's seed.

    The uniforms always come from a CPU generator (see `cpu_generator`) and the masks are then
    moved to each weight's device: CPU and CUDA generators give different streams for one seed,
    and drawing on the CPU makes a run's masks the same on either device.
    """
    source = cpu_generator(generator)
    return {name: (torch.rand(p.shape, generator=source) < densities[name]).to(p.device) for name, p in params.items()}


def cpu_generator(generator: torch.Generator) -> torch.Generator:
    """The CPU generator whose draws stand for `generator`'s.

    A CPU generator is itself. A device generator that has not drawn since it was seeded stands for
    a CPU generator with its seed, and is advanced so that a second call draws differently (a run
    draws its masks first, from a freshly seeded task generator). One that has already drawn has no
    CPU counterpart: it seeds a CPU generator from its next draw (reproducible on that device only).
    """
    if generator.device.type == "cpu":
        return generator
    seed = generator.initial_seed()
    fresh = torch.Generator(device=generator.device).manual_seed(seed)
    if torch.equal(fresh.get_state(), generator.get_state()):
        torch.rand(1, generator=generator, device=generator.device)
    else:
        seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))
    return torch.Generator().manual_seed(seed)


@torch.no_grad()
def apply_masks(params: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]) -> None:
    """W <- W * M, in place, for every masked tensor in one call; `masks` may be bool masks or
    their `mask_factors`."""
    if masks:
        torch._foreach_mul_([params[name] for name in masks], list(masks.values()))


def mask_factors(params: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The masks as the multipliers `apply_masks` is fastest with on each device.

    On an accelerator: 0/1 in each weight's dtype and memory layout (channels_last convs), since
    `torch._foreach_mul_` fuses the products of all tensors into a few kernels only when every
    tensor has one dtype and each pair the same strides; otherwise it launches one per tensor.
    On the CPU: the bool masks, a quarter of the bytes to read. The products are the same either way.
    """
    return {
        name: mask if params[name].device.type == "cpu" else torch.empty_like(params[name]).copy_(mask)
        for name, mask in masks.items()
    }


def freeze_used_gradients(params: dict[str, torch.Tensor], frozen: dict[str, torch.Tensor]) -> None:
    """Zero the gradients of weights owned by earlier tasks (call between backward and step).

    A fill, not a multiply by 0: an inf or NaN gradient must not reach (and move) a frozen weight.
    """
    for name, is_frozen in frozen.items():
        grad = params[name].grad
        if grad is not None:
            grad.masked_fill_(is_frozen, 0.0)


def row_mask(weight: torch.Tensor, rows: list[int] | range) -> torch.Tensor:
    """True on the given rows of a weight (e.g. the classifier rows of one task's classes)."""
    allowed = torch.zeros(weight.shape, dtype=torch.bool, device=weight.device)
    allowed[torch.as_tensor(list(rows), dtype=torch.long, device=weight.device)] = True
    return allowed


@torch.no_grad()
def reinitialise(params: dict[str, torch.Tensor], where: dict[str, torch.Tensor], generator: torch.Generator) -> None:
    """Fresh values from PyTorch's default conv/linear initialisation (Kaiming-uniform, bound
    1/sqrt(fan_in)) at the `where` positions, drawn from `generator`."""
    for name, positions in where.items():
        param = params[name]
        fresh = torch.empty_like(param)
        nn.init.kaiming_uniform_(fresh, a=math.sqrt(5), generator=generator)
        param.copy_(torch.where(positions, fresh, param))


@torch.no_grad()
def merge_into(shared: dict[str, torch.Tensor], trained: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The shared network after a task: where the task's network is zero, keep the shared value."""
    return {
        name: torch.where(trained[name] == 0, shared[name], trained[name]) if name in shared else trained[name]
        for name in trained
    }


@dataclass
class MaskFile:
    """One task's masks file: its own mask, and the owner map after it (first user of each weight)."""

    mask: dict[str, torch.Tensor]  # bool, this task's subnetwork
    owner: dict[str, torch.Tensor]  # uint8, first task using each weight, FREE if none

    def to_dict(self) -> dict:
        return {"mask": self.mask, "owner": self.owner}

    @classmethod
    def from_dict(cls, data: dict) -> MaskFile:
        return cls(mask=data["mask"], owner=data["owner"])

    @classmethod
    def first(cls, mask: dict[str, torch.Tensor]) -> MaskFile:
        return cls.after(mask, task=0, previous_owner=None)

    @classmethod
    def after(
        cls, mask: dict[str, torch.Tensor], task: int, previous_owner: dict[str, torch.Tensor] | None
    ) -> MaskFile:
        """Task `task`'s file: positions first used by this task get owner `task`."""
        if task >= FREE:
            raise ValueError(f"at most {FREE} tasks can own weights, got task {task}")
        owner = {}
        for name, m in mask.items():
            before = (
                previous_owner[name]
                if previous_owner is not None
                else torch.full(m.shape, FREE, dtype=torch.uint8, device=m.device)
            )
            owner[name] = torch.where(
                m & (before == FREE), torch.tensor(task, dtype=torch.uint8, device=m.device), before
            )
        return cls(mask={n: m.bool() for n, m in mask.items()}, owner=owner)

    def used(self) -> dict[str, torch.Tensor]:
        """Weights used by any task so far (this one included)."""
        return {name: o != FREE for name, o in self.owner.items()}

    def stats(self) -> dict[str, float]:
        """Density of this task's mask, of the union so far, and the free capacity left (fractions)."""
        total = sum(m.numel() for m in self.mask.values())
        task = sum(int(m.sum()) for m in self.mask.values())
        used = sum(int((o != FREE).sum()) for o in self.owner.values())
        return {"task_density": task / total, "used_density": used / total, "free_capacity": 1 - used / total}
