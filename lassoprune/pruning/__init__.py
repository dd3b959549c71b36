"""The pruning engine: methods as plug-ins over one target search, allocation, surgery and ``prune``.

Layout (one concern per module; channel groups, norms, the cost model and the
target live one layer down, in :mod:`lassoprune.channels`):

- ``method``: :class:`MethodSpec`, the one method registry (:func:`register_method`, :func:`list_methods`),
  options (:class:`MethodOptions`, :class:`ExperimentalOptions`) and typed :class:`Diagnostics`
- ``methods/``: one module per method family; every module there registers itself
- ``criteria``: score-only methods (:func:`register_criterion`) and the scoring context
- ``search``: the one target search (a path over a strength and its bisection, greedy width walk, floors, rounding)
- ``lasso_search``: the lasso methods' route over that path (drop / add fix-ups, rounded widths)
- ``allocation``: scores -> per-group widths (``global``, ``uniform``)
- ``surgery``: physical removal (Torch-Pruning) and the masking reference
- ``tp_adapter``: criteria <-> Torch-Pruning importances
- ``settings``: :class:`PruneSettings`, the one description of a prune (API, CLI, run config, benchmarks)
- ``post_cut``: :func:`after_cut`, reconstruction + BatchNorm re-estimation + one-shot metrics
- ``api``: :func:`prune` / :func:`prune_with`, the one prune path
- ``iterative``: :func:`prune_iteratively`, that path in steps on a geometric schedule, fine-tuning between cuts
"""

from lassoprune.channels import (
    ChannelGroup,
    CostModel,
    GroupAnalysis,
    LayerSlice,
    Target,
    analyse_groups,
    channel_groups,
    filter_norms,
    group_norms,
    input_norms,
    slice_norms,
)
from lassoprune.pruning.allocation import ALLOCATIONS, allocate
from lassoprune.pruning.api import PruneResult, prune, prune_with
from lassoprune.pruning.iterative import IterativeResult, StepRecord, geometric_schedule, prune_iteratively
from lassoprune.pruning.post_cut import PostCut, after_cut
from lassoprune.pruning.settings import AUTO_ROUND_TO, PruneSettings
from lassoprune.pruning.criteria import (
    ScoreContext,
    get_criterion,
    list_criteria,
    register_criterion,
    score_groups,
)
from lassoprune.pruning.method import (
    METHODS,
    ClassStructureRecord,
    Diagnostics,
    ExperimentalOptions,
    GroupDiagnostics,
    MethodContext,
    MethodOptions,
    MethodSpec,
    NoOptions,
    Selection,
    TargetUse,
    describe_methods,
    get_method,
    list_methods,
    register_method,
)
from lassoprune.pruning.search import SearchRecord
from lassoprune.pruning.surgery import mask_channels, remove_channels
from lassoprune.pruning.tp_adapter import as_tp_importance, from_tp_importance
from lassoprune.pruning import methods  # noqa: F401  (registers every built-in method)

__all__ = [
    "ALLOCATIONS",
    "AUTO_ROUND_TO",
    "METHODS",
    "ChannelGroup",
    "ClassStructureRecord",
    "CostModel",
    "Diagnostics",
    "ExperimentalOptions",
    "GroupAnalysis",
    "GroupDiagnostics",
    "IterativeResult",
    "LayerSlice",
    "MethodContext",
    "MethodOptions",
    "MethodSpec",
    "NoOptions",
    "PostCut",
    "PruneResult",
    "PruneSettings",
    "ScoreContext",
    "SearchRecord",
    "Selection",
    "StepRecord",
    "Target",
    "TargetUse",
    "after_cut",
    "allocate",
    "analyse_groups",
    "as_tp_importance",
    "channel_groups",
    "describe_methods",
    "filter_norms",
    "from_tp_importance",
    "geometric_schedule",
    "get_criterion",
    "get_method",
    "group_norms",
    "input_norms",
    "list_criteria",
    "list_methods",
    "mask_channels",
    "prune",
    "prune_iteratively",
    "prune_with",
    "register_criterion",
    "register_method",
    "remove_channels",
    "score_groups",
    "slice_norms",
]
