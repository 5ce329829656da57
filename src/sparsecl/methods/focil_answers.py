"""What FOCIL's experts answer on each task's images, and the standard protocol's record of it.

An expert's answer on an image is all the scoring reads of its outputs: every routing rule's
score, and the label it predicts by an argmax over all logits and over its own task's classes.

In `standard` an expert never changes after its task (its frozen weights are restored after
every step), and an evaluation forwards each task's images unaugmented, in their stored order, in
batches of `eval_batch_size`: an expert's answers on a task's images are the same after every
later task. So the evaluation after task t computes only what is new (expert t on every seen
task's images, experts 0..t-1 on task t's), records it in task t's masks file, and reads the rest
from the masks files of tasks 0..t-1: its forward passes grow linearly with t, not quadratically.
A recorded block is used only while its expert's weights hash to the value recorded with it (an
expert that changed, e.g. through unmaskable weights every task trains, is answered again).
`faithful` forwards augmented images in shuffled batches of the training batch size (batch-norm
statistics of 10 images) through weights that weight decay moves: it answers afresh every time.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from ..engine import autocast
from ..errors import DataError
from ..sparse import maskable_parameters
from .focil_routing import RULES, Prototypes, rule_scores

RECORD = "answers"  # the masks file entry
SPLITS = ("test", "validation")


@dataclass
class Answers:
    """Answers of some experts on some images, in one image order."""

    scores: torch.Tensor  # [experts, rules (RULES order), images]
    over_all: torch.Tensor  # [experts, images]: label of the argmax over all logits
    over_own: torch.Tensor  # [experts, images]: label of the argmax over the expert's own classes

    @classmethod
    def of(
        cls, logits: torch.Tensor, features: torch.Tensor, labels: list[list[int]], prototypes: list[Prototypes]
    ) -> Answers:
        """From logits [experts, images, classes] and features [experts, images, features]."""
        scores = torch.stack([rule_scores(rule, logits, features, labels, prototypes) for rule in RULES], 1)
        own = torch.as_tensor(labels, device=logits.device)  # [experts, classes per task]
        own_logits = logits.gather(2, own[:, None, :].expand(-1, logits.shape[1], -1))
        return cls(scores.float(), logits.argmax(2), own.gather(1, own_logits.argmax(2)))

    @classmethod
    def of_expert(
        cls, model: nn.Module, x: torch.Tensor, batch: int, labels: list[int], prototypes: Prototypes
    ) -> Answers:
        """One expert's answers on `x`, with the model's weights already set to that expert's."""
        logits, features = forward(model, x, batch)
        return cls.of(logits[None], features[None], [labels], [prototypes])

    @classmethod
    def stack(cls, blocks: list[Answers]) -> Answers:
        return cls(*(torch.cat([getattr(b, f) for b in blocks]) for f in ("scores", "over_all", "over_own")))

    def take(self, order: torch.Tensor) -> Answers:
        return Answers(self.scores[:, :, order], self.over_all[:, order], self.over_own[:, order])

    def predict(self, expert: torch.Tensor, all_logits: bool) -> torch.Tensor:
        """The label each image's expert (`expert` [images]) predicts."""
        labels = self.over_all if all_logits else self.over_own
        return labels[expert, torch.arange(labels.shape[1], device=labels.device)]


@contextmanager
def expert_weights(model: nn.Module):
    """Yields `use(mask)`, which sets the maskable weights to the shared ones times `mask`; the shared
    weights are back on exit."""
    params = maskable_parameters(model)
    shared = {name: p.detach().clone() for name, p in params.items()}

    @torch.no_grad()
    def use(mask: dict[str, torch.Tensor]) -> None:
        for name, p in params.items():
            p.copy_(shared[name] * mask[name])

    try:
        yield use
    finally:
        with torch.no_grad():
            for name, p in params.items():
                p.copy_(shared[name])


def forward(model: nn.Module, x: torch.Tensor, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits [images, classes] and features [images, features] (the input of `classifier`) of `x`."""
    features: list[torch.Tensor] = []
    hook = model.classifier.register_forward_pre_hook(lambda _module, args: features.append(args[0].float()))
    model.eval()
    try:
        with autocast(x.device):
            logits = torch.cat([model(x[s : s + batch]).float() for s in range(0, len(x), batch)])
    finally:
        hook.remove()
    return logits, torch.cat(features)


def expert_digest(model: nn.Module, mask: dict[str, torch.Tensor]) -> str:
    """A hash of every value the expert computes with: its masked weights and all unmaskable tensors."""
    digest = hashlib.blake2b(digest_size=16)
    for name, tensor in model.state_dict().items():
        values = tensor[mask[name]] if name in mask else tensor
        digest.update(name.encode())
        digest.update(values.detach().reshape(-1).cpu().contiguous().view(torch.uint8).numpy())
    return digest.hexdigest()


class Record:
    """Answers of experts 0..t on the stored-order images of tasks 0..t (test and validation split):
    recorded blocks whose expert is unchanged, the others computed. `entry()` is what task t's masks
    file records: the blocks of expert t or of task t."""

    def __init__(self, model: nn.Module, masks: list[dict], labels: list[list[int]], prototypes: list[Prototypes]):
        self.model, self.masks, self.labels, self.prototypes = model, masks, labels, prototypes
        self.task = len(masks) - 1
        self.digests = [expert_digest(model, mask) for mask in masks]
        self.blocks: dict[tuple[str, int, int], Answers] = {}

    def read(self, saved: Any, k: int, images: dict[tuple[str, int], int], num_classes: int, where: str) -> None:
        """Keep the blocks masks file `k` (`where`) records whose expert is unchanged; anything but a
        record of tasks <= k for these images is refused in one line."""
        if not isinstance(saved, dict) or not isinstance(saved.get("digests"), list) or len(saved["digests"]) != k + 1:
            raise DataError(f"{where}: '{RECORD}' is not a record of the answers of experts 0..{k}")
        for block in saved.get("blocks", []):
            key = check_block(block, k, images, num_classes, self.labels, where)
            if saved["digests"][key[1]] == self.digests[key[1]]:
                self.blocks[key] = Answers(block["scores"][None], block["over_all"][None], block["over_own"][None])

    @torch.no_grad()
    def fill(self, keys: list[tuple[str, int]], images: Callable[[str, int], torch.Tensor], batch: int) -> None:
        """Compute the blocks of `keys` (split, task) that were not read, expert by expert."""
        with expert_weights(self.model) as use:
            for m, mask in enumerate(self.masks):
                missing = [(split, j) for split, j in keys if (split, m, j) not in self.blocks]
                if missing:
                    use(mask)
                for split, j in missing:
                    x = images(split, j)
                    self.blocks[split, m, j] = Answers.of_expert(
                        self.model, x, batch, self.labels[m], self.prototypes[m]
                    )

    def answers(self, split: str, j: int) -> Answers:
        return Answers.stack([self.blocks[split, m, j] for m in range(self.task + 1)])

    def entry(self) -> dict[str, Any]:
        blocks = [
            {"split": split, "expert": m, "task": j, "scores": b.scores[0], "over_all": b.over_all[0],
             "over_own": b.over_own[0]}
            for (split, m, j), b in sorted(self.blocks.items())
            if max(m, j) == self.task
        ]  # fmt: skip
        return {"digests": self.digests, "blocks": blocks}


def check_block(
    block: Any, k: int, images: dict[tuple[str, int], int], num_classes: int, labels: list[list[int]], where: str
) -> tuple[str, int, int]:
    """The (split, expert, task) of one recorded block of masks file `k`, after checking it in full."""
    if not isinstance(block, dict) or block.get("split") not in SPLITS:
        raise DataError(f"{where}: a '{RECORD}' block without a split in {SPLITS}")
    split, m, j = block["split"], block.get("expert"), block.get("task")
    name = f"{where}: '{RECORD}' block ({split}, expert {m}, task {j})"
    if not (isinstance(m, int) and isinstance(j, int) and 0 <= min(m, j) and max(m, j) == k):
        raise DataError(f"{name}: expected an expert and a task of which the larger is {k}")
    if (split, j) not in images:
        raise DataError(f"{name}: this run has no {split} images of task {j}")
    n = images[split, j]
    expected = {
        "scores": ((len(RULES), n), torch.float32),
        "over_all": ((n,), torch.int64),
        "over_own": ((n,), torch.int64),
    }
    for field, (shape, dtype) in expected.items():
        value = block.get(field)
        if not isinstance(value, torch.Tensor) or tuple(value.shape) != shape or value.dtype != dtype:
            got = f"{list(value.shape)} {value.dtype}" if isinstance(value, torch.Tensor) else type(value).__name__
            raise DataError(f"{name}: {field} should be {list(shape)} {dtype}, got {got}")
    if not bool(torch.isfinite(block["scores"]).all()):
        raise DataError(f"{name}: scores are not finite (NaN or infinity)")
    if not bool(((block["over_all"] >= 0) & (block["over_all"] < num_classes)).all()):
        raise DataError(f"{name}: over_all holds labels outside 0..{num_classes - 1}")
    if not bool(torch.isin(block["over_own"], torch.as_tensor(labels[m], device=block["over_own"].device)).all()):
        raise DataError(f"{name}: over_own holds labels outside expert {m}'s classes {labels[m]}")
    return split, m, j
