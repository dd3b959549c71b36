"""Surgery: physically remove channels (through Torch-Pruning), or mask them for checking.

:func:`remove_channels` hands Torch-Pruning the channels to drop from each
group; the result is an ordinary ``nn.Module`` with narrower layers.
:func:`mask_channels` is the reference it is tested against: it keeps every
shape and zeroes, in every layer that *reads* a group, the input slices of the
removed channels. Whatever the removed channels carried then no longer reaches
any output, which is exactly what removal does (BatchNorm and the activation
between producer and consumer included, residual adds included).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from lassoprune.channels.groups import ChannelGroup, GroupAnalysis
from lassoprune.errors import LassopruneError


def removed_channels(group: ChannelGroup, kept: Sequence[int]) -> list[int]:
    """Group channel numbers not in ``kept`` (validated: in range, at least one kept)."""
    keep = set(int(c) for c in kept)
    if not keep:
        raise LassopruneError(f"group {group.id} would lose all {group.num_channels} channels; keep at least one")
    bad = [c for c in keep if not 0 <= c < group.num_channels]
    if bad:
        raise LassopruneError(f"group {group.id} has channels 0..{group.num_channels - 1}; got {sorted(bad)[:5]}")
    return [c for c in range(group.num_channels) if c not in keep]


def remove_channels(analysis: GroupAnalysis, keep: Mapping[str, Sequence[int]]) -> None:
    """Prune the analysed model in place: group ``g`` keeps exactly the channels ``keep[g]``.

    Groups absent from ``keep`` are left whole.
    """
    groups = analysis.by_id()
    unknown = sorted(set(keep) - set(groups))
    if unknown:
        raise LassopruneError(f"unknown group id(s) {unknown[:5]}; valid ids come from channel_groups()")
    plans = [(gid, removed_channels(groups[gid], kept)) for gid, kept in keep.items()]
    for gid, removed in plans:
        if not removed:
            continue
        root, prune_fn = analysis.roots[gid]
        tp_group = analysis.graph.get_pruning_group(root, prune_fn, removed)
        extras = _per_output_extras(analysis.graph.model, groups[gid], set(removed))
        try:
            tp_group.prune()
            _cut_extras(extras)
        except Exception as exc:
            raise LassopruneError(
                f"Torch-Pruning could not cut group {gid} (layers {', '.join(groups[gid].modules[:4])}): {exc}; "
                "pass the layer in ignored_layers to leave it whole"
            ) from exc


#: (module, tensor name, output positions removed): see :func:`_per_output_extras`.
_Extra = tuple[nn.Module, str, list[int]]


def _per_output_extras(model: nn.Module, group: ChannelGroup, removed: set[int]) -> list[_Extra]:
    """Per-output-channel tensors that Torch-Pruning does not cut: parameters and buffers of a conv / linear
    subclass other than ``weight`` and ``bias`` whose first dimension is the layer's output width (timm's
    ``ScaledStdConv2d`` ``gain`` of NF-ResNets, for instance)."""
    modules = dict(model.named_modules())
    extras: list[_Extra] = []
    for s in group.producers + group.depthwise:  # a depthwise conv loses outputs with its inputs
        module = modules[s.module]
        width = getattr(module, "out_channels", getattr(module, "out_features", None))
        positions = [i for i, c in zip(s.indices, s.channels) if c in removed]
        tensors = list(module.named_parameters(recurse=False)) + list(module.named_buffers(recurse=False))
        extras += [(module, name, positions) for name, t in tensors
                   if name not in ("weight", "bias") and t is not None and t.dim() >= 1 and t.shape[0] == width]
    return extras


@torch.no_grad()
def _cut_extras(extras: Sequence[_Extra]) -> None:
    """Remove the output positions of every tensor listed by :func:`_per_output_extras`, in place."""
    for module, name, positions in extras:
        tensor = getattr(module, name)
        gone = set(positions)
        kept = torch.tensor([i for i in range(tensor.shape[0]) if i not in gone], dtype=torch.long,
                            device=tensor.device)
        narrowed = tensor.index_select(0, kept)
        if isinstance(tensor, nn.Parameter):
            module._parameters[name] = nn.Parameter(narrowed, requires_grad=tensor.requires_grad)
        else:
            module._buffers[name] = narrowed


@torch.no_grad()
def mask_channels(model: nn.Module, groups: Sequence[ChannelGroup], keep: Mapping[str, Sequence[int]]) -> None:
    """Zero, in place, every consumer's input slice of the channels not in ``keep`` (shapes unchanged)."""
    modules = dict(model.named_modules())
    for group in groups:
        if group.id not in keep:
            continue
        removed = set(removed_channels(group, keep[group.id]))
        for s in group.consumers:
            layer = modules[s.module]
            positions = [i for i, c in zip(s.indices, s.channels) if c in removed]
            _zero_inputs(layer, positions)


def _zero_inputs(layer: nn.Module, positions: Sequence[int]) -> None:
    """Zero the weights that read input channels ``positions``; a grouped conv's weight ``(C_out, C_in / G, ...)``
    holds input ``p`` at column ``p mod (C_in / G)`` of the rows of group ``p div (C_in / G)``."""
    weight = layer.weight
    groups = getattr(layer, "groups", 1)
    if groups == 1:
        weight[:, positions] = 0
        return
    per_in, per_out = layer.in_channels // groups, layer.out_channels // groups
    for p in positions:
        g = p // per_in
        weight[g * per_out:(g + 1) * per_out, p % per_in] = 0
