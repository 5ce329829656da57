"""Device choice, seeding and precision: the only place that knows CPU from CUDA."""

from __future__ import annotations

import contextlib
import random
import re

import numpy as np
import torch

from ..errors import ConfigError


def select_device(requested: str = "auto") -> torch.device:
    """`auto` -> cuda if available, else cpu; an explicit cuda request without a GPU is an error."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not re.fullmatch(r"cpu|cuda(:[0-9]+)?", requested):
        raise ConfigError(f"--device: {requested!r} is not a device; expected auto, cpu, cuda or cuda:N")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device: {requested!r} requested but no CUDA device is available (use 'auto' or 'cpu')")
    return device


def seed_everything(seed: int, device: torch.device) -> torch.Generator:
    """Seed the global RNGs (model init) and return the one generator that drives order and augmentation."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(device.type == "cpu", warn_only=True)  # CPU runs: byte-identical
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    return generator


def autocast(device: torch.device):
    """bf16 autocast on CUDA; a no-op on CPU so that CPU runs stay bit-reproducible."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def prepare_model(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """Move to the device; channels_last on CUDA only (it speeds up convs there)."""
    model = model.to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    return model
