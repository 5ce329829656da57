"""torch.optim's SGD and Adam, without their import of torch's compiler.

torch.optim wraps `step` (to break a compiled graph), and `add_param_group`, `zero_grad`,
`state_dict`, `load_state_dict` and Adam's update (to keep them out of compiled graphs); each
wrapper imports torch._dynamo on its first call, which takes about as long as importing torch,
in every training process. sparsecl compiles no optimizer code, so these classes run torch's own
`step` under `torch.no_grad()` (all that wrapper does besides the graph break) and hand the other
wrappers their plain function as the "excluded" one. The updates are torch's, bit for bit
(tests/test_engine.py). Once something has loaded the compiler, torch's wrappers work as usual.
"""

from __future__ import annotations

import importlib
import sys

import torch

_adam = importlib.import_module("torch.optim.adam")  # torch.optim deletes its submodules' names

# The functions behind torch's `_disable_dynamo` wrappers that a training step reaches.
_EXCLUDED_FROM_COMPILATION = (
    torch.optim.Optimizer.add_param_group,
    torch.optim.Optimizer.zero_grad,
    torch.optim.Optimizer.state_dict,
    torch.optim.Optimizer.load_state_dict,
    _adam.adam,
)


def _without_compiler_import() -> None:
    if "torch._dynamo" in sys.modules:
        return
    for wrapper in _EXCLUDED_FROM_COMPILATION:
        original = getattr(wrapper, "__wrapped__", None)
        if original is not None and not hasattr(original, "__dynamo_disable"):
            setattr(original, "__dynamo_disable", original)  # the wrapper's cache of its excluded form


def _plain_step(cls: type[torch.optim.Optimizer]):
    """`cls.step` without its graph-break wrapper (the wrapped step if torch's layout changed)."""
    step = getattr(cls.step, "__wrapped__", cls.step)

    def plain(self, closure=None):
        with torch.no_grad():
            return step(self, closure)

    return plain


class _WithoutCompilerImport:
    def __init__(self, *args, **kwargs) -> None:
        _without_compiler_import()
        super().__init__(*args, **kwargs)


class SGD(_WithoutCompilerImport, torch.optim.SGD):
    step = _plain_step(torch.optim.SGD)


class Adam(_WithoutCompilerImport, torch.optim.Adam):
    step = _plain_step(torch.optim.Adam)
