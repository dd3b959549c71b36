"""A fast cost model: MACs and parameters of a candidate keep-configuration.

Pruning copies of the network to evaluate every candidate of a bisection is
slow. Instead, every conv / linear / norm layer's cost is written as a
function of its kept input and output widths, and each width as a function of
the kept channel counts ``k_g`` of the groups that touch it:

    out_L(k) = out_L - sum_g m_Lg (C_g - k_g) / C_g,     m_Lg = positions of group g in L's output

(likewise ``in_L``), then

    conv:       MACs_L = s_L * out_L * in_L / groups_L      (s_L = spatial x kernel)
    depthwise:  MACs_L = s_L * out_L
    linear:     MACs_L = s_L * out_L * in_L
    params_L  = w_L * out_L * in_L / groups_L + bias * out_L,   norm: 2 C_L (affine)

with ``s_L`` and ``w_L`` read once from the unpruned network. The result is
exact for the structures Torch-Pruning removes channel by channel (tested
against physically pruned models).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from lassoprune.analysis import count, count_params
from lassoprune.channels.groups import ChannelGroup, LayerKind, SliceRole, layer_kind


@dataclass(frozen=True)
class _Layer:
    kind: str
    out_full: int
    in_full: int
    groups: int
    mac_mult: float
    weight_mult: float
    bias: int
    affine: int
    out_terms: tuple[tuple[int, int], ...]  # (group index, positions)
    in_terms: tuple[tuple[int, int], ...]


class CostModel:
    """MACs / params of ``model`` as functions of the kept channels of each group.

    Args:
        model: the unpruned network.
        example_inputs: one batch of the input size of interest (MACs are for
            this batch; use batch size 1 for per-image MACs).
        groups: its channel groups (:func:`lassoprune.channels.channel_groups`).
    """

    def __init__(self, model: nn.Module, example_inputs: torch.Tensor, groups: Sequence[ChannelGroup]) -> None:
        self.group_ids = tuple(g.id for g in groups)
        self.sizes = np.array([g.num_channels for g in groups], dtype=np.float64)
        counted = count(model, example_inputs)
        self.full_macs = counted.macs
        self.full_params = count_params(model)
        layer_macs = {layer.name: layer.macs for layer in counted.layers}
        terms = _group_terms(groups)
        self._layers = [
            _describe(name, module, layer_macs.get(name, 0), terms.get(name, {}))
            for name, module in model.named_modules()
            if name in terms
        ]
        self._full_layer_macs = sum(self._layer_macs(layer, self.sizes) for layer in self._layers)
        self._full_layer_params = sum(self._layer_params(layer, self.sizes) for layer in self._layers)

    def keep_vector(self, keep: Mapping[str, int]) -> np.ndarray:
        """Kept channels per group as an array in ``group_ids`` order (missing groups: all kept)."""
        return np.array([keep.get(gid, size) for gid, size in zip(self.group_ids, self.sizes)], dtype=np.float64)

    def macs(self, keep: Mapping[str, int] | np.ndarray) -> int:
        """MACs of the network when group g keeps ``keep[g]`` channels."""
        k = keep if isinstance(keep, np.ndarray) else self.keep_vector(keep)
        pruned = sum(self._layer_macs(layer, k) for layer in self._layers)
        return int(round(self.full_macs - self._full_layer_macs + pruned))

    def params(self, keep: Mapping[str, int] | np.ndarray) -> int:
        """Parameters of the network when group g keeps ``keep[g]`` channels."""
        k = keep if isinstance(keep, np.ndarray) else self.keep_vector(keep)
        pruned = sum(self._layer_params(layer, k) for layer in self._layers)
        return int(round(self.full_params - self._full_layer_params + pruned))

    def _width(self, full: int, terms: tuple[tuple[int, int], ...], k: np.ndarray) -> float:
        return full - sum(m * (self.sizes[g] - k[g]) / self.sizes[g] for g, m in terms)

    def _layer_macs(self, layer: _Layer, k: np.ndarray) -> float:
        out = self._width(layer.out_full, layer.out_terms, k)
        if layer.kind is LayerKind.DEPTHWISE:
            return layer.mac_mult * out
        if layer.kind in (LayerKind.CONV, LayerKind.LINEAR):
            return layer.mac_mult * out * self._width(layer.in_full, layer.in_terms, k) / layer.groups
        return 0.0

    def _layer_params(self, layer: _Layer, k: np.ndarray) -> float:
        out = self._width(layer.out_full, layer.out_terms, k)
        if layer.kind is LayerKind.DEPTHWISE:
            return layer.weight_mult * out + layer.bias * out
        if layer.kind in (LayerKind.CONV, LayerKind.LINEAR):
            inp = self._width(layer.in_full, layer.in_terms, k)
            return layer.weight_mult * out * inp / layer.groups + layer.bias * out
        if layer.kind is LayerKind.NORM:
            return layer.affine * self._width(layer.out_full, layer.out_terms + layer.in_terms, k)
        return 0.0


def _group_terms(groups: Sequence[ChannelGroup]) -> dict[str, dict[str, list[tuple[int, int]]]]:
    """layer name -> {"out": [(group index, positions)], "in": [...]}."""
    terms: dict[str, dict[str, list[tuple[int, int]]]] = {}
    for index, group in enumerate(groups):
        for s in group.slices:
            role = SliceRole.OUT if s.kind in (LayerKind.DEPTHWISE, LayerKind.NORM) else s.role
            entry = terms.setdefault(s.module, {"out": [], "in": []})
            if (index, len(s.indices)) not in entry[role]:
                entry[role].append((index, len(s.indices)))
    return terms


def _describe(name: str, module: nn.Module, macs: int, terms: dict[str, list[tuple[int, int]]]) -> _Layer:
    kind = layer_kind(module)
    out_full, in_full, groups = _widths(module)
    weight = getattr(module, "weight", None)
    weight_numel = weight.numel() if isinstance(weight, torch.Tensor) else 0
    if kind is LayerKind.DEPTHWISE:
        mac_mult, weight_mult = macs / out_full, weight_numel / out_full
    elif kind in (LayerKind.CONV, LayerKind.LINEAR):
        dense = out_full * in_full / groups
        mac_mult, weight_mult = macs / dense, weight_numel / dense
    else:
        mac_mult, weight_mult = 0.0, 0.0
    affine = 2 if kind is LayerKind.NORM and getattr(module, "weight", None) is not None else 0
    return _Layer(
        kind=kind, out_full=out_full, in_full=in_full, groups=groups, mac_mult=mac_mult, weight_mult=weight_mult,
        bias=int(getattr(module, "bias", None) is not None and kind is not LayerKind.NORM), affine=affine,
        out_terms=tuple(terms.get("out", ())), in_terms=tuple(terms.get("in", ())),
    )


def _widths(module: nn.Module) -> tuple[int, int, int]:
    if isinstance(module, nn.modules.conv._ConvNd):
        return module.out_channels, module.in_channels, module.groups
    if isinstance(module, nn.Linear):
        return module.out_features, module.in_features, 1
    features = getattr(module, "num_features", None) or getattr(module, "num_channels", None) or 0
    return int(features), int(features), 1
