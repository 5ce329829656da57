"""DST topology updates on hand-built tensors: exactly which connections are pruned and grown."""

from __future__ import annotations

import pytest
import torch

from sparsecl.sparse.dst import (
    drop_smallest,
    grow,
    growth_scores,
    prune_fraction,
    random_choice,
)
from sparsecl.sparse.trainer import DSTSchedule, SparseTrainer

T, F = True, False


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def positions(mask: torch.Tensor) -> list[int]:
    return mask.flatten().nonzero().flatten().tolist()


def test_prune_fraction_is_cosine_annealed_from_the_initial_to_the_final_rate():
    assert prune_fraction(0, 100, 0.5, 0.005) == pytest.approx(0.5)
    assert prune_fraction(50, 100, 0.5, 0.005) == pytest.approx(0.2525)
    assert prune_fraction(100, 100, 0.5, 0.005) == pytest.approx(0.005)


def test_drop_smallest_thresholds_over_all_entries_including_masked_out_zeros():
    # 6 active weights (one of them exactly 0), 2 masked out; rate 0.5 -> q = 3, z = 2:
    # tau = 5th smallest |W| = 0.2, so 0.1, the in-mask 0 and the 0.2 itself go.
    w = torch.tensor([0.0, 0.5, -0.1, 0.3, 0.0, 0.2, 0.0, -0.8])
    mask = torch.tensor([F, T, T, T, T, T, F, T])
    kept, removed = drop_smallest(w, mask, 0.5)
    assert positions(kept) == [1, 3, 7]
    assert removed == 3


def test_drop_smallest_removes_every_weight_tied_at_the_threshold():
    w = torch.tensor([0.1, 0.2, -0.2, 0.4])
    mask = torch.ones(4, dtype=torch.bool)
    assert positions(drop_smallest(w, mask, 0.25)[0]) == [1, 2, 3]  # q = 1
    kept, removed = drop_smallest(w, mask, 0.5)  # q = 2, tau = 0.2: both 0.2s go
    assert positions(kept) == [3] and removed == 3


def test_drop_smallest_with_nothing_to_prune_still_drops_zero_valued_weights():
    w = torch.tensor([0.3, 0.0, 0.7])
    kept, removed = drop_smallest(w, torch.tensor([T, T, T]), 0.0)
    assert positions(kept) == [0, 2] and removed == 1


def test_gradient_growth_takes_the_largest_absolute_gradients_among_inactive_positions():
    kept = torch.tensor([T, F, F, F, T, F, F])
    grad = torch.tensor([9.0, 0.5, -3.0, 0.1, 9.0, 2.0, -2.0])
    grown = grow("gradient", kept, 2, generator=gen(), exact=True, scores=grad)
    assert positions(grown & ~kept) == [2, 5]  # |-3| and the first of the tied |2|s


def test_momentum_growth_ranks_by_adam_first_moment_over_root_second_moment_without_bias_correction():
    p = torch.nn.Parameter(torch.zeros(4))
    opt = torch.optim.Adam([p])
    opt.state[p] = {
        "step": torch.tensor(3.0),
        "exp_avg": torch.tensor([1.0, 0.5, -0.2, 0.3]),
        "exp_avg_sq": torch.tensor([100.0, 0.01, 0.0001, 1.0]),
    }
    scores = growth_scores("momentum", p, opt)  # 0.1, 5, -20, 0.3 (up to eps)
    grown = grow("momentum", torch.zeros(4, dtype=torch.bool), 2, generator=gen(), exact=True, scores=scores)
    assert positions(grown) == [1, 2]


def test_momentum_growth_with_sgd_uses_the_momentum_buffer():
    p = torch.nn.Parameter(torch.zeros(3))
    opt = torch.optim.SGD([p], lr=0.1, momentum=0.9)
    opt.state[p] = {"momentum_buffer": torch.tensor([0.1, -0.7, 0.4])}
    grown = grow(
        "momentum",
        torch.zeros(3, dtype=torch.bool),
        1,
        generator=gen(),
        exact=True,
        scores=growth_scores("momentum", p, opt),
    )
    assert positions(grown) == [1]


def test_gradient_growth_ranks_the_gradient_left_after_isolation():
    p = torch.nn.Parameter(torch.zeros(3))
    p.grad = torch.tensor([0.0, 0.2, 0.1])  # position 0 was frozen: its gradient was zeroed
    grown = grow(
        "gradient",
        torch.zeros(3, dtype=torch.bool),
        1,
        generator=gen(),
        exact=True,
        scores=growth_scores("gradient", p, None),
    )
    assert positions(grown) == [1]


def test_exact_random_growth_adds_exactly_c_inactive_positions_reproducibly():
    kept = torch.zeros(50, dtype=torch.bool)
    kept[:10] = True
    first = grow("random", kept, 7, generator=gen(1), exact=True)
    assert int((first & ~kept).sum()) == 7 and first[:10].all()
    assert torch.equal(first, grow("random", kept, 7, generator=gen(1), exact=True))


def test_faithful_random_growth_is_a_bernoulli_draw_right_only_in_expectation():
    kept = torch.zeros(1000, dtype=torch.bool)
    counts = [int(grow("random", kept, 100, generator=gen(s), exact=False).sum()) for s in range(20)]
    assert any(c != 100 for c in counts)
    assert sum(counts) / len(counts) == pytest.approx(100, rel=0.05)


def test_unfired_growth_prefers_positions_never_active_in_this_task():
    kept = torch.tensor([T, F, F, F, F, F])
    fired = torch.tensor([T, T, T, F, F, F])
    grown = grow("unfired", kept, 2, generator=gen(), exact=True, fired=fired)
    assert set(positions(grown & ~kept)) < {3, 4, 5} and int(grown.sum()) == 3
    # more to grow than unfired positions: all unfired ones, then exactly the rest among the fired.
    grown = grow("random_unfired", kept, 4, generator=gen(), exact=True, fired=fired)
    assert {3, 4, 5} <= set(positions(grown)) and int(grown.sum()) == 5


def test_faithful_unfired_growth_regrows_the_remainder_right_in_expectation():
    # 100 active, 100 never fired, 500 to grow: all 100 unfired, then Bernoulli(400 / 800) over
    # the 800 fired but inactive positions, so 500 in expectation (not 100 + 400 * 800 / 900).
    kept = torch.zeros(1000, dtype=torch.bool)
    kept[:100] = True
    fired = torch.zeros(1000, dtype=torch.bool)
    fired[:900] = True
    counts = []
    for seed in range(20):
        grown = grow("unfired", kept, 500, generator=gen(seed), exact=False, fired=fired) & ~kept
        assert grown[900:].all()
        counts.append(int(grown.sum()))
    assert sum(counts) / len(counts) == pytest.approx(500, rel=0.02)


def original_growth(scores: torch.Tensor, kept: torch.Tensor, count: int) -> torch.Tensor:
    """The original code's gradient/momentum regrowth, as it is written there."""
    new_mask = kept.float()
    grad = scores * (new_mask == 0).float()
    y, idx = torch.sort(torch.abs(grad).flatten(), descending=True)
    new_mask.view(-1)[idx[:count]] = 1.0
    return new_mask.bool()


def test_faithful_score_growth_takes_the_top_scores_over_the_whole_tensor():
    # 3 active, one inactive position with a non-zero score, 3 to grow: position 3 first, then two
    # of the 7 zero scores, active positions included; picks on active positions are lost.
    kept = torch.tensor([T, T, T, F, F, F, F, F])
    scores = torch.tensor([9.0, 9.0, 9.0, -5.0, 0.0, 0.0, 0.0, 0.0])  # active scores do not count
    new = grow("gradient", kept, 3, generator=gen(), exact=False, scores=scores)
    assert new[:4].all() and 1 <= int((new & ~kept).sum()) <= 3
    assert torch.equal(new, original_growth(scores, kept, 3))
    exact = grow("gradient", kept, 3, generator=gen(), exact=True, scores=scores)
    assert positions(exact & ~kept) == [3, 4, 5]  # standard: exactly 3 among the inactive, lower index first


def test_faithful_ties_among_zero_scores_fall_in_the_original_sort_order_whatever_the_seed():
    # A head whose rows for other tasks' classes have zero moments, a few of its own rows active:
    # most of the picks are ties at 0, which the original's torch.sort orders, not a random draw.
    kept = torch.rand(20, 512, generator=gen(1)) < 0.5
    scores = torch.zeros(20, 512)
    scores[:2] = torch.randn(2, 512, generator=gen(2))
    for count in (10, 700, 4378):
        picks = [grow("momentum", kept, count, generator=gen(seed), exact=False, scores=scores) for seed in range(3)]
        assert all(torch.equal(p, original_growth(scores, kept, count)) for p in picks), count


def dense_layer_update(growth: str, exact: bool, seed: int = 0) -> tuple[torch.Tensor, list[int]]:
    """One update of a dense 20 x 512 layer whose scores are all 0 (a layer earlier tasks froze:
    zero gradients, zero Adam moments), at prune rate 0.4275."""
    layer = torch.nn.Linear(512, 20, bias=False)
    torch.nn.init.normal_(layer.weight, generator=gen(7))
    layer.weight.grad = torch.zeros_like(layer.weight)
    schedule = DSTSchedule(
        growth, update_frequency=1, total_steps=10, prune_rate=0.4275, prune_rate_min=0.4275, exact=exact
    )
    opt = torch.optim.Adam(layer.parameters())
    mask = torch.ones(20, 512, dtype=torch.bool)
    trainer = SparseTrainer({"w": layer.weight}, {"w": mask}, opt, gen(seed), schedule=schedule)
    trainer.step = 1
    trainer.update()
    return trainer.masks["w"], trainer.history[0]["layers"][0]


def test_growth_criteria_on_a_dense_layer_with_zero_scores_faithful_shrinks_standard_does_not():
    for growth in ("gradient", "momentum"):
        mask, (pruned, grown, active, _) = dense_layer_update(growth, exact=False)
        assert pruned == 4378  # ceil(0.4275 * 10240)
        assert active == int(mask.sum()) == 10240 - pruned + grown
        # All 10240 scores tie at 0: the picks are the sort's first 4378 positions, and only those
        # that were just pruned come back.
        assert 0 < grown < pruned
        assert torch.equal(mask, dense_layer_update(growth, exact=False, seed=1)[0])  # no draw decides
        mask, (pruned, grown, active, _) = dense_layer_update(growth, exact=True)
        assert pruned == grown == 4378 and active == 10240 and mask.all()


def test_growth_stays_inside_the_allowed_region():
    kept = torch.zeros(4, 3, dtype=torch.bool)
    allowed = torch.zeros(4, 3, dtype=torch.bool)
    allowed[1] = True
    for mode in ("random", "unfired", "gradient"):
        grown = grow(
            mode,
            kept,
            2,
            generator=gen(),
            exact=True,
            scores=torch.rand(4, 3, generator=gen(5)),
            fired=kept,
            allowed=allowed,
        )
        assert int(grown.sum()) == 2 and not (grown & ~allowed).any(), mode


def test_random_choice_without_candidates_chooses_nothing():
    assert not random_choice(torch.zeros(5, dtype=torch.bool), 3, gen(), exact=True).any()


def dst_setup(growth: str, exact: bool, frozen_values: bool = False):
    torch.manual_seed(0)
    layer = torch.nn.Linear(20, 10, bias=False)
    params = {"weight": layer.weight}
    mask = torch.rand(10, 20, generator=gen(2)) < 0.3
    frozen = {"weight": torch.zeros(10, 20, dtype=torch.bool)}
    frozen["weight"][:2] = True
    values = {"weight": torch.full((10, 20), 7.0)} if frozen_values else None
    opt = torch.optim.Adam(layer.parameters(), lr=0.01)
    schedule = DSTSchedule(growth=growth, update_frequency=2, total_steps=40, exact=exact)
    trainer = SparseTrainer(
        params, {"weight": mask}, opt, gen(3), schedule=schedule, frozen=frozen, frozen_values=values
    )
    return layer, opt, trainer


def train_steps(layer, opt, trainer, steps: int) -> None:
    for step in range(steps):
        x = torch.randn(8, 20, generator=gen(step))
        opt.zero_grad()
        layer(x).pow(2).mean().backward()
        trainer.after_backward()
        opt.step()
        trainer.after_step()


@pytest.mark.parametrize("growth", ["random", "unfired", "gradient", "momentum"])
def test_exact_updates_keep_the_number_of_active_connections(growth):
    layer, opt, trainer = dst_setup(growth, exact=True)
    before = int(trainer.masks["weight"].sum())
    train_steps(layer, opt, trainer, 40)
    assert len(trainer.history) == 20
    for entry in trainer.history:
        [[pruned, grown, active, _]] = entry["layers"]
        assert active == before and pruned == grown
    assert torch.equal(layer.weight != 0, trainer.masks["weight"] & (layer.weight != 0))  # W = W * M


def test_the_fired_set_is_the_union_of_every_mask_of_the_task():
    layer, opt, trainer = dst_setup("random", exact=True)
    union = trainer.masks["weight"].clone()
    for _ in range(5):
        train_steps(layer, opt, trainer, 2)
        union |= trainer.masks["weight"]
    assert torch.equal(trainer.fired["weight"], union)


@pytest.mark.parametrize("reuse_frozen", [False, True])
def test_one_update_regrown_weights_keep_their_value_new_ones_start_at_zero(reuse_frozen):
    w = torch.nn.Parameter(torch.tensor([0.9, 0.1, 0.0, 0.0, 0.5]))
    w.grad = torch.tensor([0.0, 5.0, 4.0, 6.0, 3.0])
    frozen = {"w": torch.tensor([F, F, F, T, F])}  # position 3 belongs to an earlier task
    values = {"w": torch.full((5,), 7.0)} if reuse_frozen else None
    schedule = DSTSchedule(growth="gradient", update_frequency=1, total_steps=10**6, prune_rate=0.34)
    trainer = SparseTrainer(
        {"w": w},
        {"w": torch.tensor([T, T, F, F, T])},
        torch.optim.SGD([w], lr=0.1),
        gen(),
        schedule=schedule,
        frozen=frozen,
        frozen_values=values,
    )
    trainer.step = 1
    trainer.update()
    # q = ceil(0.34 * 3) = 2, tau = 0.5: 0.1 and 0.5 are pruned; the two largest gradients among
    # the inactive positions regrow 3 (the earlier task's weight) and 1 (just pruned).
    assert positions(trainer.masks["w"]) == [0, 1, 3]
    assert trainer.history[0]["layers"] == [[2, 2, 3, 1]]  # pruned, grown, active, reused (position 3)
    revived = 7.0 if reuse_frozen else 0.0  # the shared value, or dead at 0 until the merge (faithful)
    assert torch.equal(w.detach(), torch.tensor([0.9, 0.1, 0.0, revived, 0.0]))


def test_frozen_weights_never_move():
    layer, opt, trainer = dst_setup("gradient", exact=True)
    frozen = trainer.frozen["weight"]
    before = layer.weight.detach().clone()
    train_steps(layer, opt, trainer, 10)
    in_mask_frozen = frozen & trainer.masks["weight"] & (before != 0)
    assert torch.equal(layer.weight[in_mask_frozen], before[in_mask_frozen])
