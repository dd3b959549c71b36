"""The one target search: group widths that meet a MACs / params target.

Every way of reaching a cost target in lassoprune is built from the two
searches of this module, so that floors, ``round_to``, the tolerance band and
the error for an unreachable target behave the same for every method:

- :func:`bisect`: a one-dimensional bisection over a *family of keep sets
  indexed by one strength* whose cost falls as the strength grows
  (:class:`StrengthPath` memoises and records such a family): the lasso
  methods' ``rho``, the vote threshold ``tau`` of ``dwgl-vote``, the uniform
  keep fraction of the ``uniform`` allocation, Torch-Pruning's
  ``pruning_ratio`` in the benchmarks.
- :func:`walk_widths`: greedy moves of per-group widths, cheapest first,
  over *per-group channel orders*: the ``global`` and ``uniform`` allocation
  of importance criteria, and the lasso methods' fix-ups (dropping or adding
  channels when the bisection brackets the target, and moving rounded widths
  in whole ``round_to`` steps).

Costs are evaluated with the :class:`~lassoprune.channels.CostModel` on kept
counts only, so a search never prunes a copy of the network. Both searches
rely on the cost being monotone in the widths: once a move of a group would
leave the allowed band, every later move of that group in the same direction
would too.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Generic, TypeVar

import numpy as np

from lassoprune.channels import ChannelGroup, CostModel, Target
from lassoprune.errors import LassopruneError, UnreachableTargetError

S = TypeVar("S")

#: How far (a fraction of the original cost) the final cost may lie from the target.
TARGET_TOLERANCE = 0.01


class Verdict(IntEnum):
    """Where a candidate's cost lies relative to the band a search aims at."""

    KEEPS_TOO_LITTLE = -1
    MEETS = 0
    KEEPS_TOO_MUCH = 1


@dataclass(frozen=True)
class CostBand:
    """A target in absolute cost units: the goal, the band a search aims at, and the hard limits.

    Args:
        target: what is kept (a fraction of the original MACs or params).
        cost_model: the network's cost as a function of kept counts.
        tolerance: half-width of the aim band, a fraction of the original cost.
        limit: half-width of the band the final cost must lie in (default
            :data:`TARGET_TOLERANCE`).
    """

    target: Target
    cost_model: CostModel
    tolerance: float = TARGET_TOLERANCE
    limit: float = TARGET_TOLERANCE

    @property
    def full(self) -> int:
        """The unpruned network's cost."""
        return self.target.full(self.cost_model)

    @property
    def goal(self) -> float:
        """``ratio * full``: the cost aimed at."""
        return self.target.ratio * self.full

    @property
    def band(self) -> tuple[float, float]:
        """``goal -+ tolerance * full``: where a search stops."""
        return self.goal - self.tolerance * self.full, self.goal + self.tolerance * self.full

    @property
    def limits(self) -> tuple[float, float]:
        """``goal -+ limit * full``: where the final cost must lie; no move may leave it."""
        return self.goal - self.limit * self.full, self.goal + self.limit * self.full

    def cost(self, counts: Sequence[int] | np.ndarray) -> int:
        """The target's cost for kept counts (one per group, cost-model order)."""
        return self.target.cost(self.cost_model, np.asarray(counts, dtype=np.float64))

    def verdict(self, cost: float) -> Verdict:
        """Above, inside or below the aim band."""
        low, high = self.band
        if cost > high:
            return Verdict.KEEPS_TOO_MUCH
        return Verdict.MEETS if cost >= low else Verdict.KEEPS_TOO_LITTLE

    def check(self, cost: float, advice: str = "the channel steps are too coarse for this target") -> None:
        """Raise a clear error unless ``cost`` lies within the limits."""
        low, high = self.limits
        if not low <= cost <= high:
            raise LassopruneError(
                f"could not bring {self.target.kind} within {self.limit} of {self.target.ratio} "
                f"(reached {cost / self.full:.4f}); {advice}"
            )


# --------------------------------------------------------------------------- floors and rounding


def round_up(value: float, step: int) -> int:
    """The smallest multiple of ``step`` that is >= ``value``."""
    return int(math.ceil(value / step) * step)


def nearest_multiple(value: float, step: int) -> int:
    """The multiple of ``step`` nearest to ``value`` (Python's round: halves go to the even multiple)."""
    return int(round(value / step)) * step


def step_width(width: int, total: int, step: int, shrink: bool) -> int:
    """The next width on the grid ``{multiples of step} U {total}``, down (``shrink``) or up."""
    if shrink:
        return (width - 1) // step * step if width % step else width - step
    return min(total, (width // step + 1) * step)


def floors(
    groups: Sequence[ChannelGroup], min_channels: int = 1, round_to: int | None = None, prune_residual: bool = True,
    whole_blocked: bool = False,
) -> np.ndarray:
    """The fewest channels each group may keep: ``max(min_channels, step)`` rounded up to the group's ``step``
    (:func:`group_steps`), at most C.

    With ``prune_residual=False`` a residual (eltwise) group keeps all its C channels; with ``whole_blocked``
    (methods that choose their own keep sets, which need not take whole units) so does every group that a
    grouped convolution reads or writes (``blocks > 1``); otherwise such a group keeps two units at least.

    Returns:
        ``(G,)`` float64, in ``groups`` order.
    """
    if min_channels < 1:
        raise LassopruneError(f"min_channels must be >= 1 (a group never reaches 0 channels), got {min_channels}")
    steps = group_steps(groups, round_to)

    def floor(g: ChannelGroup, step: int) -> int:
        if (g.is_eltwise and not prune_residual) or (whole_blocked and g.blocks > 1):
            return g.num_channels
        # two units at least for a grouped conv's channels: one output per group would make Torch-Pruning
        # take the conv for a depthwise one when the model is analysed again
        units = 2 if g.blocks > 1 else 1
        return min(g.num_channels, round_up(max(min_channels, units * step), step))

    return np.array([floor(g, int(step)) for g, step in zip(groups, steps)], dtype=np.float64)


def group_steps(groups: Sequence[ChannelGroup], round_to: int | None = None) -> np.ndarray:
    """Channels removed at a time per group: ``round_to`` (1 when None) times the group's ``blocks`` (a whole unit
    of a grouped convolution, the same positions in every block), ``(G,)`` int64."""
    step = round_to or 1
    return np.array([step * g.blocks for g in groups], dtype=np.int64)


def check_target(cost_model: CostModel, target: Target, floor: np.ndarray,
                 groups: Sequence[ChannelGroup] = ()) -> None:  # fmt: skip
    """Raise a clear error when ``target`` is below what the floors allow (``groups``: to name kept residual ones)."""
    smallest = target.cost(cost_model, floor) / target.full(cost_model)
    if target.ratio < smallest:
        residual_whole = any(g.is_eltwise and int(f) == g.num_channels and g.num_channels > 1
                             for g, f in zip(groups, floor))
        hint = (", or let the residual stream be cut (the lasso methods keep it whole by default): "
                "prune_residual=True, CLI --cut-residual, config prune.prune_residual: true") if residual_whole else ""
        raise UnreachableTargetError(
            f"target_{target.kind}={target.ratio} is unreachable: with every group at its floor the network "
            f"keeps {smallest:.4f} of its {target.kind}; the smallest reachable target is "
            f"{math.ceil(smallest * 1e4) / 1e4} (lower min_channels / round_to, ignore fewer layers{hint})"
        )


# --------------------------------------------------------------------------- bisection over a strength


@dataclass(frozen=True)
class Bisection(Generic[S]):
    """The outcome of :func:`bisect`.

    Attributes:
        over: the last strength whose keep sets cost too much (the weak side).
        under: the last strength whose keep sets cost too little (the strong side).
        hit: a strength whose keep sets meet the band, or None when the bracket
            closed without one.
    """

    over: S
    under: S
    hit: S | None


def bisect(
    verdict: Callable[[S], Verdict],
    over: S,
    under: S,
    midpoint: Callable[[S, S], S | None],
    max_steps: int,
) -> Bisection[S]:
    """Bisect a family of keep sets whose cost falls as the strength grows.

    Args:
        verdict: a strength -> where its keep sets' cost lies; it may record
            the keep sets it computed (the callers keep their best candidates).
        over: a strength known (or taken) to keep too much; not evaluated here.
        under: a strength known (or taken) to keep too little; not evaluated here.
        midpoint: the next strength between ``over`` and ``under``, or None
            when the bracket is too narrow to split (e.g. ``sqrt(over * under)``
            on a log scale, or the middle index of a sorted candidate list).
        max_steps: the most strengths evaluated.

    Returns:
        The final bracket and the first strength that met the band, if any.
    """
    for _ in range(max_steps):
        mid = midpoint(over, under)
        if mid is None:
            break
        answer = verdict(mid)
        if answer is Verdict.MEETS:
            return Bisection(over, under, mid)
        if answer is Verdict.KEEPS_TOO_MUCH:
            over = mid
        else:
            under = mid
    return Bisection(over, under, None)


def bracket(verdict: Callable[[S], Verdict], over: S, grid: Sequence[S]) -> Bisection[S | None]:
    """Walk ``grid`` (strengths in increasing order) until one meets the band or keeps too little.

    Use it before :func:`bisect` when no strength is known to keep too little.

    Returns:
        ``over``: the last grid strength that kept too much (or the given one);
        ``under``: the first that kept too little (None when none did);
        ``hit``: the first that met the band, if any.
    """
    for strength in grid:
        answer = verdict(strength)
        if answer is Verdict.MEETS:
            return Bisection(over, None, strength)
        if answer is Verdict.KEEPS_TOO_LITTLE:
            return Bisection(over, strength, None)
        over = strength
    return Bisection(over, None, None)


def linear_midpoint(min_gap: float) -> Callable[[float, float], float | None]:
    """Arithmetic midpoint of two strengths, None once ``|b - a| <= min_gap``."""

    def midpoint(a: float, b: float) -> float | None:
        return None if abs(b - a) <= min_gap else 0.5 * (a + b)

    return midpoint


def log_midpoint(min_log_gap: float) -> Callable[[float, float], float | None]:
    """Geometric midpoint of two positive strengths, None once ``|log b - log a| < min_log_gap``."""

    def midpoint(a: float, b: float) -> float | None:
        return None if abs(math.log(b) - math.log(a)) < min_log_gap else math.sqrt(a * b)

    return midpoint


def index_midpoint(a: int, b: int) -> int | None:
    """Middle index between two indices of a sorted candidate list, None once they are adjacent."""
    return None if abs(b - a) <= 1 else (a + b) // 2


# --------------------------------------------------------------------------- a path of keep sets over a strength

K = TypeVar("K")


@dataclass(frozen=True)
class SearchRecord:
    """How a method's strength was set: the value, each strength tried and the fix-up after it (JSON-safe).

    Attributes:
        parameter: the strength's name (``rho`` for the lasso methods, ``tau`` for ``dwgl-vote``).
        value: the strength the keep sets come from.
        searched: True when searched for a target, False when given (a threshold).
        steps: ``({"value": s, "cost_ratio": c}, ...)`` in the order tried.
        adjustment: how the keep sets were moved after the search: ``none``, ``drop``, ``add``, with
            ``+round_to_N`` when widths were rounded.
    """

    parameter: str
    value: float
    searched: bool = True
    steps: tuple[dict[str, float], ...] = ()
    adjustment: str = "none"

    def to_dict(self) -> dict[str, Any]:
        return {"parameter": self.parameter, "value": self.value, "searched": self.searched,
                "steps": list(self.steps), "adjustment": self.adjustment}


class StrengthPath(Generic[S, K]):
    """A family of keep sets indexed by one strength, evaluated lazily, memoised and recorded.

    The one "path over a strength" of the width-deciding methods: the lasso
    methods' ``rho`` and ``dwgl-vote``'s ``tau``. Each strength is evaluated
    once (``keep_at``), costed (``cost_of``), judged (``verdict_of``) and
    recorded, and :meth:`bisect` runs :func:`bisect` on it.

    Args:
        keep_at: strength -> keep sets.
        cost_of: keep sets -> cost (the target's unit).
        verdict_of: cost -> :class:`Verdict`.
        full: the unpruned cost (the history records ``cost / full``).
        value_of: strength -> the number recorded for it (e.g. an index -> the threshold it stands for).
    """

    def __init__(self, keep_at: Callable[[S], K], cost_of: Callable[[K], float], verdict_of: Callable[[float], Verdict],
                 full: float, value_of: Callable[[S], float] = float) -> None:
        self.keep_at, self.cost_of, self.verdict_of = keep_at, cost_of, verdict_of
        self.full, self.value_of = full, value_of
        self.solved: dict[S, tuple[K, float]] = {}
        self.history: list[dict[str, float]] = []

    def at(self, strength: S) -> tuple[K, float]:
        """(keep sets, cost) at ``strength``; evaluated once, recorded in :attr:`history`."""
        if strength not in self.solved:
            keep = self.keep_at(strength)
            cost = self.cost_of(keep)
            self.solved[strength] = (keep, cost)
            self.history.append({"value": float(self.value_of(strength)), "cost_ratio": cost / self.full})
        return self.solved[strength]

    def verdict(self, strength: S) -> Verdict:
        return self.verdict_of(self.at(strength)[1])

    def bisect(self, over: S, under: S, midpoint: Callable[[S, S], S | None], max_steps: int) -> Bisection[S]:
        """:func:`bisect` on this path (``over`` and ``under`` are not evaluated)."""
        return bisect(self.verdict, over, under, midpoint, max_steps)

    def record(self, parameter: str, strength: S, adjustment: str = "none", searched: bool = True) -> SearchRecord:
        """The :class:`SearchRecord` of a search that settled on ``strength``."""
        return SearchRecord(parameter, float(self.value_of(strength)), searched, tuple(self.history), adjustment)


# --------------------------------------------------------------------------- greedy width moves


#: ``(group, width, shrink) -> the group's next width, or None when it cannot move that way``.
NextWidth = Callable[[int, int, bool], "int | None"]
#: ``(group, width, new width, shrink) -> sort key``; the lowest key moves first.
MovePriority = Callable[[int, int, int, bool], Any]


def walk_widths(
    widths: Sequence[int] | np.ndarray,
    cost: Callable[[np.ndarray], float],
    accept: tuple[float, float],
    limits: tuple[float, float],
    next_width: NextWidth,
    priority: MovePriority,
    max_moves: int | None = None,
) -> np.ndarray:
    """Move group widths one step at a time, lowest priority first, until the cost is accepted.

    While the cost is above ``accept[1]`` groups shrink; while it is below
    ``accept[0]`` they grow. Each move is the lowest-priority step among the
    groups that can still move that way; a step that would cross ``limits``
    (below ``limits[0]`` when shrinking, above ``limits[1]`` when growing) is
    refused and that group moves no further in that direction. The walk stops
    when the cost is accepted, when no group can move, or after ``max_moves``.

    Args:
        widths: ``(G,)`` starting widths.
        cost: ``(G,)`` widths -> cost.
        accept: the band to reach (use ``-inf`` / ``inf`` for a one-sided goal).
        limits: the band no move may leave.
        next_width: a group's next width in a direction (``round_to`` steps, floors).
        priority: the sort key of a move; ties go to the lower group index.
        max_moves: a cap on the moves (None: until done).

    Returns:
        ``(G,)`` float64 widths.
    """
    widths = np.array(widths, dtype=np.float64)
    direction: bool | None = None
    heap: list[tuple[Any, int, int]] = []
    moves = 0

    def entry(g: int, shrink: bool) -> tuple[Any, int, int] | None:
        width = int(widths[g])
        new = next_width(g, width, shrink)
        return None if new is None else (priority(g, width, new, shrink), g, new)

    current = cost(widths)
    while max_moves is None or moves < max_moves:
        if accept[0] <= current <= accept[1]:
            break
        shrink = current > accept[1]
        if shrink is not direction:
            direction = shrink
            heap = [e for g in range(len(widths)) if (e := entry(g, shrink)) is not None]
            heapq.heapify(heap)
        moved = False
        while heap:
            _, g, new = heapq.heappop(heap)
            trial = widths.copy()
            trial[g] = new
            trial_cost = cost(trial)
            if (trial_cost < limits[0]) if shrink else (trial_cost > limits[1]):
                continue  # this group's step overshoots now and will in every later state
            widths, current, moved = trial, trial_cost, True
            if (e := entry(g, shrink)) is not None:
                heapq.heappush(heap, e)
            break
        if not moved:
            break
        moves += 1
    return widths
