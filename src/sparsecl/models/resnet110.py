"""The CIFAR ResNet-110 of He et al. (2016): a 3x3 stem, three stages of BasicBlocks at widths
16/32/64 (strides 1, 2, 2), global average pooling and a linear classifier (about 1.73M
parameters for 100 classes).

BatchNorm (affine, running statistics) follows every conv, because multi-step sparsity training
ranks and sparsifies the BN scaling factors. Where a block changes shape, the shortcut is a 1x1
conv + BN, so that every channel of the residual stream comes from a conv whose filters can be
re-initialised. `blocks` (per stage; 18 gives 6 x 18 + 2 = 110 layers) and `width` (a multiplier
of 16/32/64) make small demo nets; an 8x8 input ends at 2x2, a 32x32 one at 8x8.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..errors import ConfigError
from .registry import register_backbone
from .resnet import BasicBlock

STAGE_WIDTHS = (16, 32, 64)


class CifarResNet(nn.Module):
    def __init__(self, num_classes: int, in_channels: int = 3, blocks: int = 18, width: float = 1.0) -> None:
        super().__init__()
        widths = [max(1, round(base * width)) for base in STAGE_WIDTHS]
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        stages, in_planes = [], widths[0]
        for planes, stride in zip(widths, (1, 2, 2)):
            layers = [
                BasicBlock(in_planes if i == 0 else planes, planes, stride if i == 0 else 1) for i in range(blocks)
            ]
            stages.append(nn.Sequential(*layers))
            in_planes = planes
        self.layer1, self.layer2, self.layer3 = stages
        self.classifier = nn.Linear(in_planes, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):  # He et al.'s initialisation
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        return self.classifier(torch.flatten(nn.functional.adaptive_avg_pool2d(out, 1), 1))


@register_backbone("resnet110")
def resnet110(num_classes: int, image_shape: tuple[int, int, int], blocks: int = 18, width: float = 1.0) -> nn.Module:
    if not isinstance(blocks, int) or blocks < 1:
        raise ConfigError(f"backbone_args.blocks: expected an integer >= 1, got {blocks!r}")
    if not width > 0:
        raise ConfigError(f"backbone_args.width: expected a positive multiplier, got {width!r}")
    return CifarResNet(num_classes, in_channels=image_shape[2], blocks=blocks, width=width)
