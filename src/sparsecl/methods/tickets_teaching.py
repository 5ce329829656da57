"""One epoch of Lifelong Tickets' learner: task 0 on both head sets, later tasks by lottery teaching.

Task t >= 1 draws four streams per step (see methods/tickets.py for the loss); everything random
(order, augmentation) comes from the stage's generator, and the sums stay on the device.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..engine import EpochStats, autocast
from ..errors import ConfigError
from .base import TaskContext
from .tickets_unlabeled import UnlabeledSet, normalise


def kd_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 x the batch mean of the cross-entropy between softened teacher and student."""
    if student.shape != teacher.shape:
        raise ValueError(f"student logits {tuple(student.shape)} and teacher logits {tuple(teacher.shape)} differ")
    target = F.softmax(teacher / temperature, dim=1)
    return temperature**2 * -(target * F.log_softmax(student / temperature, dim=1)).sum(1).mean()


@dataclass(frozen=True)
class Balance:
    """Stream batch sizes of task t (t+1 tasks seen): b, floor(b/(t+1)), floor(b t/(t+1))."""

    random: int
    new: int
    old: int

    @classmethod
    def of(cls, batch_size: int, tasks_seen: int) -> Balance:
        b = batch_size // 4
        balance = cls(b, b // tasks_seen, b * (tasks_seen - 1) // tasks_seen)
        if balance.new < 1:
            raise ConfigError(
                f"train.batch_size: {batch_size} leaves no new-task images per step with {tasks_seen} tasks (need >= {4 * tasks_seen})"
            )
        return balance

    @property
    def c_new(self) -> float:
        return self.new / self.random

    @property
    def c_old(self) -> float:
        return self.old / self.random


@dataclass
class StreamLogits:
    """Logits and targets of one step: R (random heads), N and O (main heads), U (both, old heads)."""

    r: torch.Tensor
    y_r: torch.Tensor
    n: torch.Tensor
    y_n: torch.Tensor
    o: torch.Tensor
    y_o: torch.Tensor
    u_random: torch.Tensor | None = None
    z_random: torch.Tensor | None = None
    u_main: torch.Tensor | None = None
    z_main: torch.Tensor | None = None


def lottery_loss(s: StreamLogits, balance: Balance, temperature: float) -> torch.Tensor:
    loss = F.cross_entropy(s.r, s.y_r)
    balanced = balance.c_new * F.cross_entropy(s.n, s.y_n) + balance.c_old * F.cross_entropy(s.o, s.y_o)
    if s.u_random is not None:
        loss = loss + kd_loss(s.u_random, s.z_random, temperature)
        balanced = balanced + kd_loss(s.u_main, s.z_main, temperature)
    return loss + 0.5 * balanced


def first_task_loss(main: torch.Tensor, random: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(main, y) + F.cross_entropy(random, y)


def cycled(idx: torch.Tensor, batch: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Batches of `idx` forever, reshuffled on every pass."""
    while True:
        order = idx[torch.randperm(len(idx), generator=generator, device=idx.device)]
        for start in range(0, len(order), batch):
            yield order[start : start + batch]


def first_task_epoch(ctx: TaskContext, optimizer, after_step: Callable[[], None]) -> Callable[[int], EpochStats]:
    model, data, cfg = ctx.model, ctx.data, ctx.run.train
    idx = ctx.train_index([0])

    def run(epoch: int) -> EpochStats:
        model.train()
        tally = Tally(data.device)
        for x, y in data.batches(idx, cfg.batch_size, ctx.generator, shuffle=True, augment=cfg.augment):
            with autocast(data.device):
                main = model.forward_heads(x, "main", 1).float()
                random = model.forward_heads(x, "random", 1).float()
            loss = first_task_loss(main, random, y)
            step(optimizer, loss, after_step)
            tally.add(loss, len(y), (main.argmax(1) == y).sum(), len(y), images=2 * len(y))
        return tally.stats(epoch)

    return run


def lottery_epoch(
    ctx: TaskContext, optimizer, unlabeled: UnlabeledSet | None, temperature: float, after_step: Callable[[], None]
) -> Callable[[int], EpochStats]:
    model, data, cfg, g, t = ctx.model, ctx.data, ctx.run.train, ctx.generator, ctx.task
    balance = Balance.of(cfg.batch_size, t + 1)
    new = ctx.train_index([t])
    old = data.indices_of(ctx.labels_of(range(t)), ctx.scenario.exemplar_index)
    mixed = torch.cat([new, old])
    u_all = torch.arange(len(unlabeled), device=data.device) if unlabeled is not None and len(unlabeled) else None

    def run(epoch: int) -> EpochStats:
        model.train()
        tally = Tally(data.device)
        n_batches, o_batches = cycled(new, balance.new, g), cycled(old, balance.old, g)
        u_batches = cycled(u_all, balance.random, g) if u_all is not None else None
        for x_r, y_r in data.batches(mixed, balance.random, g, shuffle=True, augment=cfg.augment):
            x_n, y_n = data.batch(next(n_batches), g, cfg.augment)
            x_o, y_o = data.batch(next(o_batches), g, cfg.augment)
            with autocast(data.device):
                s = StreamLogits(
                    model.forward_heads(x_r, "random", t + 1).float(), y_r,
                    model.forward_heads(x_n, "main", t + 1).float(), y_n,
                    model.forward_heads(x_o, "main", t + 1).float(), y_o,
                )  # fmt: skip
                if u_batches is not None:
                    u = next(u_batches)
                    x_u = normalise(unlabeled.images[u], data)
                    s.u_random, s.z_random = model.forward_heads(x_u, "random", t).float(), unlabeled.z_random[u]
                    s.u_main, s.z_main = model.forward_heads(x_u, "main", t).float(), unlabeled.z_main[u]
            loss = lottery_loss(s, balance, temperature)
            step(optimizer, loss, after_step)
            hits = (s.n.argmax(1) == y_n).sum() + (s.o.argmax(1) == y_o).sum()
            passes = len(y_r) + len(y_n) + len(y_o) + (2 * len(s.z_main) if s.z_main is not None else 0)
            tally.add(loss, len(y_r), hits, len(y_n) + len(y_o), images=passes)
        return tally.stats(epoch)

    return run


class Tally:
    """Per-epoch sums kept on the device (no host sync per step): loss per R image, balanced-batch accuracy."""

    def __init__(self, device: torch.device) -> None:
        self.started = time.perf_counter()
        self.loss = torch.zeros((), device=device)
        self.correct = torch.zeros((), dtype=torch.int64, device=device)
        self.weight = self.scored = self.images = 0

    def add(self, loss: torch.Tensor, weight: int, correct: torch.Tensor, scored: int, images: int) -> None:
        self.loss += loss.detach() * weight
        self.correct += correct
        self.weight, self.scored, self.images = self.weight + weight, self.scored + scored, self.images + images

    def stats(self, epoch: int) -> EpochStats:
        return EpochStats(
            epoch=epoch,
            loss=float(self.loss) / max(self.weight, 1),
            accuracy=100.0 * float(self.correct) / max(self.scored, 1),
            images=self.images,
            seconds=time.perf_counter() - self.started,
        )


def step(optimizer: torch.optim.Optimizer, loss: torch.Tensor, after_step: Callable[[], None]) -> None:
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    after_step()
