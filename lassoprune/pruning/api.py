"""``lp.prune``: score, allocate and cut any traceable model in one call."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from lassoprune.analysis import count
from lassoprune.channels import ChannelGroup, CostModel, GroupAnalysis, LayerKind, Target, analyse_groups, layer_kind
from lassoprune.errors import LassopruneError
from lassoprune.pruning.allocation import ALLOCATIONS, allocate
from lassoprune.pruning.criteria import criterion_spec, resolve_criterion
from lassoprune.pruning.method import MethodContext, MethodSpec, get_method
from lassoprune.pruning.reconstruct import LayerRefit
from lassoprune.pruning.reconstruct import reconstruct as reconstruct_layers
from lassoprune.pruning.search import TARGET_TOLERANCE, check_target, floors
from lassoprune.pruning.surgery import remove_channels
from lassoprune.utils.runtime import get_logger

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class PruneResult:
    """The outcome of :func:`prune`.

    Attributes:
        model: the physically pruned network (an ordinary ``nn.Module``).
        keep: group id -> kept channel numbers (of the unpruned group).
        groups: the channel groups of the unpruned model.
        scores: group id -> (C,) importance used (empty when the method gives none).
        macs_before, macs_after, params_before, params_after: measured counts
            (MACs for one image of the example input's shape).
        method, allocation, target: what was asked.
        details: method-specific diagnostics (solver statistics, ...).
        seconds: wall time of scoring + allocation + surgery (+ reconstruction).
        reconstruction: one record per layer refitted by ``reconstruct=True``
            (:mod:`lassoprune.pruning.reconstruct`), in the network's order; empty otherwise.
        prune_residual: whether residual (eltwise) groups could be cut (the call's value, or the method's default).
    """

    model: nn.Module
    keep: dict[str, tuple[int, ...]]
    groups: tuple[ChannelGroup, ...]
    scores: dict[str, torch.Tensor]
    macs_before: int
    macs_after: int
    params_before: int
    params_after: int
    method: str
    allocation: str
    target: Target | None
    details: dict[str, Any]
    seconds: float
    reconstruction: tuple[LayerRefit, ...] = ()
    prune_residual: bool = True

    @property
    def widths(self) -> dict[str, tuple[int, int]]:
        """group id -> (kept, total)."""
        return {g.id: (len(self.keep.get(g.id, range(g.num_channels))), g.num_channels) for g in self.groups}

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe summary (the CLI's ``--json``)."""
        return {
            "method": self.method,
            "allocation": self.allocation,
            "target": None if self.target is None else {"kind": self.target.kind, "ratio": self.target.ratio},
            "macs_before": self.macs_before,
            "macs_after": self.macs_after,
            "params_before": self.params_before,
            "params_after": self.params_after,
            "macs_ratio": self.macs_after / self.macs_before,
            "params_ratio": self.params_after / self.params_before,
            "groups": {
                g.id: {"kept": len(self.keep.get(g.id, range(g.num_channels))), "total": g.num_channels,
                       "eltwise": g.is_eltwise, **self.details.get("per_group", {}).get(g.id, {})}
                for g in self.groups
            },
            "prune_residual": self.prune_residual,
            "seconds": self.seconds,
            "details": self.details,
            "reconstruction": [r.to_dict() for r in self.reconstruction],
        }


def prune(
    model: nn.Module,
    example_inputs: torch.Tensor,
    method: str | Callable[..., torch.Tensor] = "l1",
    target_macs: float | None = None,
    target_params: float | None = None,
    data: Batches | None = None,
    allocation: str = "global",
    ignored_layers: Sequence[nn.Module] | None = None,
    min_channels: int = 1,
    round_to: int | None = None,
    inplace: bool = False,
    seed: int = 0,
    prune_residual: bool | None = None,
    reconstruct: bool = False,
    **options: Any,
) -> PruneResult:
    """Prune ``model`` structurally to a MACs or parameter target.

    Args:
        model: any network Torch-Pruning can trace (zoo or your own).
        example_inputs: an input batch, e.g. ``torch.randn(1, 3, 32, 32)``;
            MACs are counted for its first image.
        method: a registered method name (:func:`list_methods`) or a callable
            criterion ``score(group, ctx) -> Tensor[C]``.
        target_macs / target_params: the fraction of the original to keep
            (exactly one of them), 0 < r < 1; met within 1% of the original.
        data: calibration batches (x, y) for data-driven methods.
        allocation: ``global`` or ``uniform`` (for importance criteria).
        ignored_layers: modules whose output channels are never removed.
        min_channels: every group keeps at least this many channels.
        round_to: kept widths are multiples of this (hardware-friendly).
        inplace: prune ``model`` itself instead of a copy.
        prune_residual: False keeps every residual (eltwise) group whole, for
            every method: only channels that no residual add reads are cut
            (APIB cuts only the inner channel of each ResNet block). None (default):
            the method's own default (``MethodSpec.prune_residual``: False for the
            lasso methods, where keeping the stream whole measured better; True
            otherwise). Recorded in ``PruneResult.prune_residual``.
        reconstruct: after the cut, refit every layer that lost input channels
            by least squares so that it reproduces the unpruned layer's output
            on ``data`` (:func:`lassoprune.pruning.reconstruct.reconstruct`;
            needs ``data``). Re-estimate BatchNorm statistics afterwards, as
            after any cut.
        options: the method's options (``lassoprune prune --list-methods``);
            a method that accepts a threshold (``TargetUse.OR_THRESHOLD``,
            e.g. ``dwgl-vote``) given one needs no target.

    Returns:
        :class:`PruneResult` with the pruned model and before/after counts.
    """
    started = time.perf_counter()
    spec = _method_spec(method)
    opts = spec.parse_options(options)
    if prune_residual is None:
        prune_residual = spec.prune_residual
    spec.check_target(opts, target_macs is not None or target_params is not None)
    target = None if spec.uses_threshold(opts) else _target(target_macs, target_params)
    allocation_name = ALLOCATIONS.get(allocation).name if not spec.decides_widths else "method"
    batches = list(data) if data is not None else None
    if reconstruct and not batches:
        raise LassopruneError("reconstruct=True refits layers on calibration images: give data=[(x, y), ...] "
                              "(a few hundred training images with their labels)")
    if spec.needs_data and not batches:
        raise LassopruneError(f"method {spec.name!r} needs calibration data: give data=[(x, y), ...] batches "
                              "(a few batches of training images with their labels)")
    ignored_names = _module_names(model, ignored_layers or ())
    work = model if inplace else copy.deepcopy(model)
    original = copy.deepcopy(model) if reconstruct and inplace else model
    work.eval()
    single = example_inputs[:1]
    modules = dict(work.named_modules())
    analysis = _analyse(work, single, [modules[n] for n in ignored_names])
    cost_model = CostModel(work, single, analysis.groups)
    floor = floors(analysis.groups, min_channels, round_to, prune_residual)
    if target is not None:
        check_target(cost_model, target, floor, analysis.groups)
    if spec.decides_widths and not spec.rounds_widths and round_to is not None and round_to > 1:
        get_logger().warning(
            "%s decides its own keep sets: round_to=%d raises every group's floor to %d channels, "
            "but the kept widths are not rounded to multiples of it", spec.name, round_to, round_to)

    ctx = MethodContext(work, analysis, cost_model, target, floor, batches, seed, opts, round_to, single)
    selection = spec.run(ctx)
    keep, scores, details = selection.keep, selection.scores, selection.details
    if spec.decides_widths:
        _check_keep_sets(spec.name, analysis.groups, keep, floor)
    else:
        assert target is not None  # scores need a target: only width-deciding methods take a threshold
        keep = allocate(analysis.groups, scores, cost_model, target, allocation_name, min_channels, round_to,
                        floor=floor)

    predicted = cost_model.macs({gid: len(kept) for gid, kept in keep.items()})
    remove_channels(analysis, keep)
    after = _count_after_surgery(work, single)
    if after.macs != predicted:
        get_logger().warning("cost model predicted %d MACs, the pruned model has %d", predicted, after.macs)
    _warn_if_target_missed(spec.name, target, cost_model, after)
    refits = ()
    if reconstruct:
        assert batches is not None
        refits = reconstruct_layers(original, work, analysis.groups, keep, batches, seed=seed)
    return PruneResult(
        model=work, keep=dict(keep), groups=analysis.groups, scores=dict(scores),
        macs_before=cost_model.full_macs, macs_after=after.macs,
        params_before=cost_model.full_params, params_after=after.params,
        method=spec.name, allocation=allocation_name,
        target=target, details=details, seconds=time.perf_counter() - started, reconstruction=refits,
        prune_residual=prune_residual,
    )


def _warn_if_target_missed(method: str, target: Target | None, cost_model: CostModel, after: Any) -> None:
    """Log a warning when the cut ended further than :data:`TARGET_TOLERANCE` from the target.

    Width-deciding methods can: e.g. after strong sparse training every zero filter ties at the
    smallest vote threshold, so ``dwgl-vote`` removes them all at once.
    """
    if target is None:
        return
    before = cost_model.full_macs if target.kind == "macs" else cost_model.full_params
    kept = (after.macs if target.kind == "macs" else after.params) / before
    if abs(kept - target.ratio) > TARGET_TOLERANCE:
        get_logger().warning(
            "%s kept %.4f of the %s where the target is %g (tolerance %g): the method could not meet it "
            "(for dwgl-vote: sparse training left too many all-zero filters; use a smaller lam or target)",
            method, kept, target.kind, target.ratio, TARGET_TOLERANCE)


def _check_keep_sets(
    method: str, groups: Sequence[ChannelGroup], keep: dict[str, tuple[int, ...]], floor: np.ndarray
) -> None:
    """A width-deciding method's keep sets name every group once, valid channels only, at least its floor."""
    for group, lowest in zip(groups, floor):
        kept = keep.get(group.id)
        if kept is None:
            raise LassopruneError(f"method {method!r} returned no keep set for group {group.id!r}")
        if len(set(kept)) != len(kept) or any(not 0 <= c < group.num_channels for c in kept):
            raise LassopruneError(f"method {method!r} kept invalid or repeated channels in group {group.id!r} "
                                  f"(it has channels 0..{group.num_channels - 1})")
        if len(kept) < lowest:
            raise LassopruneError(f"method {method!r} kept {len(kept)} channels of group {group.id!r}, below its "
                                  f"floor of {int(lowest)} (min_channels / round_to / prune_residual)")
    unknown = sorted(set(keep) - {g.id for g in groups})
    if unknown:
        raise LassopruneError(f"method {method!r} returned keep sets for unknown groups: {', '.join(unknown)}")


def _method_spec(method: str | Callable[..., torch.Tensor]) -> MethodSpec:
    """The registered spec of a name, or a criterion spec wrapping a callable ``score(group, ctx)``."""
    if isinstance(method, str):
        return get_method(method)
    if not callable(method):
        raise LassopruneError(f"method must be a registered name or a callable score(group, ctx), "
                              f"got {type(method).__name__}")
    return criterion_spec(resolve_criterion(method))


def _count_after_surgery(model: nn.Module, example: torch.Tensor) -> Any:
    """Count the pruned model; a model that no longer runs names the layers Torch-Pruning may not cut."""
    try:
        return count(model, example)
    except RuntimeError as exc:
        suspects = [
            f"{name} ({type(m).__name__})"
            for name, m in model.named_modules()
            if layer_kind(m) is LayerKind.OTHER and any(True for _ in m.parameters(recurse=False))
        ]
        hint = f"layers Torch-Pruning may not know how to cut: {', '.join(suspects)}; " if suspects else ""
        raise LassopruneError(
            f"the pruned model no longer runs on the example input ({str(exc).splitlines()[0][:200]}); "
            f"{hint}pass them (or the convs that feed them) in ignored_layers"
        ) from exc


def _target(target_macs: float | None, target_params: float | None) -> Target:
    if (target_macs is None) == (target_params is None):
        raise LassopruneError("give exactly one of target_macs or target_params (a fraction of the original to keep)")
    return Target("macs", target_macs) if target_macs is not None else Target("params", target_params)


def modules_named(model: nn.Module, names: Sequence[str], option: str = "ignored_layers") -> list[nn.Module]:
    """The submodules of ``model`` called ``names`` (e.g. the layers to leave unpruned).

    Raises:
        LassopruneError: a name that is not a submodule; ``option`` names the setting in the message.
    """
    modules = dict(model.named_modules())
    unknown = [n for n in names if n not in modules]
    if unknown:
        raise LassopruneError(f"{option}: no module named {', '.join(unknown)}; see `lassoprune info --layers`")
    return [modules[n] for n in names]


def _module_names(model: nn.Module, layers: Sequence[nn.Module]) -> list[str]:
    names = {m: n for n, m in model.named_modules()}
    missing = [type(m).__name__ for m in layers if m not in names]
    if missing:
        raise LassopruneError(f"ignored_layers holds modules that are not part of the model: {', '.join(missing)}")
    return [names[m] for m in layers]


def _analyse(model: nn.Module, example: torch.Tensor, ignored: Sequence[nn.Module] | None) -> GroupAnalysis:
    analysis = analyse_groups(model, example, list(ignored or ()))
    if not analysis.groups:
        raise LassopruneError(
            "found no prunable channel group in this model (every conv/linear is ignored or feeds the output)"
        )
    return analysis
