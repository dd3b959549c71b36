"""Allocation: how many channels each group keeps, from per-channel scores, to land on a target.

Two strategies (the ``allocation`` registry) read the same scores (one tensor
per group, higher = more important) and the same cost model:

- ``uniform``: every group keeps the same fraction q of its channels; q is
  bisected (:func:`~lassoprune.pruning.search.bisect`) so that the cost reaches
  the target, then the most-kept groups give up channels first.
- ``global``: channels of all groups are ranked together by their score
  divided by the mean score of their group (so groups of different scales
  are comparable) and the least important ones are removed first.

Both finish with the same greedy walk (:func:`~lassoprune.pruning.search.walk_widths`):
channels are removed ``round_to`` at a time in the strategy's order (a group that a
grouped convolution reads is cut in whole units, the same positions of every block:
:func:`removal_order`, :func:`~lassoprune.pruning.search.group_steps`), skipping
any removal that would overshoot, until the cost is at or below the target and
within :data:`~lassoprune.pruning.search.TARGET_TOLERANCE` of it. Every group
keeps at least its floor. Methods that choose their own keep sets (the lasso
methods, ``dwgl-vote``) do not use this module.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from lassoprune.channels import ChannelGroup, CostModel, Target
from lassoprune.pruning.search import (
    TARGET_TOLERANCE,
    CostBand,
    Verdict,
    bisect,
    check_target,
    floors,
    group_steps,
    round_up,
    walk_widths,
)
from lassoprune.utils.registry import Registry

#: ``(band, sizes, floor, steps) -> starting widths`` (``steps``: channels removed at a time per group).
StartWidths = Callable[[CostBand, np.ndarray, np.ndarray, np.ndarray], np.ndarray]
#: ``(group index, width, normalised scores, orders, sizes) -> removal priority``; lowest goes first.
RemovalPriority = Callable[[int, int, Sequence[torch.Tensor], Sequence[torch.Tensor], np.ndarray], float]


@dataclass(frozen=True)
class AllocationSpec:
    """One allocation strategy.

    Attributes:
        name: registry name.
        summary: one line for listings.
        start: the widths the greedy walk starts from.
        priority: which group gives up its next step first.
    """

    name: str
    summary: str
    start: StartWidths
    priority: RemovalPriority


ALLOCATIONS: Registry[AllocationSpec] = Registry("allocation")


def allocate(
    groups: Sequence[ChannelGroup],
    scores: Mapping[str, torch.Tensor],
    cost_model: CostModel,
    target: Target,
    strategy: str = "global",
    min_channels: int = 1,
    round_to: int | None = None,
    tolerance: float = TARGET_TOLERANCE,
    floor: np.ndarray | None = None,
) -> dict[str, tuple[int, ...]]:
    """Kept channel indices (sorted) of every group, meeting ``target`` within ``tolerance``.

    Args:
        groups: the channel groups, in ``cost_model.group_ids`` order.
        scores: group id -> (C,) importance, higher = keep.
        strategy: a name of :data:`ALLOCATIONS` (``global``, ``uniform``).
        tolerance: allowed |cost / original - ratio|.
        floor: ``(G,)`` the fewest channels each group keeps (default: from
            ``min_channels`` and ``round_to``, :func:`~lassoprune.pruning.search.floors`).
    """
    spec = ALLOCATIONS.get(strategy)
    floor = floors(groups, min_channels, round_to) if floor is None else floor
    check_target(cost_model, target, floor)
    band = CostBand(target, cost_model, tolerance=tolerance, limit=tolerance)
    sizes = np.array([g.num_channels for g in groups], dtype=np.float64)
    unit_scores = [unit_mean(g, scores[g.id]) for g in groups]
    orders = [removal_order(g, s) for g, s in zip(groups, unit_scores)]
    normalised = [_normalise(s) for s in unit_scores]
    steps = group_steps(groups, round_to)

    def next_width(g: int, width: int, shrink: bool) -> int | None:
        return width - int(steps[g]) if shrink and width - steps[g] >= floor[g] else None

    def priority(g: int, width: int, _new: int, _shrink: bool) -> float:
        return spec.priority(g, width, normalised, orders, sizes)

    start = spec.start(band, sizes, floor, steps)
    keep = walk_widths(start, band.cost, (-math.inf, band.goal), band.limits, next_width, priority)
    band.check(band.cost(keep), "the channel steps are too coarse for this target: try another target, "
                                "a smaller round_to, or another allocation")
    return {g.id: tuple(sorted(order[: int(k)].tolist())) for g, order, k in zip(groups, orders, keep)}


def unit_mean(group: ChannelGroup, scores: torch.Tensor) -> torch.Tensor:
    """Per-channel scores with every channel given its unit's mean (``group.blocks`` > 1: the channels at the
    same position of every block of a grouped conv, removed together); unchanged when ``blocks`` is 1."""
    if group.blocks == 1:
        return scores
    per_block = scores.reshape(group.blocks, -1)  # (B, C / B)
    return per_block.double().mean(0).repeat(group.blocks).to(scores.dtype)


def removal_order(group: ChannelGroup, scores: torch.Tensor) -> torch.Tensor:
    """Channels from most to least important (ties: lower index first), the B channels of a unit consecutive,
    so that keeping the first ``k`` (a multiple of B) keeps whole units: ``(C,)`` int64."""
    if group.blocks == 1:
        return torch.argsort(scores.double(), descending=True, stable=True)
    width = group.num_channels // group.blocks
    units = torch.argsort(scores[:width].double(), descending=True, stable=True)  # (C / B,)
    return (units[:, None] + width * torch.arange(group.blocks)[None, :]).reshape(-1)


def _full_start(band: CostBand, sizes: np.ndarray, floor: np.ndarray, steps: np.ndarray) -> np.ndarray:
    return sizes.copy()


def _uniform_counts(q: float, sizes: np.ndarray, floor: np.ndarray, steps: np.ndarray) -> np.ndarray:
    counts = np.array([round_up(math.ceil(q * c - 1e-9), int(step)) for c, step in zip(sizes, steps)],
                      dtype=np.float64)
    return np.clip(counts, floor, sizes)


def _uniform_start(band: CostBand, sizes: np.ndarray, floor: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """Widths at the smallest uniform fraction q whose cost is still above the goal (40 halvings of [0, 1])."""

    def verdict(q: float) -> Verdict:
        above = band.cost(_uniform_counts(q, sizes, floor, steps)) > band.goal
        return Verdict.KEEPS_TOO_MUCH if above else Verdict.KEEPS_TOO_LITTLE

    result = bisect(verdict, over=1.0, under=0.0, midpoint=lambda a, b: 0.5 * (a + b), max_steps=40)
    return _uniform_counts(result.over, sizes, floor, steps)


def _global_priority(g: int, width: int, normalised: Sequence[torch.Tensor], orders: Sequence[torch.Tensor],
                     sizes: np.ndarray) -> float:
    """The normalised score of the weakest channel still kept."""
    return float(normalised[g][orders[g][width - 1]])


def _uniform_priority(g: int, width: int, normalised: Sequence[torch.Tensor], orders: Sequence[torch.Tensor],
                      sizes: np.ndarray) -> float:
    """The most-kept group (as a fraction of its size) first: widths stay uniform."""
    return -width / sizes[g]


def _normalise(score: torch.Tensor) -> torch.Tensor:
    score = score.double().clamp_min(0)
    mean = score.mean()
    return score / mean if mean > 0 else torch.zeros_like(score)


ALLOCATIONS.add("global", AllocationSpec(
    "global", "channels of all groups ranked together by score / group mean score", _full_start, _global_priority))
ALLOCATIONS.add("uniform", AllocationSpec(
    "uniform", "every group keeps the same fraction of its channels", _uniform_start, _uniform_priority))
