"""The class-wise structured HSIC lasso methods: ``sglp-ib``, ``stlp-ib``, ``hsic-ib``, ``class-lasso``.

METHODS.md 1. For every channel group g, one forward pass gives pooled
features (:mod:`lassoprune.hsic.calibration`), and the Gram form of the HSIC
lasso gives ``G_g`` (C x C) and ``R_g`` (C x K) once (:mod:`lassoprune.hsic.kernels`).
Then

    B_g(rho) = argmin_B f_g(B) + lambda1_g ||B||_1 + lambda2_g Omega(B)   (B >= 0 with ``nonneg``),
    lambda1_g = rho * lambda_max(g),   lambda2_g = lambda2 * lambda1_g,

with ``f_g`` the class-wise fit (``class_fit``, METHODS.md 1.3): ``1/2 tr(B^T G_g B) - tr(B^T R_g)``
for ``block`` and ``label``, ``sum_k 1/2 b_k^T G_gk b_k - r_gk^T b_k`` (one Gram per
class, :func:`lassoprune.hsic.class_fit_gram`) for ``conditional`` and ``cross``,

solved by :class:`lassoprune.lasso.StructuredLasso`. A channel is kept iff its
row of ``B_g`` is non-zero; its score is ``s_c = ||B_c,:||_2``. One global
``rho`` (bisected on a log scale) sets every group's strength, so the per-group
widths are an output; the bisection stops when the network cost is within
``target_tolerance`` of the target. Support sizes move in steps: when the bisection
brackets the target without landing in it, the solution on the larger side is
taken and its channels that the smaller side drops are removed, weakest score
first (then any others), until the target is met; when even the smallest
``rho`` keeps too little, channels are added by relevance to the targets.
With ``round_to`` (``lp.prune(..., round_to=8)``) every width is then rounded
to a multiple of it (or the whole group) and moved by whole steps, lowest-valued
channels first, until the cost is back within the target band.
Every group keeps at least its floor (``ctx.floors``); a group whose lasso
keeps fewer gets its most relevant channels (largest ``max_k R_ck``).

Methods (structure over classes, default class fit):

- ``sglp-ib``: graph-guided fused lasso on :func:`lassoprune.lasso.class_graph`, ``cross``
- ``stlp-ib``: tree-guided group lasso on :func:`lassoprune.lasso.class_tree`, ``cross``
- ``hsic-ib``: plain lasso, one ``output`` target (APIB-like); no class fit
- ``class-lasso``: plain lasso on the same class fit as ``sglp-ib`` / ``stlp-ib`` (our
  choice, so that it ablates only the class structure)

``cross`` is the default class fit by measurement: one-shot on the converged
ResNet-20 it kept 0.90-0.91 / 0.84 top-1 at 0.5 / 0.33 of the MACs where ``block``
and ``label`` kept 0.87 / 0.48 and ``conditional`` 0.91 / 0.66 (docs/BENCHMARKS.md).
With fixed-bandwidth kernels the output kernel is nearly constant inside a class
block, so ``block`` and ``label`` pick the same channels.

Every lasso method keeps residual (eltwise) groups whole by default
(``lp.prune(prune_residual=None)``), as APIB does: measured one-shot on two
networks (METHODS.md 1.1, docs/BENCHMARKS.md), cutting the residual stream cost
the lasso 10-25 points of top-1.

Options (``lp.prune(..., method=..., **options)``):

- ``class_fit``: ``block`` | ``conditional`` | ``cross`` | ``label`` (sglp-ib, stlp-ib,
  class-lasso; default per method, above; :class:`lassoprune.hsic.ClassFit`)
- ``target_kind``: ``class-output`` | ``class`` | ``output``: the older name of the
  one-Gram fits (``class-output`` = ``block``, ``class`` = ``label``; ``output`` = one target)
- ``pool``: features are average-pooled to at most pool x pool (default 4)
- ``lambda2``: structured weight as a fraction of lambda1 (default 0.1; ignored without structure)
- ``edge_threshold``: class-graph edge threshold on ``|r|`` between class means, in [0, 1]
  (default: the largest that leaves every class with at least one edge)
- ``structure_from``: ``output`` (default: one graph / tree from the class means of the
  penultimate features, METHODS.md 1.3) | ``layer`` (one per group, from the class means of
  that group's own pooled features: how the classes relate where the channels are chosen)
- ``class_weight``: ``uniform`` (default) | ``confusable``: class k's term of a per-class fit
  (``cross``, ``conditional``) weighted by :func:`lassoprune.lasso.confusable_class_weights`
  (1 + the positive correlations of its penultimate class mean with the others', mean 1):
  the classes that look alike, which pruning hurts first, weigh more in the fit
- ``block``, ``permutations``: block HSIC for large calibration sets (default off, 1)
- ``nonneg``: constrain B >= 0 (default False, APIB's signed lasso: the non-negative fit of
  near-collinear kernels saturates, so a fall-back decided the widths)
- ``ridge``: elastic-net term ``ridge * ||G||_2 / 2 * ||B||_F^2`` added to the datafit, i.e. ``G`` is
  replaced by ``G + ridge ||G||_2 I`` (our choice, default 0 = the formulation of METHODS.md 1.2).
  Without it the non-negative fit of near-collinear kernels has a small support even at
  the weakest strength, so the lasso alone cannot reach mild targets; with it the
  support grows to every relevant channel as rho falls, and the lasso decides the widths.
- ``solver_tol``, ``max_iter``: solver tolerance and iteration cap (default 1e-5, 5000)
- ``target_tolerance``: how close to the target the bisection aims (fraction of the
  original cost, default 0.008; the final cost is always within 0.01)
- ``kernel``: ``median`` | ``gaussian`` | ``laplace`` (METHODS.md 1.1; default ``laplace``,
  APIB's final setting; ``median`` was the first spec)
- ``normalise``: unit Frobenius norm per centred channel kernel (default False, as APIB:
  a channel's kernel energy carries its strength; True was the first spec)
- ``strength``: ``relative`` (``lambda1_g = rho * lambda_max(g)``, default) | ``global``
  (``lambda1 = rho * max_g lambda_max(g)`` for every group: APIB's one alpha; a group whose
  kernels carry little HSIC drops to its floor first)

The first spec (``kernel=median, normalise=True, nonneg=True``, the residual
stream cut, ``class_fit=block``) stays reachable by these options for ablations.

The search (bisection on rho, the drop / add fix-ups and the whole-step moves
of rounded widths) is :mod:`lassoprune.pruning.search`, shared with every method.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from lassoprune.channels import ChannelGroup
from lassoprune.errors import LassopruneError
from lassoprune.hsic import (
    CalibrationFeatures,
    ClassFit,
    KernelKind,
    TargetKind,
    class_fit_gram,
    collect_features,
    hsic_gram,
)
from lassoprune.lasso import (
    ClassGrams,
    GraphFused,
    QuadraticGram,
    StructuredLasso,
    TreeGroup,
    class_graph,
    class_tree,
    confusable_class_weights,
    lambda_max,
)
from lassoprune.pruning.method import MethodContext, MethodOptions, MethodSpec, Selection, option, register_method
from lassoprune.pruning.search import (
    CostBand,
    Verdict,
    bisect,
    log_midpoint,
    nearest_multiple,
    step_width,
    walk_widths,
)
from lassoprune.utils.enums import NamedEnum

__all__ = ["LassoMethod", "LASSO_METHODS", "LassoOptions", "select_channels"]

_RHO_MIN = 1e-4  # relative strength: rho x lambda_max(g)
_RHO_MIN_GLOBAL = 1e-7  # global strength: groups' lambda_max spread over orders of magnitude
_MAX_STEPS = 30
_FLOAT32_TOLERANCE = 1e-6  # solver_tol from which per-class products may run in float32
STRUCTURE_SOURCES = ("output", "layer")
"""Where the class graph / tree comes from (option ``structure_from``)."""
CLASS_WEIGHTS = ("uniform", "confusable")
"""How the per-class fits' terms are weighted (option ``class_weight``)."""


class Strength(NamedEnum):
    """How one search strength rho becomes each group's lambda1."""

    RELATIVE = "relative"  # rho x lambda_max(g): every group reaches zero at rho = 1
    GLOBAL = "global"  # rho x max_g lambda_max(g): one absolute lambda1, as APIB's single alpha


class ClassStructure(NamedEnum):
    """The structure a lasso method puts over the classes."""

    GRAPH = "graph"
    TREE = "tree"
    NONE = "none"


@dataclass(frozen=True)
class LassoMethod:
    """One lasso method: the structure over classes and its default class fit (None: one ``output`` target)."""

    name: str
    structure: ClassStructure
    class_fit: ClassFit | None
    summary: str


LASSO_METHODS: dict[str, LassoMethod] = {
    m.name: m
    for m in (
        LassoMethod("sglp-ib", ClassStructure.GRAPH, ClassFit.CROSS,
                    "class-wise HSIC lasso + graph-guided fused lasso over classes"),
        LassoMethod("stlp-ib", ClassStructure.TREE, ClassFit.CROSS,
                    "class-wise HSIC lasso + tree-guided group lasso over classes"),
        LassoMethod("hsic-ib", ClassStructure.NONE, None,
                    "HSIC lasso with one output target, no class structure (APIB-like)"),
        LassoMethod("class-lasso", ClassStructure.NONE, ClassFit.CROSS,
                    "class-wise targets, plain L1 (ablation of the class structure)"),
    )
}


@dataclass(frozen=True)
class LassoOptions(MethodOptions):
    """The options of the lasso methods (module docstring); ``class_fit`` / ``target_kind`` None = the method's own."""

    class_fit: ClassFit | str | None = option(
        None, "class-wise fit: block | conditional | cross | label (sglp-ib, stlp-ib, class-lasso; "
              "default: the method's own)")
    target_kind: TargetKind | str | None = option(
        None, "HSIC targets of the one-Gram fits: class-output (= block) | class (= label) | output "
              "(default: from the class fit)")
    pool: int | None = option(4, "features average-pooled to at most pool x pool pixels (>= 1; null: full maps)")
    lambda2: float = option(0.1, "structured penalty weight, a fraction of lambda1 (>= 0)")
    edge_threshold: float | None = option(
        None, "class-graph edge threshold on |Pearson r| of class means, in [0, 1] (default: every class keeps an edge)")
    structure_from: str = option("output", "class means the graph / tree is built from: output (penultimate "
                                           "features, one structure) | layer (each group's own features)")
    class_weight: str = option("uniform", "weights of the per-class fits' terms: uniform | confusable (classes "
                                          "whose penultimate class means resemble others' weigh more)")
    block: int | None = option(None, "block HSIC block size in images (null: exact)")
    permutations: int = option(1, "block HSIC permutations (>= 1)")
    nonneg: bool = option(False, "constrain the coefficients to be >= 0 (default: signed, as APIB)")
    ridge: float = option(0.0, "ridge term, a fraction of ||G||_2 added to the Gram diagonal (>= 0)")
    magnitude: bool = option(False, "weight each channel's penalty by 1 / its RMS activation")
    solver_tol: float = option(1e-5, "solver tolerance (relative change)")
    max_iter: int = option(5000, "solver iteration cap")
    target_tolerance: float = option(0.008, "how close the rho search aims, a fraction of the original cost, (0, 0.01]")
    kernel: KernelKind | str = option(KernelKind.LAPLACE, "kernel family: laplace (exp(-sqrt(0.5/D) d), APIB) | "
                                                          "gaussian (exp(-d^2/D)) | median (bandwidth per channel)")
    normalise: bool = option(False, "divide each centred channel kernel by its Frobenius norm (APIB: no)")
    strength: Strength | str = option(Strength.RELATIVE, "relative (lambda1 = rho x lambda_max of each group) | "
                                                         "global (one absolute lambda1 for every group)")

    def validate(self, method: str) -> None:
        spec = LASSO_METHODS[method]
        fit, target = _fit_and_target(spec, self.class_fit, self.target_kind)
        object.__setattr__(self, "class_fit", fit)
        object.__setattr__(self, "target_kind", target)
        object.__setattr__(self, "kernel", KernelKind.parse(self.kernel, "kernel"))
        object.__setattr__(self, "strength", Strength.parse(self.strength, "lasso strength"))
        if self.pool is not None and int(self.pool) < 1:
            raise LassopruneError(f"pool must be a positive side length or None, got {self.pool}")
        if not self.lambda2 >= 0:
            raise LassopruneError(f"lambda2 (a fraction of lambda1) must be >= 0, got {self.lambda2}")
        if self.structure_from not in STRUCTURE_SOURCES:
            raise LassopruneError(f"structure_from must be one of {', '.join(STRUCTURE_SOURCES)}, "
                                  f"got {self.structure_from!r}")
        if self.class_weight not in CLASS_WEIGHTS:
            raise LassopruneError(f"class_weight must be one of {', '.join(CLASS_WEIGHTS)}, got {self.class_weight!r}")
        if self.class_weight != "uniform" and (fit is None or not fit.per_class):
            raise LassopruneError(f"class_weight {self.class_weight!r} weights the terms of a per-class fit: use "
                                  "class_fit cross or conditional (sglp-ib, stlp-ib, class-lasso)")
        if self.edge_threshold is not None and not 0 <= self.edge_threshold <= 1:
            raise LassopruneError("edge_threshold (a threshold on |Pearson r| between class means) must be in "
                                  f"[0, 1], got {self.edge_threshold}")
        if not self.ridge >= 0:
            raise LassopruneError(f"ridge (a fraction of ||G||_2) must be >= 0, got {self.ridge}")
        if self.block is not None and int(self.block) < 1:
            raise LassopruneError(f"block (images per HSIC block) must be >= 1 or None, got {self.block}")
        if int(self.permutations) < 1 or int(self.max_iter) < 1:
            raise LassopruneError(f"permutations and max_iter must be >= 1, got {self.permutations}, {self.max_iter}")
        if not self.solver_tol > 0:
            raise LassopruneError(f"solver_tol must be > 0, got {self.solver_tol}")
        if not 0 < self.target_tolerance <= 0.01:
            raise LassopruneError(f"target_tolerance must be in (0, 0.01], got {self.target_tolerance}")
        if fit is not None and fit.per_class and self.block is not None:
            raise LassopruneError(f"block HSIC needs one Gram for every class; class_fit {fit.value!r} has one per "
                                  "class: use class_fit=block or class_fit=label with block, or leave block unset")
        if spec.structure is not ClassStructure.NONE and fit is None:
            raise LassopruneError(
                f"{method} structures the class-wise coefficients; target_kind 'output' has one target "
                "(use hsic-ib, or a class fit: class_fit block | conditional | cross | label)"
            )


def _fit_and_target(
    spec: LassoMethod, class_fit: ClassFit | str | None, target_kind: TargetKind | str | None
) -> tuple[ClassFit | None, TargetKind]:
    """The class fit (None: one ``output`` target) and the HSIC target kind that options resolve to."""
    fit = ClassFit.parse(class_fit, "class fit") if class_fit is not None else None
    target = TargetKind.parse(target_kind) if target_kind is not None else None
    if spec.class_fit is None and fit is not None:
        raise LassopruneError(f"{spec.name} has one output target: class_fit is an option of sglp-ib, stlp-ib and "
                              "class-lasso")
    if fit is None:
        by_target = {TargetKind.CLASS_OUTPUT: ClassFit.BLOCK, TargetKind.CLASS: ClassFit.LABEL}
        fit = by_target.get(target) if target is not None else spec.class_fit
    elif target is not None and target is not fit.target:
        raise LassopruneError(f"class_fit {fit.value!r} and target_kind {target.value!r} disagree: give one of them")
    return fit, fit.target if fit is not None else TargetKind.OUTPUT


@dataclass
class _GroupProblem:
    """One group's lasso: cached ``G``, ``R``, its estimator and the solutions already computed."""

    group: ChannelGroup
    G: QuadraticGram | ClassGrams  # the datafit, built once: its eigen-decompositions serve every solve
    R: np.ndarray
    lam_max: float
    scale: float  # lambda1 = rho * scale: lam_max (relative strength) or the largest lam_max of all groups (global)
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
        if self.lam_max <= 0 or rho * self.scale >= self.lam_max:
            coef, iters = np.zeros((C, K)), 0
        else:
            if self.solutions:
                nearest = min(self.solutions, key=lambda r: abs(math.log(r) - math.log(rho)))
                self.estimator.coef_ = self.solutions[nearest]
            self.estimator.lambda1 = rho * self.scale
            self.estimator.lambda2 = self.lambda2 * rho * self.scale
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


def select_channels(ctx: MethodContext, method: LassoMethod) -> Selection:
    """Run one lasso method (module docstring); ``ctx.options`` are its :class:`LassoOptions`."""
    opts: LassoOptions = ctx.options
    groups = ctx.analysis.groups
    times: dict[str, float] = {}
    features = collect_features(ctx.model, groups, ctx.batches, pool=opts.pool, outputs=opts.target_kind.needs_output)
    times["features"] = features.seconds
    if opts.structure_from == "layer" and method.structure is not ClassStructure.NONE:
        structure_info = {"kind": method.structure.value, "from": "layer"}
        structures = {g.id: _structure(method, _layer_class_means(features, g), opts.edge_threshold)[0]
                      for g in groups}  # fmt: skip
    else:
        structure, structure_info = _structure(method, features.class_means.numpy(), opts.edge_threshold)
        structures = dict.fromkeys((g.id for g in groups), structure)
    weights = confusable_class_weights(features.class_means.numpy()) if opts.class_weight == "confusable" else None
    problems, times["kernels"], times["gram"] = _problems(groups, features, opts, structures, ctx.seed, weights)

    started = time.perf_counter()
    rho_min = _RHO_MIN_GLOBAL if opts.strength is Strength.GLOBAL else _RHO_MIN
    search = _Search(ctx, problems, opts.target_tolerance, rho_min)
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
        "class_fit": opts.class_fit.value if opts.class_fit is not None else None,
        "target_kind": opts.target_kind.value,
        "structure": structure_info,
        "class_weights": weights.tolist() if weights is not None else None,
        "pool": opts.pool,
        "lambda2_fraction": opts.lambda2 if method.structure is not ClassStructure.NONE else 0.0,
        "nonneg": opts.nonneg,
        "ridge": opts.ridge,
        "magnitude": opts.magnitude,
        "kernel": opts.kernel.value,
        "normalise": opts.normalise,
        "strength": opts.strength.value,
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


def _layer_class_means(features: CalibrationFeatures, group: ChannelGroup) -> np.ndarray:
    """``(K, C * D)`` class means of one group's pooled features (``features.inputs[id]``: ``(N, C, D)``)."""
    x = features.inputs[group.id].double().flatten(1)  # (N, C * D)
    labels = features.labels
    return torch.stack([x[labels == k].mean(0) for k in range(features.num_classes)]).numpy()


def _structure(
    method: LassoMethod, means: np.ndarray, edge_threshold: float | None = None
) -> tuple[GraphFused | TreeGroup | None, Any]:
    """The class graph (edges with |r_ml| >= edge_threshold) / tree from ``(K, D)`` class means, described
    JSON-safe."""
    if method.structure is ClassStructure.GRAPH:
        graph = class_graph(means, tau=edge_threshold)
        return graph, {"kind": "graph", "edges": [[int(m), int(l), float(w)]
                                                  for (m, l), w in zip(graph.edges, graph.weights)]}
    if method.structure is ClassStructure.TREE:
        tree = class_tree(means)
        return tree, {"kind": "tree", "groups": [[[int(k) for k in g], float(w)]
                                                 for g, w in zip(tree.groups, tree.weights)]}
    return None, {"kind": "none"}


def _problems(
    groups: tuple[ChannelGroup, ...], features: CalibrationFeatures, opts: LassoOptions,
    structures: dict[str, GraphFused | TreeGroup | None], seed: int, class_weights: np.ndarray | None = None,
) -> tuple[list[_GroupProblem], float, float]:
    """One :class:`_GroupProblem` per group; ``class_weights`` ``(K,)`` scale the per-class fits' terms
    (``w_k (1/2 b_k^T G_k b_k - r_k^T b_k)``: ``G_k`` and ``r_k`` times ``w_k``)."""
    problems, seconds_kernels, seconds_gram = [], 0.0, 0.0
    for group in groups:
        gram = _group_gram(group, features, opts, seed)
        seconds_kernels += gram.seconds_kernels
        seconds_gram += gram.seconds_gram
        G, R = gram.G.numpy(), gram.R.numpy()  # G: (C, C), or (K, C, C) for the per-class fits
        if class_weights is not None:
            G, R = G * class_weights[:, None, None], R * class_weights[None, :]
        if opts.ridge > 0:  # + ridge ||G_k||_2 I for every Gram
            top = np.maximum(np.linalg.eigvalsh(G)[..., -1], 1e-12)
            G = G + opts.ridge * np.asarray(top)[..., None, None] * np.eye(G.shape[-1])
        if opts.magnitude:
            G, R = _magnitude_weighted(G, R, features.inputs[group.id])
        structure = structures[group.id]
        estimator = StructuredLasso(structure if R.shape[1] > 1 else None, 0.0, 0.0, nonneg=opts.nonneg,
                                    tol=opts.solver_tol, max_iter=opts.max_iter)
        lam_max = lambda_max(G, R, opts.nonneg)
        # one datafit per group, so its eigen-decompositions serve every solve of the search; per-class
        # products in float32 (4x faster) unless the solver tolerance needs more than float32 resolves
        products = np.float32 if opts.solver_tol >= _FLOAT32_TOLERANCE else np.float64
        G = ClassGrams(G, R, product_dtype=products) if G.ndim == 3 else QuadraticGram(G, R)
        problems.append(_GroupProblem(
            group=group, G=G, R=R, lam_max=lam_max, scale=lam_max,
            relevance=R.max(axis=1) if opts.nonneg else np.abs(R).max(axis=1),
            estimator=estimator, lambda2=opts.lambda2 if structure is not None else 0.0,
            solutions={}, n_iter={},
        ))
    if opts.strength is Strength.GLOBAL:  # one absolute lambda1 for every group, as APIB's single alpha
        largest = max((p.lam_max for p in problems), default=0.0)
        for problem in problems:
            problem.scale = largest
    return problems, seconds_kernels, seconds_gram


def _group_gram(group: ChannelGroup, features: CalibrationFeatures, opts: LassoOptions, seed: int):
    """One group's Gram data: the class fit's (:func:`class_fit_gram`) or the single ``output`` target's."""
    inputs, outputs = features.inputs[group.id], features.outputs.get(group.id)
    common = {"kernel": opts.kernel, "normalise": opts.normalise, "block": opts.block,
              "permutations": opts.permutations, "seed": seed}
    if opts.class_fit is not None:
        return class_fit_gram(inputs, features.labels, features.num_classes, opts.class_fit, outputs, **common)
    return hsic_gram(inputs, features.labels, features.num_classes, target=opts.target_kind, outputs=outputs,
                     **common)


def _channel_values(scores: np.ndarray, relevance: np.ndarray) -> np.ndarray:
    """Comparable channel values across groups: score / max score, zeros ranked by relevance below them."""
    top = scores.max(initial=0.0)
    rel = np.maximum(relevance, 0.0)
    rel_top = rel.max(initial=0.0)
    base = scores / top if top > 0 else np.zeros_like(scores)
    return base + 1e-3 * (rel / rel_top if rel_top > 0 else 0.0)


def _magnitude_weighted(G: np.ndarray, R: np.ndarray, features: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """``(D G D, D R)`` with ``D = diag(d)``, d_c = RMS of channel c's features (N, C, D) / mean RMS.

    Substituting ``B = D B'`` turns ``lambda1 sum_c |B_c|`` into ``lambda1 sum_c |B'_c| / d_c``:
    the lasso on the weighted problem penalises weak channels more; supports are the same.
    """
    rms = features.double().pow(2).mean(dim=(0, 2)).sqrt().numpy()
    d = rms / rms.mean() if rms.mean() > 0 else np.ones_like(rms)
    return G * np.outer(d, d), R * d[:, None]


class _Search:
    """The lasso's route to the target (module docstring), on the shared searches of :mod:`lassoprune.pruning.search`.

    A bisection on log rho over ``[rho_min, 1]``; when it brackets the target
    without landing in the band, a greedy walk drops channels from the weaker
    side's keep sets; when even the weakest rho keeps too little, it adds them.
    """

    def __init__(self, ctx: MethodContext, problems: list[_GroupProblem], tolerance: float,
                 rho_min: float = _RHO_MIN) -> None:
        self.ctx, self.problems, self.rho_min = ctx, problems, rho_min
        self.floors = [int(f) for f in ctx.floors]
        self.target = CostBand(ctx.target, ctx.cost_model, tolerance=tolerance)
        self.history: list[dict[str, float]] = []
        self.solver_seconds = 0.0
        self._solved: dict[float, tuple[list[np.ndarray], list[np.ndarray], int]] = {}

    def cost(self, keep: list[np.ndarray]) -> int:
        return self.target.cost([len(k) for k in keep])

    def evaluate(self, rho: float) -> tuple[list[np.ndarray], list[np.ndarray], int]:
        """(keep sets, scores, cost) at ``rho``; recorded in the history."""
        started = time.perf_counter()
        sets = [_keep_set(p, rho, f) for p, f in zip(self.problems, self.floors)]
        self.solver_seconds += time.perf_counter() - started
        keep, scores = [k for k, _ in sets], [s for _, s in sets]
        cost = self.cost(keep)
        self.history.append({"rho": rho, "cost_ratio": cost / self.target.full})
        self._solved[rho] = (keep, scores, cost)
        return keep, scores, cost

    def _verdict(self, rho: float) -> Verdict:
        return self.target.verdict(self.evaluate(rho)[2])

    def run(self) -> tuple[float, dict[str, np.ndarray], str]:
        """(rho, kept channels per group, how the keep sets were fixed up: none / drop / add)."""
        keep_lo, scores_lo, cost_lo = self.evaluate(self.rho_min)
        verdict_lo = self.target.verdict(cost_lo)
        if verdict_lo is Verdict.MEETS:
            return self.rho_min, self._named(keep_lo), "none"
        if verdict_lo is Verdict.KEEPS_TOO_LITTLE:  # the lasso keeps too few even at the weakest strength
            return self.rho_min, self._named(self._add(keep_lo)), "add"
        if self._verdict(1.0) is Verdict.MEETS:
            return 1.0, self._named(self._solved[1.0][0]), "none"
        found = bisect(self._verdict, over=self.rho_min, under=1.0, midpoint=log_midpoint(1e-4), max_steps=_MAX_STEPS)
        if found.hit is not None:
            return found.hit, self._named(self._solved[found.hit][0]), "none"
        keep_lo, scores_lo, _ = self._solved[found.over]
        return found.over, self._named(self._drop(keep_lo, scores_lo, self._solved[found.under][0])), "drop"

    def _named(self, keep: list[np.ndarray]) -> dict[str, np.ndarray]:
        return {p.group.id: k for p, k in zip(self.problems, keep)}

    def _walk(self, orders: list[np.ndarray], widths: list[int], accept: tuple[float, float],
              keys: list[Any]) -> list[np.ndarray]:
        """Channel-by-channel walk over prefix orders; ``keys[g][i]`` ranks moving position ``i`` of group g.

        ``accept`` is one-sided (drop: ``(-inf, high)``, add: ``(low, inf)``), so the walk moves one way only.
        """

        def next_width(g: int, width: int, shrink: bool) -> int | None:
            if shrink:
                return width - 1 if width > self.floors[g] else None
            return width + 1 if width < len(orders[g]) else None

        def priority(g: int, width: int, _new: int, shrink: bool) -> Any:
            return keys[g][width - 1 if shrink else width]

        counts = walk_widths(widths, self.target.cost, accept, self.target.limits, next_width, priority)
        return self._checked([np.sort(o[: int(k)]) for o, k in zip(orders, counts)])

    def _drop(self, keep: list[np.ndarray], scores: list[np.ndarray], keep_hi: list[np.ndarray]) -> list[np.ndarray]:
        """Remove channels (those the stronger side drops first, weakest first) until the cost fits."""
        orders, keys = [], []
        for kept, s, kept_hi in zip(keep, scores, keep_hi):
            top = s[kept].max(initial=0.0)
            stays = set(kept_hi.tolist())
            removal = sorted((c in stays, s[c] / top if top > 0 else 0.0, c) for c in kept.tolist())
            inside = [c for *_, c in reversed(removal)]  # most important first
            outside = sorted(set(range(len(s))) - set(inside))
            orders.append(np.array(inside + outside, dtype=np.int64))
            keys.append([(stays_c, value) for stays_c, value, _ in reversed(removal)])
        return self._walk(orders, [len(k) for k in keep], (-math.inf, self.target.band[1]), keys)

    def _add(self, keep: list[np.ndarray]) -> list[np.ndarray]:
        """Add channels the lasso left out, most relevant (largest normalised max_k R_ck) first."""
        orders, keys = [], []
        for kept, p in zip(keep, self.problems):
            rel = np.maximum(p.relevance, 0.0)
            top = rel.max(initial=0.0)
            inside = set(kept.tolist())
            added = sorted((-(rel[c] / top if top > 0 else 0.0), c) for c in range(len(rel)) if c not in inside)
            orders.append(np.array(kept.tolist() + [c for _, c in added], dtype=np.int64))
            keys.append([None] * len(kept) + [key for key, _ in added])
        return self._walk(orders, [len(k) for k in keep], (self.target.band[0], math.inf), keys)

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
            counts.append(min(total, max(floor, nearest_multiple(len(kept), step))))
        totals = [len(v) for v in values]

        def next_width(g: int, width: int, shrink: bool) -> int | None:
            new = step_width(width, totals[g], step, shrink)
            return None if new == width or (shrink and new < self.floors[g]) else new

        def priority(g: int, width: int, new: int, shrink: bool) -> float:
            value = float((values[g][new:width] if shrink else values[g][width:new]).mean())
            return value if shrink else -value

        widths = walk_widths(counts, self.target.cost, self.target.band, self.target.limits, next_width, priority,
                             max_moves=4 * sum(totals) // step + 1)
        return self._named(self._checked([np.sort(o[: int(k)]) for o, k in zip(orders, widths)]))

    def _checked(self, keep: list[np.ndarray]) -> list[np.ndarray]:
        self.target.check(self.cost(keep))
        return keep


def _run(method: LassoMethod):
    def run(ctx: MethodContext) -> Selection:
        return select_channels(ctx, method)

    run.__name__ = method.name.replace("-", "_")
    fit = method.class_fit.value if method.class_fit is not None else "output"
    run.__doc__ = f"The {method.name} keep sets ({method.structure} structure, {fit} fit)."
    return run


for _method in LASSO_METHODS.values():
    register_method(MethodSpec(
        name=_method.name, run=_run(_method), summary=_method.summary, options=LassoOptions,
        needs_data=True, decides_widths=True, rounds_widths=True, prune_residual=False,
    ))
