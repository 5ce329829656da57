"""Scenarios: class orders, task splits, validation holdout, data chunks, exemplars."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import numpy as np
import pytest

from sparsecl.errors import ConfigError
from sparsecl.scenarios import ScenarioSpec, build_scenario, load_scenario, save_scenario

NUM_CLASSES = 10
TICKETS_ORDER = (9, 8, 7, 1, 5, 0, 3, 4, 6, 2)


@pytest.fixture
def labels() -> np.ndarray:
    """Training labels of an unbalanced 10-class set (20..29 images per class), shuffled."""
    per_class = np.repeat(np.arange(NUM_CLASSES), 20 + np.arange(NUM_CLASSES))
    return np.random.default_rng(123).permutation(per_class)


def build(labels, **spec):
    return build_scenario(ScenarioSpec(**spec), "toy", labels, NUM_CLASSES)


def test_natural_order_gives_contiguous_disjoint_tasks(labels):
    s = build(labels, num_tasks=4, classes_per_task=2)
    assert s.class_order == list(range(8))
    assert s.tasks == [[0, 1], [2, 3], [4, 5], [6, 7]]
    assert set(labels[s.train_index]) == set(range(8))
    assert len(s.train_index) == np.isin(labels, range(8)).sum()  # no holdout: every image of those classes


def test_permuted_order_is_deterministic_per_seed(labels):
    a = build(labels, num_tasks=5, class_order="permuted", order_seed=1)
    assert a.class_order == build(labels, num_tasks=5, class_order="permuted", order_seed=1).class_order
    assert a.class_order != build(labels, num_tasks=5, class_order="permuted", order_seed=2).class_order
    assert sorted(a.class_order) == list(range(NUM_CLASSES))


def test_explicit_order_maps_each_class_to_its_position(labels):
    s = build(labels, num_tasks=5, classes_per_task=2, class_order=list(TICKETS_ORDER))
    assert s.class_order == list(TICKETS_ORDER)
    mapping = s.label_map(NUM_CLASSES)
    assert mapping[9] == 0 and mapping[8] == 1 and mapping[2] == 9
    trained = labels[s.train_index]
    assert set(trained[np.isin(mapping[trained], s.tasks[0])]) == {9, 8}  # task 0: truck, ship
    assert set(trained[np.isin(mapping[trained], s.tasks[4])]) == {6, 2}
    assert s.spec.id != ScenarioSpec(num_tasks=5, class_order=tuple(reversed(TICKETS_ORDER))).id


@pytest.mark.parametrize("fraction", [0.1, 0.25])
def test_validation_holdout_is_per_class_disjoint_and_complete(labels, fraction):
    s = build(labels, num_tasks=5, validation_fraction=fraction)
    assert np.intersect1d(s.train_index, s.val_index).size == 0
    assert np.array_equal(np.sort(np.concatenate([s.train_index, s.val_index])), np.arange(len(labels)))
    counts = Counter(labels[s.val_index].tolist())
    for cls in range(NUM_CLASSES):
        assert counts[cls] == round(fraction * (20 + cls))


def test_holdout_depends_only_on_the_split_seed_and_the_class(labels):
    base = build(labels, num_tasks=5, validation_fraction=0.2, split_seed=7)
    same = build(
        labels, num_tasks=5, validation_fraction=0.2, split_seed=7, exemplars_per_class=3, class_order="permuted"
    )
    other = build(labels, num_tasks=5, validation_fraction=0.2, split_seed=8)
    np.testing.assert_array_equal(base.val_index, same.val_index)
    assert not np.array_equal(base.val_index, other.val_index)


def test_exemplars_are_a_seeded_per_class_subset_of_the_training_part(labels):
    s = build(labels, num_tasks=5, validation_fraction=0.2, exemplars_per_class=4, split_seed=3)
    assert Counter(labels[s.exemplar_index].tolist()) == dict.fromkeys(range(NUM_CLASSES), 4)
    assert np.isin(s.exemplar_index, s.train_index).all()
    again = build(labels, num_tasks=5, validation_fraction=0.2, exemplars_per_class=4, split_seed=3)
    np.testing.assert_array_equal(s.exemplar_index, again.exemplar_index)


def test_too_many_exemplars_is_a_config_error(labels):
    with pytest.raises(ConfigError, match="exemplars_per_class: 25 exceeds the 20 training images of class 0"):
        build(labels, num_tasks=5, exemplars_per_class=25)


@pytest.mark.parametrize("chunks", [(1, 1), (1, 1, 1, 1), (2, 1)])
def test_data_chunks_are_stratified_disjoint_and_cover_the_training_part(labels, chunks):
    s = build(labels, kind="data", num_tasks=len(chunks), chunks=chunks, validation_fraction=0.1)
    assert s.tasks == [list(range(NUM_CLASSES))] * len(chunks)
    merged = np.concatenate(s.chunk_index)
    assert len(merged) == len(np.unique(merged))
    np.testing.assert_array_equal(np.sort(merged), s.train_index)
    train_counts = Counter(labels[s.train_index].tolist())
    for chunk, ratio in zip(s.chunk_index, chunks, strict=True):
        counts = Counter(labels[chunk].tolist())
        for cls in range(NUM_CLASSES):  # every class in every chunk, in proportion, within one image
            assert abs(counts[cls] - train_counts[cls] * ratio / sum(chunks)) < 1
    if len(set(chunks)) == 1:  # equal ratios: chunk sizes differ by at most one image overall
        sizes = [len(c) for c in s.chunk_index]
        assert max(sizes) - min(sizes) <= 1


def test_equal_chunks_of_a_balanced_set_are_exact():
    labels = np.repeat(np.arange(NUM_CLASSES), 500)
    s = build_scenario(ScenarioSpec(kind="data", num_tasks=4, chunks=(1, 1, 1, 1)), "toy", labels, NUM_CLASSES)
    for chunk in s.chunk_index:
        assert Counter(labels[chunk].tolist()) == dict.fromkeys(range(NUM_CLASSES), 125)


def test_same_spec_same_scenario_and_saved_files_round_trip(labels, tmp_path):
    spec = ScenarioSpec(
        kind="data", num_tasks=2, chunks=(1, 1), validation_fraction=0.1, exemplars_per_class=2, split_seed=5
    )
    s = build_scenario(spec, "toy", labels, NUM_CLASSES)
    path = tmp_path / f"{spec.id}.json"
    save_scenario(s, path)
    loaded = load_scenario(path)
    assert loaded.spec == spec
    for name in ("train_index", "val_index", "exemplar_index"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(s, name))
    for a, b in zip(loaded.chunk_index, s.chunk_index, strict=True):
        np.testing.assert_array_equal(a, b)
    rebuilt = build_scenario(replace(spec), "toy", labels, NUM_CLASSES)
    np.testing.assert_array_equal(rebuilt.chunk_index[0], s.chunk_index[0])


def test_ids_name_the_seeds_and_options():
    assert (
        ScenarioSpec(num_tasks=10, classes_per_task=10, class_order="permuted", order_seed=3).id
        == "class-t10k10-perm3-s0"
    )
    assert (
        ScenarioSpec(kind="data", num_tasks=4, chunks=(1, 1, 1, 1), validation_fraction=0.1).id
        == "data-chunks1-1-1-1-val0.1-s0"
    )


@pytest.mark.parametrize(
    "spec, problem",
    [
        (dict(num_tasks=6, classes_per_task=2), "6 x 2 = 12 exceeds the dataset's 10 classes"),
        (dict(num_tasks=2, class_order=[1, 1, 2, 3]), "class_order: expected at least 4 distinct class ids"),
        (
            dict(num_tasks=2, class_order=[0, 1, 2, 10]),
            r"class_order: expected at least 4 distinct class ids in \[0, 10\)",
        ),
        (dict(kind="data", num_tasks=3, chunks=[1, 1]), "chunks: expected 3 positive sizes"),
        (dict(num_tasks=2, validation_fraction=1.0), r"validation_fraction: expected in \[0, 1\)"),
    ],
)
def test_impossible_scenarios_are_one_line_config_errors(spec, problem):
    with pytest.raises(ConfigError, match=problem):
        ScenarioSpec(**spec).check(NUM_CLASSES)


def test_a_data_step_that_would_get_no_training_image_is_refused():
    labels = np.array([0, 1])  # two images in all, four steps: two steps would train on nothing
    spec = ScenarioSpec(kind="data", num_tasks=4, chunks=(1, 1, 1, 1))
    with pytest.raises(ConfigError, match=r"scenario.chunks: step \d of \[1, 1, 1, 1\] gets no training images"):
        build_scenario(spec, "digits", labels, num_classes=2)
