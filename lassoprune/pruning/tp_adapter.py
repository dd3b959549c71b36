"""Adapters between lassoprune criteria and Torch-Pruning importances (both ways).

- :func:`as_tp_importance` wraps a lassoprune criterion as a
  ``torch_pruning.importance.Importance``, usable as ``importance=`` of
  Torch-Pruning's pruners (``tp.pruner.MagnitudePruner``, ...).
- :func:`from_tp_importance` wraps any Torch-Pruning importance (e.g.
  ``tp.importance.GroupMagnitudeImportance()``) as a lassoprune criterion
  ``score(group, ctx)``.

Both directions translate between a Torch-Pruning group (a list of
dependencies with indices, Fang et al., "DepGraph: towards any structural
pruning", CVPR 2023) and a :class:`ChannelGroup` through the group's root layer
``tp_group[0].dep.target.module``: Torch-Pruning scores positions of the root
layer's output, lassoprune scores group channels, and the root layer's
``LayerSlice`` (``indices[k]`` carries channel ``channels[k]``) maps one to the other.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch_pruning as tp
from torch import Tensor, nn

from lassoprune.channels import ChannelGroup, LayerKind, LayerSlice, SliceRole, analyse_groups
from lassoprune.errors import LassopruneError
from lassoprune.pruning.criteria import Batch, Criterion, ScoreContext, resolve_criterion

_SCORED_KINDS = (LayerKind.CONV, LayerKind.DEPTHWISE, LayerKind.LINEAR)


class LassopruneImportance(tp.importance.Importance):
    """A lassoprune criterion seen as a Torch-Pruning importance (see :func:`as_tp_importance`).

    Calling it with a Torch-Pruning group returns one score per index of the
    group's root layer (``tp_group[0].idxs``), or ``None`` for a group that
    lassoprune does not prune (the classifier, or a group touching a layer
    the analysis ignored); Torch-Pruning's pruners skip such groups.

    The channel groups are analysed lazily on the first call and again
    whenever a parameter shape of the model changed (iterative pruning), so
    cached data passes (``taylor``) are recomputed on the pruned model.
    """

    def __init__(
        self,
        criterion: str | Criterion,
        model: nn.Module,
        example_inputs: Tensor | tuple[Tensor, ...],
        batches: Iterable[Batch] | None = None,
        seed: int = 0,
        ignored_layers: list[nn.Module] | None = None,
    ) -> None:
        self.criterion = resolve_criterion(criterion)
        self.model = model
        self.example_inputs = example_inputs
        self.batches = None if batches is None else tuple(batches)
        self.seed = seed
        self.ignored_layers = list(ignored_layers or ())
        if self.criterion.needs_data and not self.batches:
            raise LassopruneError(
                f"criterion {self.criterion.name!r} needs calibration data: pass batches=[(x, y), ...]"
            )
        self._signature: tuple[tuple[int, ...], ...] | None = None
        self._roots: dict[nn.Module, tuple[ChannelGroup, LayerSlice]] = {}
        self._ctx: ScoreContext | None = None

    def __call__(self, group: Any) -> Tensor | None:
        """Scores ``(len(group[0].idxs),)`` for the root positions ``group[0].idxs``, or ``None``.

        Torch-Pruning's pruners call importances under ``torch.no_grad()``;
        tracing and data criteria need autograd, so it is switched back on here.
        """
        with torch.enable_grad():
            return self._score(group)

    def _score(self, group: Any) -> Tensor | None:
        self._refresh()
        found = self._roots.get(group[0].dep.target.module)
        if found is None or self._ctx is None:
            return None
        ours, root_slice = found
        scores = self.criterion(ours, self._ctx).detach()
        channel_of = dict(zip(root_slice.indices, root_slice.channels, strict=True))
        try:
            channels = [channel_of[int(i)] for i in group[0].idxs]
        except KeyError:
            return None  # positions outside the analysed group: the model changed under us
        return scores.index_select(0, torch.as_tensor(channels, device=scores.device)).float()

    def _refresh(self) -> None:
        signature = tuple(tuple(p.shape) for p in self.model.parameters())
        if signature == self._signature:
            return
        analysis = analyse_groups(self.model, self.example_inputs, self.ignored_layers)
        modules = dict(self.model.named_modules())
        self._roots = {
            modules[s.module]: (g, s)
            for g in analysis.groups
            for s in g.producers + g.depthwise
            if s.role is SliceRole.OUT and s.kind in _SCORED_KINDS
        }
        self._ctx = ScoreContext.build(
            self.model, self.batches, seed=self.seed, example_inputs=self.example_inputs, graph=analysis.graph
        )
        self._signature = signature


def as_tp_importance(
    method: str | Criterion,
    model: nn.Module,
    example_inputs: Tensor | tuple[Tensor, ...],
    batches: Iterable[Batch] | None = None,
    seed: int = 0,
    ignored_layers: list[nn.Module] | None = None,
) -> LassopruneImportance:
    """A lassoprune criterion as ``importance=`` for Torch-Pruning's pruners.

    Example::

        imp = as_tp_importance("l1", model, x)
        pruner = tp.pruner.MagnitudePruner(model, x, importance=imp, pruning_ratio=0.5, ignored_layers=[model.fc])
        pruner.step()

    Args:
        method: a registered criterion name or a callable ``score(group, ctx)``.
        model: the model the pruner prunes (the same object).
        example_inputs: an input batch for tracing, e.g. ``torch.randn(1, 3, 32, 32)``.
        batches: calibration batches ``(x, y)`` for data criteria.
        seed: seed of random criteria.
        ignored_layers: layers whose groups are never scored (scored ``None``).

    Raises:
        UnknownNameError: ``method`` is not a registered criterion.
        LassopruneError: a data criterion without batches.
    """
    return LassopruneImportance(method, model, example_inputs, batches, seed, ignored_layers)


def from_tp_importance(importance: Any, name: str | None = None) -> Criterion:
    """A Torch-Pruning importance as a lassoprune criterion ``score(group, ctx)``.

    The criterion asks the context's dependency graph (``ctx.graph``, else one
    built once per context from ``ctx.example_inputs`` or the first
    calibration image) for the full Torch-Pruning group of ``group``'s root
    layer, ``graph.get_pruning_group(root, root_fn, range(C))``, calls
    ``importance`` on it and returns the scores in group-channel order.
    The scores are returned as Torch-Pruning computes them (normalised or
    not, as the importance is configured); gradient-based importances
    (``tp.importance.TaylorImportance``) read ``.grad``, which the caller fills.

    Args:
        importance: any ``torch_pruning.importance.Importance`` (a callable on a group).
        name: the criterion's name in messages (default ``tp:<class name>``).

    Returns:
        ``score(group, ctx) -> (C,)`` float32.
    """
    label = name or f"tp:{type(importance).__name__}"

    def score(group: ChannelGroup, ctx: ScoreContext) -> Tensor:
        graph = tp_graph(ctx)
        root = ctx.modules[group.id]
        pruner = graph.get_pruner_of_module(root)
        if pruner is None:
            raise LassopruneError(f"Torch-Pruning has no pruner for layer {group.id!r} ({type(root).__name__})")
        tp_group = graph.get_pruning_group(root, pruner.prune_out_channels, list(range(group.num_channels)))
        scores = importance(tp_group)
        if scores is None:
            raise LassopruneError(f"{label} returned no scores for group {group.id!r}")
        scores = torch.as_tensor(scores).detach().float()
        return _to_channel_order(scores, group)

    score.__name__ = label
    score.__qualname__ = label
    return score


def tp_graph(ctx: ScoreContext) -> Any:
    """The context's ``torch_pruning.DependencyGraph``: ``ctx.graph``, else built once and cached.

    Raises:
        LassopruneError: neither ``example_inputs`` nor calibration batches to trace with.
    """
    if ctx.graph is not None:
        return ctx.graph
    return ctx.cached("tp_graph", lambda: _build_graph(ctx))


def _build_graph(ctx: ScoreContext) -> Any:
    example = ctx.example_inputs
    if example is None and ctx.batches:
        example = ctx.batches[0][0][:1]
    if example is None:
        raise LassopruneError(
            "a Torch-Pruning importance needs the dependency graph: pass example_inputs "
            "(e.g. torch.randn(1, 3, 32, 32)) or calibration batches"
        )
    if isinstance(example, Tensor):
        example = example.to(ctx.device)
    was_training = ctx.model.training
    ctx.model.eval()  # tracing runs a forward pass; keep BN running statistics untouched
    try:
        with torch.enable_grad():  # Torch-Pruning traces through autograd
            return tp.DependencyGraph().build_dependency(ctx.model, example_inputs=example)
    finally:
        ctx.model.train(was_training)


def _to_channel_order(scores: Tensor, group: ChannelGroup) -> Tensor:
    """Reorder root-position scores to group-channel order via the root layer's slice."""
    root_slice = next(
        (s for s in group.producers + group.depthwise if s.module == group.id and s.role is SliceRole.OUT), None
    )
    if root_slice is None or list(root_slice.indices) == list(root_slice.channels):
        return scores
    out = torch.zeros_like(scores)
    out[torch.as_tensor(root_slice.channels)] = scores[torch.as_tensor(root_slice.indices)]
    return out
