"""Channel importance criteria: ``score(group, ctx) -> (C,)`` turned into pruning methods.

A *criterion* is a callable ``score(group, ctx)`` that returns one
non-negative, finite score per channel of a :class:`ChannelGroup` (shape
``(C,)``, channel ``c`` at position ``c``); low scores are pruned first. The
:class:`ScoreContext` carries what criteria may read (the model, its layers by
name, calibration batches, a seed) and a cache, so that a data criterion runs
its forward / backward passes once for all groups rather than once per group.

:func:`register_criterion` registers a criterion as a pruning method (a
:class:`~lassoprune.pruning.method.MethodSpec` whose scores the allocation
turns into widths) in the one method registry. The built-in criteria live in
:mod:`lassoprune.pruning.methods` (``l1``, ``l2``, ``bn-scale``, ``taylor``,
``random``)::

    @register_criterion("l1-consumers")
    def l1_consumers(group: ChannelGroup, ctx: ScoreContext) -> torch.Tensor:
        return group_norms(ctx.modules, group, p=1, include=("consumers",)).detach()
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import torch
from torch import Tensor, nn

from lassoprune.channels import ChannelGroup
from lassoprune.errors import LassopruneError, UnknownNameError
from lassoprune.pruning.method import METHODS, MethodContext, MethodSpec, Selection, register_method

Batch = tuple[Tensor, Tensor]
T = TypeVar("T")


@dataclass(frozen=True)
class ScoreContext:
    """What a criterion may read; built once per scoring run.

    The fields are fixed; ``cache`` is the one mutable part, where criteria
    keep results shared by all groups (see :meth:`cached`).

    Attributes:
        model: the network being scored.
        modules: qualified name -> module (``dict(model.named_modules())``).
        batches: calibration batches ``(x, y)``, ``x`` of shape ``(B, 3, H, W)``,
            ``y`` of shape ``(B,)`` with class indices; ``None`` without data.
        seed: seed of the random criteria.
        device: where the model's parameters live (batches are moved there).
        example_inputs: one input batch, for criteria that trace the model
            (Torch-Pruning importances); defaults to the first calibration batch.
        graph: a ``torch_pruning.DependencyGraph`` of the model if one is at
            hand (built lazily otherwise, see :mod:`lassoprune.pruning.tp_adapter`).
        cache: per-run results shared across groups.
    """

    model: nn.Module
    modules: Mapping[str, nn.Module]
    batches: tuple[Batch, ...] | None = None
    seed: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    example_inputs: Tensor | tuple[Tensor, ...] | None = None
    graph: Any = field(default=None, repr=False, compare=False)
    cache: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def build(
        cls,
        model: nn.Module,
        batches: Iterable[Batch] | None = None,
        seed: int = 0,
        example_inputs: Tensor | tuple[Tensor, ...] | None = None,
        graph: Any = None,
    ) -> ScoreContext:
        """A context for ``model`` (``batches`` are materialised once into a tuple)."""
        param = next(iter(model.parameters()), None)
        device = param.device if param is not None else torch.device("cpu")
        return cls(
            model=model,
            modules=dict(model.named_modules()),
            batches=None if batches is None else tuple((x, y) for x, y in batches),
            seed=int(seed),
            device=device,
            example_inputs=example_inputs,
            graph=graph,
        )

    def cached(self, key: str, build: Callable[[], T]) -> T:
        """``cache[key]``, computed by ``build()`` on first use."""
        if key not in self.cache:
            self.cache[key] = build()
        return self.cache[key]


class Criterion(Protocol):
    """``score(group, ctx) -> Tensor`` of shape ``(group.num_channels,)``, finite and ``>= 0``."""

    def __call__(self, group: ChannelGroup, ctx: ScoreContext) -> Tensor: ...


@dataclass(frozen=True)
class RegisteredCriterion:
    """A criterion with its registry metadata; calling it calls ``fn``.

    Attributes:
        name: the registered name.
        fn: the scoring function.
        needs_data: whether it reads ``ctx.batches``.
    """

    name: str
    fn: Criterion
    needs_data: bool = False

    def __call__(self, group: ChannelGroup, ctx: ScoreContext) -> Tensor:
        return self.fn(group, ctx)


def register_criterion(name: str, needs_data: bool = False, summary: str = "") -> Callable[[Criterion], Criterion]:
    """Decorator that registers ``score(group, ctx)`` as pruning method ``name`` (returns it unchanged).

    Raises:
        LassopruneError: ``name`` is already registered (also a ``ValueError``).
    """

    def decorate(fn: Criterion) -> Criterion:
        register_method(criterion_spec(RegisteredCriterion(name=name, fn=fn, needs_data=needs_data), summary))
        return fn

    return decorate


@dataclass(frozen=True)
class CriterionSpec(MethodSpec):
    """The method spec of a criterion: scores that the allocation turns into widths."""

    criterion: RegisteredCriterion | None = None


def criterion_spec(criterion: RegisteredCriterion, summary: str = "") -> CriterionSpec:
    """The method spec of a criterion: ``run`` scores every group, the allocation decides the widths."""
    doc = (criterion.fn.__doc__ or "").strip().splitlines()
    return CriterionSpec(name=criterion.name, run=_scores_of(criterion), summary=summary or (doc[0] if doc else ""),
                         needs_data=criterion.needs_data, criterion=criterion)


def _scores_of(criterion: RegisteredCriterion) -> Callable[[MethodContext], Selection]:
    def run(ctx: MethodContext) -> Selection:
        scores = score_groups(ctx.model, ctx.analysis.groups, criterion, batches=ctx.batches, seed=ctx.seed,
                              example_inputs=ctx.example_inputs, graph=ctx.analysis.graph)
        return Selection(keep={}, scores=scores)

    run.__name__ = f"score_{criterion.name.replace('-', '_')}"
    return run


def get_criterion(name: str) -> RegisteredCriterion:
    """The criterion registered as ``name``.

    Raises:
        UnknownNameError: no criterion has that name.
    """
    spec = METHODS.get(name) if name in METHODS else None
    if not isinstance(spec, CriterionSpec) or spec.criterion is None:
        raise UnknownNameError("criterion", name, list_criteria())
    return spec.criterion


def list_criteria() -> list[str]:
    """Names of the methods that are criteria (scores + allocation), sorted."""
    return [name for name, spec in METHODS.items() if isinstance(spec, CriterionSpec)]


def resolve_criterion(method: str | Criterion) -> RegisteredCriterion:
    """A registered criterion by name, or wrap a plain callable.

    A callable may declare ``needs_data = True`` as an attribute.
    """
    if isinstance(method, RegisteredCriterion):
        return method
    if isinstance(method, str):
        return get_criterion(method)
    if callable(method):
        name = getattr(method, "__name__", type(method).__name__)
        return RegisteredCriterion(name=name, fn=method, needs_data=bool(getattr(method, "needs_data", False)))
    raise TypeError(f"a criterion is a name or a callable score(group, ctx), got {type(method).__name__}")


def score_groups(
    model: nn.Module,
    groups: Sequence[ChannelGroup],
    method: str | Criterion,
    batches: Iterable[Batch] | None = None,
    seed: int = 0,
    example_inputs: Tensor | tuple[Tensor, ...] | None = None,
    graph: Any = None,
) -> dict[str, Tensor]:
    """Score every channel of every group with one criterion.

    The context (and with it any forward / backward pass of a data
    criterion) is built once for all groups.

    Args:
        model: the network the groups were computed on.
        groups: its channel groups (:func:`lassoprune.channels.groups.channel_groups`).
        method: a registered name (:func:`list_criteria`) or a callable criterion.
        batches: calibration batches ``(x, y)`` for data criteria.
        seed: seed of random criteria.
        example_inputs: an input batch, for criteria that trace the model.
        graph: the ``torch_pruning.DependencyGraph`` of the model, if at hand.

    Returns:
        group id -> detached scores of shape ``(C,)``.

    Raises:
        UnknownNameError: ``method`` is not a registered criterion.
        LassopruneError: a data criterion without batches, or a criterion
            that returned a wrong shape, NaN / inf or a negative score.
    """
    criterion = resolve_criterion(method)
    ctx = ScoreContext.build(model, batches, seed=seed, example_inputs=example_inputs, graph=graph)
    if criterion.needs_data:
        require_batches(ctx, criterion.name)
    scores = {}
    for group in groups:
        scores[group.id] = check_scores(criterion(group, ctx).detach(), group, criterion.name)
    return scores


def require_batches(ctx: ScoreContext, name: str) -> tuple[Batch, ...]:
    """``ctx.batches``, or a :class:`LassopruneError` saying that criterion ``name`` needs them."""
    if not ctx.batches:
        raise LassopruneError(
            f"criterion {name!r} needs calibration data: pass batches=[(x, y), ...] "
            "(a few batches of training images with their labels)"
        )
    return ctx.batches


def check_scores(scores: Tensor, group: ChannelGroup, name: str) -> Tensor:
    """``scores`` if it has shape ``(C,)`` and is finite and ``>= 0``; else a :class:`LassopruneError`."""
    if tuple(scores.shape) != (group.num_channels,):
        raise LassopruneError(
            f"criterion {name!r} returned shape {tuple(scores.shape)} for group {group.id!r}; "
            f"expected ({group.num_channels},)"
        )
    if not bool(torch.isfinite(scores).all()) or bool((scores < 0).any()):
        raise LassopruneError(f"criterion {name!r} returned a NaN, infinite or negative score for group {group.id!r}")
    return scores
