"""What each method runs, as data the workflow reads while it plans (torch-free).

One module per method registers a `Plan`: per task its stages in order, what each stage reads
and writes, the `method_args` keys it depends on and whether it decides what follows; the stage
whose evaluation stands for each task; and the method's typed arguments, checked for every run
before anything is scheduled.
"""

from ..registry import import_submodules
from .base import (
    EVALUATION,
    PLANS,
    STANDING,
    TRAINED,
    Decide,
    MethodArgs,
    Plan,
    Ref,
    Stage,
    check_run,
    plan_of,
    register_plan,
)
from .rules import StageRule, stage_rules

import_submodules(__name__, __path__, skip=("base", "rules"))

__all__ = [
    "EVALUATION",
    "PLANS",
    "STANDING",
    "TRAINED",
    "Decide",
    "MethodArgs",
    "Plan",
    "Ref",
    "Stage",
    "StageRule",
    "check_run",
    "plan_of",
    "register_plan",
    "stage_rules",
]
