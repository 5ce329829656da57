"""FOCIL's plan and arguments: one job per task runs every search trial of the task (each a
single pass; successive halving decides from the trials before it, so they are sequential)."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import RunConfig
from ..errors import ConfigError
from .base import MethodArgs, register_plan
from .one_stage import OneStage

SEARCHES = ("adaptive", "fixed")
SELECTION_SCORES = ("max_softmax", "entropy", "energy", "prototype", "auto")  # methods/focil_routing.py


@dataclass(frozen=True)
class FocilArgs(MethodArgs):
    """`method_args` of a focil experiment."""

    search: str = "adaptive"
    trials: int = 20
    lr_grid: tuple[float, ...] = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3)
    density_grid: tuple[float, ...] = (0.02, 0.04, 0.06, 0.08, 0.1)
    lr: float = 0.1
    density: float = 0.1
    report_every: int = 50
    selection_batch: int = 10
    selection_score: str = "auto"

    def check(self, run: RunConfig) -> None:
        for key, allowed in (("search", SEARCHES), ("selection_score", SELECTION_SCORES)):
            if getattr(self, key) not in allowed:
                raise ConfigError(f"method_args.{key}: expected one of {allowed}, got {getattr(self, key)!r}")
        if run.scenario.kind != "class":
            raise ConfigError(f"scenario.kind: focil is class-incremental, expected 'class', got {run.scenario.kind!r}")


@register_plan("focil")
class Focil(OneStage):
    args = FocilArgs
