"""Fully connected network on flattened images (FOCIL's MNIST net is 784-300-100-C, no bias)."""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from .registry import register_backbone


class MLP(nn.Module):
    def __init__(self, in_features: int, hidden: tuple[int, ...], num_classes: int, bias: bool = False) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h, bias=bias), nn.ReLU(inplace=True)]
            width = h
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(width, num_classes, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x.flatten(1)))


@register_backbone("mlp")
def mlp(
    num_classes: int, image_shape: tuple[int, int, int], hidden: tuple[int, ...] = (300, 100), bias: bool = False
) -> nn.Module:
    return MLP(math.prod(image_shape), tuple(hidden), num_classes, bias=bias)
