"""Layers whose output channels must stay whole because the model rearranges them in ways pruning cannot follow.

Torch-Pruning's dependency graph follows concatenations, additions and
flattening, but a forward pass can also address channels by number:

- slicing ``x[:, :k]`` or ``x[:, k:]`` (GhostNet, CSPNet, DPN, partial residuals
  of ReXNet), and selecting channels (``index_select``, ``gather``, ``narrow``);
- splitting along the channels (``torch.split`` with fixed sizes as in MixNet,
  ``chunk`` as in ShuffleNetV2), whose sizes are written in the code and do not
  shrink with the layer;
- reshapes that move channels (the channel shuffle ``view(n, g, c // g, h, w)``,
  ``pixel_shuffle``, ``repeat``);
Removing channels that flow into such an operation gives a model that fails
or, worse, silently computes something else. :func:`rearranging_layers` runs
one forward pass, records every such operation, and walks the autograd graph
back from its input to the conv / linear layers that produce those channels
(through activations, normalisation, pooling, additions, concatenations and
depthwise convs, as :mod:`lassoprune.channels.outputs` does). Those layers are
left whole; the rest of the network is pruned. (Grouped convolutions are not
among them: their channels are pruned in units that keep every group the same
width, :attr:`lassoprune.channels.groups.ChannelGroup.blocks`; only a grouped
conv with one output per group and more inputs, which Torch-Pruning would cut
as a depthwise conv, is left whole with the layers feeding it.)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from lassoprune.channels.outputs import traced_forward, walk_back_from

__all__ = ["rearranging_layers"]

# op name -> (position of the ``dim`` argument, its default)
_DIM_OPS: dict[str, tuple[int, int]] = {
    "split": (2, 0), "split_with_sizes": (2, 0), "chunk": (2, 0), "tensor_split": (2, 0),
    "unsafe_split": (2, 0), "unsafe_chunk": (2, 0), "unbind": (1, 0), "narrow": (1, 0),
    "index_select": (1, 0), "gather": (1, 0), "take_along_dim": (2, 0),
}
_RESHAPES = frozenset({
    "view", "reshape", "flatten", "unflatten", "view_as", "reshape_as", "pixel_shuffle", "pixel_unshuffle",
    "channel_shuffle", "native_channel_shuffle", "repeat", "repeat_interleave",
})


def rearranging_layers(model: nn.Module, example_inputs: Tensor | tuple[Tensor, ...]) -> dict[nn.Module, str]:
    """The conv / linear layers whose output channels pruning must leave whole, each with the reason.

    Args:
        model: any module; run once in eval mode (BatchNorm statistics untouched).
        example_inputs: a batch such as ``torch.randn(1, 3, 32, 32)`` (or a tuple of inputs).

    Returns:
        layer -> reason (e.g. ``"its channels are sliced (x[:, 0:16])"``), in the order found.

    Raises:
        whatever the model's forward pass raises on ``example_inputs`` (callers wrap it).
    """
    producers: dict[Any, nn.Module] = {}
    recorder = _ChannelOpRecorder()
    one_out_per_group: list[tuple[nn.Module, Any]] = []

    def remember(module: nn.Module, inputs: Any, output: Any) -> None:
        if isinstance(output, Tensor) and output.grad_fn is not None:
            producers[output.grad_fn] = module
        if _one_output_per_group(module) and inputs and isinstance(inputs[0], Tensor):
            one_out_per_group.append((module, inputs[0].grad_fn))

    traced_forward(model, example_inputs, remember, recorder)
    found: dict[nn.Module, str] = {}
    for module, node in one_out_per_group:
        why = (f"grouped convolution with one output per group (groups={module.groups}, {module.in_channels} "
               "inputs), which Torch-Pruning cuts as a depthwise conv")
        found.setdefault(module, why)
        _protect([node], producers, f"its channels feed a {why}", found)
    for reason, node in recorder.records:
        _protect([node], producers, reason, found)
    _shared_by_a_concat(recorder.concats, producers, found)
    return found


def _protect(nodes: list[Any], producers: dict[Any, nn.Module], reason: str, found: dict[nn.Module, str]) -> None:
    """Record, with ``reason``, every producer reached from ``nodes`` (the first reason found wins)."""
    for fn in walk_back_from([n for n in nodes if n is not None], producers):
        found.setdefault(producers[fn], reason)


def _one_output_per_group(module: nn.Module) -> bool:
    """A conv with ``groups == out_channels`` but more inputs than outputs: Torch-Pruning's depthwise test
    (``groups == out_channels``) holds, but its inputs are not its outputs, so cutting it as depthwise fails."""
    return (isinstance(module, nn.modules.conv._ConvNd) and module.groups > 1
            and module.groups == module.out_channels != module.in_channels)


class _ChannelOpRecorder(TorchFunctionMode):
    """Records ``(reason, autograd node of the input)`` for every op that addresses channels by number."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[tuple[str, Any]] = []
        self.concats: list[list[Any]] = []  # autograd nodes of the inputs of each channel concatenation

    def __torch_function__(self, func: Any, types: Any, args: Sequence[Any] = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if getattr(func, "__name__", "") in ("cat", "concat", "concatenate"):
            self._concat(args, kwargs)
        source = args[0] if args and isinstance(args[0], Tensor) else None
        if source is not None and source.grad_fn is not None and source.dim() >= 2:
            reason = _channel_op(getattr(func, "__name__", ""), source, args, kwargs, out)
            if reason is not None:
                self.records.append((reason, source.grad_fn))
        return out


    def _concat(self, args: Sequence[Any], kwargs: dict[str, Any]) -> None:
        tensors = args[0] if args else kwargs.get("tensors", ())
        dim = kwargs.get("dim", args[1] if len(args) > 1 else 0)
        parts = [t for t in tensors if isinstance(t, Tensor)]
        if len(parts) > 1 and isinstance(dim, int) and parts[0].dim() >= 2 and dim % parts[0].dim() == 1:
            self.concats.append([t.grad_fn for t in parts])


def _shared_by_a_concat(concats: list[list[Any]], producers: dict[Any, nn.Module], found: dict[nn.Module, str]) -> None:
    """Record the layers whose channels reach one concatenation along two of its inputs (GhostNet's ``cat`` of
    a conv's output and a depthwise conv of it): one channel of theirs is two channels of the concatenation,
    which Torch-Pruning maps onto one input only, so cutting them empties the layer."""
    for nodes in concats:
        reached = [walk_back_from([n], producers) if n is not None else set() for n in nodes]
        for i, first in enumerate(reached):
            for later in reached[i + 1:]:
                for fn in first & later:
                    found.setdefault(producers[fn], "its channels reach one concatenation twice (directly and "
                                                   "through a depthwise conv or pooling)")


def _channel_op(name: str, source: Tensor, args: Sequence[Any], kwargs: dict[str, Any], out: Any) -> str | None:
    """Why ``name`` applied to ``source`` (N, C, ...) addresses channels by number, or None when it does not."""
    if name == "__getitem__" and len(args) > 1:
        return _indexing(args[1], source.shape[1])
    if name in _DIM_OPS:
        position, default = _DIM_OPS[name]
        dim = kwargs.get("dim", args[position] if len(args) > position else default)
        if isinstance(dim, int) and dim % source.dim() == 1:
            return f"its channels are split or selected by number ({name} along dim 1)"
        return None
    if name in _RESHAPES and isinstance(out, Tensor):
        return _reshape(name, tuple(source.shape), tuple(out.shape))
    return None


def _indexing(index: Any, channels: int) -> str | None:
    """The reason when an index such as ``[:, :k]`` picks part of dim 1 (the channels)."""
    if not isinstance(index, tuple) or len(index) < 2 or index[0] is Ellipsis:
        return None
    chosen = index[1]
    if chosen is Ellipsis or chosen is None:
        return None
    if isinstance(chosen, slice):
        if chosen.step in (None, 1) and (chosen.start or 0) in (0, -channels) and chosen.stop in (None, channels):
            return None
        return f"its channels are sliced (x[:, {_slice_text(chosen)}])"
    return "its channels are picked by number (x[:, index])"


def _slice_text(s: slice) -> str:
    text = f"{'' if s.start is None else s.start}:{'' if s.stop is None else s.stop}"
    return text if s.step in (None, 1) else f"{text}:{s.step}"


def _reshape(name: str, before: tuple[int, ...], after: tuple[int, ...]) -> str | None:
    """The reason when a reshape of (N, C, H, W) changes dim 1 other than by flattening to (N, C*H*W)."""
    if len(before) < 3 or len(after) < 2 or after[1] == before[1]:
        return None
    if len(after) == 2 and after[1] == math.prod(before[1:]):
        return None  # flattening channels with the space after them, as a linear head reads them
    return f"its channels are reshaped ({name} {list(before)} -> {list(after)})"
