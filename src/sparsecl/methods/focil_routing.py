"""Label-free expert selection for FOCIL: which expert answers a group of images, without labels.

Every rule scores each (expert, image) pair from that expert's own outputs on the image (higher:
"this image looks like my task") and needs neither labels nor stored images:
  max_softmax  the largest softmax probability over the expert's own task's classes;
  entropy      minus the entropy of that softmax;
  energy       the log-sum-exp of the expert's own-class logits (minus the free energy);
  prototype    how close the image's features (the input of `classifier`) come to the nearest
               class mean the expert stored when it was trained: the mean squared distance per
               feature in units of that class's training variance (floored at 1% of the mean
               variance), then in standard deviations of the same distance over the expert's own
               training images, so that experts whose features differ in scale compare.
A group of `selection_batch` consecutive images goes to the expert with the highest summed score
(ties: the earliest expert).

Why the softmax rules fail: each expert was trained to tell its own classes apart and has never
seen another task's images, so its confidence on them is unconstrained; an early expert, trained
with every weight still free, is often the most confident on everything. The prototype rule asks
instead whether an image lands where the expert's own training images did.

`auto` chooses, after each task, the rule that routes the validation images of the tasks seen so
far best (`scenario.validation_fraction` > 0: images held out of training, so no test label is
read); without a validation split it falls back to `FALLBACK`, the rule that routed best in our
validation runs (see docs/methods/focil.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

RULES = ("max_softmax", "entropy", "energy", "prototype")
AUTO = "auto"
SCORES = (*RULES, AUTO)
FALLBACK = "prototype"


VARIANCE_FLOOR = 0.01  # of the expert's mean feature variance: keeps near-constant features from dominating


@dataclass(frozen=True)
class Prototypes:
    """What the prototype rule keeps of one expert (no images): per own class the mean and variance
    of its features, and the mean and standard deviation of the rule's distance on its training images."""

    means: torch.Tensor  # [classes of the task, features]
    variance: torch.Tensor  # [classes of the task, features], floored
    calibration: torch.Tensor  # [2]: mean and std of `distance` over the expert's training images

    def to_dict(self) -> dict[str, torch.Tensor]:
        return {"means": self.means, "variance": self.variance, "calibration": self.calibration}

    @classmethod
    def from_dict(cls, data: dict[str, torch.Tensor]) -> Prototypes:
        return cls(data["means"], data["variance"], data["calibration"])

    @classmethod
    def of(cls, features: torch.Tensor, labels: torch.Tensor, classes: list[int]) -> Prototypes:
        """From an expert's features [images, features] of its own task's training images."""
        features = features.float()
        own = [features[labels == c] for c in classes]
        means = torch.stack([f.mean(0) for f in own])
        variance = torch.stack([f.var(0, unbiased=False) for f in own])
        variance = variance + VARIANCE_FLOOR * variance.mean() + 1e-12
        seen = cls(means, variance, torch.tensor([0.0, 1.0]))
        d = seen.distance(features)
        return cls(means, variance, torch.stack([d.mean(), d.std().clamp_min(1e-12)]))

    def distance(self, features: torch.Tensor) -> torch.Tensor:
        """Per image: the mean squared distance to the nearest class mean, per feature in units of
        that class's variance."""
        means, variance = self.means.to(features.device), self.variance.to(features.device)
        chunks = features.float().split(1024)  # bounds the [images, classes, features] intermediate
        return torch.cat([((f[:, None, :] - means) ** 2 / variance).mean(2).min(1).values for f in chunks])

    def score(self, features: torch.Tensor) -> torch.Tensor:
        """Minus the distance in standard deviations of the expert's own training images' distances."""
        mean, std = self.calibration.to(features.device)
        return -(self.distance(features) - mean) / std


def rule_scores(
    rule: str,
    logits: torch.Tensor,
    features: torch.Tensor,
    expert_labels: list[list[int]],
    prototypes: list[Prototypes],
) -> torch.Tensor:
    """Scores [experts, images] of `rule`, from logits [experts, images, classes] and features
    [experts, images, features]; each expert is judged on its own task's classes only."""
    scores = []
    for m, labels in enumerate(expert_labels):
        own = logits[m][:, labels].float()
        if rule == "max_softmax":
            scores.append(torch.softmax(own, 1).max(1).values)
        elif rule == "entropy":
            log_p = torch.log_softmax(own, 1)
            scores.append((log_p.exp() * log_p).sum(1))
        elif rule == "energy":
            scores.append(torch.logsumexp(own, 1))
        elif rule == "prototype":
            scores.append(prototypes[m].score(features[m]))
        else:
            raise ValueError(f"unknown selection rule {rule!r}; expected one of {RULES}")
    return torch.stack(scores)


def route(scores: torch.Tensor, group: int) -> torch.Tensor:
    """The expert chosen for each consecutive group of `group` images, from scores [experts, images]."""
    n = scores.shape[1]
    groups = torch.arange(n, device=scores.device) // group
    sums = torch.zeros(scores.shape[0], int(groups[-1]) + 1, device=scores.device).index_add_(1, groups, scores)
    return sums.argmax(0)  # within a group every expert sees the same images, so sums rank like means


def choose_rule(validation_expert_acc: dict[str, float]) -> str:
    """The rule that routed the most validation groups right (ties: the order of RULES)."""
    return max(RULES, key=lambda rule: (validation_expert_acc[rule], -RULES.index(rule)))
