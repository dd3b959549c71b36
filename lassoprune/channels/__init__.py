"""The base layer every other layer reads: channel groups, their norms, the cost model and the target.

- ``groups``: coupled channel groups from Torch-Pruning's dependency graph
  (:class:`ChannelGroup`, :class:`LayerSlice` with :class:`LayerKind` and :class:`SliceRole`)
- ``outputs``: the layers that produce the network's outputs (never pruned)
- ``norms``: the one group-norm implementation (criteria, votes and regularisers)
- ``cost``: MACs / params of a keep configuration without pruning a copy
- ``target``: :class:`Target`, a fraction of the original MACs or params

:mod:`lassoprune.hsic`, :mod:`lassoprune.regularizers`, :mod:`lassoprune.pruning`
and :mod:`lassoprune.report` import this package; it imports none of them.
"""

from lassoprune.channels.cost import CostModel
from lassoprune.channels.groups import (
    ChannelGroup,
    GroupAnalysis,
    LayerKind,
    LayerSlice,
    SliceRole,
    analyse_groups,
    channel_groups,
    layer_kind,
)
from lassoprune.channels.norms import (
    filter_norms,
    group_norms,
    group_power_sums,
    input_norms,
    slice_norms,
    slice_power_sums,
)
from lassoprune.channels.outputs import first_output_producer, flatten_outputs, output_producers
from lassoprune.channels.target import CostKind, Target

__all__ = [
    "ChannelGroup",
    "CostKind",
    "CostModel",
    "GroupAnalysis",
    "LayerKind",
    "LayerSlice",
    "SliceRole",
    "Target",
    "analyse_groups",
    "channel_groups",
    "filter_norms",
    "first_output_producer",
    "flatten_outputs",
    "group_norms",
    "group_power_sums",
    "input_norms",
    "layer_kind",
    "output_producers",
    "slice_norms",
    "slice_power_sums",
]
