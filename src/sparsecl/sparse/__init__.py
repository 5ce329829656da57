"""Sparse masks shared by the sparse methods: which tensors are maskable, per-layer densities
(uniform, ERK), random masks, applying masks, isolating earlier tasks' weights, merging task
networks and the task mask file (`masks`); mask statistics (`stats`); the dynamic sparse training
update (`dst`) and the per-task training hooks built on them (`trainer`)."""

from ..models.weights import maskable_parameters
from .masks import (
    MaskFile,
    apply_masks,
    erk_densities,
    freeze_used_gradients,
    layer_densities,
    merge_into,
    random_masks,
    reinitialise,
    row_mask,
    uniform_densities,
)

__all__ = [
    "MaskFile",
    "apply_masks",
    "erk_densities",
    "freeze_used_gradients",
    "layer_densities",
    "maskable_parameters",
    "merge_into",
    "random_masks",
    "reinitialise",
    "row_mask",
    "uniform_densities",
]
