"""The mask engine: which tensors are masked, per-layer densities, isolation, merge, mask files."""

from __future__ import annotations

import pytest
import torch

from sparsecl.models import create_backbone
from sparsecl.sparse import (
    MaskFile,
    apply_masks,
    erk_densities,
    freeze_used_gradients,
    layer_densities,
    maskable_parameters,
    merge_into,
    random_masks,
    reinitialise,
    row_mask,
)
from sparsecl.sparse.masks import FREE
from sparsecl.sparse.stats import evaluation_columns, mask_statistics

# ERK layer densities of the papers' ResNet-18 with C = 100 at d = 0.2, 0.1, 0.05 (3 decimals).
ERK_TABLE = [
    (["conv1"], (1.000, 1.000, 0.519)),
    ([f"layer1.{b}.conv{c}" for b in (0, 1) for c in (1, 2)], (0.998, 0.458, 0.219)),
    (["layer2.0.conv1"], (0.737, 0.338, 0.162)),
    (["layer2.0.conv2", "layer2.1.conv1", "layer2.1.conv2"], (0.488, 0.224, 0.107)),
    (["layer2.0.shortcut"], (1.000, 1.000, 1.000)),
    (["layer3.0.conv1"], (0.363, 0.167, 0.080)),
    (["layer3.0.conv2", "layer3.1.conv1", "layer3.1.conv2"], (0.241, 0.111, 0.053)),
    (["layer3.0.shortcut"], (1.000, 1.000, 0.709)),
    (["layer4.0.conv1"], (0.180, 0.083, 0.040)),
    (["layer4.0.conv2", "layer4.1.conv1", "layer4.1.conv2"], (0.120, 0.055, 0.026)),
    (["layer4.0.shortcut"], (1.000, 0.740, 0.354)),
    (["classifier"], (1.000, 1.000, 0.720)),
]


@pytest.fixture(scope="module")
def seed_resnet_shapes():
    model = create_backbone("resnet18_seed", 100, (32, 32, 3))
    return {name: tuple(p.shape) for name, p in maskable_parameters(model).items()}


def layer(shapes: dict, prefix: str) -> str:
    """The maskable weight of a module named in the table (a shortcut's conv is `<prefix>.0.weight`)."""
    matches = [name for name in shapes if name.startswith(prefix + ".") and name.endswith("weight")]
    assert len(matches) == 1, (prefix, matches)
    return matches[0]


@pytest.mark.parametrize("column,density", [(0, 0.2), (1, 0.1), (2, 0.05)])
def test_erk_densities_reproduce_the_spec_table_for_the_seed_resnet18(seed_resnet_shapes, column, density):
    densities = erk_densities(seed_resnet_shapes, density)
    named = [prefix for prefixes, _ in ERK_TABLE for prefix in prefixes]
    assert sorted(layer(seed_resnet_shapes, prefix) for prefix in named) == sorted(seed_resnet_shapes)
    for prefixes, expected in ERK_TABLE:
        for prefix in prefixes:
            assert round(densities[layer(seed_resnet_shapes, prefix)], 3) == pytest.approx(
                expected[column], abs=1e-9
            ), prefix


@pytest.mark.parametrize("density", (0.2, 0.1, 0.05))
def test_erk_keeps_the_overall_expected_density(seed_resnet_shapes, density):
    densities = erk_densities(seed_resnet_shapes, density)
    numel = {n: torch.Size(s).numel() for n, s in seed_resnet_shapes.items()}
    kept = sum(densities[n] * numel[n] for n in numel)
    assert kept / sum(numel.values()) == pytest.approx(density, rel=1e-9)


def test_every_conv_and_linear_weight_is_maskable_first_conv_shortcuts_and_classifier_included():
    model = create_backbone("resnet18_seed", 100, (32, 32, 3))
    names = set(maskable_parameters(model))
    assert {"conv1.weight", "layer2.0.shortcut.0.weight", "classifier.weight"} <= names
    assert len(names) == 1 + 16 + 3 + 1
    assert sum(p.numel() for p in maskable_parameters(model).values()) == sum(p.numel() for p in model.parameters())


def test_uniform_gives_every_layer_the_same_density():
    shapes = {"a": (4, 3), "b": (10, 10, 3, 3)}
    assert layer_densities("uniform", shapes, 0.3) == {"a": 0.3, "b": 0.3}


def test_random_masks_are_bernoulli_draws_reproducible_from_the_generator():
    params = {"w": torch.zeros(200, 300)}
    draw = lambda seed: random_masks(params, {"w": 0.1}, torch.Generator().manual_seed(seed))["w"]  # noqa: E731
    assert torch.equal(draw(3), draw(3))
    assert not torch.equal(draw(3), draw(4))
    assert draw(3).float().mean().item() == pytest.approx(0.1, abs=0.005)


def test_isolation_zeroes_only_the_gradients_of_frozen_weights():
    w = torch.nn.Parameter(torch.ones(2, 3))
    w.grad = torch.full((2, 3), 5.0)
    frozen = torch.tensor([[True, False, False], [False, False, True]])
    freeze_used_gradients({"w": w}, {"w": frozen})
    assert torch.equal(w.grad, torch.where(frozen, 0.0, 5.0))


def test_apply_masks_and_merge_fill_the_task_networks_zeros_from_the_shared_network():
    shared = {"w": torch.tensor([1.0, 2.0, 3.0, 0.0])}
    trained = {"w": torch.tensor([9.0, 8.0, 7.0, 6.0])}
    apply_masks(trained, {"w": torch.tensor([False, True, False, True])})
    assert torch.equal(trained["w"], torch.tensor([0.0, 8.0, 0.0, 6.0]))
    assert torch.equal(merge_into(shared, trained)["w"], torch.tensor([1.0, 8.0, 3.0, 6.0]))


def test_row_mask_and_reinitialise_touch_only_the_given_positions():
    w = torch.zeros(4, 6)
    rows = row_mask(w, [1, 2])
    assert rows.sum() == 12 and rows[1:3].all()
    reinitialise({"w": w}, {"w": rows}, torch.Generator().manual_seed(0))
    assert (w[1:3] != 0).all() and (w[[0, 3]] == 0).all()
    assert w.abs().max() <= 1 / 6**0.5  # PyTorch's default bound 1/sqrt(fan_in)


def test_the_owner_map_records_the_first_task_using_each_weight():
    m0 = {"w": torch.tensor([True, True, False, False])}
    m1 = {"w": torch.tensor([False, True, True, False])}
    first = MaskFile.first(m0)
    second = MaskFile.after(m1, task=1, previous_owner=first.owner)
    assert second.owner["w"].tolist() == [0, 0, 1, FREE]
    assert second.used()["w"].tolist() == [True, True, True, False]


def test_mask_statistics_density_overlap_and_capacity():
    first = MaskFile.first({"a": torch.tensor([True, True, False, False]), "b": torch.tensor([False] * 4)})
    second = MaskFile.after(
        {"a": torch.tensor([False, True, True, False]), "b": torch.tensor([True, False, False, False])}, 1, first.owner
    )
    stats = mask_statistics(second, task=1)
    assert stats["density"] == 3 / 8
    assert stats["overlap"] == 1 / 3  # one of task 1's three weights belongs to task 0
    assert stats["capacity_used"] == 4 / 8 and stats["free_capacity"] == 4 / 8
    assert stats["layers"]["a"]["density"] == 2 / 4 and stats["layers"]["b"]["overlap"] == 0.0
    columns = evaluation_columns([first.to_dict(), second.to_dict()], task=0)
    assert columns == {"density_pct": 25.0, "overlap_pct": 0.0, "capacity_used_pct": 50.0}
