"""MobileNetV2 (Sandler et al. 2018) in torchvision's layout, for 64x64 Tiny-ImageNet images.

Inverted residual stages t/c/n/s = 1/16/1/1, 6/24/2/2, 6/32/3/2, 6/64/4/2, 6/96/3/1, 6/160/3/2,
6/320/1/1 after a 32-channel 3x3 stem, a 1x1 conv to 1280 channels, global pooling and a linear
`classifier`. As in torchvision, a block with t = 1 has no 1x1 expansion conv, every conv is
followed by an affine BatchNorm, and channel counts are rounded to multiples of 8 under `width`.

The stride adaptation is ours: the stem has stride `stem_stride` = 1 instead of 2, so a 64x64
input ends at 4x4 (ImageNet's 224x224 ends at 7x7 with stride 2); a 32x32 input ends at 2x2 and an
8x8 one at 1x1. There is no dropout before the classifier, so that every random draw of a stage
comes from its seeded generator and a resumed stage ends bit-identical.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn

from ..errors import ConfigError
from .registry import register_backbone

# (expansion t, output channels c, repeats n, first stride s) per stage
SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))
STEM, LAST = 32, 1280


def divisible(value: float, divisor: int = 8) -> int:
    """torchvision's rounding of channel counts: nearest multiple of `divisor`, never 10% below."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def conv_bn(
    in_ch: int,
    out_ch: int,
    kernel: int,
    stride: int = 1,
    groups: int = 1,
    relu: bool = True,
    norm: Callable[[int], nn.Module] = nn.BatchNorm2d,
) -> nn.Sequential:
    """Conv (no bias, "same" padding), `norm`, then ReLU6 unless `relu` is False."""
    layers: list[nn.Module] = [
        nn.Conv2d(in_ch, out_ch, kernel, stride, kernel // 2, groups=groups, bias=False),
        norm(out_ch),
    ]
    if relu:
        layers.append(nn.ReLU6(inplace=True))
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = in_ch * expansion
        layers = [conv_bn(in_ch, hidden, 1)] if expansion != 1 else []
        layers += [conv_bn(hidden, hidden, 3, stride, groups=hidden), conv_bn(hidden, out_ch, 1, relu=False)]
        self.conv = nn.Sequential(*layers)
        self.residual = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.residual else self.conv(x)


class MobileNetV2(nn.Module):
    def __init__(self, num_classes: int, in_channels: int = 3, width: float = 1.0, stem_stride: int = 1) -> None:
        super().__init__()
        channels = divisible(STEM * width)
        self.stem = conv_bn(in_channels, channels, 3, stride=stem_stride)
        blocks = []
        for t, c, n, s in SETTINGS:
            out = divisible(c * width)
            for i in range(n):
                blocks.append(InvertedResidual(channels, out, s if i == 0 else 1, t))
                channels = out
        self.blocks = nn.Sequential(*blocks)
        last = divisible(LAST * max(1.0, width))
        self.head = conv_bn(channels, last, 1)
        self.classifier = nn.Linear(last, num_classes)
        for module in self.modules():  # torchvision's initialisation
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out")
            elif isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0, 0.01)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.head(self.blocks(self.stem(x)))
        return self.classifier(torch.flatten(nn.functional.adaptive_avg_pool2d(out, 1), 1))


@register_backbone("mobilenetv2")
def mobilenetv2(
    num_classes: int, image_shape: tuple[int, int, int], width: float = 1.0, stem_stride: int = 1
) -> nn.Module:
    if not width > 0:
        raise ConfigError(f"backbone_args.width: expected a positive multiplier, got {width!r}")
    if stem_stride not in (1, 2):
        raise ConfigError(f"backbone_args.stem_stride: expected 1 or 2, got {stem_stride!r}")
    return MobileNetV2(num_classes, in_channels=image_shape[2], width=width, stem_stride=stem_stride)
