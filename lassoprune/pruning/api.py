"""``lp.prune``: score, allocate and cut any traceable model in one call."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from lassoprune.analysis import count
from lassoprune.errors import LassopruneError
from lassoprune.pruning.allocation import Target, allocate, check_target, floors
from lassoprune.pruning.cost import CostModel
from lassoprune.pruning.criteria import list_criteria, score_groups
from lassoprune.pruning.groups import ChannelGroup, GroupAnalysis, analyse_groups, layer_kind
from lassoprune.pruning.surgery import remove_channels
from lassoprune.utils.runtime import get_logger

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class SelectionContext:
    """What a keep-set selector (a method that picks its own channels) receives."""

    model: nn.Module
    analysis: GroupAnalysis
    cost_model: CostModel
    target: Target | None  # None: the method prunes without a target (e.g. dwgl-vote with a threshold)
    floors: np.ndarray
    batches: Sequence[tuple[torch.Tensor, torch.Tensor]] | None
    seed: int
    options: Mapping[str, Any]
    round_to: int | None = None  # kept widths should be multiples of this (or the whole group)


@dataclass(frozen=True)
class Selection:
    """A selector's answer: kept channels per group, optional scores and diagnostics."""

    keep: dict[str, tuple[int, ...]]
    scores: dict[str, torch.Tensor] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)


class KeepSelector(Protocol):
    def __call__(self, ctx: SelectionContext) -> Selection: ...


_SELECTORS: dict[str, KeepSelector] = {}


_ROUNDING_SELECTORS = {"sglp-ib", "stlp-ib", "hsic-ib", "class-lasso"}  # they honour ctx.round_to


def register_selector(name: str) -> Callable[[KeepSelector], KeepSelector]:
    """Register a method that chooses its own per-group keep sets (e.g. the lasso methods)."""

    def decorate(fn: KeepSelector) -> KeepSelector:
        if name in _SELECTORS or name in list_criteria():
            raise LassopruneError(f"pruning method {name!r} is already registered")
        _SELECTORS[name] = fn
        return fn

    return decorate


def list_methods() -> list[str]:
    """Every pruning method: importance criteria (with an allocation) and keep-set selectors."""
    return sorted(set(list_criteria()) | set(_SELECTORS))


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
        seconds: wall time of scoring + allocation + surgery.
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
            "seconds": self.seconds,
            "details": self.details,
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
        options: extra method options (e.g. for the lasso methods); a selector
            given ``threshold`` (``dwgl-vote``) needs no target.

    Returns:
        :class:`PruneResult` with the pruned model and before/after counts.
    """
    started = time.perf_counter()
    target = _target(target_macs, target_params, optional=method in _SELECTORS and "threshold" in options)
    name = method if isinstance(method, str) else getattr(method, "__name__", "custom")
    if isinstance(method, str) and method not in list_methods():
        from lassoprune.errors import UnknownNameError

        raise UnknownNameError("pruning method", method, list_methods())
    ignored_names = _module_names(model, ignored_layers or ())
    work = model if inplace else copy.deepcopy(model)
    work.eval()
    single = example_inputs[:1]
    modules = dict(work.named_modules())
    analysis = _analyse(work, single, [modules[n] for n in ignored_names])
    cost_model = CostModel(work, single, analysis.groups)
    floor = floors(analysis.groups, min_channels, round_to)
    if target is not None:
        check_target(cost_model, target, floor)
    batches = list(data) if data is not None else None

    if isinstance(method, str) and method in _SELECTORS:
        if round_to is not None and round_to > 1 and method not in _ROUNDING_SELECTORS:
            get_logger().warning(
                "%s decides its own keep sets: round_to=%d raises every group's floor to %d channels, "
                "but the kept widths are not rounded to multiples of it", method, round_to, round_to)
        ctx = SelectionContext(work, analysis, cost_model, target, floor, batches, seed, options, round_to)
        selection = _SELECTORS[method](ctx)
        keep, scores, details = selection.keep, selection.scores, selection.details
    else:
        scores = score_groups(
            work, analysis.groups, method, batches=batches, seed=seed, example_inputs=single, graph=analysis.graph
        )
        keep = allocate(analysis.groups, scores, cost_model, target, allocation, min_channels, round_to)
        details = {}

    predicted = cost_model.macs({gid: len(kept) for gid, kept in keep.items()})
    remove_channels(analysis, keep)
    after = _count_after_surgery(work, single)
    if after.macs != predicted:
        get_logger().warning("cost model predicted %d MACs, the pruned model has %d", predicted, after.macs)
    return PruneResult(
        model=work, keep=dict(keep), groups=analysis.groups, scores=dict(scores),
        macs_before=cost_model.full_macs, macs_after=after.macs,
        params_before=cost_model.full_params, params_after=after.params,
        method=name, allocation=allocation if name not in _SELECTORS else "method",
        target=target, details=details, seconds=time.perf_counter() - started,
    )


def _count_after_surgery(model: nn.Module, example: torch.Tensor) -> Any:
    """Count the pruned model; a model that no longer runs names the layers Torch-Pruning may not cut."""
    try:
        return count(model, example)
    except RuntimeError as exc:
        suspects = [
            f"{name} ({type(m).__name__})"
            for name, m in model.named_modules()
            if layer_kind(m) == "other" and any(True for _ in m.parameters(recurse=False))
        ]
        hint = f"layers Torch-Pruning may not know how to cut: {', '.join(suspects)}; " if suspects else ""
        raise LassopruneError(
            f"the pruned model no longer runs on the example input ({str(exc).splitlines()[0][:200]}); "
            f"{hint}pass them (or the convs that feed them) in ignored_layers"
        ) from exc


def _target(target_macs: float | None, target_params: float | None, optional: bool = False) -> Target | None:
    if optional and target_macs is None and target_params is None:
        return None
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
