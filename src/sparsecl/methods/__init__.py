"""Method registry: each continual-learning method is one module of this package registering a `Method`."""

from ..registry import import_submodules
from .base import METHODS, EvalContext, Method, TaskContext, TaskResult, get_method, register_method

import_submodules(__name__, __path__)

__all__ = ["METHODS", "EvalContext", "Method", "TaskContext", "TaskResult", "get_method", "register_method"]
