"""The one-stage plans: each task is one job that trains from the previous task's model and masks
and evaluates what it trained, in the same process (eval.parquet)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar

from ..config import RunConfig
from .base import EVALUATION, TRAINED, Decide, Plan, Ref, Stage, register_plan


class OneStage(Plan):
    one_stage = True
    writes: ClassVar[tuple[str, ...]] = (*TRAINED, EVALUATION)
    runtime: ClassVar[int] = 120  # minutes a cluster job asks for on its first try

    def stages(self, run: RunConfig, task: int, decide: Decide) -> Iterator[Stage]:
        reads = (
            {}
            if task == 0
            else {"prev_model": Ref(task - 1, "train"), "prev_masks": Ref(task - 1, "train", "masks.pt")}
        )
        yield Stage("train", reads, self.writes, runtime=self.runtime)


@register_plan("finetune")
class Finetune(OneStage):
    """Each task from the previous task's model, cross-entropy only: forgetting's lower bound."""


@register_plan("joint")
class Joint(OneStage):
    """Each task on the data of every task so far: the upper bound."""
