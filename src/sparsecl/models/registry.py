"""Backbones register a builder `(num_classes, image_shape, **kwargs) -> nn.Module`.

Every backbone ends in a linear layer named `classifier` over all classes of the scenario
(pre-allocated, as in the upstream codes), so methods can slice logits per task.
"""

from __future__ import annotations

from collections.abc import Callable

import torch.nn as nn

from ..errors import ConfigError
from ..registry import Registry

Builder = Callable[..., nn.Module]
BACKBONES: Registry[Builder] = Registry("backbone")


def register_backbone(name: str) -> Callable[[Builder], Builder]:
    return BACKBONES.register(name)


def create_backbone(name: str, num_classes: int, image_shape: tuple[int, int, int], **kwargs) -> nn.Module:
    """Build backbone `name` for images of shape (H, W, C); bad kwargs are a one-line ConfigError."""
    try:
        builder = BACKBONES.get(name)
    except KeyError as err:
        raise ConfigError(f"backbone: {err.args[0]}") from None
    try:
        return builder(num_classes=num_classes, image_shape=tuple(image_shape), **kwargs)
    except TypeError as err:
        raise ConfigError(f"backbone_args: {err}") from None
