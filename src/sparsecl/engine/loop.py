"""One epoch of training, batched prediction, and the optimiser/scheduler factory.

Methods compose these: `train_epoch` takes a loss function and two optional hooks, which is
where sparse methods freeze gradients (`after_backward`) and re-apply masks (`after_step`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..config import TrainConfig
from .data import DeviceData
from .device import autocast

LossFn = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]  # -> (loss, #correct)


@dataclass
class EpochStats:
    epoch: int
    loss: float
    accuracy: float  # percent
    images: int
    seconds: float

    @property
    def images_per_second(self) -> float:
        return self.images / max(self.seconds, 1e-9)

    def line(self, total_epochs: int, prefix: str = "") -> str:
        return (
            f"{prefix}epoch {self.epoch + 1}/{total_epochs} loss {self.loss:.4f} "
            f"acc {self.accuracy:.2f}% {self.images_per_second:.0f} img/s"
        )


def make_optimizer(params, cfg: TrainConfig, lr: float | None = None) -> torch.optim.Optimizer:
    """torch.optim's SGD (momentum, optional Nesterov) or Adam, with the config's weight decay."""
    lr = cfg.lr if lr is None else lr
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(
        params, lr=lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0, weight_decay=cfg.weight_decay
    )


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig) -> torch.optim.lr_scheduler.MultiStepLR:
    """Per-epoch step decay; milestones are fractions of the epochs (upstream: 50% and 75%)."""
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=cfg.milestone_epochs(), gamma=cfg.lr_gamma)


def sliced_cross_entropy(labels_lo: int, labels_hi: int) -> LossFn:
    """Cross-entropy over the logits [lo, hi) only; labels are shifted into that slice."""

    def loss_fn(logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        part = logits[:, labels_lo:labels_hi].float()
        loss = torch.nn.functional.cross_entropy(part, y - labels_lo)
        correct = (part.argmax(1) == y - labels_lo).sum()
        return loss, correct

    return loss_fn


def train_epoch(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    data: DeviceData,
    idx: torch.Tensor,
    *,
    epoch: int,
    batch_size: int,
    generator: torch.Generator,
    augment: bool,
    loss_fn: LossFn,
    after_backward: Callable[[], None] | None = None,
    after_step: Callable[[], None] | None = None,
) -> EpochStats:
    model.train()
    device = data.device
    started = time.perf_counter()
    total_loss = torch.zeros((), device=device)
    total_correct = torch.zeros((), device=device, dtype=torch.int64)
    seen = 0
    for x, y in data.batches(idx, batch_size, generator, shuffle=True, augment=augment):
        with autocast(device):
            logits = model(x)
        loss, correct = loss_fn(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if after_backward is not None:
            after_backward()
        optimizer.step()
        if after_step is not None:
            after_step()
        total_loss += loss.detach() * len(y)
        total_correct += correct
        seen += len(y)
    summed_loss, correct = float(total_loss), float(total_correct)  # the loop's only host-device sync
    seconds = time.perf_counter() - started  # after the sync, so that the device's work is counted
    return EpochStats(
        epoch=epoch,
        loss=summed_loss / max(seen, 1),
        accuracy=100.0 * correct / max(seen, 1),
        images=seen,
        seconds=seconds,
    )


@torch.no_grad()
def predict_logits(model: torch.nn.Module, data: DeviceData, idx: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Logits (float32) for the images `idx`, in order, without augmentation."""
    model.eval()
    outputs = []
    for x, _ in data.batches(idx, batch_size):
        with autocast(data.device):
            outputs.append(model(x).float())
    if not outputs:
        return torch.zeros(0, 0, device=data.device)
    return torch.cat(outputs)
