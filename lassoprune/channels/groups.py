"""Channel groups: the sets of coupled channels that are kept or removed together.

A *channel group* is everything that must change when one channel is removed:
the output filters of the convs that produce it (several of them when they
feed one elementwise add), the BatchNorm entries, depthwise convs that carry
it, and the input slices of every layer that reads it. The dependency
analysis is Torch-Pruning's (``torch_pruning.DependencyGraph``, Fang et al.,
DepGraph, CVPR 2023); this module only turns its groups into small frozen
records that the criteria, the cost model and the surgery all read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

from lassoprune.errors import LassopruneError
from lassoprune.utils.enums import NamedEnum


class LayerKind(NamedEnum):
    """What a layer is, as far as channel pruning is concerned (compares equal to its value)."""

    CONV = "conv"
    DEPTHWISE = "depthwise"
    LINEAR = "linear"
    NORM = "norm"
    OTHER = "other"


class SliceRole(NamedEnum):
    """Which dimension of a layer a group's channels occupy."""

    OUT = "out"  # output channels / features
    IN = "in"  # input channels / features


_WEIGHTED = (LayerKind.CONV, LayerKind.LINEAR)


@dataclass(frozen=True)
class LayerSlice:
    """The channels of one group inside one layer.

    Attributes:
        module: qualified module name (as in ``model.named_modules()``).
        kind: a :class:`LayerKind` (a plain string such as ``"conv"`` is converted).
        role: a :class:`SliceRole`, ``out`` (the layer's output channels /
            features) or ``in`` (its input channels / features).
        indices: positions in that dimension, ordered like the group's
            channels: ``indices[i]`` is where group channel ``channels[i]`` sits.
        channels: the group channel numbers these positions carry (usually
            ``0..C-1``).
    """

    module: str
    kind: LayerKind
    role: SliceRole
    indices: tuple[int, ...]
    channels: tuple[int, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", LayerKind.parse(self.kind))
        object.__setattr__(self, "role", SliceRole.parse(self.role))


@dataclass(frozen=True)
class ChannelGroup:
    """One prunable group (see the module docstring).

    Attributes:
        id: stable identifier, the name of the group's root layer.
        num_channels: C, the number of coupled channels.
        producers: conv / linear output slices (several: an eltwise group).
        consumers: conv / linear input slices (the layers that read the channels).
        norms: BatchNorm (or other per-channel) slices.
        depthwise: depthwise convs that carry the channels through.
        observe: the layer whose *input* shows the group's feature map as the
            consuming layers read it (after BN and activation): a spatial
            consumer when there is one, else a linear one.
    """

    id: str
    num_channels: int
    producers: tuple[LayerSlice, ...]
    consumers: tuple[LayerSlice, ...]
    norms: tuple[LayerSlice, ...]
    depthwise: tuple[LayerSlice, ...]
    others: tuple[LayerSlice, ...]
    observe: LayerSlice | None

    @property
    def is_eltwise(self) -> bool:
        """True when several convs feed the same channels (a residual / elementwise-add group)."""
        return len({s.module for s in self.producers}) > 1

    @property
    def slices(self) -> tuple[LayerSlice, ...]:
        """Every slice of the group."""
        return self.producers + self.consumers + self.norms + self.depthwise + self.others

    @property
    def modules(self) -> tuple[str, ...]:
        """Names of every member layer, sorted, without repeats."""
        return tuple(sorted({s.module for s in self.slices}))


@dataclass
class GroupAnalysis:
    """Channel groups with the Torch-Pruning graph they came from (needed for surgery).

    Attributes:
        groups: the records, in the model's module order.
        graph: the ``torch_pruning.DependencyGraph`` built on the model.
        roots: group id -> (root module, root pruning function).
    """

    groups: tuple[ChannelGroup, ...]
    graph: Any
    roots: dict[str, tuple[nn.Module, Any]]

    def by_id(self) -> dict[str, ChannelGroup]:
        return {g.id: g for g in self.groups}


def channel_groups(
    model: nn.Module,
    example_inputs: torch.Tensor | tuple[torch.Tensor, ...],
    ignored_layers: list[nn.Module] | tuple[nn.Module, ...] | None = None,
) -> tuple[ChannelGroup, ...]:
    """The prunable channel groups of ``model`` (see :func:`analyse_groups`)."""
    return analyse_groups(model, example_inputs, ignored_layers).groups


def analyse_groups(
    model: nn.Module,
    example_inputs: torch.Tensor | tuple[torch.Tensor, ...],
    ignored_layers: list[nn.Module] | tuple[nn.Module, ...] | None = None,
) -> GroupAnalysis:
    """Trace ``model`` with Torch-Pruning and describe every prunable group.

    The layer producing the network's output (the classifier) is never pruned;
    neither is any layer in ``ignored_layers`` (groups touching one are dropped).

    Args:
        model: any ``nn.Module`` Torch-Pruning can trace.
        example_inputs: a batch such as ``torch.randn(1, 3, 32, 32)``.
        ignored_layers: modules whose output channels must stay intact.

    Raises:
        LassopruneError: the model cannot be traced with these inputs.
    """
    names = {m: n for n, m in model.named_modules()}
    try:
        ignored = list(ignored_layers or ()) + _output_layers(model, example_inputs)
    except Exception as exc:
        raise _trace_error("the model cannot run on", example_inputs, exc) from exc
    was_training = model.training
    model.eval()
    try:
        graph = tp.DependencyGraph().build_dependency(model, example_inputs=example_inputs)
    except Exception as exc:
        raise _trace_error("Torch-Pruning could not trace the model with", example_inputs, exc) from exc
    finally:
        model.train(was_training)
    groups, roots = [], {}
    for tp_group in graph.get_all_groups(ignored_layers=ignored, root_module_types=(nn.Conv2d, nn.Linear)):
        record = _record(tp_group, graph, names)
        if record is None:
            continue
        groups.append(record)
        root = tp_group[0].dep.target.module
        roots[record.id] = (root, tp_group[0].dep.handler)
    order = {n: i for i, n in enumerate(names.values())}
    groups.sort(key=lambda g: order.get(g.id, len(order)))
    return GroupAnalysis(groups=tuple(groups), graph=graph, roots=roots)


def _trace_error(what: str, example_inputs: Any, exc: BaseException) -> LassopruneError:
    shapes = [tuple(t.shape) for t in (example_inputs if isinstance(example_inputs, tuple) else (example_inputs,))]
    shape = shapes[0] if len(shapes) == 1 else shapes
    return LassopruneError(
        f"{what} example inputs of shape {shape} ({type(exc).__name__}: {str(exc).splitlines()[0][:300]}); "
        "check that the shape (batch, channels, height, width) matches what the model expects"
    )


def _record(tp_group: Any, graph: Any, names: dict[nn.Module, str]) -> ChannelGroup | None:
    slices = []
    for item in tp_group:
        module = item.dep.target.module
        if not isinstance(module, nn.Module) or module not in names:
            continue  # a bare nn.Parameter or a non-module op (add, cat, ...)
        role = SliceRole.OUT if graph.is_out_channel_pruning_fn(item.dep.handler) else SliceRole.IN
        kind = layer_kind(module)
        pairs = sorted(zip(item.root_idxs, item.idxs))
        slices.append(
            LayerSlice(
                module=names[module], kind=kind, role=role,
                indices=tuple(int(i) for _, i in pairs), channels=tuple(int(r) for r, _ in pairs),
            )
        )
    producers = _unique(s for s in slices if s.kind in _WEIGHTED and s.role is SliceRole.OUT)
    if not producers:
        return None
    root = names[tp_group[0].dep.target.module]
    consumers = _unique(s for s in slices if s.kind in _WEIGHTED and s.role is SliceRole.IN)
    depthwise = _unique(s for s in slices if s.kind is LayerKind.DEPTHWISE)
    return ChannelGroup(
        id=root,
        num_channels=len(tp_group[0].idxs),
        producers=producers,
        consumers=consumers,
        norms=_unique(s for s in slices if s.kind is LayerKind.NORM),
        depthwise=depthwise,
        others=_unique(s for s in slices if s.kind is LayerKind.OTHER),
        observe=_observation_point(consumers, depthwise),
    )


def layer_kind(module: nn.Module) -> LayerKind:
    """The :class:`LayerKind` of ``module`` (one dispatch for the package)."""
    if isinstance(module, nn.modules.conv._ConvNd):
        depthwise = module.groups > 1 and module.groups == module.in_channels == module.out_channels
        return LayerKind.DEPTHWISE if depthwise else LayerKind.CONV
    if isinstance(module, nn.Linear):
        return LayerKind.LINEAR
    if isinstance(module, nn.modules.batchnorm._BatchNorm | nn.GroupNorm | nn.LayerNorm):
        return LayerKind.NORM
    return LayerKind.OTHER


def _observation_point(consumers: tuple[LayerSlice, ...], depthwise: tuple[LayerSlice, ...]) -> LayerSlice | None:
    spatial = [s for s in consumers if s.kind is LayerKind.CONV]
    for candidates in (depthwise, spatial, consumers):
        if candidates:
            return candidates[0]
    return None


def _unique(slices: Any) -> tuple[LayerSlice, ...]:
    seen, out = set(), []
    for s in slices:
        key = (s.module, s.role)
        if key not in seen:
            seen.add(key)
            out.append(s)
    return tuple(out)


def _output_layers(model: nn.Module, example_inputs: torch.Tensor | tuple[torch.Tensor, ...]) -> list[nn.Module]:
    """Leaf conv / linear layers whose output *is* the network's output (the classifier)."""
    produced: list[tuple[nn.Module, int]] = []

    def remember(module: nn.Module, _inputs: Any, output: Any) -> None:
        if isinstance(output, torch.Tensor):
            produced.append((module, output.data_ptr()))

    layers = [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    handles = [m.register_forward_hook(remember) for m in layers]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            inputs = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
            outputs = model(*inputs)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    flat = outputs if isinstance(outputs, list | tuple) else [outputs]
    pointers = {t.data_ptr() for t in flat if isinstance(t, torch.Tensor)}
    return [m for m, ptr in produced if ptr in pointers]
