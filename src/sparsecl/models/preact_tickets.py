"""The PreAct ResNet-18 of Lifelong Tickets, with its two sets of per-task heads.

It differs from the usual PreAct ResNet-18 in ways that change parameter counts and sparsity
figures: the 3x3 stem has no BatchNorm, ReLU or max-pool, there is no BatchNorm+ReLU after the
last stage, and the classifier is two head sets (`main`, the class-balanced branch that is
evaluated, and `random`, the auxiliary branch), each T heads `Linear(8w, C)`, one per task.
Logits over the first k heads of a set are the k*C classes of tasks 0..k-1 (labels are
contiguous per task), so the output grows with the tasks seen.

Built as `(num_classes, image_shape, width=64, classes_per_head=2)`: `num_classes` is every class
of the scenario, T = num_classes / classes_per_head; `classes_per_head` must equal the scenario's
`classes_per_task` (the tickets methods check it). `width` 64 is the paper's network (11,159,232
conv weights in 20 conv layers); small widths give quick CPU nets. Global average pooling keeps
8x8 inputs valid (the last feature map is 1x1 there).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..errors import ConfigError
from .registry import register_backbone

HEAD_SETS = ("main", "random")


class PreActBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.shortcut = (
            nn.Conv2d(in_planes, planes, 1, stride, bias=False) if stride != 1 or in_planes != planes else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = torch.relu(self.bn1(x))
        skip = x if self.shortcut is None else self.shortcut(a)
        return self.conv2(torch.relu(self.bn2(self.conv1(a)))) + skip


class TicketsPreActResNet18(nn.Module):
    def __init__(self, num_heads: int, classes_per_head: int, in_channels: int = 3, width: int = 64) -> None:
        super().__init__()
        self.num_heads, self.classes_per_head = num_heads, classes_per_head
        self.conv1 = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
        stages, in_planes = [], width
        for i, stride in enumerate((1, 2, 2, 2)):
            planes = width * 2**i
            stages.append(nn.Sequential(PreActBlock(in_planes, planes, stride), PreActBlock(planes, planes, 1)))
            in_planes = planes
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.feature_dim = in_planes
        self.heads = nn.ModuleDict(
            {
                name: nn.ModuleList(nn.Linear(in_planes, classes_per_head) for _ in range(num_heads))
                for name in HEAD_SETS
            }
        )

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled feature (8 x width, 512 for the paper's net)."""
        out = self.layer4(self.layer3(self.layer2(self.layer1(self.conv1(x)))))
        return torch.flatten(nn.functional.adaptive_avg_pool2d(out, 1), 1)

    def head_logits(self, features: torch.Tensor, head_set: str = "main", heads: int | None = None) -> torch.Tensor:
        """Concatenated logits of the first `heads` heads (all by default) of `head_set`."""
        chosen = self.heads[head_set][: self.num_heads if heads is None else heads]
        return torch.cat([head(features) for head in chosen], dim=1)

    def forward_heads(self, x: torch.Tensor, head_set: str = "main", heads: int | None = None) -> torch.Tensor:
        return self.head_logits(self.features(x), head_set, heads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The main heads over every class of the scenario (what the generic evaluation slices)."""
        return self.forward_heads(x, "main")


@register_backbone("preact_resnet18_tickets")
def preact_resnet18_tickets(
    num_classes: int, image_shape: tuple[int, int, int], width: int = 64, classes_per_head: int = 2
) -> nn.Module:
    if classes_per_head < 1 or num_classes % classes_per_head:
        raise ConfigError(
            f"backbone_args.classes_per_head: {classes_per_head} does not divide the scenario's {num_classes} classes"
        )
    return TicketsPreActResNet18(num_classes // classes_per_head, classes_per_head, image_shape[2], width)
