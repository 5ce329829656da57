"""Backbone registry and its single factory, `create_backbone`."""

from .registry import BACKBONES, create_backbone, register_backbone

# Importing the modules registers the backbones.
from . import mlp, resnet  # noqa: E402,F401  isort: skip

__all__ = ["BACKBONES", "create_backbone", "register_backbone"]
