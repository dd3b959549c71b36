"""Filter group lasso and directed-weighting group lasso (DWGL).

``GroupLasso`` (Wen et al., "Learning Structured Sparsity in Deep Neural
Networks", NeurIPS 2016) penalises every output filter of every prunable
conv / linear layer with ``c_i = 1``:

    R_GL = lam * sum_l sum_i ||W^l_i||_2

``DWGL`` (Zhan et al., "Directed-Weighting Group Lasso for Eltwise Blocked
CNN Pruning", BMVC 2019, arXiv:1910.09318) gives the convs of every
*elementwise group* (several convs feeding one add, e.g. the stem conv and
every block's last conv of a ResNet stage) the same increasing index-wise
coefficients ``c_i`` (:mod:`lassoprune.regularizers.coefficients`):

    R_DWGL = lam * sum_l sum_{i=1..n} c_i ||W^l_i||_2

so that the soft-threshold drives the *same high indices* to zero in all of
them and the channels can be removed from the whole group. Convs outside
elementwise groups get plain group lasso (``c_i = 1``). The index ``i`` is
the group channel number (:class:`~lassoprune.channels.groups.LayerSlice`),
so every conv of a group sees the same ``c_i`` for the same channel.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from lassoprune.channels import ChannelGroup, SliceRole
from lassoprune.regularizers.base import GroupMembers, LayerTerm, Regularizer, position_coefficients
from lassoprune.regularizers.coefficients import check_schedule, coefficients


class GroupLasso(Regularizer):
    """Plain filter group lasso (``c_i = 1``) on the output filters of every prunable conv / linear.

    Args:
        model: the network (regularised in place by :meth:`prox_`).
        example_inputs: a batch such as ``torch.randn(1, 3, 32, 32)`` for the
            channel-group analysis (not needed when ``groups`` is given).
        lam: ``lam >= 0``.
        groups: precomputed channel groups of ``model`` (optional).
    """

    name = "group-lasso"

    def channel_coefficients(self, group: ChannelGroup) -> Tensor:
        """float64 ``(C,)``: ``c`` of each channel of ``group`` (all ones here)."""
        return torch.ones(group.num_channels, dtype=torch.float64)

    def _build(self) -> tuple[tuple[LayerTerm, ...], tuple[GroupMembers, ...]]:
        per_module: dict[str, list] = {}
        members = []
        for group in self.groups:
            producers = tuple(s for s in group.producers if s.role is SliceRole.OUT)
            c = self.channel_coefficients(group)
            for layer_slice in producers:
                per_module.setdefault(layer_slice.module, []).append((layer_slice, c))
            members.append(GroupMembers(group.id, group.is_eltwise, group.num_channels, producers))
        terms = []
        for name, pairs in per_module.items():
            weight = self._modules[name].weight
            dim = 1 if getattr(self._modules[name], "transposed", False) else 0
            terms.append(LayerTerm(name, dim, position_coefficients(weight, dim, pairs)))
        return tuple(terms), tuple(members)


class DWGL(GroupLasso):
    """Directed-weighting group lasso (Zhan et al. 2019); see the module docstring.

    Args:
        model, example_inputs, lam, groups: as :class:`GroupLasso`.
        schedule: ``linear`` (default), ``exp`` or ``step``
            (:func:`~lassoprune.regularizers.coefficients.coefficients`).
        alpha: ``c_n = 1 + alpha``, ``alpha >= 0`` (default 1: the last
            channel is penalised twice as hard as the first).

    Example:
        >>> reg = DWGL(model, torch.randn(1, 3, 32, 32), lam=5e-4)
        >>> loss = criterion(model(x), y)            # penalty mode: loss + reg.penalty()
        >>> loss.backward(); optimizer.step()
        >>> reg.prox_(optimizer.param_groups[0]["lr"])   # prox mode: exact zeros
    """

    name = "dwgl"

    def __init__(
        self,
        model: nn.Module,
        example_inputs: Tensor | tuple[Tensor, ...] | None,
        lam: float,
        schedule: str = "linear",
        alpha: float = 1.0,
        *,
        groups: Sequence[ChannelGroup] | None = None,
    ) -> None:
        check_schedule(schedule, alpha)
        self.schedule, self.alpha = schedule, float(alpha)
        super().__init__(model, example_inputs, lam, groups=groups)

    def channel_coefficients(self, group: ChannelGroup) -> Tensor:
        """The schedule's ``c_1..c_C`` for an elementwise group, ones for any other group."""
        if not group.is_eltwise:
            return torch.ones(group.num_channels, dtype=torch.float64)
        return coefficients(group.num_channels, self.schedule, self.alpha)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "schedule": self.schedule, "alpha": self.alpha}
