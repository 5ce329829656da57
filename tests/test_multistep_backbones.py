"""The multistep paper's backbones: CIFAR ResNet-110 and MobileNetV2 for 64x64 images.

Specification: both are registered, end in a linear `classifier`, put an affine BatchNorm after
every conv (the unit of sparsity training), have the published layouts (parameter counts), and
work on the 8x8 digits of the demo without collapsing the feature map.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torchvision

from sparsecl.errors import ConfigError
from sparsecl.models import BACKBONES, create_backbone


def resnet110_parameters(blocks: int, in_channels: int, classes: int) -> int:
    """Hand count of the CIFAR ResNet with 1x1-conv+BN shortcuts at widths 16/32/64."""
    conv3, conv1, bn = (lambda i, o: 9 * i * o), (lambda i, o: i * o), (lambda c: 2 * c)
    block = lambda c: 2 * (conv3(c, c) + bn(c))  # noqa: E731  (conv-BN-conv-BN, same width)
    down = lambda i, o: conv3(i, o) + bn(o) + conv3(o, o) + bn(o) + conv1(i, o) + bn(o)  # noqa: E731
    stem = conv3(in_channels, 16) + bn(16)
    stage1 = blocks * block(16)
    stage2 = down(16, 32) + (blocks - 1) * block(32)
    stage3 = down(32, 64) + (blocks - 1) * block(64)
    return stem + stage1 + stage2 + stage3 + 64 * classes + classes


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_both_backbones_are_registered_and_end_in_a_linear_classifier():
    for name, shape in (("resnet110", (32, 32, 3)), ("mobilenetv2", (64, 64, 3))):
        assert name in BACKBONES
        model = create_backbone(name, 100, shape)
        assert isinstance(model.classifier, nn.Linear) and model.classifier.out_features == 100


def test_resnet110_has_the_hand_counted_parameters_about_1_73m_for_100_classes():
    model = create_backbone("resnet110", 100, (32, 32, 3))
    assert count(model) == resnet110_parameters(18, 3, 100) == 1_736_564
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 1 + 3 * 18 * 2 + 2  # stem, two per block, two 1x1 shortcuts
    assert sum(isinstance(m, nn.Linear) for m in model.modules()) == 1  # 6 x 18 + 2 = 110 weighted layers


def test_every_conv_is_followed_by_an_affine_batchnorm_with_running_statistics():
    for name, shape in (("resnet110", (32, 32, 3)), ("mobilenetv2", (64, 64, 3))):
        model = create_backbone(name, 10, shape)
        convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
        bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
        assert len(bns) == len(convs)
        assert all(bn.affine and bn.track_running_stats for bn in bns)


def test_small_resnets_take_blocks_and_width_and_run_on_8x8_digits():
    model = create_backbone("resnet110", 10, (8, 8, 1), blocks=1, width=0.5)
    assert count(model) < resnet110_parameters(1, 1, 10)  # half the widths
    assert count(create_backbone("resnet110", 10, (8, 8, 1), blocks=1)) == resnet110_parameters(1, 1, 10)
    features = {}
    model.layer3.register_forward_hook(lambda m, i, out: features.update(shape=out.shape))
    assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 10)
    assert features["shape"] == (2, 32, 2, 2)  # strides 1, 2, 2: no collapse to 0


def test_mobilenetv2_matches_torchvisions_layout_and_parameter_count():
    ours = create_backbone("mobilenetv2", 200, (64, 64, 3))
    reference = torchvision.models.mobilenet_v2(num_classes=200)
    assert count(ours) == count(reference) == 2_480_072
    assert sorted(p.shape for p in ours.parameters()) == sorted(p.shape for p in reference.parameters())
    first = ours.blocks[0]  # t = 1: depthwise and projection only, no expansion conv
    assert sum(isinstance(m, nn.Conv2d) for m in first.modules()) == 2


@pytest.mark.parametrize("size, stem_stride, final", [(64, 1, 4), (224, 2, 7), (32, 1, 2), (8, 1, 1)])
def test_mobilenetv2_stride_adaptation_sets_the_final_feature_map(size, stem_stride, final):
    model = create_backbone("mobilenetv2", 10, (size, size, 3), stem_stride=stem_stride).eval()
    out = model.head(model.blocks(model.stem(torch.zeros(2, 3, size, size))))
    assert out.shape == (2, 1280, final, final)


@pytest.mark.parametrize(
    "name, kwargs, message",
    [
        ("resnet110", {"blocks": 0}, "backbone_args.blocks: expected an integer >= 1"),
        ("resnet110", {"width": -1}, "backbone_args.width: expected a positive multiplier"),
        ("mobilenetv2", {"stem_stride": 4}, "backbone_args.stem_stride: expected 1 or 2"),
        ("resnet110", {"depth": 3}, "backbone_args: "),
    ],
)
def test_bad_backbone_arguments_are_one_line_config_errors(name, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        create_backbone(name, 10, (32, 32, 3), **kwargs)
