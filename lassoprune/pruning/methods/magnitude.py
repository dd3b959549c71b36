"""Magnitude criteria: ``l1``, ``l2`` and ``bn-scale`` (weights only, no data).

- ``l1``: ``s_c = sum_{producers L} ||W_c^(L)||_1`` (Li et al., "Pruning filters
  for efficient ConvNets", ICLR 2017).
- ``l2``: ``s_c = sqrt(sum_{producers L} ||W_c^(L)||_2^2)``.
- ``bn-scale``: ``s_c = sum_{norm layers B} |gamma_c^(B)|`` (Liu et al.,
  "Learning efficient convolutional networks through network slimming",
  ICCV 2017).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lassoprune.channels import ChannelGroup, group_norms, group_power_sums
from lassoprune.pruning.criteria import ScoreContext, register_criterion


@register_criterion("l1", summary="sum of |weights| of each filter (Li et al. 2017)")
def l1_score(group: ChannelGroup, ctx: ScoreContext) -> Tensor:
    """``s_c = sum_{producers L} ||W_c^(L)||_1``, ``W_c^(L)`` the output filter ``c`` of ``L``.

    Li et al., "Pruning filters for efficient ConvNets", ICLR 2017; for an
    elementwise (residual) group the filters of all producing convs are summed.
    Biases are not included.
    """
    with torch.no_grad():
        return group_norms(ctx.modules, group, p=1, include=("producers",))


@register_criterion("l2", summary="L2 norm of each filter")
def l2_score(group: ChannelGroup, ctx: ScoreContext) -> Tensor:
    """``s_c = sqrt(sum_{producers L} ||W_c^(L)||_2^2)``: the L2 norm of the concatenated group filter."""
    with torch.no_grad():
        return group_norms(ctx.modules, group, p=2, include=("producers",))


@register_criterion("bn-scale", summary="|BatchNorm gamma| (network slimming, Liu et al. 2017)")
def bn_scale_score(group: ChannelGroup, ctx: ScoreContext) -> Tensor:
    """``s_c = sum_{norm layers B of the group} |gamma_c^(B)|`` (network slimming).

    Liu et al., "Learning efficient convolutional networks through network
    slimming", ICCV 2017. A group with no affine norm layer (e.g. the
    fully connected layers of VGG's classifier) falls back to ``l2``.
    """
    if not any(_has_affine_weight(ctx.modules[s.module]) for s in group.norms):
        return l2_score(group, ctx)
    with torch.no_grad():
        return group_power_sums(ctx.modules, group, p=1, include=("norms",))


def _has_affine_weight(module: nn.Module) -> bool:
    return isinstance(getattr(module, "weight", None), Tensor)
