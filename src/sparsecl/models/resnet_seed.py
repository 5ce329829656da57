"""The ResNet-18 of the CL-with-DST and FOCIL papers, kept as those papers ran it.

It differs from the CIFAR ResNet-18 (`resnet18`) in three ways that move the numbers:
a 7x7 stride-2 stem (ImageNet style, even on 32x32 inputs, without the max-pool), BatchNorm
without affine parameters or running statistics (every forward pass normalises with the
current batch, at test time too, so there is nothing in BN to isolate per task), and a
bias-free classifier. Every conv and linear weight is therefore maskable.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .registry import register_backbone


def batch_norm(channels: int) -> nn.BatchNorm2d:
    """Parameter-free BN that always uses batch statistics."""
    return nn.BatchNorm2d(channels, affine=False, track_running_stats=False)


class SeedBasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = batch_norm(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = batch_norm(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False), batch_norm(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class SeedResNet18(nn.Module):
    def __init__(self, num_classes: int, in_channels: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
        self.bn1 = batch_norm(64)
        stages, in_planes = [], 64
        for i, stride in enumerate((1, 2, 2, 2)):
            planes = 64 * 2**i
            stages.append(nn.Sequential(SeedBasicBlock(in_planes, planes, stride), SeedBasicBlock(planes, planes, 1)))
            in_planes = planes
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.classifier = nn.Linear(512, num_classes, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return self.classifier(torch.flatten(nn.functional.adaptive_avg_pool2d(out, 1), 1))


@register_backbone("resnet18_seed")
def resnet18_seed(num_classes: int, image_shape: tuple[int, int, int]) -> nn.Module:
    return SeedResNet18(num_classes, in_channels=image_shape[2])
