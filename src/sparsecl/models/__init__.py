"""Backbone registry and its single factory, `create_backbone`; each module registers its backbones."""

from ..registry import import_submodules
from .registry import BACKBONES, create_backbone, register_backbone

import_submodules(__name__, __path__)

__all__ = ["BACKBONES", "create_backbone", "register_backbone"]
