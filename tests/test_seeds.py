"""The one seed-stream function: reproducible, and distinct for every part that tells streams apart."""

from itertools import product

from sparsecl.seeds import seed_stream


def test_same_parts_give_the_same_seed():
    assert seed_stream(7, 2, 10, 1) == seed_stream(7, 2, 10, 1)


def test_every_part_separates_streams():
    seeds = {seed_stream(s, t, p, m) for s, t, p, m in product(range(3), range(3), range(3), range(3))}
    assert len(seeds) == 81


def test_seeds_fit_a_torch_generator():
    assert all(0 <= seed_stream(s, 0, 0) < 2**32 for s in range(20))
