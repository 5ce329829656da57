"""The papers' backbones: sizes, layer names, batch-statistics BatchNorm."""

from __future__ import annotations

import pytest
import torch

from sparsecl.models import create_backbone
from sparsecl.sparse import maskable_parameters


def count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("classes,expected", [(100, 11_218_112), (20, 11_177_152)])
def test_seed_resnet18_has_the_published_parameter_count_all_of_it_maskable(classes, expected):
    model = create_backbone("resnet18_seed", classes, (32, 32, 3))
    assert count(model) == expected
    assert sum(p.numel() for p in maskable_parameters(model).values()) == expected


def test_seed_mobilenetv2_has_the_published_parameter_count_and_only_the_classifier_bias_unmasked():
    model = create_backbone("mobilenetv2_seed", 100, (32, 32, 3))
    assert count(model) == 2_318_884
    assert sum(p.numel() for p in maskable_parameters(model).values()) == 2_318_784
    assert [name for name, _ in model.named_parameters() if name not in maskable_parameters(model)] == [
        "classifier.bias"
    ]


def test_seed_resnet18_layout_7x7_stride2_stem_named_shortcuts_and_a_bias_free_classifier():
    model = create_backbone("resnet18_seed", 100, (32, 32, 3))
    assert model.conv1.kernel_size == (7, 7) and model.conv1.stride == (2, 2)
    assert not any(isinstance(m, torch.nn.MaxPool2d) for m in model.modules())
    names = set(maskable_parameters(model))
    assert {f"layer{i}.0.shortcut.0.weight" for i in (2, 3, 4)} <= names
    assert "layer1.0.shortcut.0.weight" not in names
    assert model.classifier.bias is None and model.classifier.out_features == 100


@pytest.mark.parametrize("backbone", ["resnet18_seed", "mobilenetv2_seed"])
def test_batchnorm_always_uses_the_current_batch_so_eval_depends_on_the_batch(backbone):
    torch.manual_seed(0)
    model = create_backbone(backbone, 10, (32, 32, 3)).eval()
    batch = torch.randn(8, 3, 32, 32)
    assert not any(b.numel() for b in model.buffers())
    with torch.no_grad():
        alone = model(batch[:4])
        together = model(batch)[:4]
    assert not torch.allclose(alone, together)


@pytest.mark.parametrize("backbone,shape", [("resnet18_seed", (8, 8, 1)), ("mobilenetv2_seed", (28, 28, 1))])
def test_seed_backbones_accept_small_and_single_channel_images(backbone, shape):
    model = create_backbone(backbone, 10, shape)
    assert model(torch.randn(2, shape[2], shape[0], shape[1])).shape == (2, 10)
