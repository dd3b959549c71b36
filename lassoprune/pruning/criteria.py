"""Channel importance criteria: one registry of ``score(group, ctx) -> (C,)``.

A *criterion* is a callable ``score(group, ctx)`` that returns one
non-negative, finite score per channel of a :class:`ChannelGroup` (shape
``(C,)``, channel ``c`` at position ``c``); low scores are pruned first. The
:class:`ScoreContext` carries what criteria may read (the model, its layers by
name, calibration batches, a seed) and a cache, so that a data criterion runs
its forward / backward passes once for all groups rather than once per group.

Built-in criteria (``list_criteria()``):

- ``l1``: ``s_c = sum_{producers L} ||W_c^(L)||_1`` (Li et al., "Pruning filters
  for efficient ConvNets", ICLR 2017).
- ``l2``: ``s_c = sqrt(sum_{producers L} ||W_c^(L)||_2^2)``.
- ``bn-scale``: ``s_c = sum_{norm layers B} |gamma_c^(B)|`` (Liu et al.,
  "Learning efficient convolutional networks through network slimming",
  ICCV 2017).
- ``taylor``: first-order Taylor expansion of the loss (Molchanov et al.,
  "Importance estimation for neural network pruning", CVPR 2019); needs data.
- ``random``: uniform in ``[0, 1)``, seeded by ``(seed, group id)``.

New criteria are added with :func:`register_criterion`::

    @register_criterion("l1-consumers")
    def l1_consumers(group: ChannelGroup, ctx: ScoreContext) -> torch.Tensor:
        return group_norms(ctx.modules, group, p=1, include=("consumers",)).detach()
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lassoprune.errors import LassopruneError, UnknownNameError
from lassoprune.pruning.groups import ChannelGroup, layer_kind
from lassoprune.pruning.norms import group_power_sums, group_norms

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


_CRITERIA: dict[str, RegisteredCriterion] = {}


def register_criterion(name: str, needs_data: bool = False) -> Callable[[Criterion], Criterion]:
    """Decorator that registers ``score(group, ctx)`` under ``name`` (returns it unchanged).

    Raises:
        ValueError: ``name`` is already registered.
    """

    def decorate(fn: Criterion) -> Criterion:
        if name in _CRITERIA:
            raise ValueError(f"criterion {name!r} is already registered")
        _CRITERIA[name] = RegisteredCriterion(name=name, fn=fn, needs_data=needs_data)
        return fn

    return decorate


def get_criterion(name: str) -> RegisteredCriterion:
    """The criterion registered as ``name``.

    Raises:
        UnknownNameError: no criterion has that name.
    """
    try:
        return _CRITERIA[name]
    except KeyError:
        raise UnknownNameError("criterion", name, _CRITERIA) from None


def list_criteria() -> list[str]:
    """Names of the registered criteria, sorted."""
    return sorted(_CRITERIA)


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
        groups: its channel groups (:func:`lassoprune.pruning.groups.channel_groups`).
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


# --------------------------------------------------------------------------- magnitude


@register_criterion("l1")
def l1_score(group: ChannelGroup, ctx: ScoreContext) -> Tensor:
    """``s_c = sum_{producers L} ||W_c^(L)||_1``, ``W_c^(L)`` the output filter ``c`` of ``L``.

    Li et al., "Pruning filters for efficient ConvNets", ICLR 2017; for an
    elementwise (residual) group the filters of all producing convs are summed.
    Biases are not included.
    """
    with torch.no_grad():
        return group_norms(ctx.modules, group, p=1, include=("producers",))


@register_criterion("l2")
def l2_score(group: ChannelGroup, ctx: ScoreContext) -> Tensor:
    """``s_c = sqrt(sum_{producers L} ||W_c^(L)||_2^2)``: the L2 norm of the concatenated group filter."""
    with torch.no_grad():
        return group_norms(ctx.modules, group, p=2, include=("producers",))


@register_criterion("bn-scale")
def bn_scale_score(group: ChannelGroup, ctx: ScoreContext) -> Tensor:
    """``s_c = sum_{norm layers B of the group} |gamma_c^(B)|`` (network slimming).

    Liu et al., "Learning efficient convolutional networks through network
    slimming", ICCV 2017. A group with no affine norm layer (e.g. the
    fully connected layers of VGG's classifier) falls back to ``l2``.
    """
    if not any(_has_affine_weight(ctx.modules[s.module]) for s in group.norms):
        return l2_score(group, ctx)
    with torch.no_grad():
        return group_power_sums(ctx.modules, group, p=1, include=("norms",))


def _has_affine_weight(module: nn.Module) -> bool:
    return isinstance(getattr(module, "weight", None), Tensor)


# --------------------------------------------------------------------------- random


@register_criterion("random")
def random_score(group: ChannelGroup, ctx: ScoreContext) -> Tensor:
    """``s_c ~ U[0, 1)``, reproducible: the generator is seeded with ``crc32(f"{seed}:{group.id}")``.

    The same (seed, group) always gives the same scores, on any platform and
    Python process (``crc32``, unlike ``hash()``, is not salted).
    """
    generator = torch.Generator().manual_seed(zlib.crc32(f"{ctx.seed}:{group.id}".encode()))
    return torch.rand(group.num_channels, generator=generator, dtype=torch.float64)


# --------------------------------------------------------------------------- taylor


@register_criterion("taylor", needs_data=True)
def taylor_score(group: ChannelGroup, ctx: ScoreContext) -> Tensor:
    """First-order Taylor importance, squared and averaged over batches.

    Zeroing all parameters ``S_c`` of channel ``c`` changes the loss by about
    ``-sum_{w in S_c} w dL/dw``. Following Molchanov et al. ("Importance
    estimation for neural network pruning", CVPR 2019, eq. 8 and the
    averaging over minibatches), the score is

        s_c = (1 / N) sum_{b=1..N} ( sum_{w in S_c} w * dL_b/dw )^2

    with ``L_b`` the mean cross-entropy of calibration batch ``b`` and
    ``S_c`` the weights and biases of channel ``c`` in the group's producers,
    depthwise convs and norm layers (BN ``gamma`` and ``beta`` included; the
    input slices of the consumers are not). Squaring per batch (rather than
    taking ``|.|`` of the accumulated gradient) keeps batches whose effects
    have opposite signs from cancelling. A channel whose parameters in ``S_c``
    are all zero scores exactly 0.

    The passes run once per context for all groups, in eval mode (BN uses and
    keeps its running statistics); the model's mode, ``requires_grad`` flags
    and ``.grad`` fields are left as they were (gradients come from
    ``torch.autograd.grad``, never ``backward``).

    Raises:
        LassopruneError: the context has no calibration batches.
    """
    require_batches(ctx, "taylor")
    contributions = ctx.cached("taylor", lambda: taylor_contributions(ctx))
    members = _unique_modules(group.producers + group.depthwise + group.norms)
    per_batch = torch.zeros(len(ctx.batches), group.num_channels, dtype=torch.float64)
    for layer_slice in members:
        if layer_slice.module not in contributions:
            continue
        index = torch.as_tensor(layer_slice.indices)
        channels = torch.as_tensor(layer_slice.channels)
        per_batch.index_add_(1, channels, contributions[layer_slice.module].index_select(1, index))
    return per_batch.pow(2).mean(0)


def taylor_contributions(ctx: ScoreContext) -> dict[str, Tensor]:
    """Per batch and output channel, ``sum w * dL_b/dw`` over each layer's weight and bias.

    Covers every conv, depthwise, linear and affine norm layer of the model.

    Returns:
        layer name -> ``(N, O)`` float64 on the CPU (N batches, O output channels).
    """
    batches = require_batches(ctx, "taylor")
    layers = {
        name: module
        for name, module in ctx.modules.items()
        if layer_kind(module) != "other" and _has_affine_weight(module)
    }
    params = [(name, param) for name, module in layers.items() for param in _weight_and_bias(module)]
    flags = [param.requires_grad for _, param in params]
    was_training = ctx.model.training
    ctx.model.eval()
    rows: dict[str, list[Tensor]] = {name: [] for name in layers}
    try:
        for _, param in params:
            param.requires_grad_(True)
        for x, y in batches:
            grads = _loss_gradients(ctx, x, y, [param for _, param in params])
            per_layer: dict[str, Tensor] = {}
            for (name, param), grad in zip(params, grads, strict=True):
                if grad is None:
                    continue
                term = _per_output_channel(layers[name], (param.detach() * grad).double())
                per_layer[name] = per_layer[name] + term if name in per_layer else term
            for name, module in layers.items():
                rows[name].append(per_layer.get(name, torch.zeros(_num_outputs(module), dtype=torch.float64)).cpu())
    finally:
        for (_, param), flag in zip(params, flags, strict=True):
            param.requires_grad_(flag)
        ctx.model.train(was_training)
    return {name: torch.stack(values) for name, values in rows.items()}


def _loss_gradients(ctx: ScoreContext, x: Tensor, y: Tensor, params: list[Tensor]) -> tuple[Tensor | None, ...]:
    """``dL/dw`` for each of ``params``, ``L`` the mean cross-entropy of one batch."""
    with torch.enable_grad():
        output = ctx.model(x.to(ctx.device))
        logits = output[0] if isinstance(output, list | tuple) else output
        loss = F.cross_entropy(logits, y.to(ctx.device))
        return torch.autograd.grad(loss, params, allow_unused=True)


def _weight_and_bias(module: nn.Module) -> list[Tensor]:
    return [p for p in (getattr(module, "weight", None), getattr(module, "bias", None)) if isinstance(p, Tensor)]


def _per_output_channel(module: nn.Module, values: Tensor) -> Tensor:
    """Sum a parameter-shaped tensor over everything but the output-channel dimension: ``(O,)``."""
    if values.dim() == 1:
        return values
    dim = 1 if getattr(module, "transposed", False) else 0
    return values.movedim(dim, 0).reshape(values.shape[dim], -1).sum(1)


def _num_outputs(module: nn.Module) -> int:
    weight = module.weight
    return weight.shape[1] if getattr(module, "transposed", False) else weight.shape[0]


def _unique_modules(slices: Sequence[Any]) -> list[Any]:
    """One slice per layer (a depthwise conv appears with both roles; count it once)."""
    seen: set[str] = set()
    out = []
    for layer_slice in slices:
        if layer_slice.module not in seen:
            seen.add(layer_slice.module)
            out.append(layer_slice)
    return out
