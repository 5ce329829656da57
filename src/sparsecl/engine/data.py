"""The whole dataset as one uint8 tensor on the device, batched and augmented there.

Batches are drawn by index: a task is just an index tensor, so no per-task copies or
DataLoaders exist. Augmentation (pad + random crop, horizontal flip) and normalisation are
batched tensor ops driven by one seeded torch.Generator.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class DeviceData:
    images: torch.Tensor  # uint8 [N, C, H, W] on the device
    labels: torch.Tensor  # int64 [N] training labels (-1: class outside the scenario)
    mean: torch.Tensor  # float [1, C, 1, 1]
    std: torch.Tensor
    crop_padding: int = 0
    hflip: bool = False

    @classmethod
    def from_numpy(
        cls,
        images: np.ndarray,
        labels: np.ndarray,
        mean,
        std,
        device: torch.device,
        *,
        crop_padding: int = 0,
        hflip: bool = False,
    ) -> DeviceData:
        """`images` uint8 [N, H, W, C]; `labels` already mapped to training labels."""
        tensor = (
            torch.from_numpy(np.array(images, dtype=np.uint8)).to(device).permute(0, 3, 1, 2)
        )  # copies a read-only memmap
        if device.type == "cuda":
            tensor = tensor.contiguous(memory_format=torch.channels_last)
        else:  # standard strides: with one channel the permuted strides pass as contiguous too,
            # and CPU conv backward corrupts memory on them (torch 2.14)
            tensor = tensor.clone(memory_format=torch.contiguous_format)
        stats = dict(device=device, dtype=torch.float32)
        return cls(
            images=tensor,
            labels=torch.as_tensor(labels, dtype=torch.int64, device=device),
            mean=torch.tensor(mean, **stats).view(1, -1, 1, 1),
            std=torch.tensor(std, **stats).view(1, -1, 1, 1),
            crop_padding=crop_padding,
            hflip=hflip,
        )

    @property
    def device(self) -> torch.device:
        return self.images.device

    def indices_of(self, labels: list[int] | range, subset: torch.Tensor | np.ndarray | None = None) -> torch.Tensor:
        """Indices (within `subset`, if given) whose label is in `labels`."""
        wanted = torch.as_tensor(list(labels), device=self.device)
        pool = (
            torch.arange(len(self.labels), device=self.device)
            if subset is None
            else torch.as_tensor(subset, device=self.device)
        )
        return pool[torch.isin(self.labels[pool], wanted)]

    def batch(
        self, idx: torch.Tensor, generator: torch.Generator | None = None, augment: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised float images `idx` (augmented with `generator`), in the stored memory layout."""
        x = self.images[idx]
        if augment and generator is not None:
            x = self._augment(x, generator)
        x = x.contiguous(memory_format=self.memory_format)
        x = (x.float() / 255.0 - self.mean) / self.std
        return x, self.labels[idx]

    @property
    def memory_format(self) -> torch.memory_format:
        """channels_last when the images are stored so (on CUDA), else the default layout."""
        images = self.images
        channels_last = not images.is_contiguous() and images.is_contiguous(memory_format=torch.channels_last)
        return torch.channels_last if channels_last else torch.contiguous_format

    def batches(
        self,
        idx: torch.Tensor,
        batch_size: int,
        generator: torch.Generator | None = None,
        *,
        shuffle: bool = False,
        augment: bool = False,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if shuffle:
            idx = idx[torch.randperm(len(idx), generator=generator, device=self.device)]
        for start in range(0, len(idx), batch_size):
            yield self.batch(idx[start : start + batch_size], generator, augment)

    def _augment(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Random crop of the zero-padded image and horizontal flip as one gather (the flip reverses
        the crop's column index), written in the stored layout: a few small kernels per batch."""
        n, c, h, w = x.shape
        p = self.crop_padding
        if not p:
            if not self.hflip:
                return x
            flip = torch.rand(n, generator=generator, device=x.device) < 0.5
            return torch.where(flip[:, None, None, None], x.flip(3), x)
        padded = torch.nn.functional.pad(x, (p, p, p, p))
        dy = torch.randint(0, 2 * p + 1, (n,), generator=generator, device=x.device)
        dx = torch.randint(0, 2 * p + 1, (n,), generator=generator, device=x.device)
        rows = dy[:, None] + torch.arange(h, device=x.device)
        cols = dx[:, None] + torch.arange(w, device=x.device)
        if self.hflip:
            flip = torch.rand(n, generator=generator, device=x.device) < 0.5
            cols = torch.where(flip[:, None], cols.flip(1), cols)
        batch = torch.arange(n, device=x.device)
        chans = torch.arange(c, device=x.device)
        if self.memory_format == torch.channels_last:  # gather as [N, H, W, C], viewed as NCHW
            return padded[batch[:, None, None, None], chans, rows[:, :, None, None], cols[:, None, :, None]].permute(
                0, 3, 1, 2
            )
        return padded[
            batch[:, None, None, None], chans[None, :, None, None], rows[:, None, :, None], cols[:, None, None, :]
        ]
