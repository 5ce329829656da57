"""The MobileNetV2 of the CL-with-DST code, which its CIFAR driver uses by default.

Unlike torchvision's it keeps the 1x1 expansion conv even when the expansion factor is 1, has
a stride-2 stem and no stride adaptation for 32x32 inputs (the last feature map is 1x1), and
uses parameter-free batch-statistics BN. The classifier is the only layer with a bias (never
masked).
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn as nn

from . import mobilenetv2
from .registry import register_backbone
from .resnet_seed import batch_norm

# (expansion t, output channels c, repeats n, first stride s) per stage
SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


conv_bn = partial(mobilenetv2.conv_bn, norm=batch_norm)


class InvertedResidual(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = in_ch * expansion
        self.expand = conv_bn(in_ch, hidden, 1)
        self.depthwise = conv_bn(hidden, hidden, 3, stride, groups=hidden)
        self.project = conv_bn(hidden, out_ch, 1, relu=False)
        self.residual = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.depthwise(self.expand(x)))
        return x + out if self.residual else out


class SeedMobileNetV2(nn.Module):
    def __init__(self, num_classes: int, in_channels: int = 3) -> None:
        super().__init__()
        self.stem = conv_bn(in_channels, 32, 3, stride=2)
        blocks, width = [], 32
        for t, c, n, s in SETTINGS:
            for i in range(n):
                blocks.append(InvertedResidual(width, c, s if i == 0 else 1, t))
                width = c
        self.blocks = nn.Sequential(*blocks)
        self.head = conv_bn(width, 1280, 1)
        self.classifier = nn.Linear(1280, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.head(self.blocks(self.stem(x)))
        return self.classifier(torch.flatten(nn.functional.adaptive_avg_pool2d(out, 1), 1))


@register_backbone("mobilenetv2_seed")
def mobilenetv2_seed(num_classes: int, image_shape: tuple[int, int, int]) -> nn.Module:
    return SeedMobileNetV2(num_classes, in_channels=image_shape[2])
