"""A config's rehearsal: the same DAG shape and code paths on tiny synthetic data, in minutes.

`--config rehearse=true` keeps every experiment's method, protocol, backbone (at its real size),
scenario (task count, class split, class order) and stage kinds, and shrinks what only costs time:

- one seed (the config's first);
- at most MAX_TASKS tasks per scenario: the most that any paper's other scenarios have, so only
  FOCIL's 100-task Tiny-ImageNet is cut (to its first 20 tasks: 40 of its 200 classes, still a
  200-class network). Every later task runs the code a middle task runs; what is cut is time: its
  evaluation after task t answers every seen task with every expert, so a 100-task rehearsal costs
  hours on a CPU (benchmarks/README.md, "Rehearsals");
- 1 epoch per task and per stage (multistep's `stage_train`, the tickets' retraining rounds);
- a validation holdout of 1 image and 1 exemplar per class, where the config has them;
- FOCIL's search with 2 trials, bottom-up tickets with at most 2 rounds per loop;
- the tickets' unlabeled data: a pool of POOL_IMAGES images (the other CIFAR's capped training
  split is 20 or 200 images; retrieval embeds all of it with the full-size network, and each
  lottery-teaching step passes up to 64 of them through both head sets) and 1 retrieved image per
  exemplar (with 50, the distillation stream was 95% of a CIFAR-10 lottery-teaching job's CPU time);
- each grid to a covering set: point i takes value i mod n of every axis, so every value of
  every axis (init, growth, protocol, schedule, ...) runs at least once, not their product, once
  per method, dataset and backbone (sweeps that differ only in their task count share it);
- the data: format-exact synthetic raw files (`sparsecl.data.synth`, a few images per class)
  fed through the real download -> verify -> prepare path as local files with their checksums,
  prepared with at most PER_CLASS images of each class per split (miniImageNet's prepare holds
  out 100 test images per class, which the synthetic zip must hold for the real code to run).

Torch-free: the workflow imports it while planning.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Mapping

from .data.sources import raw_files, raw_source
from .data.synth import CHECKSUMS
from .data.unlabeled import resolve_pool

EPOCHS = 1
MAX_TASKS = 20
TRIALS = 2
MAX_ROUNDS = 2
VALIDATION_FRACTION = 0.5  # of a synthetic class's 2 training images: 1 held out, 1 trained on
EXEMPLARS = 1
PER_CLASS = 2  # images of each class kept per split at prepare time
POOL_IMAGES = 4  # images kept in an unlabeled pool: retrieval still runs it out from task 2 on
UNLABELED_PER_EXEMPLAR = 1


def rehearsal_config(config: Mapping, resources: str) -> dict:
    """The rehearsal of a validated `config`; its synthetic raw files live under `resources/synth/`."""
    config = copy.deepcopy(dict(config))
    config["seeds"] = config["seeds"][:1]
    for experiment in config["experiments"].values():
        if experiment.get("seeds"):
            experiment["seeds"] = experiment["seeds"][:1]
        experiment["train"]["epochs"] = EPOCHS
        scenario = experiment["scenario"]
        scenario["num_tasks"] = min(scenario["num_tasks"], MAX_TASKS)
        if scenario.get("validation_fraction"):  # one of the 2 training images per class
            scenario["validation_fraction"] = VALIDATION_FRACTION
        if scenario.get("exemplars_per_class"):
            scenario["exemplars_per_class"] = EXEMPLARS
        args = experiment["method_args"]
        if "retrain_epochs" in args or experiment["method"] in ("tickets_td", "tickets_bu"):
            args["retrain_epochs"] = EPOCHS
        if experiment["method"] == "focil":
            args["trials"] = min(args.get("trials", TRIALS), TRIALS)
        if experiment["method"].startswith("tickets"):
            args["unlabeled_per_exemplar"] = UNLABELED_PER_EXEMPLAR
        if experiment["method"] == "tickets_bu":
            args["max_rounds"] = min(args.get("max_rounds", MAX_ROUNDS), MAX_ROUNDS)
        for stage in args.get("stage_train", {}).values():
            if "epochs" in stage:
                stage["epochs"] = EPOCHS
    config["data"]["sources"] = {source: synthetic_source(source, resources) for source in sorted(_sources(config))}
    return config


def synthetic_source(source: str, resources: str) -> dict:
    """`data.sources.<source>`: the synthetic file (or folder of files) and its recorded checksums."""
    names = [f.filename for f in raw_files(source)]
    folder = f"{resources}/synth/{source}"
    return {"path": folder if len(names) > 1 else f"{folder}/{names[0]}", "checksums": dict(CHECKSUMS[source])}


def _sources(config: Mapping) -> set[str]:
    """The raw sources the config's datasets and its unlabeled pool read."""
    sources = set()
    for experiment in config["experiments"].values():
        dataset = experiment["dataset"]
        if raw_files(raw_source(dataset)):
            sources.add(raw_source(dataset))
        if experiment["method"].startswith("tickets"):
            pool = resolve_pool(config["data"]["unlabeled_pool"], dataset)
            if pool in CHECKSUMS:
                sources.add(pool)
    return sources


def covering_indices(lengths: list[int]) -> list[int]:
    """Indices into the product of axes of `lengths` (row-major, as itertools.product runs) of the
    points (i mod n_1, ..., i mod n_k) for i < max n: every value of every axis, once at least."""
    if not lengths:
        return [0]
    product = list(itertools.product(*(range(n) for n in lengths)))
    return sorted({product.index(tuple(i % n for n in lengths)) for i in range(max(lengths))})


def covering_points(config: Mapping, planned: list) -> list:
    """The planned runs (`PlannedRun`s of every grid point) of the covering set: every value of every
    grid axis runs at least once for each method on each dataset and backbone, and every experiment
    runs at least one point. Experiments that differ only in their scenario's size (the 5-, 10- and
    20-task sweeps of one grid) run the same code per point, so they share one covering set: the
    first of them runs it, each later one its first point."""
    points: dict[str, dict[str, object]] = {}
    for p in planned:
        points.setdefault(p.run.experiment, {}).setdefault(p.run.point, p.run)
    covered: set[tuple] = set()
    keep = set()
    for name, experiment in config["experiments"].items():
        runs = list(points[name].values())
        lengths = [len(values) for values in experiment.get("grid", {}).values()]
        for n, i in enumerate(covering_indices(lengths)):
            new = _exercised(runs[i]) - covered
            if new or n == 0:
                keep.add((name, runs[i].point))
                covered |= new
    return [p for p in planned if (p.run.experiment, p.run.point) in keep]


def _exercised(run) -> set[tuple]:
    """(method, dataset, backbone and its arguments, axis=value) of each grid value the run takes."""
    code = (run.method, run.dataset, run.backbone, repr(sorted(run.backbone_args.items())))
    return {(*code, part) for part in run.point.split(",")}
