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

import contextlib
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

from lassoprune.channels.attention import attention_blocks
from lassoprune.channels.outputs import output_producers
from lassoprune.channels.rearranged import rearranging_layers
from lassoprune.errors import LassopruneError
from lassoprune.utils.enums import NamedEnum
from lassoprune.utils.runtime import get_logger

def _skip_unmappable_reshapes() -> None:
    """Let Torch-Pruning skip the index mapping of a reshape it cannot infer instead of dividing by zero.

    Torch-Pruning 1.6 maps the channel indices across a view / reshape from the channel counts it infers on
    both sides; where it infers 0 (ShuffleNetV2's channel shuffle: a chunk, a view to 5-D, a transpose and a
    view back) it divides by zero, in the graph's construction and again in every ``get_pruning_group``.
    Such a reshape is left without a mapping, as Torch-Pruning leaves every reshape whose counts it cannot
    infer; the channels through it are addressed by position, so :mod:`lassoprune.channels.rearranged` keeps
    them whole and nothing is cut across it. Installed once, on import; any other error still propagates.
    """
    from torch_pruning.dependency import index_mapping

    original = index_mapping.update_reshape_index_mapping
    if getattr(original, "skips_unmappable", False):
        return

    def guarded(graph: Any, node: Any) -> None:
        try:
            original(graph, node)
        except ZeroDivisionError:
            pass

    guarded.skips_unmappable = True  # type: ignore[attr-defined]
    index_mapping.update_reshape_index_mapping = guarded


_skip_unmappable_reshapes()

ANALYSIS_SECONDS = 300.0
"""Bound on Torch-Pruning's tracing and group analysis of one model (seconds); past it the analysis stops."""


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
        blocks: B, the number of equal contiguous blocks of channels that a
            grouped convolution of the group reads or writes (its ``groups``; 1:
            none). A valid cut takes the same positions out of every block, so
            each group of the conv keeps the same width: the channels are pruned
            in *units* of B (unit ``u`` = channels ``u, u + C/B, u + 2C/B, ...``).
            ``blocks == num_channels``: the group can only be kept whole.
    """

    id: str
    num_channels: int
    producers: tuple[LayerSlice, ...]
    consumers: tuple[LayerSlice, ...]
    norms: tuple[LayerSlice, ...]
    depthwise: tuple[LayerSlice, ...]
    others: tuple[LayerSlice, ...]
    observe: LayerSlice | None
    blocks: int = 1

    @property
    def unit_channels(self) -> tuple[tuple[int, ...], ...]:
        """The channels of each unit (see ``blocks``): ``C / B`` tuples of B channels, one per block."""
        width = self.num_channels // self.blocks
        return tuple(tuple(u + b * width for b in range(self.blocks)) for u in range(width))

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
        protected: layer name -> why its output channels are left whole (the channels are sliced,
            split or reshaped by number, or feed a grouped conv: :mod:`lassoprune.channels.rearranged`).
    """

    groups: tuple[ChannelGroup, ...]
    graph: Any
    roots: dict[str, tuple[nn.Module, Any]]
    protected: dict[str, str] = field(default_factory=dict)

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

    The layers producing the network's outputs are never pruned, whatever
    they are (a linear or conv classifier, a head before pooling, flattening or
    upsampling, several outputs: :func:`~lassoprune.channels.outputs.output_producers`);
    neither is any layer in ``ignored_layers`` (groups touching one are dropped).

    Args:
        model: any ``nn.Module`` Torch-Pruning can trace.
        example_inputs: a batch such as ``torch.randn(1, 3, 32, 32)``.
        ignored_layers: modules whose output channels must stay intact.

    Raises:
        LassopruneError: the model cannot be traced with these inputs.
    """
    modules = dict(model.named_modules())
    names = {m: n for n, m in modules.items()}
    _refuse_attention(model)
    try:
        rearranging = rearranging_layers(model, example_inputs)
        ignored = list(ignored_layers or ()) + output_producers(model, example_inputs) + list(rearranging)
    except Exception as exc:
        raise _trace_error("the model cannot run on", example_inputs, exc) from exc
    protected = {names[m]: why for m, why in rearranging.items() if m in names}
    if protected:
        get_logger().info("left whole (%d layers): %s", len(protected),
                          "; ".join(f"{n}: {why}" for n, why in list(protected.items())[:8]))
    current = ["tracing the model"]
    with _time_bound(ANALYSIS_SECONDS, lambda: current[0]):
        graph = _build_graph(model, example_inputs)
        groups, roots = [], {}
        for root, tp_group in _prunable_groups(graph, ignored, names, current, protected):
            record = _record(tp_group, graph, names, modules)
            if record is None:
                continue
            groups.append(record)
            roots[record.id] = (root, tp_group[0].dep.handler)
    order = {n: i for i, n in enumerate(names.values())}
    groups.sort(key=lambda g: order.get(g.id, len(order)))
    return GroupAnalysis(groups=tuple(groups), graph=graph, roots=roots, protected=protected)


def _refuse_attention(model: nn.Module) -> None:
    """Raise a one-line error naming the first self-attention block (:mod:`lassoprune.channels.attention`)."""
    blocks = attention_blocks(model)
    if blocks:
        name, kind = blocks[0]
        raise LassopruneError(
            f"{name or 'the model'} ({kind}) is a self-attention block, and {len(blocks)} such blocks were found: "
            "lassoprune prunes the channels of convolutional networks; vision transformers and attention "
            "hybrids (ViT, Swin, MaxViT, ...) are not supported")


def _build_graph(model: nn.Module, example_inputs: torch.Tensor | tuple[torch.Tensor, ...]) -> Any:
    """Torch-Pruning's dependency graph of ``model`` (eval mode; frozen weights are traced too)."""
    was_training = model.training
    frozen = [p for p in model.parameters() if not p.requires_grad]
    model.eval()
    for p in frozen:  # Torch-Pruning follows autograd: a frozen layer would be invisible to it
        p.requires_grad_(True)
    try:
        with torch.enable_grad():
            return tp.DependencyGraph().build_dependency(model, example_inputs=example_inputs)
    except _AnalysisTimeout:
        raise
    except Exception as exc:
        raise _trace_error("Torch-Pruning could not trace the model with", example_inputs, exc) from exc
    finally:
        model.train(was_training)
        for p in frozen:
            p.requires_grad_(False)


def _prunable_groups(
    graph: Any, ignored: list[nn.Module], names: dict[nn.Module, str], current: list[str],
    unfollowed: dict[str, str],
) -> Iterator[tuple[nn.Module, Any]]:  # fmt: skip
    """Torch-Pruning's full group of every conv / linear root whose group touches no ignored layer's outputs.

    The loop of ``DependencyGraph.get_all_groups``, written out so that ``current[0]``
    names the root being analysed (for the time bound's message). A root whose group Torch-Pruning cannot
    follow (its index mapping fails on a split / reshape it did not infer) is left whole, with the reason
    in ``unfollowed`` (layer name -> why), instead of failing the whole analysis.
    """
    skip = {id(m) for m in list(ignored) + list(graph.IGNORED_LAYERS_IN_TRACING)}
    visited: set[int] = set()
    for module in list(graph.module2node):
        if id(module) in skip or id(module) in visited or not isinstance(module, nn.Conv2d | nn.Linear):
            continue
        pruner = graph.get_pruner_of_module(module)
        if pruner is None or pruner.get_out_channels(module) is None:
            continue
        current[0] = f"analysing the group of layer {names.get(module, type(module).__name__)!r}"
        channels = pruner.get_out_channels(module)
        try:
            tp_group = graph.get_pruning_group(module, pruner.prune_out_channels, list(range(channels)))
        except (IndexError, ZeroDivisionError, KeyError) as exc:
            why = f"Torch-Pruning could not follow its channels ({type(exc).__name__}: {exc}); kept whole"
            unfollowed[names.get(module, type(module).__name__)] = why
            visited.add(id(module))
            skip.add(id(module))  # no other root's group may cut its channels either
            continue
        prunable = True
        for dep, _ in tp_group:
            if graph.is_out_channel_pruning_fn(dep.handler):
                visited.add(id(dep.target.module))
                prunable = prunable and id(dep.target.module) not in skip
        if prunable:
            yield module, tp_group


class _AnalysisTimeout(BaseException):
    """Raised by the alarm of :func:`_time_bound` (a BaseException: no ``except Exception`` swallows it)."""


@contextlib.contextmanager
def _time_bound(seconds: float, doing: Callable[[], str]) -> Iterator[None]:
    """Stop the block with a :class:`LassopruneError` after ``seconds`` (main thread with SIGALRM only).

    Raises:
        LassopruneError: the time ran out; the message says what was being done (``doing()``).
    """
    usable = hasattr(signal, "SIGALRM") and threading.current_thread() is threading.main_thread()
    if not usable or seconds <= 0:
        yield
        return

    def alarm(_signum: int, _frame: Any) -> None:
        raise _AnalysisTimeout()

    started = time.perf_counter()
    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    except _AnalysisTimeout:
        raise LassopruneError(
            f"Torch-Pruning's dependency analysis did not finish within {time.perf_counter() - started:.0f} s "
            f"({doing()}); pass that layer (or the block around it) in ignored_layers (CLI --ignore)"
        ) from None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _trace_error(what: str, example_inputs: Any, exc: BaseException) -> LassopruneError:
    shapes = [tuple(t.shape) for t in (example_inputs if isinstance(example_inputs, tuple) else (example_inputs,))]
    shape = shapes[0] if len(shapes) == 1 else shapes
    return LassopruneError(
        f"{what} example inputs of shape {shape} ({type(exc).__name__}: {str(exc).splitlines()[0][:300]}); "
        "check that the shape (batch, channels, height, width) matches what the model expects"
    )


def _record(tp_group: Any, graph: Any, names: dict[nn.Module, str],
            modules: dict[str, nn.Module]) -> ChannelGroup | None:  # fmt: skip
    num_channels = len(tp_group[0].idxs)
    slices = []
    for item in tp_group:
        module = item.dep.target.module
        if not isinstance(module, nn.Module) or module not in names:
            continue  # a bare nn.Parameter or a non-module op (add, cat, ...)
        role = SliceRole.OUT if graph.is_out_channel_pruning_fn(item.dep.handler) else SliceRole.IN
        kind = layer_kind(module)
        pairs = sorted(zip(item.root_idxs, item.idxs))
        layer_slice = LayerSlice(
            module=names[module], kind=kind, role=role,
            indices=tuple(int(i) for _, i in pairs), channels=tuple(int(r) for r, _ in pairs),
        )
        check_slice(layer_slice, module, num_channels)
        slices.append(layer_slice)
    producers = _unique(s for s in slices if s.kind in _WEIGHTED and s.role is SliceRole.OUT)
    if not producers or _mapped_twice(slices) or not _produced_everywhere(producers, num_channels):
        return None
    root = names[tp_group[0].dep.target.module]
    consumers = _unique(s for s in slices if s.kind in _WEIGHTED and s.role is SliceRole.IN)
    depthwise = _unique(s for s in slices if s.kind is LayerKind.DEPTHWISE)
    return ChannelGroup(
        id=root,
        num_channels=num_channels,
        producers=producers,
        consumers=consumers,
        norms=_unique(s for s in slices if s.kind is LayerKind.NORM),
        depthwise=depthwise,
        others=_unique(s for s in slices if s.kind is LayerKind.OTHER),
        observe=_observation_point(consumers, depthwise),
        blocks=_blocks(producers + consumers, modules, num_channels),
    )


def _blocks(slices: tuple[LayerSlice, ...], modules: dict[str, nn.Module], num_channels: int) -> int:
    """The group's ``blocks`` (:class:`ChannelGroup`): the least common multiple of the ``groups`` of its grouped
    (not depthwise) convolutions, or ``num_channels`` (kept whole) when the blocks do not divide the channels
    or a grouped conv sees the group's channels in another order than its own or only some of its channels
    (through a concatenation)."""
    blocks = 1
    for layer_slice in slices:
        module = modules.get(layer_slice.module)
        count = getattr(module, "groups", 1) if layer_slice.kind is LayerKind.CONV else 1
        if count <= 1:
            continue
        identity = layer_slice.indices == tuple(range(num_channels)) == layer_slice.channels
        if not identity or _dimension_size(module, layer_slice.role) != num_channels:
            return num_channels  # the group fills part of the conv's blocks, or in another order
        blocks = math.lcm(blocks, count)
    return blocks if num_channels % blocks == 0 else num_channels


def check_slice(layer_slice: LayerSlice, module: nn.Module, num_channels: int) -> None:
    """Check that a slice names real positions of its layer and real channels of its group.

    Every position must lie inside the layer's sliced dimension, and every
    channel in ``0..C-1``; an output slice (or a norm's) carries each channel at
    most once. Torch-Pruning's index mapping can break these where a model
    slices or reshapes channels in ways its graph does not follow (``x[:, :k]``
    with a concatenation, as dual-path blocks do): such a group would prune the
    wrong channels, so the analysis stops here and names the layer.

    Raises:
        LassopruneError: the slice breaks one of the rules above.
    """
    size = _dimension_size(module, layer_slice.role)
    if size is not None and any(not 0 <= i < size for i in layer_slice.indices):
        what = f"positions up to {max(layer_slice.indices)} of its {size} {layer_slice.role} channels"
    elif any(not 0 <= c < num_channels for c in layer_slice.channels):
        what = f"channel numbers up to {max(layer_slice.channels)}"
    elif layer_slice.role is SliceRole.OUT and len(set(layer_slice.channels)) != len(layer_slice.channels):
        what = "the same channel at several output positions"
    else:
        return
    raise LassopruneError(
        f"cannot prune layer {layer_slice.module!r} ({type(module).__name__}): the dependency analysis maps a "
        f"group of {num_channels} channels onto {what}, so the model slices or reshapes channels in a way it "
        f"does not follow (e.g. x[:, :k] then torch.cat); pass this layer and the layers that produce its "
        f"channels in ignored_layers (CLI --ignore)"
    )


def _dimension_size(module: nn.Module, role: SliceRole) -> int | None:
    """The length of the layer's sliced dimension (None where the layer kind does not say)."""
    if isinstance(module, nn.modules.conv._ConvNd):
        return module.out_channels if role is SliceRole.OUT else module.in_channels
    if isinstance(module, nn.Linear):
        return module.out_features if role is SliceRole.OUT else module.in_features
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return module.num_features
    if isinstance(module, nn.GroupNorm):
        return module.num_channels
    return None


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


def _produced_everywhere(producers: Sequence[LayerSlice], num_channels: int) -> bool:
    """True when every channel of the group comes out of some producer's filters.

    A channel that no producer makes reaches the group through an operation Torch-Pruning did not map (seen on
    GhostNet, whose module concatenates a conv's output with a depthwise conv of it: the conv is mapped onto
    the second half of the concatenation only, and cutting that half empties the conv). Such a group is not cut.
    """
    covered = {c for s in producers for c in s.channels}
    return len(covered) == num_channels


def _mapped_twice(slices: Sequence[LayerSlice]) -> bool:
    """True when one layer dimension reaches the group by two different channel mappings.

    GhostNet's module concatenates a conv's output with a depthwise conv of that same output: Torch-Pruning
    then lists the conv twice, once per half of the concatenation, and removing group channels from both
    halves removes the union of both from the conv (down to no channel at all). Such a group is not cut.
    """
    seen: dict[tuple[str, SliceRole], tuple[tuple[int, ...], tuple[int, ...]]] = {}
    for s in slices:
        mapping = seen.setdefault((s.module, s.role), (s.indices, s.channels))
        if mapping != (s.indices, s.channels):
            return True
    return False


def _unique(slices: Any) -> tuple[LayerSlice, ...]:
    seen, out = set(), []
    for s in slices:
        key = (s.module, s.role)
        if key not in seen:
            seen.add(key)
            out.append(s)
    return tuple(out)
