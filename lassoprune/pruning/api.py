"""``lp.prune``: score, allocate and cut any traceable model in one call."""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from lassoprune.analysis import count
from lassoprune.channels import (
    ChannelGroup,
    CostModel,
    GroupAnalysis,
    LayerKind,
    Target,
    analyse_groups,
    flatten_outputs,
    layer_kind,
)
from lassoprune.channels.target import target_from
from lassoprune.errors import LassopruneError, UnreachableTargetError
from lassoprune.pruning.allocation import ALLOCATIONS, allocate
from lassoprune.pruning.criteria import criterion_spec, resolve_criterion
from lassoprune.pruning.method import Diagnostics, MethodContext, MethodSpec, get_method
from lassoprune.pruning.post_cut import Evaluate, after_cut
from lassoprune.pruning.reconstruct import LayerRefit, has_own_forward
from lassoprune.pruning.settings import PruneSettings
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
        diagnostics: the method's typed diagnostics (per-group records, search, class structure).
        seconds: wall time of scoring + allocation + surgery + reconstruction + BatchNorm re-estimation
            (the evaluations of ``evaluate`` excluded).
        reconstruction: one record per layer refitted by reconstruction
            (:mod:`lassoprune.pruning.reconstruct`), in the network's order; empty otherwise.
        prune_residual: whether residual (eltwise) groups could be cut (the call's value, or the method's default).
        round_to: the width step used (the one ``round_to="auto"`` settled on; None: free widths).
        one_shot: metrics straight after the cut, ``{"cut": ..., "reconstructed": ...}`` (each when measured:
            with ``evaluate``); the BatchNorm statistics were re-estimated before each.
        recalibrated_images: images the BatchNorm statistics were re-estimated on (0: stale statistics).
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
    diagnostics: Diagnostics
    seconds: float
    reconstruction: tuple[LayerRefit, ...] = ()
    prune_residual: bool = True
    round_to: int | None = None
    one_shot: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    recalibrated_images: int = 0

    @property
    def final_one_shot(self) -> dict[str, Any] | None:
        """The one-shot metrics of the returned model (after reconstruction when it ran), or None."""
        return self.one_shot.get("reconstructed", self.one_shot.get("cut"))

    @property
    def widths(self) -> dict[str, tuple[int, int]]:
        """group id -> (kept, total)."""
        return {g.id: (len(self.keep.get(g.id, range(g.num_channels))), g.num_channels) for g in self.groups}

    @property
    def residual_channels(self) -> dict[str, int]:
        """Channels of the residual (eltwise) groups: ``{"total": ..., "removed": ...}``."""
        eltwise = [g for g in self.groups if g.is_eltwise]
        total = sum(g.num_channels for g in eltwise)
        kept = sum(len(self.keep.get(g.id, range(g.num_channels))) for g in eltwise)
        return {"total": total, "removed": total - kept}

    def _group_diagnostics(self, gid: str) -> dict[str, Any]:
        record = self.diagnostics.groups.get(gid)
        return record.to_dict() if record is not None else {}

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
                       "eltwise": g.is_eltwise, **self._group_diagnostics(g.id)}
                for g in self.groups
            },
            "prune_residual": self.prune_residual,
            "seconds": self.seconds,
            "residual_channels": self.residual_channels,
            "diagnostics": self.diagnostics.to_dict(),
            "reconstruction": [r.to_dict() for r in self.reconstruction],
            "round_to": self.round_to,
            "one_shot": self.one_shot,
            "recalibrated_images": self.recalibrated_images,
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
    round_to: int | str | None = None,
    inplace: bool = False,
    seed: int = 0,
    prune_residual: bool | None = None,
    reconstruct: bool | None = None,
    recalibrate: bool = True,
    evaluate: Evaluate | None = None,
    **options: Any,
) -> PruneResult:
    """Prune ``model`` structurally to a MACs or parameter target; with data, ready to use without fine-tuning.

    Cut, then (with calibration ``data``) least-squares reconstruction and BatchNorm re-estimation
    (:func:`lassoprune.pruning.post_cut.after_cut`). The keyword arguments are the fields of
    :class:`~lassoprune.pruning.settings.PruneSettings`; :func:`prune_with` takes the object itself.

    Args:
        model: any network Torch-Pruning can trace (zoo or your own).
        example_inputs: an input batch, e.g. ``torch.randn(1, 3, 32, 32)``;
            MACs are counted for its first image.
        method: a registered method name (:func:`list_methods`) or a callable
            criterion ``score(group, ctx) -> Tensor[C]``.
        target_macs / target_params: the fraction of the original to keep, 0 < r < 1;
            met within 1% of the original. Both: two limits (e.g. the seed's
            -61% FLOPs and -85% params): the cut meets the one that binds within
            1% and keeps at most the other (``PruneResult.target`` is the binding one).
        data: calibration batches (x, y): scored on by data-driven methods, and
            used to reconstruct and to re-estimate BatchNorm statistics after the cut.
        allocation: ``global`` or ``uniform`` (for importance criteria).
        ignored_layers: modules whose output channels are never removed (the
            layers producing the network's outputs never are).
        min_channels: every group keeps at least this many channels.
        round_to: kept widths are multiples of this (hardware-friendly); ``"auto"``:
            the widest of 16, 8, 4 that still reaches the target, else free widths.
        inplace: prune ``model`` itself instead of a copy.
        prune_residual: False keeps every residual (eltwise) group whole, for
            every method: only channels that no residual add reads are cut
            (APIB cuts only the inner channel of each ResNet block). None (default):
            the method's own default (``MethodSpec.prune_residual``: False for the
            lasso methods, where keeping the stream whole measured better; True
            otherwise). Recorded in ``PruneResult.prune_residual``.
        reconstruct: refit every layer that lost input channels by least squares
            so that it reproduces the unpruned layer's output on ``data``
            (:func:`lassoprune.pruning.reconstruct.reconstruct`). None (default):
            on whenever ``data`` is given; True without data is an error.
        recalibrate: re-estimate BatchNorm running statistics on ``data`` after the
            cut (default; False leaves the cut's stale statistics, e.g. to compare
            the pruned model with its masked original).
        evaluate: ``model -> metrics``; given, the one-shot metrics before and after
            reconstruction are recorded in ``PruneResult.one_shot``.
        options: the method's options (``lassoprune prune --list-methods``);
            a method that accepts a threshold (``TargetUse.OR_THRESHOLD``,
            e.g. ``dwgl-vote``) given one needs no target.

    Returns:
        :class:`PruneResult` with the pruned model and before/after counts.
    """
    settings = PruneSettings(
        method=method, target_macs=target_macs, target_params=target_params, options=dict(options),
        allocation=allocation, min_channels=min_channels, round_to=round_to,
        ignore=tuple(_module_names(model, ignored_layers or ())), prune_residual=prune_residual,
        reconstruct=reconstruct,
    )
    return prune_with(model, example_inputs, settings, data=data, seed=seed, inplace=inplace,
                      recalibrate=recalibrate, evaluate=evaluate)


def prune_with(
    model: nn.Module,
    example_inputs: torch.Tensor,
    settings: PruneSettings,
    data: Batches | None = None,
    seed: int = 0,
    inplace: bool = False,
    recalibrate: bool = True,
    evaluate: Evaluate | None = None,
) -> PruneResult:
    """The one prune path: cut to ``settings`` (``round_to: auto`` tries each step), then :func:`after_cut`.

    ``lp.prune``, ``lassoprune prune``, the pipeline's ``prune`` stage and the
    benchmarks all end here. Arguments as in :func:`prune`; ``settings.calib_size``
    is not read (the caller drew ``data``).
    """
    started = time.perf_counter()
    if settings.steps != 1:
        raise LassopruneError(f"prune_with makes one cut; for steps={settings.steps} use "
                              "lassoprune.pruning.prune_iteratively (or prune.steps in a run config)")
    spec = _method_spec(settings.method)
    opts = spec.parse_options(settings.options)
    spec.check_target(opts, settings.target_macs is not None or settings.target_params is not None)
    steps = settings.round_steps()
    batches = list(data) if data is not None else None
    reconstruct = settings.reconstructs(bool(batches))
    if reconstruct and not batches:
        raise LassopruneError("reconstruct=True refits layers on calibration images: give data=[(x, y), ...] "
                              "(a few hundred training images with their labels)")
    if spec.needs_data and not batches:
        raise LassopruneError(f"method {spec.name!r} needs calibration data: give data=[(x, y), ...] batches "
                              "(a few batches of training images with their labels)")
    modules_named(model, settings.ignore)  # a clear error before any copy
    original = copy.deepcopy(model) if reconstruct and inplace else model
    targets = [None] if spec.uses_threshold(opts) else _targets(settings.target_macs, settings.target_params)
    result, target = None, targets[0]
    if len(targets) > 1:  # two limits: the MACs cut binds unless it keeps too many params (then the params cut)
        trial = _cut_rounded(copy.deepcopy(model), example_inputs, spec, opts, settings, batches, steps, target, seed)
        if not _within_limits(trial, settings):
            target = targets[1]
        else:
            result = _replayed(model, example_inputs, trial, settings) if inplace else trial
    if result is None:
        work = model if inplace else copy.deepcopy(model)
        result = _cut_rounded(work, example_inputs, spec, opts, settings, batches, steps, target, seed)
    if not _within_limits(result, settings):
        raise LassopruneError(_limits_message(result, settings))
    cut_seconds = time.perf_counter() - started
    post = after_cut(original, result.model, batches, result.groups, result.keep, reconstruct_layers=reconstruct,
                     recalibrate=recalibrate, evaluate=evaluate, seed=seed)
    return dataclasses.replace(
        result, reconstruction=post.reconstruction, one_shot=post.one_shot,
        recalibrated_images=post.recalibrated_images, seconds=cut_seconds + post.seconds,
    )


def _replayed(model: nn.Module, example_inputs: torch.Tensor, cut: PruneResult, settings: PruneSettings
              ) -> PruneResult:  # fmt: skip
    """``cut`` (made on a copy of ``model``) applied to ``model`` itself from its keep sets, without running the
    method again: the same model gives the same channel groups, so the keep sets carry over."""
    model.eval()
    analysis = _analyse(model, example_inputs[:1], modules_named(model, settings.ignore))
    if [g.id for g in analysis.groups] != [g.id for g in cut.groups]:
        raise AssertionError("the model's channel groups changed between two analyses of the same model")
    remove_channels(analysis, cut.keep)
    return dataclasses.replace(cut, model=model, groups=analysis.groups)


def _two_inputs_for_own_forward(model: nn.Module, groups: Sequence[ChannelGroup], floor: np.ndarray) -> np.ndarray:
    """``floor`` with every group read by a conv / linear subclass with its own forward kept at two channels at
    least: such layers may transform their weights per filter (weight standardisation's mean and variance over
    a filter's inputs, timm's ``ScaledStdConv2d``), which fails on a 1x1 filter of one input."""
    modules = dict(model.named_modules())
    raised = floor.copy()
    for i, group in enumerate(groups):
        if any(s.module in modules and has_own_forward(modules[s.module]) for s in group.consumers):
            raised[i] = max(raised[i], min(2, group.num_channels))
    return raised


def _cut_rounded(
    work: nn.Module, example_inputs: torch.Tensor, spec: MethodSpec, opts: Any, settings: PruneSettings,
    batches: list[tuple[torch.Tensor, torch.Tensor]] | None, steps: tuple[int | None, ...], target: Target | None,
    seed: int,
) -> PruneResult:
    """:func:`_cut` with the first ``round_to`` step of ``steps`` that reaches ``target``."""
    ignored = modules_named(work, settings.ignore)
    for step in steps:
        try:
            return _cut(work, example_inputs, spec, opts, settings, batches, ignored, step, seed, target)
        except UnreachableTargetError:
            if step is steps[-1]:
                raise
            get_logger().info("round_to %s cannot reach the target; trying %s", step, steps[steps.index(step) + 1])
    raise AssertionError("round_steps() is never empty")


def _targets(target_macs: float | None, target_params: float | None) -> list[Target]:
    """The cuts to try: one target, or for two limits the MACs one then the params one."""
    if target_macs is not None and target_params is not None:
        return [Target("macs", target_macs), Target("params", target_params)]
    return [_target(target_macs, target_params)]


def _within_limits(result: PruneResult, settings: PruneSettings) -> bool:
    """Whether the cut keeps at most each limit given (plus :data:`TARGET_TOLERANCE` of the original)."""
    kept = {"macs": (result.macs_after / result.macs_before, settings.target_macs),
            "params": (result.params_after / result.params_before, settings.target_params)}
    return all(limit is None or ratio <= limit + TARGET_TOLERANCE for ratio, limit in kept.values())


def _limits_message(result: PruneResult, settings: PruneSettings) -> str:
    return (f"cannot meet both target_macs={settings.target_macs} and target_params={settings.target_params}: "
            f"the cut to the params limit keeps {result.macs_after / result.macs_before:.4f} of the MACs and "
            f"{result.params_after / result.params_before:.4f} of the params (relax one of the two limits)")


def _cut(
    work: nn.Module, example_inputs: torch.Tensor, spec: MethodSpec, opts: Any, settings: PruneSettings,
    batches: list[tuple[torch.Tensor, torch.Tensor]] | None, ignored: Sequence[nn.Module], round_to: int | None,
    seed: int, target: Target | None,
) -> PruneResult:
    """Score, allocate and remove channels of ``work`` in place (the target is checked before any scoring)."""
    prune_residual = spec.prune_residual if settings.prune_residual is None else settings.prune_residual
    allocation_name = ALLOCATIONS.get(settings.allocation).name if not spec.decides_widths else "method"
    work.eval()
    single = example_inputs[:1]
    analysis = _analyse(work, single, list(ignored))
    cost_model = CostModel(work, single, analysis.groups)
    floor = floors(analysis.groups, settings.min_channels, round_to, prune_residual,
                   whole_blocked=spec.decides_widths and not spec.keeps_units)
    floor = _two_inputs_for_own_forward(work, analysis.groups, floor)
    if target is not None:
        _check_target(cost_model, target, floor, analysis)
    if spec.decides_widths and not spec.rounds_widths and round_to is not None and round_to > 1:
        get_logger().warning(
            "%s decides its own keep sets: round_to=%d raises every group's floor to %d channels, "
            "but the kept widths are not rounded to multiples of it", spec.name, round_to, round_to)

    ctx = MethodContext(work, analysis, cost_model, target, floor, batches, seed, opts, round_to, single)
    selection = spec.run(ctx)
    keep, scores = selection.keep, selection.scores
    if spec.decides_widths:
        _check_keep_sets(spec.name, analysis.groups, keep, floor)
    else:
        assert target is not None  # scores need a target: only width-deciding methods take a threshold
        keep = allocate(analysis.groups, scores, cost_model, target, allocation_name, settings.min_channels,
                        round_to, floor=floor)

    predicted = cost_model.macs({gid: len(kept) for gid, kept in keep.items()})
    shapes = _output_shapes(work, single)
    remove_channels(analysis, keep)
    after = _count_after_surgery(work, single)
    _check_output_shapes(work, single, shapes)
    if after.macs != predicted:
        get_logger().warning("cost model predicted %d MACs, the pruned model has %d", predicted, after.macs)
    _warn_if_target_missed(spec.name, target, cost_model, after)
    return PruneResult(
        model=work, keep=dict(keep), groups=analysis.groups, scores=dict(scores),
        macs_before=cost_model.full_macs, macs_after=after.macs,
        params_before=cost_model.full_params, params_after=after.params,
        method=spec.name, allocation=allocation_name,
        target=target, diagnostics=selection.diagnostics, seconds=0.0, prune_residual=prune_residual, round_to=round_to,
    )


def _check_target(cost_model: CostModel, target: Target, floor: np.ndarray, analysis: GroupAnalysis) -> None:
    """:func:`check_target`, its message naming the layers left whole because the model rearranges channels."""
    try:
        check_target(cost_model, target, floor, analysis.groups)
    except UnreachableTargetError as exc:
        if not analysis.protected:
            raise
        named = "; ".join(f"{name}: {why}" for name, why in list(analysis.protected.items())[:3])
        more = f" and {len(analysis.protected) - 3} more" if len(analysis.protected) > 3 else ""
        raise UnreachableTargetError(f"{exc}; left whole because the model rearranges their channels: "
                                     f"{named}{more}") from None


def _output_shapes(model: nn.Module, example: torch.Tensor) -> list[tuple[int, ...]]:
    """The shape of every tensor the model returns for ``example``."""
    with torch.no_grad():
        return [tuple(t.shape) for t in flatten_outputs(model(example))]


def _check_output_shapes(model: nn.Module, example: torch.Tensor, before: list[tuple[int, ...]]) -> None:
    """Raise when the cut changed an output's shape (e.g. removed classes): the model would be silently wrong."""
    after = _output_shapes(model, example)
    if after != before:
        raise LassopruneError(
            f"the cut changed the model's output shapes from {before} to {after}: a layer producing an output "
            "lost channels the analysis did not see reach the output; pass the last conv / linear layers "
            "in ignored_layers"
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
        if group.blocks > 1 and not _whole_units(group, kept):
            raise LassopruneError(f"method {method!r} kept part of a unit of group {group.id!r}: a grouped "
                                  f"convolution reads it in {group.blocks} blocks, which must keep the same "
                                  "positions (ChannelGroup.unit_channels)")
    unknown = sorted(set(keep) - {g.id for g in groups})
    if unknown:
        raise LassopruneError(f"method {method!r} returned keep sets for unknown groups: {', '.join(unknown)}")


def _whole_units(group: ChannelGroup, kept: Sequence[int]) -> bool:
    """True when ``kept`` is a union of whole units of ``group`` (``ChannelGroup.unit_channels``)."""
    kept_set = set(kept)
    return all(kept_set.isdisjoint(unit) or kept_set.issuperset(unit) for unit in group.unit_channels)


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
        emptied = [name for name, m in model.named_modules()
                   if isinstance(getattr(m, "weight", None), torch.Tensor) and 0 in m.weight.shape]
        if emptied:
            hint = (f"Torch-Pruning left {', '.join(emptied[:3])} with no channels (their channels reach the cut "
                    "through an operation it maps wrongly); ")
        elif suspects:
            hint = f"layers Torch-Pruning may not know how to cut: {', '.join(suspects[:5])}; "
        else:
            hint = ""
        raise LassopruneError(
            f"the pruned model no longer runs on the example input ({str(exc).splitlines()[0][:200]}); "
            f"{hint}pass those layers (or the convs that feed them) in ignored_layers"
        ) from exc


def _target(target_macs: float | None, target_params: float | None) -> Target:
    target = target_from(target_macs, target_params)
    if target is None:
        raise LassopruneError("give exactly one of target_macs or target_params (a fraction of the original to keep)")
    return target


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
        why = "; ".join(f"{n}: {r}" for n, r in list(analysis.protected.items())[:3])
        raise LassopruneError(
            "found no prunable channel group in this model (every conv/linear is ignored or feeds the output"
            + (f"; left whole: {why}" if why else "") + ")"
        )
    return analysis
