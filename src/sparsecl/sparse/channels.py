"""BatchNorm channels as the unit of structured sparsity.

A channel is one output of a BN layer: its scaling factor gamma says how much the channel
matters (Network Slimming), the conv (or linear) layer before the BN produces it, and the conv
and linear layers after it (through activations, pooling and residual additions) read it. This
module finds those links by tracing the network once (`torch.fx`), ranks channels by |gamma|,
pushes the gamma of a selected set towards zero (the L1 subgradient) and re-initialises the
filters behind a selected set. A `ChannelSelection` is BN layer name -> bool [C] (True: selected).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx
import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..errors import ConfigError

ChannelSelection = dict[str, torch.Tensor]
LAYERS = (nn.Conv2d, nn.Linear)


@dataclass(frozen=True)
class ChannelLinks:
    producer: str  # the layer whose output channels the BN normalises
    consumers: tuple[str, ...]  # the layers that read the BN's channels


def batch_norms(model: nn.Module) -> dict[str, _BatchNorm]:
    """Every affine BN layer, by module name; a model without any cannot be sparsity-trained."""
    found = {name: m for name, m in model.named_modules() if isinstance(m, _BatchNorm) and m.affine}
    if not found:
        raise ConfigError("backbone: multistep needs BatchNorm layers with scaling factors (affine BN)")
    return found


def channel_links(model: nn.Module) -> dict[str, ChannelLinks]:
    """Producer and consumers of every BN layer's channels, from one symbolic trace."""
    modules = dict(model.named_modules())
    bns = batch_norms(model)
    links = {}
    for node in torch.fx.symbolic_trace(model).graph.nodes:
        if node.op != "call_module" or node.target not in bns:
            continue
        source = node.args[0]
        if not (source.op == "call_module" and isinstance(modules[source.target], LAYERS)):
            raise ConfigError(f"backbone: BatchNorm {node.target} does not follow a conv or linear layer")
        links[node.target] = ChannelLinks(source.target, _readers(node, modules))
    return links


def _readers(node: torch.fx.Node, modules: dict[str, nn.Module]) -> tuple[str, ...]:
    """Conv/linear layers reached from `node` through parameter-free operations."""
    found, todo, seen = [], list(node.users), set()
    while todo:
        user = todo.pop(0)
        if user in seen:
            continue
        seen.add(user)
        module = modules.get(user.target) if user.op == "call_module" else None
        if isinstance(module, LAYERS):
            found.append(user.target)
        elif not isinstance(module, _BatchNorm) and user.op != "output":
            todo += list(user.users)
    return tuple(sorted(set(found)))


def gammas(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: bn.weight.detach() for name, bn in batch_norms(model).items()}


def no_channels(model: nn.Module) -> ChannelSelection:
    return {name: torch.zeros_like(g, dtype=torch.bool) for name, g in gammas(model).items()}


def select_smallest(model: nn.Module, ratio: float, scope: str = "global", layer_cap: float = 1.0) -> ChannelSelection:
    """The `ratio` of channels with the smallest |gamma|: ranked over all BN layers, or per layer.

    A global ranking takes at most `layer_cap` of any layer's channels (the next smallest of other
    layers instead), so that no layer is selected whole and later cut out of the network.
    Ties go to the earlier channel (stable sort), so a selection is reproducible.
    """
    values = {name: g.abs().float() for name, g in gammas(model).items()}
    if scope == "layer":
        return {name: _smallest(v, math.floor(ratio * len(v))) for name, v in values.items()}
    sizes = [len(v) for v in values.values()]
    flat = torch.cat(list(values.values()))
    owner = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes)).tolist()
    room = [math.floor(layer_cap * n) for n in sizes]
    chosen, wanted = torch.zeros_like(flat, dtype=torch.bool), math.floor(ratio * len(flat))
    for index in torch.sort(flat, stable=True).indices.tolist():
        if not wanted:
            break
        if room[owner[index]]:
            chosen[index], wanted = True, wanted - 1
            room[owner[index]] -= 1
    return dict(zip(values, chosen.split(sizes), strict=True))


def _smallest(values: torch.Tensor, k: int) -> torch.Tensor:
    chosen = torch.zeros_like(values, dtype=torch.bool)
    chosen[torch.sort(values, stable=True).indices[:k]] = True
    return chosen


def l1_subgradient(model: nn.Module, selected: ChannelSelection, strength: float) -> Callable[[], None]:
    """An after-backward hook: grad(gamma) += strength * sign(gamma) on the selected channels, the
    subgradient of strength * sum |gamma| over the selection (Network Slimming's update)."""
    terms = [
        (bn.weight, selected[name].to(bn.weight.dtype))
        for name, bn in batch_norms(model).items()
        if name in selected and selected[name].any()
    ]

    @torch.no_grad()
    def add() -> None:
        for weight, chosen in terms:
            if weight.grad is not None:
                weight.grad.add_(strength * torch.sign(weight) * chosen)

    return add


@torch.no_grad()
def reinitialise_channels(
    model: nn.Module,
    selected: ChannelSelection,
    generator: torch.Generator,
    downstream: str = "keep",
    gamma: float = 1.0,
) -> None:
    """Fresh filters for the selected channels; every other value stays bit-identical.

    The producer's filters of those channels are drawn He-normal (fan-out, as the backbones
    initialise), their bias and the BN's beta set to 0, gamma to `gamma`, and the running statistics
    reset (mean 0, variance 1). `downstream="zero"` then zeroes every weight through which a
    consumer of the BN's output reads the channels (fresh filters included; through identity
    shortcuts these are the readers of the whole residual stream); `keep` leaves them as they are.
    Draws come from the CPU `generator`, so CPU and GPU runs re-initialise alike.
    """
    modules = dict(model.named_modules())
    links = channel_links(model)
    chosen = {name: picked.nonzero().flatten() for name, picked in selected.items() if picked.any()}
    for name, idx in chosen.items():
        producer, bn = modules[links[name].producer], modules[name]
        weight = producer.weight
        std = math.sqrt(2.0 / (weight.shape[0] * math.prod(weight.shape[2:])))
        fresh = torch.randn((len(idx), *weight.shape[1:]), generator=generator) * std
        weight[idx] = fresh.to(weight.device, weight.dtype)
        if producer.bias is not None:
            producer.bias[idx] = 0
        bn.weight[idx], bn.bias[idx] = gamma, 0
        if bn.running_mean is not None:
            bn.running_mean[idx], bn.running_var[idx] = 0, 1
    if downstream == "zero":  # after every fresh draw, so that fresh filters do not read S either
        for name, idx in chosen.items():
            for consumer in links[name].consumers:
                _zero_inputs(modules[consumer], idx, len(selected[name]), consumer)


def _zero_inputs(layer: nn.Module, idx: torch.Tensor, channels: int, name: str) -> None:
    """Zero the weights through which `layer` reads input channels `idx` (grouped convs included)."""
    if isinstance(layer, nn.Linear):
        if layer.in_features != channels:  # e.g. a flattened feature map: inputs are not channels
            raise ConfigError(f"method_args.reinit_downstream: {name} does not read one input per channel")
        layer.weight[:, idx] = 0
        return
    per_group_in = layer.in_channels // layer.groups
    per_group_out = layer.out_channels // layer.groups
    for c in idx.tolist():
        group = c // per_group_in
        layer.weight[group * per_group_out : (group + 1) * per_group_out, c % per_group_in] = 0


def channel_table(model: nn.Module, selected: ChannelSelection, threshold: float) -> list[dict[str, Any]]:
    """Per BN layer: channels, how many are selected, and how many gamma inside and outside the
    selection are below `threshold` in magnitude (a sparsity-training stage's result)."""
    rows = []
    for name, gamma in gammas(model).items():
        picked = selected[name]
        small = gamma.abs() < threshold
        rows.append(
            {
                "layer": name,
                "channels": int(len(gamma)),
                "selected": int(picked.sum()),
                "small_selected": int((small & picked).sum()),
                "small_other": int((small & ~picked).sum()),
                "mean_abs_gamma_selected": float(gamma.abs()[picked].mean()) if picked.any() else float("nan"),
                "mean_abs_gamma_other": float(gamma.abs()[~picked].mean()) if (~picked).any() else float("nan"),
            }
        )
    return rows
