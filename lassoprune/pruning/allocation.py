"""Allocation: how many channels each group keeps, to land on a MACs or params target.

Two strategies read the same scores (one tensor per group, higher = more
important) and the same :class:`~lassoprune.pruning.cost.CostModel`:

- ``uniform``: every group keeps the same fraction q of its channels; q is
  bisected so that the cost reaches the target.
- ``global``: channels of all groups are ranked together by their score
  divided by the mean score of their group (so groups of different scales
  are comparable) and the least important ones are removed first.

Both finish with the same greedy step: channels are removed one at a time
(``round_to`` at a time) in the strategy's order, skipping any removal that
would overshoot, until the cost lies within ``tolerance`` (a fraction of the
original cost) of the target. Every group keeps at least ``min_channels``.
Methods that choose their own keep sets (the lasso methods) bypass this
module and only use :func:`check_target`.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from lassoprune.errors import LassopruneError
from lassoprune.pruning.cost import CostModel
from lassoprune.pruning.groups import ChannelGroup

ALLOCATIONS = ("uniform", "global")
TARGET_KINDS = ("macs", "params")


@dataclass(frozen=True)
class Target:
    """Keep ``ratio`` (0 < ratio < 1) of the original ``kind`` (``macs`` or ``params``)."""

    kind: str
    ratio: float

    def __post_init__(self) -> None:
        if self.kind not in TARGET_KINDS:
            raise LassopruneError(f"unknown target kind {self.kind!r}; valid: {', '.join(TARGET_KINDS)}")
        if not 0.0 < self.ratio < 1.0:
            raise LassopruneError(
                f"target_{self.kind} must be a fraction of the original in (0, 1), got {self.ratio}"
            )

    def cost(self, cost_model: CostModel, keep: np.ndarray) -> int:
        """The cost this target is about, for kept counts ``keep``."""
        return cost_model.macs(keep) if self.kind == "macs" else cost_model.params(keep)

    def full(self, cost_model: CostModel) -> int:
        return cost_model.full_macs if self.kind == "macs" else cost_model.full_params


def floors(groups: Sequence[ChannelGroup], min_channels: int = 1, round_to: int | None = None) -> np.ndarray:
    """The fewest channels each group may keep: max(min_channels, round_to), at most C."""
    if min_channels < 1:
        raise LassopruneError(f"min_channels must be >= 1 (a group never reaches 0 channels), got {min_channels}")
    step = round_to or 1
    lowest = max(min_channels, step)
    return np.array([min(g.num_channels, _round_up(lowest, step)) for g in groups], dtype=np.float64)


def check_target(cost_model: CostModel, target: Target, floor: np.ndarray) -> None:
    """Raise a clear error when ``target`` is below what the floors allow."""
    smallest = target.cost(cost_model, floor) / target.full(cost_model)
    if target.ratio < smallest:
        raise LassopruneError(
            f"target_{target.kind}={target.ratio} is unreachable: with every group at its floor the network "
            f"keeps {smallest:.4f} of its {target.kind}; the smallest reachable target is {math.ceil(smallest * 1e4) / 1e4}"
            " (lower --min-channels / --round-to, or ignore fewer layers)"
        )


def allocate(
    groups: Sequence[ChannelGroup],
    scores: Mapping[str, torch.Tensor],
    cost_model: CostModel,
    target: Target,
    strategy: str = "global",
    min_channels: int = 1,
    round_to: int | None = None,
    tolerance: float = 0.01,
) -> dict[str, tuple[int, ...]]:
    """Kept channel indices (sorted) of every group, meeting ``target`` within ``tolerance``.

    Args:
        groups: the channel groups, in ``cost_model.group_ids`` order.
        scores: group id -> (C,) importance, higher = keep.
        strategy: ``uniform`` or ``global``.
        tolerance: allowed |cost / original - ratio|.
    """
    if strategy not in ALLOCATIONS:
        raise LassopruneError(f"unknown allocation {strategy!r}; valid: {', '.join(ALLOCATIONS)}")
    floor = floors(groups, min_channels, round_to)
    check_target(cost_model, target, floor)
    sizes = np.array([g.num_channels for g in groups], dtype=np.float64)
    orders = [torch.argsort(scores[g.id].double(), descending=True, stable=True) for g in groups]
    if strategy == "uniform":
        start = _uniform_start(cost_model, target, sizes, floor, round_to, tolerance)
    else:
        start = sizes.copy()
    keep = _greedy(groups, scores, orders, cost_model, target, start, floor, round_to or 1, tolerance, strategy)
    return {g.id: tuple(sorted(order[: int(k)].tolist())) for g, order, k in zip(groups, orders, keep)}


def _uniform_counts(q: float, sizes: np.ndarray, floor: np.ndarray, round_to: int | None) -> np.ndarray:
    step = round_to or 1
    counts = np.array([_round_up(math.ceil(q * c - 1e-9), step) for c in sizes], dtype=np.float64)
    return np.clip(counts, floor, sizes)


def _uniform_start(
    cost_model: CostModel, target: Target, sizes: np.ndarray, floor: np.ndarray, round_to: int | None, tol: float
) -> np.ndarray:
    """Smallest uniform fraction whose cost is still >= the target's lower edge."""
    goal = target.ratio * target.full(cost_model)
    lo, hi = 0.0, 1.0
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        if target.cost(cost_model, _uniform_counts(mid, sizes, floor, round_to)) > goal:
            hi = mid
        else:
            lo = mid
    return _uniform_counts(hi, sizes, floor, round_to)


def _greedy(
    groups: Sequence[ChannelGroup],
    scores: Mapping[str, torch.Tensor],
    orders: list[torch.Tensor],
    cost_model: CostModel,
    target: Target,
    keep: np.ndarray,
    floor: np.ndarray,
    step: int,
    tol: float,
    strategy: str,
) -> np.ndarray:
    """Remove channels in priority order until the cost reaches the target (never below ``tol`` under it)."""
    full = target.full(cost_model)
    goal, upper, lower = target.ratio * full, (target.ratio + tol) * full, (target.ratio - tol) * full
    keep = keep.copy()
    normalised = [_normalise(scores[g.id]) for g in groups]

    def priority(g: int) -> float:
        if strategy == "uniform":
            return -keep[g] / groups[g].num_channels  # most-kept group first: stays uniform
        next_out = orders[g][int(keep[g]) - 1]  # the weakest channel still kept
        return float(normalised[g][next_out])

    heap = [(priority(g), g) for g in range(len(groups)) if keep[g] - step >= floor[g]]
    heapq.heapify(heap)
    cost = target.cost(cost_model, keep)
    while cost > goal and heap:
        _, g = heapq.heappop(heap)
        trial = keep.copy()
        trial[g] = max(floor[g], keep[g] - step)
        trial_cost = target.cost(cost_model, trial)
        if trial_cost < lower:
            continue  # this removal overshoots; smaller steps elsewhere may still fit
        keep, cost = trial, trial_cost
        if keep[g] - step >= floor[g]:
            heapq.heappush(heap, (priority(g), g))
    if cost > upper:
        reached = cost / full
        raise LassopruneError(
            f"could not bring {target.kind} within {tol} of {target.ratio} (reached {reached:.4f}); "
            "the channel steps are too coarse for this target: try another target, a smaller --round-to, "
            "or --allocation uniform/global"
        )
    return keep


def _normalise(score: torch.Tensor) -> torch.Tensor:
    score = score.double().clamp_min(0)
    mean = score.mean()
    return score / mean if mean > 0 else torch.zeros_like(score)


def _round_up(value: int, step: int) -> int:
    return int(math.ceil(value / step) * step)
