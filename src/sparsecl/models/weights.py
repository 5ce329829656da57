"""Which weights of a network a mask can cover: a property of the network, read by the sparse
methods (which mask them) and by every stage that checks a masks file against the network."""

from __future__ import annotations

import torch.nn as nn


def maskable_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """Every conv and linear weight (first conv, shortcuts and classifier included); never biases
    or normalisation parameters. This is the set both sparse papers mask."""
    params = {}
    for module_name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            params[f"{module_name}.weight" if module_name else "weight"] = module.weight
    return params
