"""The lasso methods' route to a cost target, on the shared searches of :mod:`lassoprune.pruning.search`.

One global strength ``rho`` sets every group's ``lambda1_g = rho * s_g``
(:mod:`lassoprune.hsic.problem`), so the per-group widths are an output.
:class:`LassoSearch`:

1. evaluates the weakest strength ``rho_min``: if it meets the aim band the
   search ends; if it keeps too *little*, channels the lasso left out are added,
   most relevant (largest normalised ``max_k R_ck``) first, until the cost is
   in the band ("add");
2. else bisects ``log rho`` over ``[rho_min, 1]`` (a :class:`StrengthPath`);
3. when the bracket closes without a hit (support sizes move in steps), the
   solution on the weak side is taken and its channels that the strong side
   drops are removed, weakest score first (then any others), until the cost
   fits ("drop").

With ``round_to`` every width is then rounded to a multiple of it (or the
whole group) and moved by whole steps, lowest-valued channels first, until
the cost is back in the band (:meth:`LassoSearch.rounded`). Every group keeps
at least its floor.

The search works on *units* (:meth:`GroupProblem.keep_units`): a channel, or,
for a group that a grouped convolution reads or writes (``blocks`` B > 1), the
B channels at the same position of its groups, so that every group of the conv
keeps the same width. Widths, floors and steps below count units; a unit costs
its B channels.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from lassoprune.hsic.problem import GroupProblem, channel_values
from lassoprune.pruning.method import MethodContext
from lassoprune.pruning.search import (
    CostBand,
    SearchRecord,
    StrengthPath,
    Verdict,
    log_midpoint,
    nearest_multiple,
    step_width,
    walk_widths,
)

__all__ = ["LassoSearch", "RHO_MIN", "RHO_MIN_GLOBAL"]

RHO_MIN = 1e-4  # relative strength: rho x lambda_max(g)
RHO_MIN_GLOBAL = 1e-7  # global strength: the groups' lambda_max spread over orders of magnitude
_MAX_STEPS = 30

Keep = list[np.ndarray]


class LassoSearch:
    """The search of the module docstring over one network's :class:`GroupProblem` s."""

    def __init__(self, ctx: MethodContext, problems: list[GroupProblem], tolerance: float,
                 rho_min: float = RHO_MIN) -> None:
        self.problems, self.rho_min = problems, rho_min
        self.blocks = [p.blocks for p in problems]
        self.floors = [math.ceil(int(f) / b) for f, b in zip(ctx.floors, self.blocks)]  # in units
        self.target = CostBand(ctx.target, ctx.cost_model, tolerance=tolerance)
        self.path: StrengthPath[float, tuple[Keep, Keep]] = StrengthPath(
            self._keep_at, lambda sets: self.cost(sets[0]), self.target.verdict, self.target.full)

    def release(self) -> None:
        """Let go of the problems (their Grams: GiBs on wide networks). The path's callbacks refer back to this
        search, a cycle that only the garbage collector breaks, possibly long after the method has returned."""
        self.problems = []

    def cost(self, keep: Keep) -> int:
        """The cost of per-group unit keep sets."""
        return self.unit_cost([len(k) for k in keep])

    def unit_cost(self, widths: list[int] | np.ndarray) -> int:
        """The cost of per-group widths counted in units."""
        return self.target.cost([int(w) * b for w, b in zip(widths, self.blocks)])

    def _keep_at(self, rho: float) -> tuple[Keep, Keep]:
        sets = [p.keep_units(rho, f) for p, f in zip(self.problems, self.floors)]
        return [k for k, _ in sets], [s for _, s in sets]

    def run(self) -> tuple[float, dict[str, np.ndarray], SearchRecord]:
        """(rho, kept channels per group id, the search record)."""
        rho, keep, adjustment = self._route()
        return rho, self._named(keep), self.path.record("rho", rho, adjustment)

    def _route(self) -> tuple[float, Keep, str]:
        (keep_lo, _), cost_lo = self.path.at(self.rho_min)
        verdict_lo = self.target.verdict(cost_lo)
        if verdict_lo is Verdict.MEETS:
            return self.rho_min, keep_lo, "none"
        if verdict_lo is Verdict.KEEPS_TOO_LITTLE:  # the lasso keeps too few even at the weakest strength
            return self.rho_min, self._add(keep_lo), "add"
        if self.path.verdict(1.0) is Verdict.MEETS:
            return 1.0, self.path.at(1.0)[0][0], "none"
        found = self.path.bisect(over=self.rho_min, under=1.0, midpoint=log_midpoint(1e-4), max_steps=_MAX_STEPS)
        if found.hit is not None:
            return found.hit, self.path.at(found.hit)[0][0], "none"
        (keep_over, scores_over), _ = self.path.at(found.over)
        return found.over, self._drop(keep_over, scores_over, self.path.at(found.under)[0][0]), "drop"

    def _named(self, keep: Keep) -> dict[str, np.ndarray]:
        """group id -> kept channels, from per-group kept units."""
        return {p.group.id: p.channels_of(k) for p, k in zip(self.problems, keep)}

    def _walk(self, orders: Keep, widths: list[int], accept: tuple[float, float], keys: list[Any]) -> Keep:
        """Unit-by-unit walk over prefix orders; ``keys[g][i]`` ranks moving position ``i`` of group g.

        ``accept`` is one-sided (drop: ``(-inf, high)``, add: ``(low, inf)``), so the walk moves one way only.
        """

        def next_width(g: int, width: int, shrink: bool) -> int | None:
            if shrink:
                return width - 1 if width > self.floors[g] else None
            return width + 1 if width < len(orders[g]) else None

        def priority(g: int, width: int, _new: int, shrink: bool) -> Any:
            return keys[g][width - 1 if shrink else width]

        counts = walk_widths(widths, self.unit_cost, accept, self.target.limits, next_width, priority)
        return self._checked([np.sort(o[: int(k)]) for o, k in zip(orders, counts)])

    def _drop(self, keep: Keep, scores: Keep, keep_strong: Keep) -> Keep:
        """Remove units (those the stronger side drops first, weakest first) until the cost fits."""
        orders, keys = [], []
        for kept, s, kept_strong in zip(keep, scores, keep_strong):
            top = s[kept].max(initial=0.0)
            stays = set(kept_strong.tolist())
            removal = sorted((c in stays, s[c] / top if top > 0 else 0.0, c) for c in kept.tolist())
            inside = [c for *_, c in reversed(removal)]  # most important first
            outside = sorted(set(range(len(s))) - set(inside))
            orders.append(np.array(inside + outside, dtype=np.int64))
            keys.append([(stays_c, value) for stays_c, value, _ in reversed(removal)])
        return self._walk(orders, [len(k) for k in keep], (-math.inf, self.target.band[1]), keys)

    def _add(self, keep: Keep) -> Keep:
        """Add units the lasso left out, most relevant (largest normalised mean max_k R_ck) first."""
        orders, keys = [], []
        for kept, p in zip(keep, self.problems):
            rel = np.maximum(p.unit_relevance, 0.0)
            top = rel.max(initial=0.0)
            inside = set(kept.tolist())
            added = sorted((-(rel[c] / top if top > 0 else 0.0), c) for c in range(len(rel)) if c not in inside)
            orders.append(np.array(kept.tolist() + [c for _, c in added], dtype=np.int64))
            keys.append([None] * len(kept) + [key for key, _ in added])
        return self._walk(orders, [len(k) for k in keep], (self.target.band[0], math.inf), keys)

    def rounded(self, keep: dict[str, np.ndarray], rho: float, step: int) -> dict[str, np.ndarray]:
        """Widths rounded to multiples of ``step`` units (or the whole group), then moved by whole steps to the
        target.

        Each group's units are ordered: kept ones first, by score then relevance;
        a group keeps a prefix of its order. Widths go to the nearest multiple,
        then, while the cost is outside the band, the step whose channels have
        the lowest (removing) or highest (adding) normalised value moves.
        """
        orders, values, counts = [], [], []
        for p, floor in zip(self.problems, self.floors):
            scores = p.unit_scores(rho)
            kept = p.units_of(keep[p.group.id])
            inside = np.zeros(len(scores), dtype=bool)
            inside[kept] = True
            order = np.lexsort((-p.unit_relevance, -scores, ~inside))
            orders.append(order)
            values.append(channel_values(scores, p.unit_relevance)[order])
            counts.append(min(len(scores), max(floor, nearest_multiple(len(kept), step))))
        totals = [len(v) for v in values]

        def next_width(g: int, width: int, shrink: bool) -> int | None:
            new = step_width(width, totals[g], step, shrink)
            return None if new == width or (shrink and new < self.floors[g]) else new

        def priority(g: int, width: int, new: int, shrink: bool) -> float:
            value = float((values[g][new:width] if shrink else values[g][width:new]).mean())
            return value if shrink else -value

        widths = walk_widths(counts, self.unit_cost, self.target.band, self.target.limits, next_width, priority,
                             max_moves=4 * sum(totals) // step + 1)
        return self._named(self._checked([np.sort(o[: int(k)]) for o, k in zip(orders, widths)]))

    def _checked(self, keep: Keep) -> Keep:
        self.target.check(self.cost(keep))
        return keep
