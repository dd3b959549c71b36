"""BN-L1: network slimming (Liu et al., "Learning Efficient Convolutional Networks
through Network Slimming", ICCV 2017).

    R_BN = lam * sum_l sum_i |gamma^l_i|

over the BatchNorm scales of every prunable channel group. Its proximal step
is the scalar soft-threshold ``gamma_i <- sign(gamma_i) max(0, |gamma_i| - lr * lam)``,
the group soft-threshold of :mod:`lassoprune.regularizers.base` with groups
of one element, so ``BNL1`` is that machinery with ``c_i = 1`` on the BN
scales (BN shifts are not penalised).
"""

from __future__ import annotations

import torch
from torch import Tensor

from lassoprune.regularizers.base import GroupMembers, LayerTerm, Regularizer, position_coefficients


class BNL1(Regularizer):
    """L1 on the BatchNorm scales ``gamma`` of every prunable group (network slimming).

    Args:
        model: the network.
        example_inputs: a batch for the channel-group analysis (not needed
            when ``groups`` is given).
        lam: ``lam >= 0``.
        groups: precomputed channel groups of ``model`` (optional).
    """

    name = "bn-l1"

    def _build(self) -> tuple[tuple[LayerTerm, ...], tuple[GroupMembers, ...]]:
        terms, members, seen = [], [], set()
        for group in self.groups:
            norms = tuple(
                s for s in group.norms if isinstance(getattr(self._modules[s.module], "weight", None), Tensor)
            )
            members.append(GroupMembers(group.id, group.is_eltwise, group.num_channels, norms))
            for layer_slice in norms:
                if layer_slice.module in seen:
                    continue
                seen.add(layer_slice.module)
                gamma = self._modules[layer_slice.module].weight
                ones = torch.ones(group.num_channels, dtype=torch.float64)
                terms.append(LayerTerm(layer_slice.module, 0, position_coefficients(gamma, 0, [(layer_slice, ones)])))
        return tuple(terms), tuple(members)
