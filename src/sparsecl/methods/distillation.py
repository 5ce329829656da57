"""Online distillation from frozen teachers, on the very batch the student trains on.

`TeacherTap` runs the teachers on each training batch as the student sees it (augmented, inside
the same autocast), through a forward pre-hook on the student, so the shared epoch loop needs no
change; `distillation_loss` adds the weighted, temperature-scaled KL terms to cross-entropy.
The per-sample weight is `confidence` (teacher right x its max softmax probability: distil only
what the teacher knows, as much as it is sure of) or `uniform` (1).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..engine.loop import LossFn


def sample_weights(teacher_logits: torch.Tensor, labels: torch.Tensor, weighting: str) -> torch.Tensor:
    """Per-sample weight of the distillation term: 1, or 1[teacher right] x teacher confidence (T = 1)."""
    if weighting == "uniform":
        return torch.ones(len(labels), device=teacher_logits.device)
    confidence, predicted = teacher_logits.float().softmax(1).max(1)
    return confidence * (predicted == labels)


def kd_term(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor, temperature: float, weighting: str
) -> torch.Tensor:
    """T^2 x mean_i w_i KL(softmax(teacher_i / T) || softmax(student_i / T))."""
    log_p_student = F.log_softmax(student_logits.float() / temperature, dim=1)
    log_p_teacher = F.log_softmax(teacher_logits.float() / temperature, dim=1)
    kl = (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(1)
    return temperature**2 * (sample_weights(teacher_logits, labels, weighting) * kl).mean()


class TeacherTap:
    """Frozen teachers evaluated on every training batch of `student` (a context manager)."""

    def __init__(self, student: nn.Module, teachers: Sequence[nn.Module]) -> None:
        self.student = student
        self.teachers = [t.eval().requires_grad_(False) for t in teachers]
        self.logits: list[torch.Tensor] = []
        self._handle = None

    def _capture(self, module: nn.Module, args: tuple) -> None:
        if module.training:
            with torch.no_grad():
                self.logits = [teacher(args[0]) for teacher in self.teachers]

    def __enter__(self) -> TeacherTap:
        self._handle = self.student.register_forward_pre_hook(self._capture)
        return self

    def __exit__(self, *exc) -> None:
        self._handle.remove()


def distillation_loss(
    cross_entropy: LossFn, tap: TeacherTap, alphas: Sequence[float], temperature: float, weighting: str
) -> LossFn:
    """Cross-entropy + sum_j alpha_j x kd_term(teacher j); accuracy is the student's, as logged."""

    def loss_fn(logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loss, correct = cross_entropy(logits, y)
        for alpha, teacher_logits in zip(alphas, tap.logits, strict=True):
            loss = loss + alpha * kd_term(logits, teacher_logits, y, temperature, weighting)
        return loss, correct

    return loss_fn
