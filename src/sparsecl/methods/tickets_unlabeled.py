"""Lifelong Tickets' unlabeled data: k-NN retrieval around the exemplars, frozen views, teacher logits.

Before task t >= 1 the previous model M_{t-1} embeds (eval mode, no augmentation) the whole
unlabeled pool and every exemplar of the seen classes. The exemplars are visited in their stored
order; each takes its `per_exemplar` nearest pool images (squared Euclidean distance on the pooled
feature) among those not taken yet, so the selection has no repeats and simply ends when the pool
runs out. Each selected image gets one draw of the training augmentation (crop offsets, flip),
kept for the whole task, and M_{t-1}'s logits over heads 0..t-1 of both head sets on that view
are the distillation targets. Features and teacher logits are float32 in both protocols, also
where training runs under bf16 autocast. All of it is the retrieve stage's `unlabeled.pt`:

    index [M] int64 (into the pool, or the prepared train split for `held_out_classes`),
    dy, dx [M] int64, flip [M] bool, z_main, z_random [M, t*C] float32, heads = t,
    source, pool, deviation (None only for the published Tiny Images pool)

Unlabeled sources: `pool` reads `data.unlabeled_pool` (the published pickle or a substitute, the
pool's meta.json names the deviation); `held_out_classes` uses the training images of the classes
outside the scenario (a small-data stand-in, e.g. the digits demo; never test images).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from ..data import get_dataset
from ..engine import DeviceData
from ..errors import ConfigError, DataError
from ..io import read_json
from .base import TaskContext

HELD_OUT_DEVIATION = "unlabeled images: training images of the classes outside the scenario, not 80M Tiny Images"


@torch.no_grad()
def greedy_knn(queries: torch.Tensor, pool: torch.Tensor, per_query: int, chunk: int = 256) -> torch.Tensor:
    """Pool indices picked by visiting `queries` in order, each taking its `per_query` nearest
    untaken pool rows (squared Euclidean, nearest first); stops when the pool is used up."""
    taken = torch.zeros(len(pool), dtype=torch.bool, device=pool.device)
    picked: list[torch.Tensor] = []
    left = len(pool)
    pool_sq = (pool * pool).sum(1)
    for start in range(0, len(queries), chunk):
        block = queries[start : start + chunk]
        distances = (block * block).sum(1, keepdim=True) + pool_sq[None, :] - 2.0 * block @ pool.T
        for row in distances:
            if left == 0:
                break
            k = min(per_query, left)
            choice = torch.topk(row.masked_fill(taken, float("inf")), k, largest=False, sorted=True).indices
            taken[choice] = True
            picked.append(choice)
            left -= k
    return torch.cat(picked) if picked else torch.zeros(0, dtype=torch.long, device=pool.device)


def draw_views(n: int, padding: int, hflip: bool, generator: torch.Generator, device: torch.device):
    """One training-augmentation draw per image: crop offsets in [0, 2 * padding] and a flip flag."""
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator, device=device)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator, device=device)
    flip = torch.rand(n, generator=generator, device=device) < 0.5 if hflip else torch.zeros(n, dtype=torch.bool)
    return dy, dx, flip.to(device)


def frozen_views(images: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, flip: torch.Tensor, padding: int):
    """uint8 [N, C, H, W] images after zero-padding, cropping at (dy, dx) and flipping where `flip`."""
    n, c, h, w = images.shape
    if padding:
        padded = torch.nn.functional.pad(images, (padding,) * 4)
        rows = (dy[:, None] + torch.arange(h, device=images.device))[:, None, :, None]
        cols = (dx[:, None] + torch.arange(w, device=images.device))[:, None, None, :]
        batch = torch.arange(n, device=images.device)[:, None, None, None]
        chans = torch.arange(c, device=images.device)[None, :, None, None]
        images = padded[batch, chans, rows, cols]
    return torch.where(flip[:, None, None, None], images.flip(3), images)


def normalise(images: torch.Tensor, data: DeviceData) -> torch.Tensor:
    return (images.float() / 255.0 - data.mean) / data.std


def full_precision(device: torch.device):
    """Autocast switched off: the features k-NN ranks and the logits distilled are computed in
    float32 as upstream's are, even where training runs under bf16 autocast (near-ties in distance
    and soft targets would otherwise move with the precision)."""
    return torch.autocast(device.type, enabled=False)


@torch.no_grad()
def embed(model: nn.Module, images: torch.Tensor, data: DeviceData, batch: int) -> torch.Tensor:
    """Pooled features (float32) of uint8 images, in eval mode."""
    model.eval()
    out = [torch.zeros(0, model.feature_dim, device=data.device)]
    for start in range(0, len(images), batch):
        with full_precision(data.device):
            out.append(model.features(normalise(images[start : start + batch], data)))
    return torch.cat(out)


@torch.no_grad()
def teacher_logits(model: nn.Module, images: torch.Tensor, data: DeviceData, head_set: str, heads: int, batch: int):
    """Logits (float32) of heads 0..heads-1 of `head_set`, in eval mode: the distillation targets."""
    model.eval()
    width = heads * model.classes_per_head
    out = [torch.zeros(0, width, device=data.device)]
    for start in range(0, len(images), batch):
        with full_precision(data.device):
            out.append(model.forward_heads(normalise(images[start : start + batch], data), head_set, heads))
    return torch.cat(out)


@dataclass(frozen=True)
class PoolImages:
    images: torch.Tensor  # uint8 [N, C, H, W] on the device
    source: str
    pool: str | None
    deviation: str | None


def pool_images(ctx: TaskContext, source: str, index: torch.Tensor | None = None) -> PoolImages:
    """The unlabeled images of `source` (only rows `index`, if given), on the device."""
    if source == "held_out_classes":
        held_out = (ctx.data.labels < 0).nonzero().flatten()
        rows = held_out if index is None else index
        return PoolImages(ctx.data.images[rows].contiguous(), source, None, HELD_OUT_DEVIATION)
    if "pool" not in ctx.inputs or "pool_meta" not in ctx.inputs:
        raise ConfigError(
            f"stage {ctx.stage}: method_args.unlabeled_source pool needs --input pool=... and pool_meta=..."
        )
    meta = read_json(ctx.inputs["pool_meta"])
    array = load_pool(Path(ctx.inputs["pool"]), tuple(ctx.data.images.shape[1:]))
    if index is not None:
        array = array[np.sort(index.cpu().numpy())]
    # a copy: the pool is a read-only memory map, and torch.from_numpy needs a writable array
    tensor = torch.from_numpy(np.array(array, order="C")).to(ctx.device).permute(0, 3, 1, 2).contiguous()
    if index is not None:  # back to the selection's order
        order = torch.argsort(torch.argsort(index))
        tensor = tensor[order]
    return PoolImages(tensor, source, meta.get("pool"), meta.get("deviation"))


def load_pool(path: Path, chw: tuple[int, int, int]) -> np.ndarray:
    try:
        array = np.load(path, mmap_mode="r")
    except (FileNotFoundError, ValueError) as err:
        raise DataError(f"{path}: unlabeled pool not readable ({err})") from None
    if array.dtype != np.uint8 or array.ndim != 4 or (array.shape[3], array.shape[1], array.shape[2]) != chw:
        raise DataError(f"{path}: expected uint8 [N, {chw[1]}, {chw[2]}, {chw[0]}] pool images, got {array.shape}")
    return array


def retrieve(ctx: TaskContext, source: str, per_exemplar: int) -> dict[str, Any]:
    """The retrieve stage's payload for task `ctx.task`, with `ctx.model` = M_{t-1} as the teacher."""
    model, data, batch, t = ctx.model, ctx.data, ctx.run.train.eval_batch_size, ctx.task
    pool = pool_images(ctx, source)
    exemplars = data.indices_of(ctx.labels_of(range(t)), ctx.scenario.exemplar_index)
    pool_index = torch.arange(len(pool.images), device=ctx.device)
    if source == "held_out_classes":
        pool_index = (data.labels < 0).nonzero().flatten()
    chosen = greedy_knn(
        embed(model, data.images[exemplars], data, batch), embed(model, pool.images, data, batch), per_exemplar
    )
    spec = get_dataset(ctx.run.dataset)
    augment = ctx.run.train.augment
    padding = spec.crop_padding if augment else 0
    dy, dx, flip = draw_views(len(chosen), padding, spec.hflip and augment, ctx.generator, ctx.device)
    views = frozen_views(pool.images[chosen], dy, dx, flip, padding)
    return {
        "index": pool_index[chosen],
        "dy": dy,
        "dx": dx,
        "flip": flip,
        "z_main": teacher_logits(model, views, data, "main", t, batch),
        "z_random": teacher_logits(model, views, data, "random", t, batch),
        "heads": t,
        "source": source,
        "pool": pool.pool,
        "deviation": pool.deviation,
        "pool_size": len(pool.images),
        "exemplars": len(exemplars),
        "requested": len(exemplars) * per_exemplar,
    }


@dataclass
class UnlabeledSet:
    """The frozen views and teacher logits a training stage of task t distils on."""

    images: torch.Tensor  # uint8 [M, C, H, W], already augmented
    z_main: torch.Tensor
    z_random: torch.Tensor
    provenance: dict[str, Any]

    def __len__(self) -> int:
        return len(self.images)


def load_unlabeled(ctx: TaskContext, source: str) -> UnlabeledSet:
    """Read task t's retrieve file (and the pool rows it selected)."""
    if "unlabeled" not in ctx.inputs:
        raise ConfigError(
            f"stage {ctx.stage} of task {ctx.task}: needs --input unlabeled=<task's retrieve/unlabeled.pt>"
        )
    saved = ctx.stage_input("unlabeled", "retrieval")
    if saved["heads"] != ctx.task or saved["source"] != source:
        raise DataError(f"{ctx.inputs['unlabeled']}: made for task {saved['heads']} from {saved['source']}")
    images = pool_images(ctx, source, saved["index"]).images
    spec = get_dataset(ctx.run.dataset)
    padding = spec.crop_padding if ctx.run.train.augment else 0
    return UnlabeledSet(
        frozen_views(images, saved["dy"], saved["dx"], saved["flip"], padding),
        saved["z_main"],
        saved["z_random"],
        provenance_of(saved),
    )


def provenance_of(saved: dict[str, Any]) -> dict[str, Any]:
    """What a retrieval file's images are, for the provenance of every file made with them."""
    return {
        "unlabeled_source": saved["source"],
        "unlabeled_pool": saved["pool"],
        "unlabeled_deviation": saved["deviation"],
    }
