"""The class-wise structured HSIC lasso methods: ``sglp-ib``, ``stlp-ib``, ``hsic-ib``, ``class-lasso``.

For every channel group one forward pass gives pooled features
(:mod:`lassoprune.hsic.calibration`); each group's lasso problem is built once
(:mod:`lassoprune.hsic.problem`: ``B_g(rho) = argmin f_g(B) + lambda1_g ||B||_1
+ lambda2_g Omega(B)``, docs/METHODS.md 1.2-1.4), and one global strength ``rho``
is searched so that the network meets the cost target
(:mod:`lassoprune.pruning.lasso_search`). A channel is kept iff its row of
``B_g`` is non-zero; its score is ``||B_c,:||_2``. So the per-layer widths are
an output of the lasso, not an input.

========== ============================================= ===================
method     structure over the classes (Omega)            default class fit
========== ============================================= ===================
sglp-ib    graph-guided fused lasso (class graph)        ``cross``
stlp-ib    tree-guided group lasso (class tree)          ``cross``
hsic-ib    none; one ``output`` response (APIB-like)     none
class-lasso none; plain L1 on the class fit (ablation)   ``cross``
========== ============================================= ===================

Each method accepts exactly the options it reads (:class:`HsicIbOptions` and
its subclasses); every lasso method keeps residual (eltwise) groups whole by
default (``lp.prune(prune_residual=None)``), as APIB does. The defaults are
the measured winners (docs/BENCHMARKS.md): APIB's Laplace kernel, unnormalised,
a signed lasso, the ``cross`` class fit. Settings that measured worse stay
reachable for ablations under one option, ``experimental``
(:class:`LassoExperiment`), e.g. ``lp.prune(..., experimental={"kernel":
"median", "normalise": True, "nonneg": True})`` for the first spec.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from lassoprune.errors import LassopruneError
from lassoprune.hsic import CalibrationFeatures, ClassFit, KernelKind, collect_features
from lassoprune.hsic.problem import (
    ClassStructure,
    GroupProblem,
    ProblemSettings,
    Products,
    build_problems,
    check_problem_memory,
    class_structure,
    grams_per_group,
    layer_class_means,
)
from lassoprune.lasso import confusable_class_weights
from lassoprune.pruning.lasso_search import RHO_MIN, RHO_MIN_GLOBAL, LassoSearch
from lassoprune.pruning.method import (
    ClassStructureRecord,
    Diagnostics,
    ExperimentalOptions,
    GroupDiagnostics,
    MethodContext,
    MethodOptions,
    MethodSpec,
    Selection,
    option,
    register_method,
)
from lassoprune.utils.enums import NamedEnum
from lassoprune.utils.runtime import available_memory

__all__ = ["LASSO_METHODS", "ClassLassoOptions", "HsicIbOptions", "LassoExperiment", "LassoMethod",
           "SglpOptions", "StlpOptions", "select_channels"]


class Strength(NamedEnum):
    """How one search strength rho becomes each group's lambda1."""

    RELATIVE = "relative"  # rho x lambda_max(g): every group reaches zero at rho = 1
    GLOBAL = "global"  # rho x max_g lambda_max(g): one absolute lambda1, as APIB's single alpha


STRUCTURE_SOURCES = ("output", "layer")
CLASS_WEIGHTS = ("uniform", "confusable")


@dataclass(frozen=True)
class LassoExperiment(ExperimentalOptions):
    """Ablation settings of the lasso methods: each measured worse than its default, or is a research knob."""

    kernel: KernelKind | str = option(KernelKind.LAPLACE, "kernel family: laplace (APIB's final) | gaussian "
                                                          "(exp(-d^2/D)) | median (bandwidth per channel, first spec)")
    normalise: bool = option(False, "unit Frobenius norm per centred channel kernel (first spec: true)")
    nonneg: bool = option(False, "constrain the coefficients to be >= 0 (first spec: true)")
    ridge: float = option(0.0, "elastic-net term: G + ridge ||G||_2 I (>= 0)")
    magnitude: bool = option(False, "weight each channel's penalty by 1 / its RMS activation")
    strength: Strength | str = option(Strength.RELATIVE, "relative (lambda1 = rho lambda_max per group) | global "
                                                         "(one absolute lambda1, APIB's single alpha)")
    class_weight: str = option("uniform", "per-class fit terms weighted: uniform | confusable (needs a per-class fit)")
    structure_from: str = option("output", "class structure from: output (penultimate class means) | layer "
                                           "(each group's own features; sglp-ib, stlp-ib)")
    block: int | None = option(None, "block HSIC block size in images (one-Gram fits only; null: exact)")
    permutations: int = option(1, "block HSIC random splits (>= 1; with block)")
    products: Products | str = option(Products.FLOAT32, "precision of the per-class Gram products: float32 | float64 "
                                                        "(per-class fits only)")

    def __post_init__(self) -> None:
        object.__setattr__(self, "kernel", KernelKind.parse(self.kernel, "kernel"))
        object.__setattr__(self, "strength", Strength.parse(self.strength, "lasso strength"))
        object.__setattr__(self, "products", Products.parse(self.products, "products"))


@dataclass(frozen=True)
class HsicIbOptions(MethodOptions):
    """Options of ``hsic-ib`` (and, through subclasses, of every lasso method)."""

    pool: int | None = option(4, "features average-pooled to at most pool x pool pixels (>= 1; null: full maps)")
    solver_tol: float = option(1e-5, "solver tolerance (relative change, > 0)")
    max_iter: int = option(5000, "solver iteration cap (>= 1)")
    target_tolerance: float = option(0.008, "how close the rho search aims, a fraction of the original cost, "
                                            "(0, 0.01]")
    experimental: LassoExperiment = option(LassoExperiment(), "ablation settings (see --list-methods)")

    def class_fit_of(self, method: LassoMethod) -> ClassFit | None:
        return None

    def validate(self, method: str) -> None:
        spec, fit, ex = LASSO_METHODS[method], self.class_fit_of(LASSO_METHODS[method]), self.experimental
        _check(self.pool is None or int(self.pool) >= 1, f"pool must be a positive side or null, got {self.pool}")
        _check(self.solver_tol > 0 and int(self.max_iter) >= 1,
               f"solver_tol must be > 0 and max_iter >= 1, got {self.solver_tol}, {self.max_iter}")
        _check(0 < self.target_tolerance <= 0.01, f"target_tolerance must be in (0, 0.01], got {self.target_tolerance}")
        per_class = fit is not None and fit.per_class
        _check(ex.ridge >= 0, f"experimental ridge (a fraction of ||G||_2) must be >= 0, got {ex.ridge}")
        _check(ex.class_weight in CLASS_WEIGHTS, f"experimental class_weight must be one of {CLASS_WEIGHTS}")
        _check(ex.class_weight == "uniform" or per_class, f"experimental class_weight={ex.class_weight!r} weights "
               "the terms of a per-class fit: use sglp-ib, stlp-ib or class-lasso with class_fit cross or conditional")
        _check(ex.structure_from in STRUCTURE_SOURCES, f"experimental structure_from must be in {STRUCTURE_SOURCES}")
        _check(ex.structure_from == "output" or spec.structure is not ClassStructure.NONE,
               f"{method} has no class structure: experimental structure_from is for sglp-ib and stlp-ib")
        _check(ex.block is None or (int(ex.block) >= 2 and not per_class), "experimental block (>= 2 images) needs "
               "one Gram for every class: hsic-ib, or class_fit block or label")
        _check(int(ex.permutations) >= 1 and (ex.permutations == 1 or ex.block is not None),
               f"experimental permutations (>= 1) are random splits of block HSIC: set block, got {ex.permutations}")
        _check(ex.products is Products.FLOAT32 or (per_class and spec.structure is not ClassStructure.GRAPH),
               "experimental products sets the precision of FISTA's per-class Gram products: stlp-ib or class-lasso "
               "with class_fit cross or conditional (sglp-ib's ADMM solves in float64)")

    def structure_weight(self) -> float:
        """lambda2 / lambda1, the class structure's penalty weight (0: no structure, as in ``hsic-ib``)."""
        return 0.0

    def graph_threshold(self) -> float | None:
        """The class graph's edge threshold (None: no graph option, or every class keeps an edge)."""
        return None

    def settings(self, method: LassoMethod) -> ProblemSettings:
        """The :class:`ProblemSettings` these options give ``method``."""
        ex = self.experimental
        return ProblemSettings(
            class_fit=self.class_fit_of(method), kernel=ex.kernel, normalise=ex.normalise, nonneg=ex.nonneg,
            ridge=ex.ridge, magnitude=ex.magnitude, lambda2_ratio=self.structure_weight(),
            global_strength=ex.strength is Strength.GLOBAL, block=ex.block, permutations=ex.permutations,
            solver_tol=self.solver_tol, max_iter=self.max_iter, products=ex.products,
        )


@dataclass(frozen=True)
class ClassLassoOptions(HsicIbOptions):
    """Options of ``class-lasso``: ``hsic-ib``'s and the class fit."""

    class_fit: ClassFit | str | None = option(
        None, "class-wise fit: cross | conditional | block | label (default: cross)")

    def class_fit_of(self, method: LassoMethod) -> ClassFit | None:
        return ClassFit.parse(self.class_fit, "class fit") if self.class_fit is not None else method.class_fit

    def validate(self, method: str) -> None:
        object.__setattr__(self, "class_fit", self.class_fit_of(LASSO_METHODS[method]))
        super().validate(method)


@dataclass(frozen=True)
class StlpOptions(ClassLassoOptions):
    """Options of ``stlp-ib``: ``class-lasso``'s and the structure's weight."""

    lambda2_ratio: float = option(0.1, "structured penalty weight lambda2 as a fraction of lambda1 (>= 0)")

    def structure_weight(self) -> float:
        return self.lambda2_ratio

    def validate(self, method: str) -> None:
        _check(self.lambda2_ratio >= 0, f"lambda2_ratio (lambda2 / lambda1) must be >= 0, got {self.lambda2_ratio}")
        super().validate(method)


@dataclass(frozen=True)
class SglpOptions(StlpOptions):
    """Options of ``sglp-ib``: ``stlp-ib``'s and the class graph's edge threshold."""

    edge_threshold: float | None = option(
        None, "class-graph edge threshold on |Pearson r| of class means, in [0, 1] (default: every class keeps "
              "an edge)")

    def graph_threshold(self) -> float | None:
        return self.edge_threshold

    def validate(self, method: str) -> None:
        _check(self.edge_threshold is None or 0 <= self.edge_threshold <= 1,
               f"edge_threshold (on |Pearson r| between class means) must be in [0, 1], got {self.edge_threshold}")
        super().validate(method)


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise LassopruneError(message)


@dataclass(frozen=True)
class LassoMethod:
    """One lasso method: the structure over classes, its default class fit (None: one ``output`` response)."""

    name: str
    structure: ClassStructure
    class_fit: ClassFit | None
    options: type[HsicIbOptions]
    summary: str


LASSO_METHODS: dict[str, LassoMethod] = {
    m.name: m
    for m in (
        LassoMethod("sglp-ib", ClassStructure.GRAPH, ClassFit.CROSS, SglpOptions,
                    "class-wise HSIC lasso + graph-guided fused lasso over classes"),
        LassoMethod("stlp-ib", ClassStructure.TREE, ClassFit.CROSS, StlpOptions,
                    "class-wise HSIC lasso + tree-guided group lasso over classes"),
        LassoMethod("hsic-ib", ClassStructure.NONE, None, HsicIbOptions,
                    "HSIC lasso with one output response, no class structure (APIB-like)"),
        LassoMethod("class-lasso", ClassStructure.NONE, ClassFit.CROSS, ClassLassoOptions,
                    "class-wise responses, plain L1 (ablation of the class structure)"),
    )
}


def select_channels(ctx: MethodContext, method: LassoMethod) -> Selection:
    """Run one lasso method (module docstring); ``ctx.options`` are its validated options."""
    opts: HsicIbOptions = ctx.options
    settings = opts.settings(method)
    groups = ctx.analysis.groups
    seconds: dict[str, float] = {}
    features = collect_features(ctx.model, groups, ctx.batches, pool=opts.pool,
                                outputs=settings.response.needs_output)
    seconds["features"] = features.seconds
    check_problem_memory(method.name, {g.id: g.num_channels for g in groups},
                         grams_per_group(settings.class_fit, features.num_classes), available_memory())
    structures, record = _structures(method, features, groups, opts.graph_threshold(),
                                     opts.experimental.structure_from)
    weights = (confusable_class_weights(features.class_means.numpy())
               if opts.experimental.class_weight == "confusable" else None)
    problems, seconds["kernels"], seconds["gram"] = build_problems(groups, features, settings, structures, ctx.seed,
                                                                   weights)
    started = time.perf_counter()
    search = LassoSearch(ctx, problems, opts.target_tolerance,
                         RHO_MIN_GLOBAL if settings.global_strength else RHO_MIN)
    try:
        rho, keep, search_record = search.run()
        if ctx.round_to is not None and ctx.round_to > 1:
            keep = search.rounded(keep, rho, ctx.round_to)
            search_record = replace(search_record, adjustment=f"{search_record.adjustment}+round_to_{ctx.round_to}")
    finally:  # the Grams are freed on return (or on an error), before reconstruction or a next cut needs the memory
        search.release()
    seconds["search"] = time.perf_counter() - started
    diagnostics = Diagnostics(
        groups={p.group.id: _group_diagnostics(p, rho, keep[p.group.id]) for p in problems},
        search=search_record, structure=record, seconds=seconds,
        settings=_settings_record(opts, settings, features, weights),
    )
    return Selection(keep={gid: tuple(int(c) for c in kept) for gid, kept in keep.items()},
                     scores={p.group.id: torch.from_numpy(p.scores(rho)) for p in problems}, diagnostics=diagnostics)


def _structures(
    method: LassoMethod, features: CalibrationFeatures, groups: tuple, edge_threshold: float | None, source: str,
) -> tuple[dict[str, Any], ClassStructureRecord | None]:
    """group id -> the class graph / tree (or None), and its record."""
    if method.structure is ClassStructure.NONE:
        return dict.fromkeys((g.id for g in groups)), None
    if source == "layer":
        structures = {g.id: class_structure(method.structure, layer_class_means(features, g), edge_threshold)[0]
                      for g in groups}
        return structures, ClassStructureRecord(method.structure.value, "layer")
    structure, described = class_structure(method.structure, features.class_means.numpy(), edge_threshold)
    record = ClassStructureRecord(
        method.structure.value, "output",
        edges=tuple((m, l, w) for m, l, w in described.get("edges", ())),
        groups=tuple((tuple(g), w) for g, w in described.get("groups", ())),
    )
    return dict.fromkeys((g.id for g in groups), structure), record


def _group_diagnostics(problem: GroupProblem, rho: float, kept: np.ndarray) -> GroupDiagnostics:
    support = int((problem.scores(rho) > 0).sum())
    return GroupDiagnostics(
        note=f"support {support}, lambda_max {problem.lam_max:.3g}",
        values={"lambda_max": problem.lam_max, "support": support, "kept": len(kept),
                "solver_iterations": problem.n_iter.get(rho, 0), "solves": len(problem.solutions)},
    )


def _settings_record(opts: HsicIbOptions, settings: ProblemSettings, features: CalibrationFeatures,
                     weights: np.ndarray | None) -> dict[str, Any]:
    return {
        "class_fit": settings.class_fit.value if settings.class_fit is not None else None,
        "response": settings.response.value, "pool": opts.pool, "lambda2_ratio": settings.lambda2_ratio,
        "experimental": opts.experimental.changed(), "calibration_images": int(features.labels.numel()),
        "class_weights": weights.tolist() if weights is not None else None,
    }


def _run(method: LassoMethod):
    def run(ctx: MethodContext) -> Selection:
        return select_channels(ctx, method)

    run.__name__ = method.name.replace("-", "_")
    fit = method.class_fit.value if method.class_fit is not None else "output"
    run.__doc__ = f"The {method.name} keep sets ({method.structure} structure, {fit} fit)."
    return run


for _method in LASSO_METHODS.values():
    register_method(MethodSpec(
        name=_method.name, run=_run(_method), summary=_method.summary, options=_method.options,
        needs_data=True, decides_widths=True, rounds_widths=True, keeps_units=True, prune_residual=False,
    ))
