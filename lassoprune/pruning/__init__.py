"""The pruning engine: channel groups, importance criteria, allocation, surgery and ``prune``.

Layout (one concern per module):

- ``groups``: coupled channel groups from Torch-Pruning's dependency graph
- ``norms``: the one group-norm implementation (criteria and regularisers)
- ``criteria``: importance criteria registry (``l1``, ``l2``, ``bn-scale``, ``taylor``, ``random``)
- ``tp_adapter``: criteria <-> Torch-Pruning importances
- ``cost``: MACs / params of a keep-configuration without pruning a copy
- ``allocation``: per-group widths for a MACs / params target (``uniform``, ``global``)
- ``surgery``: physical removal (Torch-Pruning) and the masking reference
- ``api``: :func:`prune`
- ``voting``: ``dwgl-vote``, channels voted out by every conv of a group (after DWGL sparse training)
"""

from lassoprune.pruning.allocation import ALLOCATIONS, Target, allocate
from lassoprune.pruning.api import (
    KeepSelector,
    PruneResult,
    Selection,
    SelectionContext,
    list_methods,
    prune,
    register_selector,
)
from lassoprune.pruning.cost import CostModel
from lassoprune.pruning.criteria import (
    ScoreContext,
    get_criterion,
    list_criteria,
    register_criterion,
    score_groups,
)
from lassoprune.pruning.groups import ChannelGroup, GroupAnalysis, LayerSlice, analyse_groups, channel_groups
from lassoprune.pruning.norms import filter_norms, group_norms, input_norms, slice_norms
from lassoprune.pruning.surgery import mask_channels, remove_channels
from lassoprune.pruning.tp_adapter import as_tp_importance, from_tp_importance
from lassoprune.pruning import lasso_methods  # registers sglp-ib, stlp-ib, hsic-ib, class-lasso
from lassoprune.pruning import voting  # registers the dwgl-vote selector

__all__ = [
    "ALLOCATIONS",
    "ChannelGroup",
    "CostModel",
    "GroupAnalysis",
    "KeepSelector",
    "LayerSlice",
    "PruneResult",
    "ScoreContext",
    "Selection",
    "SelectionContext",
    "Target",
    "allocate",
    "analyse_groups",
    "as_tp_importance",
    "channel_groups",
    "filter_norms",
    "from_tp_importance",
    "get_criterion",
    "group_norms",
    "input_norms",
    "list_criteria",
    "list_methods",
    "mask_channels",
    "prune",
    "register_criterion",
    "register_selector",
    "remove_channels",
    "score_groups",
    "slice_norms",
]
