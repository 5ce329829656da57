"""Continual-learning scenarios, all seeded and written to files that later stages read.

A scenario fixes, for one prepared dataset:
  * the class order and which classes form each task (class-incremental), or the sample
    chunks each step sees (data-incremental, all classes in every step);
  * a per-class validation holdout carved from the training set;
  * optional per-class exemplar sets (a fixed memory of training images).

Classes are relabelled by their position in the class order, so task t always owns the
contiguous labels [t*k, (t+1)*k), as in the upstream codes.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .errors import ConfigError, DataError
from .io import atomic_path, config_hash, provenance, read_json, write_json

CLASS_ORDERS = ("natural", "permuted")
_HOLDOUT, _EXEMPLARS = 0, 1  # purposes of the per-class random streams


@dataclass(frozen=True)
class ScenarioSpec:
    kind: str = "class"  # "class": disjoint classes per task; "data": sample chunks of all classes
    num_tasks: int = 5
    classes_per_task: int = 2  # class-incremental only
    class_order: str | tuple[int, ...] = "natural"  # natural | permuted | explicit list of class ids
    order_seed: int = 0
    chunks: tuple[int, ...] = ()  # data-incremental: relative chunk sizes, e.g. (1, 1, 1, 1)
    validation_fraction: float = 0.0  # per class, carved from train
    exemplars_per_class: int = 0  # per class, drawn from the training part
    split_seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.class_order, list):
            object.__setattr__(self, "class_order", tuple(self.class_order))
        if isinstance(self.chunks, list):
            object.__setattr__(self, "chunks", tuple(self.chunks))

    @property
    def id(self) -> str:
        """Readable and stable: the seeds are in the id, an explicit order by its hash."""
        if self.kind == "data":
            parts = ["data", "chunks" + "-".join(map(str, self.chunks))]
        else:
            order = self.class_order
            order_tag = order if isinstance(order, str) else "order" + config_hash(list(order))[:8]
            if order == "permuted":
                order_tag = f"perm{self.order_seed}"
            parts = [f"class-t{self.num_tasks}k{self.classes_per_task}", order_tag]
        if self.validation_fraction:
            parts.append(f"val{self.validation_fraction:g}")
        if self.exemplars_per_class:
            parts.append(f"ex{self.exemplars_per_class}")
        parts.append(f"s{self.split_seed}")
        return "-".join(parts)

    def check(self, num_classes: int, where: str = "scenario") -> None:
        """Raise a one-line ConfigError for an impossible scenario on a dataset with `num_classes`."""
        if self.kind not in ("class", "data"):
            raise ConfigError(f"{where}.kind: expected 'class' or 'data', got {self.kind!r}")
        if self.num_tasks < 1:
            raise ConfigError(f"{where}.num_tasks: expected >= 1, got {self.num_tasks}")
        if not 0.0 <= self.validation_fraction < 1.0:
            raise ConfigError(f"{where}.validation_fraction: expected in [0, 1), got {self.validation_fraction}")
        if self.kind == "class" and self.chunks:
            raise ConfigError(f"{where}.chunks: only a data-incremental scenario (kind: data) has chunks")
        if self.kind == "data":
            if self.class_order != "natural":
                raise ConfigError(
                    f"{where}.class_order: a data-incremental scenario (kind: data) has every class in every step;"
                    " expected none (the classes keep their label order)"
                )
            if len(self.chunks) != self.num_tasks or any(c <= 0 for c in self.chunks):
                raise ConfigError(f"{where}.chunks: expected {self.num_tasks} positive sizes, got {list(self.chunks)}")
            return
        needed = self.num_tasks * self.classes_per_task
        if self.classes_per_task < 1 or needed > num_classes:
            raise ConfigError(
                f"{where}: num_tasks x classes_per_task = {self.num_tasks} x {self.classes_per_task} = {needed}"
                f" exceeds the dataset's {num_classes} classes"
            )
        order = self.class_order
        if isinstance(order, str):
            if order not in CLASS_ORDERS:
                raise ConfigError(f"{where}.class_order: expected one of {CLASS_ORDERS} or a list, got {order!r}")
        elif sorted(set(order)) != sorted(order) or len(order) < needed or not all(0 <= c < num_classes for c in order):
            raise ConfigError(
                f"{where}.class_order: expected at least {needed} distinct class ids in [0, {num_classes}), got {list(order)}"
            )


@dataclass
class Scenario:
    """A built scenario: what every stage reads to know which images belong to which task."""

    spec: ScenarioSpec
    dataset: str
    class_order: list[int]  # dataset class id at each position; position = training label
    tasks: list[list[int]]  # training labels (positions) of each task
    train_index: np.ndarray  # indices into the prepared train split used for training
    val_index: np.ndarray  # the held-out validation part
    chunk_index: list[np.ndarray] = field(default_factory=list)  # data-incremental: train indices per step
    exemplar_index: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    @property
    def num_classes(self) -> int:
        return len(self.class_order)

    def label_map(self, dataset_classes: int) -> np.ndarray:
        """dataset class id -> training label, -1 for classes outside the scenario."""
        mapping = np.full(dataset_classes, -1, dtype=np.int64)
        mapping[self.class_order] = np.arange(len(self.class_order))
        return mapping

    def task_of_label(self) -> np.ndarray:
        out = np.zeros(self.num_classes, dtype=np.int64)
        for t, labels in enumerate(self.tasks):
            out[labels] = t
        return out


def build_scenario(spec: ScenarioSpec, dataset: str, train_labels: np.ndarray, num_classes: int) -> Scenario:
    """Build a scenario from the dataset's training labels; everything random uses the spec's seeds.

    Each class draws from its own generator, seeded by (split_seed, class id, purpose): a class's
    holdout and exemplars do not change when the class order, the other classes or another
    option (e.g. the number of exemplars for the holdout) change.
    """
    order, tasks = scenario_classes(spec, num_classes)
    train_parts, val_parts, exemplar_parts = [], [], []
    for cls in order:
        idx = np.flatnonzero(train_labels == cls)
        idx = idx[_class_rng(spec.split_seed, cls, _HOLDOUT).permutation(len(idx))]
        n_val = int(round(spec.validation_fraction * len(idx)))
        if n_val == len(idx):
            raise ConfigError(
                f"scenario.validation_fraction: {spec.validation_fraction:g} holds out all {len(idx)} training"
                f" images of class {cls}; expected a fraction that leaves each class training images"
            )
        val_parts.append(np.sort(idx[:n_val]))
        train_parts.append(idx[n_val:])  # kept in shuffled order: the data chunks are cut from it
        if spec.exemplars_per_class:
            if spec.exemplars_per_class > len(idx) - n_val:
                raise ConfigError(
                    f"scenario.exemplars_per_class: {spec.exemplars_per_class} exceeds the"
                    f" {len(idx) - n_val} training images of class {cls}"
                )
            picked = _class_rng(spec.split_seed, cls, _EXEMPLARS).choice(
                idx[n_val:], spec.exemplars_per_class, replace=False
            )
            exemplar_parts.append(np.sort(picked))
    chunks = _stratified_chunks(train_parts, spec.chunks) if spec.kind == "data" else []
    for step, chunk in enumerate(chunks):
        if not len(chunk):
            raise ConfigError(
                f"scenario.chunks: step {step + 1} of {list(spec.chunks)} gets no training images;"
                " expected sizes that give every step images"
            )
    return Scenario(
        spec=spec,
        dataset=dataset,
        class_order=order,
        tasks=tasks,
        train_index=_concat_sorted(train_parts),
        val_index=_concat_sorted(val_parts),
        chunk_index=chunks,
        exemplar_index=np.concatenate(exemplar_parts) if exemplar_parts else np.zeros(0, np.int64),
    )


def scenario_classes(spec: ScenarioSpec, num_classes: int) -> tuple[list[int], list[list[int]]]:
    """The dataset class ids the scenario uses, in label order, and each task's labels."""
    spec.check(num_classes)
    if spec.kind == "data":
        return list(range(num_classes)), [list(range(num_classes)) for _ in range(spec.num_tasks)]
    needed = spec.num_tasks * spec.classes_per_task
    if spec.class_order == "natural":
        order = list(range(needed))
    elif spec.class_order == "permuted":
        order = [int(c) for c in np.random.default_rng(spec.order_seed).permutation(num_classes)[:needed]]
    else:
        order = [int(c) for c in spec.class_order[:needed]]
    k = spec.classes_per_task
    return order, [list(range(t * k, (t + 1) * k)) for t in range(spec.num_tasks)]


def _class_rng(seed: int, cls: int, purpose: int) -> np.random.Generator:
    return np.random.default_rng([seed, cls, purpose])


def _concat_sorted(parts: list[np.ndarray]) -> np.ndarray:
    return np.sort(np.concatenate(parts)).astype(np.int64) if parts else np.zeros(0, np.int64)


def _stratified_chunks(per_class: list[np.ndarray], ratios: tuple[int, ...]) -> list[np.ndarray]:
    """Cut every class's shuffled training indices in the given ratios (each chunk holds every class).

    Rounding remainders rotate over the chunks from class to class, so chunk sizes stay within
    one image per class of the ratio instead of always favouring the same chunk.
    """
    chunks: list[list[np.ndarray]] = [[] for _ in ratios]
    for i, idx in enumerate(per_class):
        sizes = np.asarray(ratios, dtype=np.int64) * len(idx) // int(np.sum(ratios))
        for extra in range(len(idx) - int(sizes.sum())):
            sizes[(i + extra) % len(ratios)] += 1
        for c, part in enumerate(np.split(idx, np.cumsum(sizes)[:-1])):
            chunks[c].append(part)
    return [_concat_sorted(parts) for parts in chunks]


def save_scenario(scenario: Scenario, json_path: str | Path) -> None:
    """Write `<id>.json` (human-readable) and `<id>.npz` (index arrays) side by side."""
    json_path = Path(json_path)
    arrays = {
        "train_index": scenario.train_index,
        "val_index": scenario.val_index,
        "exemplar_index": scenario.exemplar_index,
    }
    arrays.update({f"chunk{i}": c for i, c in enumerate(scenario.chunk_index)})
    with atomic_path(json_path.with_suffix(".npz")) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
    spec = asdict(scenario.spec)
    write_json(
        json_path,
        {
            "id": scenario.spec.id,
            "dataset": scenario.dataset,
            "spec": spec,
            "class_order": scenario.class_order,
            "tasks": scenario.tasks,
            "content_sha256": content_digest(scenario.class_order, scenario.tasks, arrays),
            "num_train": int(len(scenario.train_index)),
            "num_val": int(len(scenario.val_index)),
            "num_exemplars": int(len(scenario.exemplar_index)),
            "chunk_sizes": [int(len(c)) for c in scenario.chunk_index],
            "provenance": provenance(spec, seed=scenario.spec.split_seed),
        },
    )


def content_digest(class_order: list[int], tasks: list[list[int]], arrays: dict[str, np.ndarray]) -> str:
    """SHA-256 of what a scenario decides: its class order, tasks and every index array."""
    digest = hashlib.sha256(json.dumps([list(map(int, class_order)), tasks]).encode())
    for name in sorted(arrays):
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(arrays[name], dtype=np.int64).tobytes())
    return digest.hexdigest()


def load_scenario(json_path: str | Path) -> Scenario:
    json_path = Path(json_path)
    doc = read_json(json_path)
    npz_path = json_path.with_suffix(".npz")
    try:
        with np.load(npz_path) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except FileNotFoundError:
        raise DataError(f"{npz_path}: scenario index file not found") from None
    except (OSError, ValueError) as err:
        raise DataError(f"{npz_path}: not a readable scenario index file ({err})") from None
    if doc.get("content_sha256") != content_digest(doc["class_order"], doc["tasks"], arrays):
        raise DataError(
            f"{json_path}: its class order, tasks or index arrays do not match the digest it was written with"
            " (edited after the scenario stage?); remove it and its .npz and rerun snakemake, which rewrites them"
        )
    chunks = [arrays[f"chunk{i}"] for i in range(len(doc.get("chunk_sizes", [])))]
    return Scenario(
        spec=ScenarioSpec(**doc["spec"]),
        dataset=doc["dataset"],
        class_order=doc["class_order"],
        tasks=doc["tasks"],
        train_index=arrays["train_index"],
        val_index=arrays["val_index"],
        chunk_index=chunks,
        exemplar_index=arrays["exemplar_index"],
    )


def make_scenario(dataset: str, data_dir: str | Path, spec_json: str, out: str | Path) -> None:
    """The `scenario` stage: build the split from the prepared training labels and write it."""
    from .config import build_typed
    from .data.store import check_classes_present, load_meta, load_split

    spec = build_typed(ScenarioSpec, json.loads(spec_json), "--spec")
    meta = load_meta(data_dir)
    check_classes_present(data_dir, meta, scenario_classes(spec, meta["num_classes"])[0])
    labels = load_split(data_dir, "train", meta=meta).labels
    scenario = build_scenario(spec, dataset, labels, meta["num_classes"])
    if scenario.spec.id != Path(out).stem:
        raise DataError(f"{out}: file name does not match the scenario id {scenario.spec.id!r}")
    save_scenario(scenario, out)
