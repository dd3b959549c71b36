"""One channel group's HSIC lasso problem, built once and solved along a path of strengths (docs/METHODS.md 1.2).

For group g with calibration features (:mod:`lassoprune.hsic.calibration`)
the Gram data ``G_g`` (``(C, C)``, or ``(K, C, C)`` for the per-class fits)
and ``R_g`` (``(C, K)``) are computed once (:func:`~lassoprune.hsic.hsic_gram`,
:func:`~lassoprune.hsic.class_fit_gram`), and

    B_g(rho) = argmin_B f_g(B) + lambda1_g ||B||_1 + lambda2_g Omega(B),
    lambda1_g = rho * s_g,   lambda2_g = lambda2_ratio * lambda1_g,

with ``s_g = lambda_max(g)`` (relative strength: every group reaches B = 0 at
rho = 1) or ``max_g lambda_max(g)`` (global strength, APIB's single alpha).
Solutions are cached per rho and warm-started from the nearest solved rho.
A channel's score is the row norm ``||B_c,:||_2``; it is kept iff the score is
non-zero, and a group below its floor is topped up by relevance
``max_k R_ck`` (the order in which channels enter the path at large lambda).
Channels a grouped convolution reads or writes are kept in units (the same
position in every one of its B groups, ``ChannelGroup.blocks``): a unit's score
and relevance are its channels' means, and it is kept iff one of them is.

:class:`ProblemSettings` holds every setting of the problem; its defaults are
the ones the lasso methods use (measured, docs/BENCHMARKS.md), the rest are
ablations reachable through the methods' ``experimental`` options.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from lassoprune.channels import ChannelGroup
from lassoprune.errors import LassopruneError
from lassoprune.hsic.calibration import CalibrationFeatures
from lassoprune.hsic.kernels import ClassFit, HsicGram, KernelKind, ResponseKind, class_fit_gram, hsic_gram
from lassoprune.lasso import (
    ClassGrams,
    GraphFused,
    QuadraticGram,
    StructuredLasso,
    TreeGroup,
    class_graph,
    class_tree,
    lambda_max,
)
from lassoprune.utils.enums import NamedEnum

__all__ = [
    "ClassStructure",
    "GroupProblem",
    "ProblemSettings",
    "Products",
    "build_problems",
    "channel_values",
    "check_problem_memory",
    "class_structure",
    "grams_per_group",
    "keep_order",
    "layer_class_means",
    "problem_memory",
    "row_scores",
    "unit_mean",
]

Structure = GraphFused | TreeGroup | None


class ClassStructure(NamedEnum):
    """The structure a lasso method puts over the classes."""

    GRAPH = "graph"
    TREE = "tree"
    NONE = "none"


class Products(NamedEnum):
    """Precision of the per-class Gram products ``G_k b_k`` in the solvers (:class:`~lassoprune.lasso.ClassGrams`).

    ``float32`` (default) reads half the memory and runs about 4x faster; the
    Grams of N >= 256 images are built from float32 kernels anyway.
    """

    FLOAT32 = "float32"
    FLOAT64 = "float64"


@dataclass(frozen=True)
class ProblemSettings:
    """Every setting of a group's lasso problem; defaults are the lasso methods' (module docstring).

    Attributes:
        class_fit: the class-wise fit (None: one ``response`` column, no class fit).
        response: the response of the one-Gram fits (``output``; ``class`` / ``class-output`` follow ``class_fit``).
        kernel: channel and output kernel family.
        normalise: unit Frobenius norm per centred channel kernel.
        nonneg: constrain ``B >= 0``.
        ridge: ``G <- G + ridge ||G||_2 I`` (elastic net; 0 = the plain formulation).
        magnitude: weight channel c's penalty by ``1 / d_c`` (its RMS activation over the mean RMS).
        lambda2_ratio: ``lambda2 = lambda2_ratio * lambda1`` (used with a class structure only).
        global_strength: one absolute ``lambda1`` for every group (``rho * max_g lambda_max(g)``).
        block, permutations: block HSIC (one-Gram fits only); None = exact.
        solver_tol, max_iter: the estimator's tolerance and iteration cap.
        products: :class:`Products`.
    """

    class_fit: ClassFit | None = ClassFit.CROSS
    kernel: KernelKind = KernelKind.LAPLACE
    normalise: bool = False
    nonneg: bool = False
    ridge: float = 0.0
    magnitude: bool = False
    lambda2_ratio: float = 0.1
    global_strength: bool = False
    block: int | None = None
    permutations: int = 1
    solver_tol: float = 1e-5
    max_iter: int = 5000
    products: Products = Products.FLOAT32

    @property
    def response(self) -> ResponseKind:
        return self.class_fit.response if self.class_fit is not None else ResponseKind.OUTPUT


@dataclass
class GroupProblem:
    """One group's lasso (module docstring): the datafit built once, the estimator, the solutions so far.

    Attributes:
        group: the channel group (C channels).
        G: the datafit (its eigen-decompositions serve every solve of the path).
        R: ``(C, K)`` response correlations.
        lam_max: the smallest lambda1 with ``B = 0``.
        scale: ``lambda1 = rho * scale`` (``lam_max``, or the largest ``lam_max`` of all groups: global strength).
        relevance: ``(C,)`` ``max_k R_ck`` (``|R|`` for the signed fit): the order channels enter the path.
        lambda2_ratio: ``lambda2 / lambda1`` (0 without a structure).
    """

    group: ChannelGroup
    G: QuadraticGram | ClassGrams
    R: np.ndarray
    lam_max: float
    scale: float
    relevance: np.ndarray
    estimator: StructuredLasso
    lambda2_ratio: float
    solutions: dict[float, np.ndarray] = field(default_factory=dict)
    n_iter: dict[float, int] = field(default_factory=dict)

    def solve(self, rho: float) -> np.ndarray:
        """``B(rho)`` ``(C, K)``, cached; warm-started from the nearest solved rho."""
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
            self.estimator.lambda2 = self.lambda2_ratio * rho * self.scale
            self.estimator.fit_gram(self.G, self.R)
            coef, iters = self.estimator.coef_.copy(), int(self.estimator.n_iter_)
        self.solutions[rho] = coef
        self.n_iter[rho] = iters
        return coef

    def scores(self, rho: float) -> np.ndarray:
        """``(C,)`` channel scores at ``rho`` (:func:`row_scores`)."""
        return row_scores(self.solve(rho))

    @property
    def blocks(self) -> int:
        """B, channels per unit (``ChannelGroup.blocks``: > 1 when a grouped conv reads or writes the group)."""
        return self.group.blocks

    def unit_scores(self, rho: float) -> np.ndarray:
        """``(C / B,)`` unit scores at ``rho``: the mean channel score of each unit (:func:`unit_mean`)."""
        return unit_mean(self.scores(rho), self.blocks)

    @property
    def unit_relevance(self) -> np.ndarray:
        """``(C / B,)`` the mean relevance of each unit's channels."""
        return unit_mean(self.relevance, self.blocks)

    def keep_units(self, rho: float, floor: int) -> tuple[np.ndarray, np.ndarray]:
        """(kept unit numbers, sorted; unit scores ``(C / B,)``) at ``rho``: every unit with a channel in the
        support, topped up by relevance to ``floor`` units. With B = 1 units are channels."""
        scores = self.unit_scores(rho)
        count = max(int((scores > 0).sum()), floor)
        return np.sort(keep_order(scores, self.unit_relevance)[:count]), scores

    def channels_of(self, units: np.ndarray) -> np.ndarray:
        """Sorted channel numbers of ``units`` (``ChannelGroup.unit_channels``)."""
        table = np.asarray(self.group.unit_channels, dtype=np.int64)  # (C / B, B)
        return np.sort(table[np.asarray(units, dtype=np.int64)].reshape(-1))

    def units_of(self, channels: np.ndarray) -> np.ndarray:
        """The units of a keep set made of whole units (:meth:`channels_of` inverted), sorted."""
        table = np.asarray(self.group.unit_channels, dtype=np.int64)
        unit = np.empty(table.size, dtype=np.int64)
        unit[table] = np.arange(len(table))[:, None]
        return np.unique(unit[np.asarray(channels, dtype=np.int64)])


def unit_mean(values: np.ndarray, blocks: int) -> np.ndarray:
    """``(C / B,)`` mean of ``values`` ``(C,)`` over the channels of each unit (unit u: ``u + b C / B``)."""
    return values if blocks == 1 else values.reshape(blocks, -1).mean(axis=0)


def row_scores(coef: np.ndarray) -> np.ndarray:
    """Row norms ``||B_c,:||_2`` of ``coef`` ``(C, K)``; rows below round-off of the largest count as zero."""
    s = np.linalg.norm(coef, axis=1)
    top = s.max(initial=0.0)
    return np.where(s > 1e-9 * top, s, 0.0) if top > 0 else s


def keep_order(scores: np.ndarray, relevance: np.ndarray) -> np.ndarray:
    """Channels from most to least important: by score, ties (zeros) by relevance."""
    return np.lexsort((-relevance, -scores))


def channel_values(scores: np.ndarray, relevance: np.ndarray) -> np.ndarray:
    """Values comparable across groups: ``s_c / max s + 1e-3 * rel_c / max rel`` (zeros ranked by relevance)."""
    top = scores.max(initial=0.0)
    rel = np.maximum(relevance, 0.0)
    rel_top = rel.max(initial=0.0)
    base = scores / top if top > 0 else np.zeros_like(scores)
    return base + 1e-3 * (rel / rel_top if rel_top > 0 else 0.0)


def class_structure(
    kind: ClassStructure, class_means: np.ndarray, edge_threshold: float | None = None
) -> tuple[Structure, dict[str, Any]]:
    """The class graph (edges with ``|r_ml| >= edge_threshold``) or tree from ``(K, D)`` class means,
    and a JSON-safe description (``edges``: ``[m, l, w]``; ``groups``: ``[[classes], w]``)."""
    if kind is ClassStructure.GRAPH:
        graph = class_graph(class_means, tau=edge_threshold)
        return graph, {"edges": [[int(m), int(l), float(w)] for (m, l), w in zip(graph.edges, graph.weights)]}
    if kind is ClassStructure.TREE:
        tree = class_tree(class_means)
        return tree, {"groups": [[[int(k) for k in g], float(w)] for g, w in zip(tree.groups, tree.weights)]}
    return None, {}


def layer_class_means(features: CalibrationFeatures, group: ChannelGroup) -> np.ndarray:
    """``(K, C * D)`` class means of one group's pooled features (``features.inputs[id]``: ``(N, C, D)``)."""
    x = features.inputs[group.id].double().flatten(1)
    labels = features.labels
    return torch.stack([x[labels == k].mean(0) for k in range(features.num_classes)]).numpy()


#: Bytes a group's problem holds at most per Gram element through the search (``C^2`` elements, ``K C^2`` for
#: the per-class fits): its float64 Grams and a full float64 eigenbasis (a low-rank Gram keeps only its column
#: space, ``r < C / 2`` columns: 12 bytes or less; ``benchmarks/lasso_memory.py`` and ``lasso_scoring.py`` report
#: the bound beside the peak memory, docs/BENCHMARKS.md).
BYTES_PER_GRAM_ELEMENT = 16
#: ... and in addition, per element of the one ``C x C`` Gram being eigen-decomposed (its copy, LAPACK's workspace).
TRANSIENT_BYTES_PER_GRAM_ELEMENT = 24


def grams_per_group(class_fit: ClassFit | None, num_classes: int) -> int:
    """Grams a group's problem holds: K for the per-class fits (``cross``, ``conditional``), else one."""
    return num_classes if class_fit is not None and class_fit.per_class else 1


def problem_memory(widths: dict[str, int], grams_per_group: int) -> int:
    """Bytes the lasso problems of groups of ``widths`` (group id -> C) hold at most during the search, with
    ``grams_per_group`` Grams each (K for the per-class fits, else 1): ``16 sum_g K C_g^2 + 24 max_g C_g^2``.

    Not counted: the transient copies while one group's Grams are built (a few ``8 K C^2`` of the widest group,
    and its ``C x N^2 / 2`` kernel rows), the model, the calibration features and the reconstruction."""
    squares = [c * c for c in widths.values()]
    return BYTES_PER_GRAM_ELEMENT * grams_per_group * sum(squares) + TRANSIENT_BYTES_PER_GRAM_ELEMENT * max(
        squares, default=0)


def check_problem_memory(method: str, widths: dict[str, int], grams_per_group: int, available: int | None) -> None:
    """Refuse, before any Gram is built, lasso problems that need more than ``available`` bytes
    (:func:`problem_memory`; None: unknown, no check): one line naming the widest groups and what to do."""
    needed = problem_memory(widths, grams_per_group)
    if available is None or needed <= available:
        return
    widest = sorted(widths, key=widths.get, reverse=True)[:3]
    named = ", ".join(f"{gid!r} ({widths[gid]} channels)" for gid in widest)
    cheaper = "hsic-ib (one Gram per group, not one per class), " if grams_per_group > 1 else ""
    raise LassopruneError(
        f"{method} needs up to {_size(needed)} for the lasso problems of {len(widths)} channel groups "
        f"but {_size(available)} of memory is available; the widest groups are {named}: leave them whole "
        f"(ignored_layers, CLI --ignore), or prune with {cheaper}l1, or on a machine with more memory")


def _size(count: int) -> str:
    """``count`` bytes in MiB below a GiB, else in GiB."""
    return f"{count / 2**20:.1f} MiB" if count < 2**30 else f"{count / 2**30:.1f} GiB"


def build_problems(
    groups: tuple[ChannelGroup, ...], features: CalibrationFeatures, settings: ProblemSettings,
    structures: dict[str, Structure], seed: int = 0, class_weights: np.ndarray | None = None,
) -> tuple[list[GroupProblem], float, float]:
    """One :class:`GroupProblem` per group, and the seconds spent on kernels and on Grams.

    ``class_weights`` ``(K,)`` scale the per-class fits' terms (``w_k (1/2 b_k^T G_k b_k - r_k^T b_k)``).
    """
    problems, seconds_kernels, seconds_gram = [], 0.0, 0.0
    for group in groups:
        gram = _group_gram(group, features, settings, seed)
        seconds_kernels += gram.seconds_kernels
        seconds_gram += gram.seconds_gram
        problems.append(_problem(group, gram, settings, structures[group.id], features, class_weights))
    if settings.global_strength:
        largest = max((p.lam_max for p in problems), default=0.0)
        for problem in problems:
            problem.scale = largest
    return problems, seconds_kernels, seconds_gram


def _problem(
    group: ChannelGroup, gram: HsicGram, settings: ProblemSettings, structure: Structure,
    features: CalibrationFeatures, class_weights: np.ndarray | None,
) -> GroupProblem:
    G, R = gram.G.numpy(), gram.R.numpy()  # G: (C, C), or (K, C, C) for the per-class fits
    if class_weights is not None:
        G, R = G * class_weights[:, None, None], R * class_weights[None, :]
    if settings.ridge > 0:  # + ridge ||G_k||_2 I for every Gram
        top = np.maximum(np.linalg.eigvalsh(G)[..., -1], 1e-12)
        G = G + settings.ridge * np.asarray(top)[..., None, None] * np.eye(G.shape[-1])
    if settings.magnitude:
        G, R = _magnitude_weighted(G, R, features.inputs[group.id])
    structure = structure if R.shape[1] > 1 else None
    estimator = StructuredLasso(structure, 0.0, 0.0, nonneg=settings.nonneg, tol=settings.solver_tol,
                                max_iter=settings.max_iter)
    lam_max = lambda_max(G, R, settings.nonneg)
    products = np.float32 if settings.products is Products.FLOAT32 else np.float64
    datafit = ClassGrams(G, R, product_dtype=products) if G.ndim == 3 else QuadraticGram(G, R)
    return GroupProblem(
        group=group, G=datafit, R=R, lam_max=lam_max, scale=lam_max,
        relevance=R.max(axis=1) if settings.nonneg else np.abs(R).max(axis=1),
        estimator=estimator, lambda2_ratio=settings.lambda2_ratio if structure is not None else 0.0,
    )


def _group_gram(group: ChannelGroup, features: CalibrationFeatures, settings: ProblemSettings, seed: int) -> HsicGram:
    """One group's Gram data: the class fit's, or the single ``output`` response's."""
    inputs, outputs = features.inputs[group.id], features.outputs.get(group.id)
    common = {"kernel": settings.kernel, "normalise": settings.normalise, "block": settings.block,
              "permutations": settings.permutations, "seed": seed}
    if settings.class_fit is not None:
        return class_fit_gram(inputs, features.labels, features.num_classes, settings.class_fit, outputs, **common)
    return hsic_gram(inputs, features.labels, features.num_classes, response=ResponseKind.OUTPUT, outputs=outputs,
                     **common)


def _magnitude_weighted(G: np.ndarray, R: np.ndarray, features: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """``(D G D, D R)`` with ``D = diag(d)``, ``d_c`` = RMS of channel c's features ``(N, C, D)`` / mean RMS.

    Substituting ``B = D B'`` turns ``lambda1 sum_c |B_c|`` into ``lambda1 sum_c |B'_c| / d_c``:
    the lasso on the weighted problem penalises weak channels more; supports are the same.
    """
    rms = features.double().pow(2).mean(dim=(0, 2)).sqrt().numpy()
    d = rms / rms.mean() if rms.mean() > 0 else np.ones_like(rms)
    return G * np.outer(d, d), R * d[:, None]
