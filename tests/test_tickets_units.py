"""Lifelong Tickets' building blocks: the backbone, the lottery-teaching loss, k-NN retrieval,
global magnitude pruning and the stopping rules of the bottom-up loops."""

from __future__ import annotations

import copy
import math
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml

from sparsecl.errors import ConfigError
from sparsecl.experiments import load_schema, plan_runs
from sparsecl.methods.tickets_bu import imp_decision, regrow_decision
from sparsecl.methods.tickets_teaching import Balance, StreamLogits, kd_loss, lottery_loss
from sparsecl.methods.tickets_unlabeled import embed, frozen_views, greedy_knn, normalise, teacher_logits
from sparsecl.models import create_backbone
from sparsecl.plans.tickets import BUArgs
from sparsecl.sparse.imp import conv_parameters, dense_masks, prune_count, prune_smallest_global, remaining_percent

ROOT = Path(__file__).resolve().parents[1]


def count(params) -> int:
    return sum(p.numel() for p in params)


@pytest.mark.parametrize("per_head,heads,expected", [(2, 5, 11_176_276), (10, 10, 11_268_616)])
def test_the_paper_backbone_has_the_published_parameter_and_conv_weight_counts(per_head, heads, expected):
    model = create_backbone("preact_resnet18_tickets", per_head * heads, (32, 32, 3), classes_per_head=per_head)
    assert count(model.parameters()) == expected
    convs = conv_parameters(model)
    assert len(convs) == 20 and count(convs.values()) == 11_159_232
    assert len(model.heads["main"]) == len(model.heads["random"]) == heads


def test_the_backbone_has_no_stem_or_final_batchnorm_and_forwards_over_the_first_k_heads():
    model = create_backbone("preact_resnet18_tickets", 6, (32, 32, 3)).eval()
    top = [name for name, _ in model.named_children()]
    assert top == ["conv1", "layer1", "layer2", "layer3", "layer4", "heads"]  # no bn after conv1 or layer4
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        features = model.features(x)
        assert features.shape == (3, 512)
        assert model.forward_heads(x, "random", 2).shape == (3, 4)
        first_two = model.head_logits(features, "main", 2)
        assert torch.equal(model(x)[:, :4], first_two) and model(x).shape == (3, 6)
        assert not torch.equal(model.head_logits(features, "random"), model(x))


def test_a_narrow_net_keeps_a_valid_feature_map_on_8x8_single_channel_images():
    model = create_backbone("preact_resnet18_tickets", 6, (8, 8, 1), width=4).eval()
    with torch.no_grad():
        assert model.features(torch.randn(2, 1, 8, 8)).shape == (2, 32)
    with pytest.raises(ConfigError, match="backbone_args.classes_per_head: 4 does not divide the scenario's 6 classes"):
        create_backbone("preact_resnet18_tickets", 6, (8, 8, 1), classes_per_head=4)


def test_kd_is_t_squared_times_the_cross_entropy_of_softened_targets():
    teacher = torch.tensor([[2 * math.log(3.0), 0.0]])  # softmax(z / 2) = (3/4, 1/4)
    student = torch.zeros(1, 2)  # softmax(s / 2) = (1/2, 1/2): cross-entropy ln 2
    assert float(kd_loss(student, teacher, 2.0)) == pytest.approx(4 * math.log(2.0))
    both = kd_loss(torch.zeros(2, 2), torch.cat([teacher, torch.zeros(1, 2)]), 2.0)
    assert float(both) == pytest.approx(4 * math.log(2.0))  # batch mean of two ln 2 rows, times T^2


def test_the_balanced_streams_split_a_quarter_of_the_batch_by_tasks_seen():
    assert Balance.of(256, 2) == Balance(64, 32, 32)
    five = Balance.of(256, 5)
    assert five == Balance(64, 12, 51) and five.c_new == 12 / 64 and five.c_old == 51 / 64
    assert Balance.of(256, 10) == Balance(64, 6, 57)
    with pytest.raises(ConfigError, match="train.batch_size: 16 leaves no new-task images per step with 5 tasks"):
        Balance.of(16, 5)


def test_the_lottery_loss_weights_r_n_o_and_u_as_published():
    label = torch.zeros(1, dtype=torch.long)
    streams = StreamLogits(
        r=torch.zeros(1, 6), y_r=label, n=torch.zeros(1, 3), y_n=label, o=torch.zeros(1, 5), y_o=label,
        u_random=torch.zeros(1, 2), z_random=torch.tensor([[2 * math.log(3.0), 0.0]]),
        u_main=torch.zeros(1, 4), z_main=torch.zeros(1, 4),
    )  # fmt: skip
    balance = Balance.of(32, 3)  # b = 8: N = 2, O = 5
    expected = (
        math.log(6)
        + 4 * math.log(2)
        + 0.5 * (2 / 8 * math.log(3) + 5 / 8 * math.log(5) + 4 * math.log(4))
    )  # fmt: skip
    assert float(lottery_loss(streams, balance, 2.0)) == pytest.approx(expected)
    without_pool = StreamLogits(streams.r, label, streams.n, label, streams.o, label)
    assert float(lottery_loss(without_pool, balance, 2.0)) == pytest.approx(
        math.log(6) + 0.5 * (2 / 8 * math.log(3) + 5 / 8 * math.log(5))
    )


def line(*points: float) -> torch.Tensor:
    return torch.tensor(points, dtype=torch.float32).view(-1, 1)


def test_retrieval_takes_each_exemplars_nearest_untaken_images_in_exemplar_order():
    pool = line(*range(10))
    assert greedy_knn(line(0.1, 5.2, 0.3), pool, 3).tolist() == [0, 1, 2, 5, 6, 4, 3, 7, 8]
    assert greedy_knn(line(4.4, 0.2), pool, 2).tolist() == [4, 5, 0, 1]
    assert greedy_knn(line(0.2, 4.4), pool, 2).tolist() == [0, 1, 4, 5]


def test_retrieval_stops_when_the_pool_is_used_up_without_repeating_an_image():
    picked = greedy_knn(line(0.0, 0.0, 0.0, 0.0), line(3, 1, 2, 0, 4), 2, chunk=3)
    assert picked.tolist() == [3, 1, 2, 0, 4]
    assert greedy_knn(line(0.0), line(), 5).tolist() == []


def test_retrieval_features_and_teacher_logits_are_float32_under_bf16_autocast():
    torch.manual_seed(0)
    model = create_backbone("preact_resnet18_tickets", 4, (32, 32, 3), width=8)
    images = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)
    data = SimpleNamespace(device=torch.device("cpu"), mean=torch.full((3, 1, 1), 0.5), std=torch.full((3, 1, 1), 0.25))
    plain = embed(model, images, data, 4), teacher_logits(model, images, data, "main", 2, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert model.features(normalise(images, data)).dtype == torch.bfloat16  # autocast does reach the model
        under = embed(model, images, data, 4), teacher_logits(model, images, data, "main", 2, 4)
    for fp32, autocast in zip(plain, under, strict=True):
        assert autocast.dtype == torch.float32 and torch.equal(fp32, autocast)


def test_a_frozen_view_is_the_padded_crop_at_its_offsets_then_the_flip():
    image = torch.tensor([[[[1, 2], [3, 4]]]], dtype=torch.uint8)
    crop = frozen_views(image, torch.tensor([0]), torch.tensor([1]), torch.tensor([False]), padding=1)
    assert crop[0, 0].tolist() == [[0, 0], [1, 2]]
    flipped = frozen_views(image, torch.tensor([1]), torch.tensor([1]), torch.tensor([True]), padding=1)
    assert flipped[0, 0].tolist() == [[2, 1], [4, 3]]


def random_convs(seed: int = 0, width: int = 16) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return conv_parameters(create_backbone("preact_resnet18_tickets", 10, (32, 32, 3), width=width))


def test_one_prune_removes_exactly_a_fifth_of_the_remaining_conv_weights_the_smallest_ones():
    params = random_convs()
    before = {n: p.detach().clone() for n, p in params.items()}
    masks = prune_smallest_global(params, dense_masks(params), 0.2)
    total = count(params.values())
    assert total - sum(int(m.sum()) for m in masks.values()) == round(0.2 * total)
    kept = torch.cat([p.abs().flatten()[m.flatten()] for p, m in zip(params.values(), masks.values())])
    removed = torch.cat([p.abs().flatten()[~m.flatten()] for p, m in zip(params.values(), masks.values())])
    assert removed.max() <= kept.min()
    assert all(torch.equal(params[n], before[n]) for n in params)  # pruning only decides the masks
    again = prune_smallest_global(params, masks, 0.2)
    remaining = sum(int(m.sum()) for m in masks.values())
    assert remaining - sum(int(m.sum()) for m in again.values()) == round(0.2 * remaining)
    assert all(not (again[n] & ~masks[n]).any() for n in masks)  # pruned weights stay pruned


def test_prune_counts_round_halves_to_even_like_torch_prune():
    assert [prune_count(n, 0.1) for n in (24, 25, 26, 35)] == [2, 2, 3, 4]


def test_the_figures_top_down_schedule_gives_its_printed_densities():
    params = random_convs()
    masks, densities = dense_masks(params), []
    for prunes in (1, 1, 3, 4, 5):
        for _ in range(prunes):
            masks = prune_smallest_global(params, masks, 0.2)
        densities.append(f"{remaining_percent(masks):.2f}")
    assert densities == ["80.00", "64.00", "32.77", "13.42", "4.40"]


def test_pruning_outside_a_protected_ticket_never_removes_a_ticket_weight():
    params = random_convs(1)
    ticket = prune_smallest_global(params, dense_masks(params), 0.9)
    grown = prune_smallest_global(params, dense_masks(params), 0.2, protected=ticket)
    outside = count(params.values()) - sum(int(m.sum()) for m in ticket.values())
    assert all(not (ticket[n] & ~grown[n]).any() for n in ticket)
    assert count(params.values()) - sum(int(m.sum()) for m in grown.values()) == round(0.2 * outside)


ARGS = BUArgs(deacc=2.0, base_sparsity=90.0, max_rounds=26)


def test_imp_stops_once_drop_and_sparsity_both_reach_their_bounds_keeping_the_round_before():
    assert imp_decision(5, drop=3.0, sparsity=67.2, args=ARGS) == {"stop": False, "kept": 5}
    assert imp_decision(12, drop=0.5, sparsity=93.1, args=ARGS) == {"stop": False, "kept": 12}
    assert imp_decision(17, drop=2.0, sparsity=97.7, args=ARGS) == {"stop": True, "kept": 16}
    assert imp_decision(26, drop=0.0, sparsity=99.6, args=ARGS) == {"stop": True, "kept": 26}


def test_faithful_regrowth_keeps_the_upstream_strict_break_and_the_loop_exit():
    assert regrow_decision(4, 2.5, 91.0, 92.0, ARGS, faithful=True) == {"stop": True, "kept": 3}
    assert regrow_decision(4, 2.0, 91.0, 92.0, ARGS, faithful=True) == {"stop": True, "kept": 4}
    assert regrow_decision(4, 2.0, 89.0, 89.5, ARGS, faithful=True) == {"stop": False, "kept": 4}
    assert regrow_decision(4, 2.0, 91.0, 92.0, ARGS, faithful=False) == {"stop": True, "kept": 3}
    assert regrow_decision(26, 0.0, 1.0, 2.0, ARGS, faithful=True) == {"stop": True, "kept": 26}


def test_the_paper_config_plans_both_datasets_all_methods_and_three_seeds():
    config = yaml.safe_load((ROOT / "config/papers/lifelong-tickets.yaml").read_text())
    runs = [p.run for p in plan_runs(config, load_schema(ROOT / "workflow/schemas/config.schema.yaml"))]
    points = sorted({(r.experiment, r.point) for r in runs})
    assert len(runs) == 3 * len(points) == 21
    assert ("td_cifar10", "prune_schedule=1-1-3-4-5") in points and ("td_cifar10", "prune_schedule=1-1-2-3-5") in points
    by_name = {r.experiment: r for r in runs}
    assert by_name["cil_cifar10"].scenario.class_order == (9, 8, 7, 1, 5, 0, 3, 4, 6, 2)
    assert by_name["td_cifar100"].method_args["prune_schedule"] == [1] * 10
    assert by_name["bu_cifar10"].method_args["max_rounds"] == 26 and by_name["bu_cifar10"].protocol == "faithful"
    assert {r.backbone_args["classes_per_head"] for r in runs if r.dataset == "cifar100"} == {10}


TD_EXPERIMENT = {
    "method": "tickets_td",
    "dataset": "digits",
    "backbone": "preact_resnet18_tickets",
    "scenario": {"num_tasks": 3, "exemplars_per_class": 5},
    "method_args": {"prune_schedule": [1, 1, 2]},
}


@pytest.mark.parametrize(
    "mutate,message",
    [
        (lambda e: e.pop("backbone"), "experiments.t.backbone: 'preact_resnet18_tickets' was expected"),
        (lambda e: e["scenario"].pop("exemplars_per_class"), "experiments.t.scenario.exemplars_per_class: 0 is less"),
        (lambda e: e["method_args"].update(prune_schedule=[0, 1, 1]), "experiments.t.method_args.prune_schedule.0"),
        (lambda e: e["method_args"].update(deacc=1), "experiments.t.method_args.deacc: unknown key"),
    ],
)
def test_a_bad_tickets_experiment_fails_at_dag_time_naming_the_key(mutate, message):
    experiment = copy.deepcopy(TD_EXPERIMENT)
    mutate(experiment)
    with pytest.raises(ConfigError, match=re.escape(message)):
        plan_runs({"experiments": {"t": experiment}}, load_schema(ROOT / "workflow/schemas/config.schema.yaml"))
