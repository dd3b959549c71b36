"""The class-wise structured HSIC lasso methods: ``sglp-ib``, ``stlp-ib``, ``hsic-ib``, ``class-lasso``.

METHODS.md 1. For every channel group g, one forward pass gives pooled
features (:mod:`lassoprune.hsic.calibration`), and the Gram form of the HSIC
lasso gives ``G_g`` (C x C) and ``R_g`` (C x K) once (:mod:`lassoprune.hsic.kernels`).
Then

    B_g(rho) = argmin_{B >= 0} 1/2 tr(B^T G_g B) - tr(B^T R_g)
                               + lambda1_g ||B||_1 + lambda2_g Omega(B),
    lambda1_g = rho * lambda_max(g),   lambda2_g = lambda2 * lambda1_g,

solved by :class:`lassoprune.lasso.StructuredLasso`. A channel is kept iff its
row of ``B_g`` is non-zero; its score is ``s_c = ||B_c,:||_2``. One global
``rho`` (bisected on a log scale) sets every group's strength, so the per-group
widths are an output; the bisection stops when the network cost is within
``tolerance`` of the target. Support sizes move in steps: when the bisection
brackets the target without landing in it, the solution on the larger side is
taken and its channels that the smaller side drops are removed, weakest score
first (then any others), until the target is met; when even the smallest
``rho`` keeps too little, channels are added by relevance to the targets.
With ``round_to`` (``lp.prune(..., round_to=8)``) every width is then rounded
to a multiple of it (or the whole group) and moved by whole steps, lowest-valued
channels first, until the cost is back within the target band.
Every group keeps at least its floor (``ctx.floors``); a group whose lasso
keeps fewer gets its most relevant channels (largest ``max_k R_ck``).

Methods (structure over classes, default target):

- ``sglp-ib``: graph-guided fused lasso on :func:`lassoprune.lasso.class_graph`, ``class-output``
- ``stlp-ib``: tree-guided group lasso on :func:`lassoprune.lasso.class_tree`, ``class-output``
- ``hsic-ib``: plain lasso, one ``output`` target (APIB-like)
- ``class-lasso``: plain lasso on the class-wise ``class-output`` targets (our choice: the
  same targets as ``sglp-ib`` / ``stlp-ib``, so that it ablates only the class structure)

Options (``lp.prune(..., method=..., **options)``):

- ``target_kind``: ``class-output`` | ``class`` | ``output`` (default per method, above)
- ``pool``: features are average-pooled to at most pool x pool (default 4)
- ``lambda2``: structured weight as a fraction of lambda1 (default 0.1; ignored without structure)
- ``tau``: class-graph edge threshold (default: each class keeps at least one edge)
- ``block``, ``permutations``: block HSIC for large calibration sets (default off, 1)
- ``nonneg``: constrain B >= 0 (default True; False lets more channels into the support at small rho)
- ``ridge``: elastic-net term ``ridge * ||G||_2 / 2 * ||B||_F^2`` added to the datafit, i.e. ``G`` is
  replaced by ``G + ridge ||G||_2 I`` (our choice, default 0 = the formulation of METHODS.md 1.2).
  Without it the non-negative fit of near-collinear kernels has a small support even at
  the weakest strength, so the lasso alone cannot reach mild targets; with it the
  support grows to every relevant channel as rho falls, and the lasso decides the widths.
- ``tol``, ``max_iter``: solver tolerance and iteration cap (default 1e-5, 5000)
- ``tolerance``: how close to the target the bisection aims (fraction of the
  original cost, default 0.008; the final cost is always within 0.01)
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from lassoprune.errors import LassopruneError, UnknownNameError
from lassoprune.hsic import CalibrationFeatures, TargetKind, collect_features, hsic_gram
from lassoprune.lasso import GraphFused, StructuredLasso, TreeGroup, class_graph, class_tree, lambda_max
from lassoprune.pruning.api import Selection, SelectionContext, register_selector
from lassoprune.pruning.groups import ChannelGroup

__all__ = ["LassoMethod", "LASSO_METHODS", "select_channels"]

STRUCTURES = ("graph", "tree", "none")
_RHO_MIN = 1e-4
_MAX_STEPS = 30


@dataclass(frozen=True)
class LassoMethod:
    """One lasso method: the structure over classes and its default target."""

    name: str
    structure: str
    target_kind: TargetKind


LASSO_METHODS: dict[str, LassoMethod] = {
    m.name: m
    for m in (
        LassoMethod("sglp-ib", "graph", TargetKind.CLASS_OUTPUT),
        LassoMethod("stlp-ib", "tree", TargetKind.CLASS_OUTPUT),
        LassoMethod("hsic-ib", "none", TargetKind.OUTPUT),
        LassoMethod("class-lasso", "none", TargetKind.CLASS_OUTPUT),
    )
}


@dataclass(frozen=True)
class LassoOptions:
    """The validated options of a lasso method (module docstring)."""

    target_kind: TargetKind
    pool: int | None = 4
    lambda2: float = 0.1
    tau: float | None = None
    block: int | None = None
    permutations: int = 1
    nonneg: bool = True
    ridge: float = 0.0
    magnitude: bool = False
    tol: float = 1e-5
    max_iter: int = 5000
    tolerance: float = 0.008

    @classmethod
    def parse(cls, method: LassoMethod, options: Mapping[str, Any]) -> LassoOptions:
        valid = set(cls.__dataclass_fields__)
        unknown = sorted(set(options) - valid)
        if unknown:
            raise UnknownNameError(f"{method.name} option", unknown[0], valid)
        values = dict(options)
        values["target_kind"] = TargetKind.parse(values.get("target_kind", method.target_kind))
        opts = cls(**values)
        if opts.pool is not None and int(opts.pool) < 1:
            raise LassopruneError(f"pool must be a positive side length or None, got {opts.pool}")
        if not opts.lambda2 >= 0:
            raise LassopruneError(f"lambda2 (a fraction of lambda1) must be >= 0, got {opts.lambda2}")
        if opts.tau is not None and not 0 <= opts.tau <= 1:
            raise LassopruneError(f"tau (a threshold on |Pearson r| between class means) must be in [0, 1], got {opts.tau}")
        if not opts.ridge >= 0:
            raise LassopruneError(f"ridge (a fraction of ||G||_2) must be >= 0, got {opts.ridge}")
        if not 0 < opts.tolerance <= 0.01:
            raise LassopruneError(f"tolerance must be in (0, 0.01], got {opts.tolerance}")
        if method.structure != "none" and opts.target_kind is TargetKind.OUTPUT:
            raise LassopruneError(
                f"{method.name} structures the class-wise coefficients; target_kind 'output' has one target "
                "(use hsic-ib, or target_kind 'class' / 'class-output')"
            )
        return opts


@dataclass
class _GroupProblem:
    """One group's lasso: cached ``G``, ``R``, its estimator and the solutions already computed."""

    group: ChannelGroup
    G: np.ndarray
    R: np.ndarray
    lam_max: float
    relevance: np.ndarray  # (C,) max_k R_ck: the order channels enter at large lambda
    estimator: StructuredLasso
    lambda2: float
    solutions: dict[float, np.ndarray]
    n_iter: dict[float, int]

    def solve(self, rho: float) -> np.ndarray:
        """``B(rho)`` (C, K), cached; warm-started from the nearest solved rho."""
        if rho in self.solutions:
            return self.solutions[rho]
        C, K = self.R.shape
        if self.lam_max <= 0 or rho >= 1.0:
            coef, iters = np.zeros((C, K)), 0
        else:
            if self.solutions:
                nearest = min(self.solutions, key=lambda r: abs(math.log(r) - math.log(rho)))
                self.estimator.coef_ = self.solutions[nearest]
            self.estimator.lambda1 = rho * self.lam_max
            self.estimator.lambda2 = self.lambda2 * rho * self.lam_max
            self.estimator.fit_gram(self.G, self.R)
            coef, iters = self.estimator.coef_.copy(), int(self.estimator.n_iter_)
        self.solutions[rho] = coef
        self.n_iter[rho] = iters
        return coef


def _scores(coef: np.ndarray) -> np.ndarray:
    """Row norms ``||B_c,:||_2``; rows below round-off of the largest count as zero."""
    s = np.linalg.norm(coef, axis=1)
    top = s.max(initial=0.0)
    return np.where(s > 1e-9 * top, s, 0.0) if top > 0 else s


def _keep_order(scores: np.ndarray, relevance: np.ndarray) -> np.ndarray:
    """Channels from most to least important: by score, ties (zeros) by relevance."""
    return np.lexsort((-relevance, -scores))


def _keep_set(problem: _GroupProblem, rho: float, floor: int) -> tuple[np.ndarray, np.ndarray]:
    """(kept channel numbers, scores) at ``rho``: the support, padded to ``floor`` by relevance."""
    scores = _scores(problem.solve(rho))
    count = max(int((scores > 0).sum()), floor)
    return np.sort(_keep_order(scores, problem.relevance)[:count]), scores


def select_channels(ctx: SelectionContext, method: LassoMethod) -> Selection:
    """Run one lasso method on a :class:`~lassoprune.pruning.api.SelectionContext` (module docstring)."""
    opts = LassoOptions.parse(method, ctx.options)
    groups = ctx.analysis.groups
    if ctx.batches is None:
        raise LassopruneError(f"method {method.name} scores channels on data: give data=[(x, y), ...] batches")
    times: dict[str, float] = {}
    features = collect_features(ctx.model, groups, ctx.batches, pool=opts.pool, outputs=opts.target_kind.needs_output)
    times["features"] = features.seconds
    structure, structure_info = _structure(method, features, opts.tau)
    problems, times["kernels"], times["gram"] = _problems(groups, features, opts, structure, ctx.seed)

    started = time.perf_counter()
    search = _Search(ctx, problems, opts.tolerance)
    rho, keep, adjustment = search.run()
    if ctx.round_to is not None and ctx.round_to > 1:
        keep = search.rounded(keep, rho, ctx.round_to)
        adjustment += f"+round_to_{ctx.round_to}"
    times["bisection"] = time.perf_counter() - started
    times["solver"] = search.solver_seconds

    scores = {p.group.id: torch.from_numpy(_scores(p.solve(rho))) for p in problems}
    per_group = {
        p.group.id: {
            "lambda_max": p.lam_max,
            "kept": len(keep[p.group.id]),
            "total": p.group.num_channels,
            "support": int((scores[p.group.id] > 0).sum()),
            "solver_iterations": p.n_iter.get(rho, 0),
            "solves": len(p.solutions),
        }
        for p in problems
    }
    details = {
        "method": method.name,
        "target_kind": opts.target_kind.value,
        "structure": structure_info,
        "pool": opts.pool,
        "lambda2_fraction": opts.lambda2 if method.structure != "none" else 0.0,
        "nonneg": opts.nonneg,
        "ridge": opts.ridge,
        "magnitude": opts.magnitude,
        "rho": rho,
        "bisection": search.history,
        "adjustment": adjustment,
        "adjusted_channels": sum(abs(len(keep[g]) - max(v["support"], f)) for (g, v), f
                                 in zip(per_group.items(), search.floors)),
        "calibration_images": int(features.labels.numel()),
        "groups": per_group,
        "seconds": times,
    }
    return Selection(keep={gid: tuple(int(c) for c in kept) for gid, kept in keep.items()}, scores=scores,
                     details=details)


def _structure(
    method: LassoMethod, features: CalibrationFeatures, tau: float | None = None
) -> tuple[GraphFused | TreeGroup | None, Any]:
    """The class graph (edges with |r_ml| >= tau) / tree from the class means, and a JSON-safe description."""
    means = features.class_means.numpy()
    if method.structure == "graph":
        graph = class_graph(means, tau=tau)
        return graph, {"kind": "graph", "edges": [[int(m), int(l), float(w)]
                                                  for (m, l), w in zip(graph.edges, graph.weights)]}
    if method.structure == "tree":
        tree = class_tree(means)
        return tree, {"kind": "tree", "groups": [[[int(k) for k in g], float(w)]
                                                 for g, w in zip(tree.groups, tree.weights)]}
    return None, {"kind": "none"}


def _problems(
    groups: tuple[ChannelGroup, ...], features: CalibrationFeatures, opts: LassoOptions,
    structure: GraphFused | TreeGroup | None, seed: int,
) -> tuple[list[_GroupProblem], float, float]:
    problems, seconds_kernels, seconds_gram = [], 0.0, 0.0
    for group in groups:
        gram = hsic_gram(
            features.inputs[group.id], features.labels, features.num_classes, target=opts.target_kind,
            outputs=features.outputs.get(group.id), block=opts.block, permutations=opts.permutations, seed=seed,
        )
        seconds_kernels += gram.seconds_kernels
        seconds_gram += gram.seconds_gram
        G, R = gram.G.numpy(), gram.R.numpy()
        if opts.ridge > 0:
            G = G + opts.ridge * max(float(np.linalg.eigvalsh(G)[-1]), 1e-12) * np.eye(len(G))
        if opts.magnitude:
            G, R = _magnitude_weighted(G, R, features.inputs[group.id])
        estimator = StructuredLasso(structure if R.shape[1] > 1 else None, 0.0, 0.0, nonneg=opts.nonneg,
                                    tol=opts.tol, max_iter=opts.max_iter)
        problems.append(_GroupProblem(
            group=group, G=G, R=R, lam_max=lambda_max(G, R, opts.nonneg),
            relevance=R.max(axis=1) if opts.nonneg else np.abs(R).max(axis=1),
            estimator=estimator, lambda2=opts.lambda2 if structure is not None else 0.0,
            solutions={}, n_iter={},
        ))
    return problems, seconds_kernels, seconds_gram


def _channel_values(scores: np.ndarray, relevance: np.ndarray) -> np.ndarray:
    """Comparable channel values across groups: score / max score, zeros ranked by relevance below them."""
    top = scores.max(initial=0.0)
    rel = np.maximum(relevance, 0.0)
    rel_top = rel.max(initial=0.0)
    base = scores / top if top > 0 else np.zeros_like(scores)
    return base + 1e-3 * (rel / rel_top if rel_top > 0 else 0.0)


def _step_width(width: int, total: int, step: int, shrink: bool) -> int:
    """The next width on the grid {multiples of step} U {total}, down or up."""
    if shrink:
        return (width - 1) // step * step if width % step else width - step
    return min(total, (width // step + 1) * step)


def _magnitude_weighted(G: np.ndarray, R: np.ndarray, features: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """``(D G D, D R)`` with ``D = diag(d)``, d_c = RMS of channel c's features (N, C, D) / mean RMS.

    Substituting ``B = D B'`` turns ``lambda1 sum_c |B_c|`` into ``lambda1 sum_c |B'_c| / d_c``:
    the lasso on the weighted problem penalises weak channels more; supports are the same.
    """
    rms = features.double().pow(2).mean(dim=(0, 2)).sqrt().numpy()
    d = rms / rms.mean() if rms.mean() > 0 else np.ones_like(rms)
    return G * np.outer(d, d), R * d[:, None]


class _Search:
    """Bisection on log rho for the cost target, then a greedy fix-up (module docstring)."""

    def __init__(self, ctx: SelectionContext, problems: list[_GroupProblem], tolerance: float) -> None:
        self.ctx, self.problems = ctx, problems
        self.floors = [int(f) for f in ctx.floors]
        full = ctx.target.full(ctx.cost_model)
        self.full = full
        self.goal = ctx.target.ratio * full
        self.band = (self.goal - tolerance * full, self.goal + tolerance * full)
        self.limits = (self.goal - 0.01 * full, self.goal + 0.01 * full)
        self.history: list[dict[str, float]] = []
        self.solver_seconds = 0.0

    def cost(self, keep: list[np.ndarray]) -> int:
        return self.cost_of_counts([len(k) for k in keep])

    def cost_of_counts(self, counts: list[int]) -> int:
        return self.ctx.target.cost(self.ctx.cost_model, np.array(counts, dtype=np.float64))

    def evaluate(self, rho: float) -> tuple[list[np.ndarray], list[np.ndarray], int]:
        started = time.perf_counter()
        sets = [_keep_set(p, rho, f) for p, f in zip(self.problems, self.floors)]
        self.solver_seconds += time.perf_counter() - started
        keep, scores = [k for k, _ in sets], [s for _, s in sets]
        cost = self.cost(keep)
        self.history.append({"rho": rho, "cost_ratio": cost / self.full})
        return keep, scores, cost

    def run(self) -> tuple[float, dict[str, np.ndarray], str]:
        """(rho, kept channels per group, how the keep sets were fixed up: none / drop / add)."""
        lo, hi = _RHO_MIN, 1.0
        keep_lo, scores_lo, cost_lo = self.evaluate(lo)
        if self.band[0] <= cost_lo <= self.band[1]:
            return lo, self._named(keep_lo), "none"
        if cost_lo < self.band[0]:  # the lasso keeps too few even at the weakest strength: add channels
            return lo, self._named(self._add(keep_lo, scores_lo)), "add"
        keep_hi, _, cost_hi = self.evaluate(hi)
        if self.band[0] <= cost_hi <= self.band[1]:
            return hi, self._named(keep_hi), "none"
        for _ in range(_MAX_STEPS):
            if math.log(hi) - math.log(lo) < 1e-4:
                break
            mid = math.sqrt(lo * hi)
            keep_mid, scores_mid, cost_mid = self.evaluate(mid)
            if self.band[0] <= cost_mid <= self.band[1]:
                return mid, self._named(keep_mid), "none"
            if cost_mid > self.band[1]:
                lo, keep_lo, scores_lo, cost_lo = mid, keep_mid, scores_mid, cost_mid
            else:
                hi, keep_hi, cost_hi = mid, keep_mid, cost_mid
        return lo, self._named(self._drop(keep_lo, scores_lo, keep_hi)), "drop"

    def _named(self, keep: list[np.ndarray]) -> dict[str, np.ndarray]:
        return {p.group.id: k for p, k in zip(self.problems, keep)}

    def _drop(self, keep: list[np.ndarray], scores: list[np.ndarray], keep_hi: list[np.ndarray]) -> list[np.ndarray]:
        """Remove channels (those the stronger side drops first, weakest first) until the cost fits."""
        candidates = []
        for g, (kept, s, kept_hi) in enumerate(zip(keep, scores, keep_hi)):
            top = s[kept].max(initial=0.0)
            stays = set(kept_hi.tolist())
            for c in kept.tolist():
                candidates.append((c in stays, s[c] / top if top > 0 else 0.0, g, c))
        candidates.sort()
        sets = [set(k.tolist()) for k in keep]
        cost = self.cost(keep)
        for _, _, g, c in candidates:
            if cost <= self.band[1]:
                break
            if len(sets[g]) <= self.floors[g]:
                continue
            sets[g].discard(c)
            trial = self.cost([np.array(sorted(s)) for s in sets])
            if trial < self.limits[0]:
                sets[g].add(c)  # this removal overshoots; a smaller step elsewhere may fit
                continue
            cost = trial
        return self._checked([np.array(sorted(s)) for s in sets])

    def _add(self, keep: list[np.ndarray], scores: list[np.ndarray]) -> list[np.ndarray]:
        """Add channels the lasso left out, most relevant (largest normalised max_k R_ck) first."""
        candidates = []
        for g, (kept, p) in enumerate(zip(keep, self.problems)):
            rel = np.maximum(p.relevance, 0.0)
            top = rel.max(initial=0.0)
            inside = set(kept.tolist())
            candidates += [(-(rel[c] / top if top > 0 else 0.0), g, c) for c in range(len(rel)) if c not in inside]
        candidates.sort()
        sets = [set(k.tolist()) for k in keep]
        cost = self.cost(keep)
        for _, g, c in candidates:
            if cost >= self.band[0]:
                break
            sets[g].add(c)
            trial = self.cost([np.array(sorted(s)) for s in sets])
            if trial > self.limits[1]:
                sets[g].discard(c)
                continue
            cost = trial
        return self._checked([np.array(sorted(s)) for s in sets])

    def rounded(self, keep: dict[str, np.ndarray], rho: float, step: int) -> dict[str, np.ndarray]:
        """Widths rounded to multiples of ``step`` (or the whole group), then moved by whole steps to the target.

        Each group's channels are ordered: kept ones first, by score then relevance;
        a group keeps a prefix of its order. Widths go to the nearest multiple,
        then, while the cost is outside the band, the step whose channels have
        the lowest (removing) or highest (adding) normalised value moves.
        """
        orders, values, counts = [], [], []
        for p, floor in zip(self.problems, self.floors):
            scores = _scores(p.solve(rho))
            kept = keep[p.group.id]
            inside = np.zeros(len(scores), dtype=bool)
            inside[kept] = True
            order = np.lexsort((-p.relevance, -scores, ~inside))
            orders.append(order)
            values.append(_channel_values(scores, p.relevance)[order])
            total = len(scores)
            counts.append(min(total, max(floor, int(round(len(kept) / step)) * step)))
        counts = self._move_steps(counts, values, step)
        return self._named(self._checked([np.sort(o[:k]) for o, k in zip(orders, counts)]))

    def _move_steps(self, counts: list[int], values: list[np.ndarray], step: int) -> list[int]:
        totals = [len(v) for v in values]
        for _ in range(4 * sum(totals) // step + 1):
            cost = self.cost_of_counts(counts)
            if self.band[0] <= cost <= self.band[1]:
                break
            shrink = cost > self.band[1]
            moves = []
            for g, (k, v) in enumerate(zip(counts, values)):
                new = _step_width(k, totals[g], step, shrink)
                if new == k or (shrink and new < self.floors[g]):
                    continue
                value = float((v[new:k] if shrink else v[k:new]).mean())
                moves.append((value if shrink else -value, g, new))
            for _, g, new in sorted(moves):  # cheapest removal / most valuable addition first
                trial = counts[:g] + [new] + counts[g + 1:]
                moved = self.cost_of_counts(trial)
                if (moved >= self.limits[0]) if shrink else (moved <= self.limits[1]):
                    counts = trial
                    break
            else:
                break  # every step overshoots the limits: keep the closest feasible widths
        return counts

    def _checked(self, keep: list[np.ndarray]) -> list[np.ndarray]:
        cost = self.cost(keep)
        if not self.limits[0] <= cost <= self.limits[1]:
            raise LassopruneError(
                f"could not bring {self.ctx.target.kind} within 0.01 of {self.ctx.target.ratio} "
                f"(reached {cost / self.full:.4f}); the channel steps are too coarse for this target"
            )
        return keep


def _selector(method: LassoMethod):
    def select(ctx: SelectionContext) -> Selection:
        return select_channels(ctx, method)

    select.__name__ = method.name.replace("-", "_")
    select.__doc__ = f"The {method.name} keep-set selector ({method.structure} structure, {method.target_kind.value})."
    return select


for _method in LASSO_METHODS.values():
    register_selector(_method.name)(_selector(_method))
