"""CL-with-DST's plan and arguments: one job per task, which also writes the topology trace."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import RunConfig
from ..errors import ConfigError
from .base import MethodArgs, register_plan
from .one_stage import OneStage

GROWTHS = ("random", "unfired", "random_unfired", "momentum", "gradient")  # sparse/dst.py: modes and aliases
DENSITY_INITS = ("uniform", "ERK")  # sparse/masks.py


@dataclass(frozen=True)
class DSTArgs(MethodArgs):
    """`method_args` of a dst experiment (defaults: the paper code's CIFAR driver)."""

    density: float = 0.2
    init: str = "uniform"
    growth: str = "random"
    update_frequency: int = 400
    prune_rate: float = 0.5
    prune_rate_min: float = 0.005
    isolate: bool = True

    def check(self, run: RunConfig) -> None:
        if self.growth not in GROWTHS:
            raise ConfigError(f"method_args.growth: expected one of {GROWTHS}, got {self.growth!r}")
        if self.init not in DENSITY_INITS:
            raise ConfigError(f"method_args.init: expected one of {DENSITY_INITS}, got {self.init!r}")
        if not 0 < self.density <= 1:
            raise ConfigError(f"method_args.density: expected in (0, 1], got {self.density}")
        train = run.train
        if self.growth == "momentum" and train.optimizer == "sgd" and train.momentum == 0:
            raise ConfigError("method_args.growth: momentum growth needs Adam or SGD with train.momentum > 0")
        if run.protocol == "standard" and self.isolate and train.weight_decay > 0:
            raise ConfigError("train.weight_decay: must be 0 for dst with isolation (decay would move frozen weights)")


@register_plan("dst")
class DST(OneStage):
    args = DSTArgs
    writes = (*OneStage.writes, "topology.parquet")
    runtime = 240
