"""PackNet's plan and arguments: one job per task trains, prunes and retrains, then freezes."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import RunConfig
from ..errors import ConfigError
from .base import MethodArgs, register_plan
from .one_stage import OneStage


@dataclass(frozen=True)
class PackNetArgs(MethodArgs):
    """`method_args` of a packnet experiment (the paper's 50% per task)."""

    prune_ratio: float = 0.5  # fraction of each layer's free weights a task gives back
    retrain_epochs: int = 10  # epochs of the kept weights after the prune (0: none)

    def check(self, run: RunConfig) -> None:
        if not 0 < self.prune_ratio < 1:
            raise ConfigError(f"method_args.prune_ratio: expected a number in (0, 1), got {self.prune_ratio}")
        if self.retrain_epochs < 0:
            raise ConfigError(f"method_args.retrain_epochs: expected an integer >= 0, got {self.retrain_epochs}")
        if run.scenario.kind != "class":
            raise ConfigError(
                f"scenario.kind: packnet is task-incremental, expected 'class', got {run.scenario.kind!r}"
            )


@register_plan("packnet")
class PackNet(OneStage):
    args = PackNetArgs
