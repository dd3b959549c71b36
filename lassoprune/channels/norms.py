"""Group norms: the one implementation of per-channel (group) weight norms.

The magnitude criteria (:mod:`lassoprune.pruning.methods.magnitude`) and the sparse
training regularisers (group lasso) both need, for every channel ``c`` of a
channel group, the norm of *all* weights that belong to it. With ``W_c^(L)``
the slice of member layer ``L`` that carries channel ``c``,

    ||W_c||_p = ( sum_L  sum_{w in W_c^(L)} |w|^p )^(1/p)

i.e. the p-norm of the concatenated group filter. For ``p = 1`` this is the
sum of the members' L1 norms, for ``p = 2`` the square root of the sum of the
squared L2 norms (the group-lasso penalty of Yuan & Lin 2006, used for
structured sparsity by Wen et al., "Learning structured sparsity in deep
neural networks", NeurIPS 2016).

Everything here is differentiable (nothing is detached), so a regulariser can
add ``group_norms(...).sum()`` to its loss. The root ``x^(1/p)`` is taken with
a zero gradient at ``x = 0`` (the usual subgradient choice of
``torch.linalg.vector_norm``) so that an all-zero channel gives no NaN.
Biases are never part of a filter's norm (as in Li et al. 2017).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from lassoprune.channels.groups import ChannelGroup, LayerKind, LayerSlice, SliceRole
from lassoprune.errors import LassopruneError, UnknownNameError

MEMBERS = ("producers", "consumers", "norms", "depthwise")
"""The member kinds of a :class:`ChannelGroup` that :func:`group_norms` can aggregate."""


def filter_norms(weight: Tensor, p: float = 2, dim: int = 0) -> Tensor:
    """The p-norm of every slice of ``weight`` along ``dim``.

    Args:
        weight: a conv weight ``(O, I, kh, kw)`` or a linear weight ``(O, I)``
            (any shape with at least one dimension).
        p: the norm degree, ``p > 0``.
        dim: the dimension that indexes the filters (0: output filters).

    Returns:
        ``(weight.shape[dim],)``: ``n_j = ||weight.select(dim, j)||_p``.
    """
    _check_p(p)
    slices = weight.movedim(dim, 0).reshape(weight.shape[dim], -1)
    return torch.linalg.vector_norm(slices, ord=p, dim=1)


def input_norms(weight: Tensor, p: float = 2, groups: int = 1) -> Tensor:
    """The p-norm of the weights reading each input channel / feature.

    Args:
        weight: ``(O, I / groups, kh, kw)`` or ``(O, I)``.
        p: the norm degree, ``p > 0``.
        groups: the conv's ``groups``; input channel ``i`` is read by the
            ``O / groups`` filters of group ``i // (I / groups)`` only.

    Returns:
        ``(I,)``: ``n_i = ||weight[:, i]||_p`` (for ``groups = 1``).
    """
    _check_p(p)
    return _root(_input_power_sums(weight, p, groups), p)


def slice_norms(module: nn.Module, layer_slice: LayerSlice, p: float = 2, num_channels: int | None = None) -> Tensor:
    """The norms of one member layer's positions, in group-channel order.

    Position ``layer_slice.indices[k]`` of the layer carries group channel
    ``layer_slice.channels[k]``; positions that carry the same channel (a
    flattened feature map read by a linear layer) are pooled into one norm.

    ===========  ===========================  ==============================
    kind         role ``out``                 role ``in``
    ===========  ===========================  ==============================
    conv         output filter ``W[o]``       input slice ``W[:, i]``
    depthwise    the channel's filter ``W[c]``  (same)
    linear       row ``W[o]``                 column ``W[:, i]``
    norm         ``|gamma_c|``                (same)
    ===========  ===========================  ==============================

    A norm layer without affine weight, and any ``other`` layer, contributes zeros.

    Args:
        module: the layer named by ``layer_slice.module``.
        layer_slice: the group's slice of that layer.
        p: the norm degree, ``p > 0``.
        num_channels: C, the group's channel count (default: ``max(channels) + 1``).

    Returns:
        ``(C,)``: the norm of each group channel's part of this layer.
    """
    return _root(slice_power_sums(module, layer_slice, p, num_channels), p)


def slice_power_sums(
    module: nn.Module, layer_slice: LayerSlice, p: float = 2, num_channels: int | None = None
) -> Tensor:
    """``sum |w|^p`` over each group channel's part of one layer, ``(C,)`` (see :func:`slice_norms`)."""
    _check_p(p)
    size = num_channels if num_channels is not None else max(layer_slice.channels, default=-1) + 1
    per_position = _position_power_sums(module, layer_slice, p)
    out = per_position.new_zeros(size)
    if per_position.numel() == 0:
        return out
    if max(layer_slice.indices, default=-1) >= per_position.numel():
        raise LassopruneError(
            f"the group's slice of layer {layer_slice.module!r} names position {max(layer_slice.indices)}, but the "
            f"layer has {per_position.numel()} {layer_slice.role} channels; were the groups computed on a different "
            "model (analyse the model you score)?"
        )
    index = torch.as_tensor(layer_slice.indices, device=per_position.device)
    channels = torch.as_tensor(layer_slice.channels, device=per_position.device)
    return out.index_add(0, channels, per_position.index_select(0, index))


def group_norms(
    modules: Mapping[str, nn.Module],
    group: ChannelGroup,
    p: float = 2,
    include: Sequence[str] = ("producers",),
) -> Tensor:
    """The p-norm of each channel's concatenated group filter.

    ``n_c = ( sum_{L in members} sum_{w in W_c^(L)} |w|^p )^(1/p)``: for
    ``p = 1`` the sum of the members' L1 norms, for ``p = 2``
    ``sqrt(sum_L ||W_c^(L)||_2^2)``.

    Args:
        modules: qualified name -> module (``dict(model.named_modules())``).
        group: the channel group.
        p: the norm degree, ``p > 0``.
        include: which members to aggregate, any of ``producers``,
            ``consumers``, ``norms``, ``depthwise``. A layer that appears with
            two roles (a depthwise conv) is counted once per role.

    Returns:
        ``(C,)`` with ``C = group.num_channels``; differentiable w.r.t. the weights.

    Raises:
        UnknownNameError: an entry of ``include`` is not a member kind.
    """
    total = group_power_sums(modules, group, p, include)
    return _root(total, p)


def group_power_sums(
    modules: Mapping[str, nn.Module],
    group: ChannelGroup,
    p: float = 2,
    include: Sequence[str] = ("producers",),
) -> Tensor:
    """``sum |w|^p`` over each channel's group filter, ``(C,)`` (``group_norms ** p``)."""
    _check_p(p)
    for kind in include:
        if kind not in MEMBERS:
            raise UnknownNameError("group member", kind, MEMBERS)
    slices = [s for kind in dict.fromkeys(include) for s in getattr(group, kind)]
    parts = [slice_power_sums(_module(modules, s.module), s, p, group.num_channels) for s in slices]
    if not parts:
        return torch.zeros(group.num_channels)
    return torch.stack([part.to(parts[0].device) for part in parts]).sum(0)


def _position_power_sums(module: nn.Module, layer_slice: LayerSlice, p: float) -> Tensor:
    """``sum |w|^p`` of every position of the layer's sliced dimension (all positions)."""
    weight = getattr(module, "weight", None)
    if not isinstance(weight, Tensor):
        return torch.zeros(0)
    kind = layer_slice.kind
    if kind is LayerKind.NORM:
        return weight.abs().pow(p).reshape(weight.shape[0], -1).sum(1)
    if kind is LayerKind.DEPTHWISE:
        return _power_sums(weight, p, _out_dim(module))
    if kind in (LayerKind.CONV, LayerKind.LINEAR):
        if layer_slice.role is SliceRole.OUT:
            return _power_sums(weight, p, _out_dim(module))
        if getattr(module, "transposed", False):
            return _power_sums(weight, p, 0)
        return _input_power_sums(weight, p, getattr(module, "groups", 1))
    return torch.zeros(0)


def _input_power_sums(weight: Tensor, p: float, groups: int = 1) -> Tensor:
    if groups == 1:
        return _power_sums(weight, p, 1)
    out_per_group = weight.shape[0] // groups
    per_filter = weight.abs().pow(p).reshape(groups, out_per_group, weight.shape[1], -1).sum(dim=(1, 3))
    return per_filter.reshape(-1)  # (groups * I/groups,) = (I,)


def _power_sums(weight: Tensor, p: float, dim: int) -> Tensor:
    return weight.abs().pow(p).movedim(dim, 0).reshape(weight.shape[dim], -1).sum(1)


def _out_dim(module: nn.Module) -> int:
    return 1 if getattr(module, "transposed", False) else 0


def _root(x: Tensor, p: float) -> Tensor:
    """``x^(1/p)`` with gradient 0 (not inf / NaN) where ``x = 0``."""
    if p == 1:
        return x
    positive = x > 0
    safe = torch.where(positive, x, torch.ones_like(x))
    return torch.where(positive, safe.pow(1.0 / p), torch.zeros_like(x))


def _module(modules: Mapping[str, nn.Module], name: str) -> nn.Module:
    try:
        return modules[name]
    except KeyError:
        raise LassopruneError(
            f"the group names layer {name!r}, which the model does not have; "
            "were the groups computed on a different model?"
        ) from None


def _check_p(p: float) -> None:
    if not (p > 0 and p != float("inf")):
        raise LassopruneError(f"the norm degree p must be a positive finite number, got {p}")
