"""What the benchmarks share: synthetic CIFAR-shaped data, the three ways of feeding a training step,
the per-step mask work of a sparse task, and timing that waits for the device.

The three pipelines train the same model with the same step (forward, cross-entropy, backward,
optimiser step):
  * `engine`: sparsecl's own loop (`train_epoch`): the dataset as one uint8 tensor on the device,
    batches drawn and augmented there (pad-4 random crop, horizontal flip), masks applied after
    every step and earlier tasks' gradients zeroed, as in a dst task;
  * `dataloader`: a torchvision Dataset with per-sample PIL transforms (RandomCrop(32, padding=4),
    RandomHorizontalFlip, ToTensor, Normalize) in DataLoader workers, then a host-to-device copy,
    as the published codes feed their networks; the same mask work;
  * `ceiling`: one normalised batch already on the device, no augmentation, no masks: the model's
    own speed, which no input pipeline can beat.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from unittest import mock

import numpy as np
import torch
import torchvision.transforms as T
from PIL import Image

from sparsecl.engine import DeviceData, loop, train_epoch
from sparsecl.engine.loop import sliced_cross_entropy
from sparsecl.sparse import layer_densities, maskable_parameters, random_masks
from sparsecl.sparse.trainer import SparseTrainer

MEAN, STD = (0.507, 0.487, 0.441), (0.267, 0.256, 0.276)
PRECISIONS = ("fp32", "bf16")


def synthetic_cifar(n: int, classes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images [n, 32, 32, 3] and labels: CIFAR's shape and dtype, random pixels."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), rng.integers(0, classes, n)


class UInt8Dataset(torch.utils.data.Dataset):
    """The published codes' input pipeline: one PIL image at a time through torchvision transforms."""

    def __init__(self, images: np.ndarray, labels: np.ndarray) -> None:
        self.images, self.labels = images, labels
        self.transform = T.Compose(
            [T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(MEAN, STD)]
        )

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])


def dataloader(images, labels, batch_size: int, workers: int, device: torch.device) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(
        UInt8Dataset(images, labels), batch_size=batch_size, shuffle=True, num_workers=workers,
        pin_memory=device.type == "cuda", persistent_workers=workers > 0, drop_last=True,
    )  # fmt: skip


def device_data(images, labels, device: torch.device) -> DeviceData:
    return DeviceData.from_numpy(images, labels, MEAN, STD, device, crop_padding=4, hflip=True)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(device: torch.device, precision: str):
    """bf16 autocast on CUDA when asked for; a CPU run is fp32 either way, as in the engine."""
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda" and precision == "bf16")


@contextlib.contextmanager
def engine_precision(precision: str) -> Iterator[None]:
    """The engine trains under bf16 autocast on CUDA; `fp32` switches that off to compare."""
    if precision == "bf16":
        yield
        return
    with mock.patch.object(loop, "autocast", lambda device: contextlib.nullcontext()):
        yield


def sparse_trainer(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, device: torch.device, density: float = 0.1
) -> SparseTrainer:
    """A dst task's per-step work: ERK masks at `density`, 30% of the weights owned by earlier tasks."""
    generator = torch.Generator(device=device).manual_seed(0)
    params = maskable_parameters(model)
    masks = random_masks(
        params, layer_densities("ERK", {n: tuple(p.shape) for n, p in params.items()}, density), generator
    )
    frozen = {n: torch.rand(p.shape, generator=generator, device=device) < 0.3 for n, p in params.items()}
    return SparseTrainer(params, masks, optimizer, generator, frozen=frozen)


def train_step(model, optimizer, x, y, loss_fn, device, precision, trainer: SparseTrainer | None = None) -> None:
    """One step, exactly as `train_epoch` takes it."""
    with autocast(device, precision):
        logits = model(x)
    loss, _ = loss_fn(logits, y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if trainer is not None:
        trainer.after_backward()
    optimizer.step()
    if trainer is not None:
        trainer.after_step()


@dataclass(frozen=True)
class Rate:
    images_per_s: float
    steps: int
    seconds: float

    def to_dict(self) -> dict:
        return {"images_per_s": round(self.images_per_s, 1), "steps": self.steps, "seconds": round(self.seconds, 3)}


def timed(run: Callable[[int], None], steps: int, device: torch.device) -> float:
    """Seconds `run(steps)` takes, the device's queued work included."""
    sync(device)
    started = time.perf_counter()
    run(steps)
    sync(device)
    return time.perf_counter() - started


def time_boxed_rate(
    run: Callable[[int], None], batch: int, budget_s: float, device: torch.device, warmup: int = 5, probe: int = 5
) -> Rate:
    """Images per second of `run(steps)` (which trains `steps` batches of `batch`): `warmup` steps
    first (cuDNN's algorithm search, allocator growth), a short probe to size the measurement,
    then as many steps as fit in `budget_s`."""
    timed(run, warmup, device)
    per_step = timed(run, probe, device) / probe
    steps = max(probe, int(budget_s / max(per_step, 1e-6)))
    seconds = timed(run, steps, device)
    return Rate(steps * batch / seconds, steps, seconds)


def fixed_steps_rate(run: Callable[[int], None], batch: int, steps: int, device: torch.device, warmup: int = 1) -> Rate:
    """Images per second of exactly `warmup` + `steps` steps: what runs depends on no clock."""
    timed(run, warmup, device)
    seconds = timed(run, steps, device)
    return Rate(steps * batch / seconds, steps, seconds)


def engine_runner(model, optimizer, data: DeviceData, trainer: SparseTrainer | None, batch: int, classes: int):
    """`run(steps)` for the engine: one `train_epoch` over `steps` batches of the device data."""
    loss_fn = sliced_cross_entropy(0, classes)
    generator = torch.Generator(device=data.device).manual_seed(0)
    hooks = {"after_backward": trainer.after_backward, "after_step": trainer.after_step} if trainer else {}

    def run(steps: int) -> None:
        idx = torch.arange(steps * batch, device=data.device) % len(data.labels)
        train_epoch(
            model, optimizer, data, idx, epoch=0, batch_size=batch, generator=generator, augment=True,
            loss_fn=loss_fn, **hooks,
        )  # fmt: skip

    return run


def dataloader_runner(model, optimizer, loader, trainer: SparseTrainer | None, classes: int, device, precision: str):
    """`run(steps)` for the DataLoader pipeline; batches keep coming across epochs."""
    loss_fn = sliced_cross_entropy(0, classes)
    channels_last = device.type == "cuda"

    def batches():
        while True:
            yield from loader

    stream = batches()

    def run(steps: int) -> None:
        for _ in range(steps):
            x, y = next(stream)
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            train_step(model, optimizer, x, y, loss_fn, device, precision, trainer)

    return run


def ceiling_runner(model, optimizer, data: DeviceData, batch: int, classes: int, device, precision: str):
    """`run(steps)` for the model alone: the same normalised batch every step, no masks."""
    loss_fn = sliced_cross_entropy(0, classes)
    x, y = data.batch(torch.arange(batch, device=device) % len(data.labels))

    def run(steps: int) -> None:
        for _ in range(steps):
            train_step(model, optimizer, x, y, loss_fn, device, precision)

    return run


def fastest_seconds(fn: Callable[[], None], repeats: int, device: torch.device) -> float:
    """The fastest of `repeats` runs: on a shared machine the least disturbed one is the best estimate."""
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return min(times)
