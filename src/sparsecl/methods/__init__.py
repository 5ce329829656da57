"""Method registry: each continual-learning method is one module registering a `Method`."""

from .base import METHODS, EvalContext, Method, TaskContext, TaskResult, get_method

# Importing the modules registers the methods.
from . import finetune, joint  # noqa: E402,F401  isort: skip

__all__ = ["METHODS", "EvalContext", "Method", "TaskContext", "TaskResult", "get_method"]
