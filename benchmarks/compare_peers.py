"""Torch-Pruning's own pipeline, run through Torch-Pruning's API, as peers in ``benchmarks/compare.py``.

Two peers (Fang et al., "DepGraph: Towards Any Structural Pruning", CVPR 2023):

``tp-magnitude``  ``tp.pruner.BasePruner`` (formerly ``MetaPruner``) with
                  ``tp.importance.GroupMagnitudeImportance(p=2)``: DepGraph
                  groups scored by their group L2 norm, ranked globally, one
                  shot, no sparse learning (the paper's "w/o SL" ablation).
``tp-group-sl``   ``tp.pruner.GroupNormPruner``: group sparse learning first
                  (``pruner.regularize(model)`` between ``loss.backward()`` and
                  ``optimizer.step()`` on every step, see
                  :func:`sparse_train_group_sl`), then the same ranking and cut.

Both ignore the classifier (every ``nn.Linear`` with ``num_classes`` outputs,
the recipe of Torch-Pruning's benchmark scripts), so its outputs are never cut.

Torch-Pruning prunes a fraction of the channels (``pruning_ratio``), not a
MACs budget. :func:`prune_to_macs` finds the ratio whose cut keeps the wanted
fraction of MACs, within ``tolerance`` of the original, by bracketing and
bisection on deep copies. MACs are counted with :func:`lassoprune.count`
(convolutions and linear layers only), the convention of ``lp.prune``, so
the peers and our methods are measured with one ruler.

Note on the MACs curve: with ``global_pruning`` a group whose every channel
falls below the global threshold is skipped by Torch-Pruning (it refuses to
empty a layer), so kept MACs are not monotone in the ratio at large ratios;
the search only bisects inside a bracket found from small ratios upwards.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch_pruning as tp
from torch import nn

import lassoprune as lp
from lassoprune.errors import LassopruneError, UnknownNameError
from lassoprune.pruning.search import Verdict, bisect, bracket, linear_midpoint
from lassoprune.training import TrainConfig

PEERS: tuple[str, ...] = ("tp-magnitude", "tp-group-sl")
"""The peer method names, as they appear in the benchmark's rows."""

DEFAULT_REG = 5e-4
"""GroupNormPruner's ``reg`` in Torch-Pruning's CIFAR ResNet-56 ``group_sl`` script."""

Builder = Callable[[nn.Module, float], tp.pruner.BasePruner]


def classifier_layers(model: nn.Module, num_classes: int) -> list[nn.Module]:
    """The output layers Torch-Pruning must leave alone: every ``nn.Linear`` with ``num_classes`` outputs."""
    layers = [m for m in model.modules() if isinstance(m, nn.Linear) and m.out_features == num_classes]
    if not layers:
        raise LassopruneError(f"found no nn.Linear with {num_classes} outputs to keep as the classifier")
    return layers


def importance() -> tp.importance.GroupMagnitudeImportance:
    """Torch-Pruning's default group criterion: per-channel L2 norm over the group, mean-normalised."""
    return tp.importance.GroupMagnitudeImportance(p=2)


def make_pruner(
    peer: str, model: nn.Module, example: torch.Tensor, ratio: float, num_classes: int, reg: float = DEFAULT_REG
) -> tp.pruner.BasePruner:
    """The Torch-Pruning pruner of ``peer`` for ``model``: global ranking, classifier ignored.

    Args:
        peer: one of :data:`PEERS`.
        example: an input batch for the dependency graph, e.g. ``(1, 1, 32, 32)``.
        ratio: Torch-Pruning's ``pruning_ratio`` (fraction of the channels removed), in [0, 1).
        reg: ``GroupNormPruner``'s regularisation coefficient (``tp-group-sl`` only).
    """
    common = dict(
        importance=importance(), global_pruning=True, pruning_ratio=ratio,
        ignored_layers=classifier_layers(model, num_classes),
    )  # fmt: skip
    if peer == "tp-magnitude":
        return tp.pruner.BasePruner(model, example, **common)
    if peer == "tp-group-sl":
        return tp.pruner.GroupNormPruner(model, example, reg=reg, **common)
    raise UnknownNameError("peer method", peer, PEERS)


@dataclass(frozen=True)
class RatioCut:
    """The outcome of :func:`prune_to_macs`.

    Attributes:
        model: the physically pruned copy (the original is untouched).
        ratio: the ``pruning_ratio`` that produced it.
        target: the wanted fraction of MACs kept.
        macs_before, macs_after, params_before, params_after: lassoprune counts (one image).
        within_tolerance: ``|kept - target| <= tolerance`` (kept: the MACs or parameters ratio searched).
        evaluations: trial cuts made by the search.
        seconds: wall time of the whole search (every trial: graph, scoring, surgery, count).
        step_seconds: wall time of the returned cut alone (pruner construction + ``step()``).
        trials: ``(ratio, fraction kept)`` of every trial, in order.
    """

    model: nn.Module
    ratio: float
    target: float
    macs_before: int
    macs_after: int
    params_before: int
    params_after: int
    within_tolerance: bool
    evaluations: int
    seconds: float
    step_seconds: float
    trials: tuple[tuple[float, float], ...]

    @property
    def macs_ratio(self) -> float:
        return self.macs_after / self.macs_before

    @property
    def params_ratio(self) -> float:
        return self.params_after / self.params_before


@dataclass(frozen=True)
class _Trial:
    model: nn.Module
    ratio: float
    macs: int
    params: int
    seconds: float
    kept: float  # the measured fraction kept (MACs or parameters)


#: Torch-Pruning ``pruning_ratio`` values tried upwards until one keeps at most the target.
RATIO_GRID = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def prune_to_macs(
    model: nn.Module,
    example: torch.Tensor,
    target: float,
    build: Builder,
    tolerance: float = 0.01,
    max_evaluations: int = 40,
    measure: str = "macs",
) -> RatioCut:
    """Cut a copy of ``model`` with the ``pruning_ratio`` whose kept MACs are within ``tolerance`` of ``target``
    (``measure="params"``: its kept parameters).

    ``build(copy, ratio)`` returns a fresh Torch-Pruning pruner for ``copy``;
    each trial deep-copies ``model``, calls ``build(...).step()`` and counts
    the copy. Ratios 0.05, 0.1, 0.2, ..., 0.9 are tried upwards until one keeps
    at most ``target`` (the bracket), then the bracket is bisected. The first
    trial within tolerance is returned; otherwise the closest one, with
    ``within_tolerance=False``.

    Raises:
        LassopruneError: ``target`` is not in (0, 1), or no ratio up to 0.9
            removes enough MACs.
    """
    if measure not in ("macs", "params"):
        raise LassopruneError(f"measure is 'macs' or 'params', not {measure!r}")
    if not 0.0 < target < 1.0:
        raise LassopruneError(f"the {measure} target is the fraction kept, in (0, 1); got {target}")
    started = time.perf_counter()
    example = example[:1]
    dense = lp.count(model, example)
    trials: list[tuple[float, float]] = []
    best: _Trial | None = None

    def trial(ratio: float) -> float:
        nonlocal best
        work = copy.deepcopy(model).eval()
        t0 = time.perf_counter()
        build(work, ratio).step()
        seconds = time.perf_counter() - t0
        counted = lp.count(work, example)
        kept = getattr(counted, measure) / getattr(dense, measure)
        trials.append((ratio, kept))
        if best is None or abs(kept - target) < abs(best.kept - target):
            best = _Trial(work, ratio, counted.macs, counted.params, seconds, kept)
        return kept

    def done() -> bool:
        return best is not None and abs(best.kept - target) <= tolerance

    def verdict(ratio: float) -> Verdict:
        kept = trial(ratio)
        if abs(kept - target) <= tolerance:
            return Verdict.MEETS
        return Verdict.KEEPS_TOO_MUCH if kept > target else Verdict.KEEPS_TOO_LITTLE

    found = bracket(verdict, 0.0, RATIO_GRID)
    if found.hit is None and found.under is None:
        reached = ", ".join(f"{r:g}: {k:.3f}" for r, k in trials)
        raise LassopruneError(f"no pruning_ratio up to 0.9 keeps <= {target} of the {measure} "
                              f"(ratio: kept = {reached})")
    if found.hit is None:
        bisect(verdict, found.over, found.under, linear_midpoint(1e-4), max_steps=max_evaluations - len(trials))
    assert best is not None
    return RatioCut(
        model=best.model, ratio=best.ratio, target=target,
        macs_before=dense.macs, macs_after=best.macs, params_before=dense.params, params_after=best.params,
        within_tolerance=done(), evaluations=len(trials), seconds=time.perf_counter() - started,
        step_seconds=best.seconds, trials=tuple(trials),
    )  # fmt: skip


def peer_cut(
    peer: str, model: nn.Module, example: torch.Tensor, target: float, num_classes: int,
    reg: float = DEFAULT_REG, tolerance: float = 0.01, measure: str = "macs",
) -> RatioCut:  # fmt: skip
    """Prune a copy of ``model`` with ``peer`` to keep ``target`` of its MACs or parameters (``measure``; see
    :func:`prune_to_macs`)."""
    if peer not in PEERS:
        raise UnknownNameError("peer method", peer, PEERS)
    single = example[:1]

    def build(work: nn.Module, ratio: float) -> tp.pruner.BasePruner:
        return make_pruner(peer, work, single, ratio, num_classes, reg)

    return prune_to_macs(model, single, target, build, tolerance, measure=measure)


def group_norms(model: nn.Module, example: torch.Tensor, num_classes: int) -> torch.Tensor:
    """L2 norm of every channel's whole DepGraph group, all groups concatenated (float32 ``(sum C_g,)``).

    The norm runs over every parameter slice the channel owns in the group
    (producer filters, BN scale/shift, consumer input slices), the quantity
    ``GroupNormPruner.regularize`` pushes down.
    """
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=example[:1])
    ignored = [m for layer in classifier_layers(model, num_classes) for m in layer.modules()]
    scorer = tp.importance.GroupMagnitudeImportance(p=2, group_reduction="sum", normalizer=None)
    with torch.no_grad():
        parts = [scorer(group) for group in graph.get_all_groups(ignored_layers=ignored)]
    return torch.cat([p.float().sqrt() for p in parts if p is not None])


class _Epochs:
    """A fixed list of batches as ``fit`` expects them (``set_epoch`` does nothing)."""

    def __init__(self, batches: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> None:
        self.batches = batches

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)

    def set_epoch(self, epoch: int) -> None:
        pass


def sparse_train_group_sl(
    model: nn.Module,
    example: torch.Tensor,
    train_batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    cfg: TrainConfig,
    *,
    num_classes: int,
    reg: float = DEFAULT_REG,
    device: torch.device | str = "cpu",
    out_dir: str | Path | None = None,
    progress: bool = False,
    test_batches: Sequence[tuple[torch.Tensor, torch.Tensor]] | None = None,
) -> float:
    """Group sparse learning with ``tp.pruner.GroupNormPruner``, in place; returns the training seconds.

    Training is :func:`lassoprune.fit` (the engine's loop, optimiser, schedule,
    seeding and resumable run directory) with Torch-Pruning's documented step
    hooked in after every ``backward``: ``pruner.regularize(model)`` adds
    ``reg * gamma_c * w`` to the gradient of every slice of channel ``c`` of
    each group (``gamma_c`` in [1, 16], larger for weaker groups) before the SGD
    step. ``cfg.weight_decay`` is used as given (Torch-Pruning's benchmark sets
    it to 0 while regularising).

    Args:
        out_dir: the run directory of ``fit`` (checkpoint after every epoch; resumed).
        test_batches: evaluated after every epoch for the log (default: the first training batch).
    """
    model.to("cpu")
    pruner = make_pruner("tp-group-sl", model, example[:1].cpu(), 0.5, num_classes, reg)
    batches = train_batches if hasattr(train_batches, "set_epoch") else _Epochs(list(train_batches))
    probe = test_batches if test_batches is not None else [next(iter(batches))]
    result = lp.fit(model, batches, probe, cfg, num_classes=num_classes, out_dir=out_dir, resume=out_dir is not None,
                    device=device, progress=progress, after_backward=pruner.regularize)
    model.eval()
    return float(sum(epoch["seconds"] for epoch in result.history))


def ignored_names(model: nn.Module, layers: Sequence[nn.Module]) -> list[str]:
    """Qualified names of ``layers`` (for reports)."""
    names = {m: n for n, m in model.named_modules()}
    return [names[m] for m in layers if m in names]
