"""The shared machinery of the sparse-training regularisers: weighted group lasso on layer slices.

Every regulariser of this package is a *weighted group lasso* over the
output slices of some layers (conv filters for group lasso / DWGL, single
BatchNorm scales for BN-L1):

    R(W) = lam * sum_L sum_i c^L_i ||W^L_i||_2                          (1)

with ``W^L_i`` the ``i``-th slice of layer ``L`` along its output dimension
and ``c^L_i >= 0`` fixed coefficients (``c = 1``: plain group lasso, Yuan &
Lin 2006; Wen et al. 2016). It is used in one of two ways:

``penalty()``  the differentiable term (1), added to the training loss
               (subgradient 0 at ``W_i = 0``, see :mod:`lassoprune.channels.norms`);
``prox_(lr)``  after the optimiser step, the proximal operator of
               ``lr * R``, i.e. the exact minimiser of
               ``1/2 ||V - W||^2 + lr * R(V)`` over ``V``, which separates
               into the *group soft-threshold* of every slice:

                   W_i <- W_i * max(0, 1 - t_i / ||W_i||_2),   t_i = lr * lam * c_i     (2)

               Slices with ``||W_i|| <= t_i`` become exactly zero (proximal
               gradient descent; Parikh & Boyd, "Proximal Algorithms", 2014, Sec. 6.5.4).

The norms are those of :func:`lassoprune.channels.norms.filter_norms` (the one
group-norm implementation shared with the importance criteria).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from lassoprune.channels.groups import ChannelGroup, LayerSlice, channel_groups
from lassoprune.channels.norms import filter_norms, slice_power_sums
from lassoprune.errors import LassopruneError


@dataclass(frozen=True)
class LayerTerm:
    """The weighted group lasso of one layer: ``lam * sum_i coefficients[i] ||W_i||_2``.

    Attributes:
        module: qualified module name.
        dim: the dimension of ``module.weight`` that indexes the slices (0, or 1
            for a transposed conv).
        coefficients: float32 ``(O,)``, ``c_i`` of every position ``i`` of that
            dimension (0 for positions outside every group: not penalised).
    """

    module: str
    dim: int
    coefficients: Tensor


@dataclass(frozen=True)
class GroupMembers:
    """The regularised slices of one channel group (for the sparsity report).

    Attributes:
        group: the channel group id.
        eltwise: the group is fed by several convs (an elementwise add).
        num_channels: C.
        slices: the member slices whose zeros are reported.
    """

    group: str
    eltwise: bool
    num_channels: int
    slices: tuple[LayerSlice, ...]


def group_soft_threshold_(weight: Tensor, thresholds: Tensor, dim: int = 0) -> Tensor:
    """Apply the group soft-threshold (2) to every slice of ``weight`` along ``dim``, in place.

    ``W_i <- W_i * max(0, 1 - t_i / ||W_i||_2)``: the exact minimiser of
    ``1/2 ||V_i - W_i||_2^2 + t_i ||V_i||_2`` (a slice of one element is
    the scalar soft-threshold ``sign(w) max(0, |w| - t)``).

    Args:
        weight: any tensor, e.g. a conv weight ``(O, I, kh, kw)`` or a BN scale ``(C,)``.
        thresholds: ``(weight.shape[dim],)``, ``t_i >= 0``.
        dim: the slice dimension.

    Returns:
        ``weight`` (modified in place).
    """
    with torch.no_grad():
        norms = filter_norms(weight, 2, dim)
        t = thresholds.to(device=norms.device, dtype=norms.dtype)
        scale = torch.where(norms > t, 1.0 - t / norms.clamp_min(torch.finfo(norms.dtype).tiny), 0.0)
        shape = [1] * weight.dim()
        shape[dim] = -1
        weight.mul_(scale.reshape(shape).to(weight.dtype))
    return weight


def check_lam(lam: float) -> float:
    """``lam`` as a float, or a clear error when it is negative or not finite."""
    try:
        value = float(lam)
    except (TypeError, ValueError):
        raise LassopruneError(f"lam must be a number >= 0, got {lam!r}") from None
    if not (value >= 0 and math.isfinite(value)):
        raise LassopruneError(f"lam must be a finite number >= 0, got {lam!r}")
    return value


def analysed_groups(
    model: nn.Module,
    example_inputs: Tensor | tuple[Tensor, ...] | None,
    groups: Sequence[ChannelGroup] | None,
) -> tuple[ChannelGroup, ...]:
    """The channel groups to regularise: ``groups`` when given, else traced from ``example_inputs``."""
    if groups is not None:
        return tuple(groups)
    if example_inputs is None:
        raise LassopruneError("give example_inputs (e.g. torch.randn(1, 3, 32, 32)) or the channel groups")
    return channel_groups(model, example_inputs)


def position_coefficients(weight: Tensor, dim: int, members: Iterable[tuple[LayerSlice, Tensor]]) -> Tensor:
    """``(weight.shape[dim],)`` float32: ``c`` of each position, from (slice, per-channel ``c``) pairs.

    Position ``slice.indices[k]`` gets ``c[slice.channels[k]]``; positions of
    no slice get 0.
    """
    out = torch.zeros(weight.shape[dim], dtype=torch.float32)
    for layer_slice, channel_coefficients in members:
        index = torch.as_tensor(layer_slice.indices, dtype=torch.long)
        channels = torch.as_tensor(layer_slice.channels, dtype=torch.long)
        out[index] = channel_coefficients.to(torch.float32)[channels]
    return out


class Regularizer(ABC):
    """A weighted group lasso (1) over :class:`LayerTerm` records; see the module docstring.

    Subclasses build the terms (:meth:`_build`) and name themselves (``name``,
    :meth:`config`). Parameters are looked up by module name on every call,
    so the regulariser follows the model across ``model.to(device)``.
    """

    name: str = ""

    def __init__(
        self,
        model: nn.Module,
        example_inputs: Tensor | tuple[Tensor, ...] | None,
        lam: float,
        *,
        groups: Sequence[ChannelGroup] | None = None,
    ) -> None:
        """Args: the network, a batch for the channel-group analysis (not needed
        when ``groups`` is given), ``lam >= 0``, precomputed channel groups."""
        self.groups = analysed_groups(model, example_inputs, groups)
        self.model = model
        self.lam = check_lam(lam)
        self._modules = dict(model.named_modules())
        self.terms, self.members = self._build()
        self._cache: dict[tuple[str, torch.device, torch.dtype], Tensor] = {}

    @abstractmethod
    def _build(self) -> tuple[tuple[LayerTerm, ...], tuple[GroupMembers, ...]]:
        """The layer terms and the per-group members of this regulariser."""

    def config(self) -> dict[str, Any]:
        """JSON-safe settings (stored in model files and run directories)."""
        return {"reg": self.name, "lam": self.lam}

    def penalty(self) -> Tensor:
        """``lam * sum_L sum_i c^L_i ||W^L_i||_2``, a differentiable scalar (0-dim tensor)."""
        parts = [
            (self.term_coefficients(term, weight) * filter_norms(weight, 2, term.dim)).sum()
            for term, weight in self.weighted_terms()
        ]
        if not parts:
            return torch.zeros(())
        return self.lam * torch.stack([p.to(parts[0].device) for p in parts]).sum()

    def prox_(self, lr: float) -> None:
        """The proximal step of ``lr * R`` (group soft-threshold (2) of every slice), in place."""
        if self.lam == 0 or lr == 0:
            return
        for term, weight in self.weighted_terms():
            group_soft_threshold_(weight.data, lr * self.lam * self.term_coefficients(term, weight), term.dim)

    def coefficients(self) -> dict[str, Tensor]:
        """module name -> ``(O,)`` coefficients ``c_i`` of its slices (0: not regularised)."""
        return {term.module: term.coefficients.clone() for term in self.terms}

    def sparsity(self) -> dict[str, dict[str, Any]]:
        """Exact zeros per group: each member's zero channels, their intersection and union.

        Returns:
            group id -> ``{"eltwise", "channels", "zero": {module: [channel, ...]},
            "intersection": n, "union": n}`` (channels in group order).
        """
        report = {}
        for members in self.members:
            zero = {s.module: _zero_channels(self._modules[s.module], s, members.num_channels) for s in members.slices}
            sets = [set(z) for z in zero.values()]
            report[members.group] = {
                "eltwise": members.eltwise,
                "channels": members.num_channels,
                "zero": zero,
                "intersection": len(set.intersection(*sets)) if sets else 0,
                "union": len(set.union(*sets)) if sets else 0,
            }
        return report

    def weighted_terms(self) -> list[tuple[LayerTerm, Tensor]]:
        """Every term with the current weight tensor of its module (terms of weight-less modules skipped)."""
        out = []
        for term in self.terms:
            weight = getattr(self._modules[term.module], "weight", None)
            if isinstance(weight, Tensor):
                out.append((term, weight))
        return out

    def term_coefficients(self, term: LayerTerm, weight: Tensor) -> Tensor:
        """``term.coefficients`` on ``weight``'s device and dtype (cached)."""
        key = (term.module, weight.device, weight.dtype)
        if key not in self._cache:
            self._cache[key] = term.coefficients.to(device=weight.device, dtype=weight.dtype)
        return self._cache[key]


def _zero_channels(module: nn.Module, layer_slice: LayerSlice, num_channels: int) -> list[int]:
    """Group channels whose slice of ``module`` is exactly zero."""
    with torch.no_grad():
        power = slice_power_sums(module, layer_slice, 2, num_channels)
    present = set(layer_slice.channels)
    return [c for c in range(num_channels) if c in present and power[c].item() == 0.0]
