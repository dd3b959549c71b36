"""Count multiply-accumulates (MACs) and parameters of a model, per layer.

Convention (the one of the pruning literature, e.g. He et al. 2016 quoting
ResNet FLOPs, Li et al. ICLR 2017, HRank CVPR 2020): only convolutions and
fully connected layers cost MACs; batch norm, activations, pooling, additions and
biases count 0. One MAC is one multiply plus one add, so 1 MAC = 2 FLOPs as
reported by :class:`torch.utils.flop_counter.FlopCounterMode`.

* ``ConvNd``:          ``out.numel() * (in_channels / groups) * prod(kernel_size)``
  (depthwise and grouped convolutions included).
* ``ConvTransposeNd``: ``in.numel() * (out_channels / groups) * prod(kernel_size)``.
* ``Linear``:          ``out.numel() * in_features``.

MACs are counted for the whole input given, batch dimension included: pass
``(1, C, H, W)`` for the per-image figure. Counting relies on forward hooks of
leaf modules, so convolutions or matrix products called functionally inside a
``forward`` (``F.conv2d``, ``x @ w``) are not seen.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from lassoprune.errors import LassopruneError

__all__ = ["CountResult", "LayerCount", "count", "count_params"]


@dataclass(frozen=True)
class LayerCount:
    """Cost of one call of a leaf module.

    Attributes:
        name: Qualified module name (``"layer1.0.conv1"``).
        kind: Class name (``"Conv2d"``, ``"BatchNorm2d"``, ...).
        macs: Multiply-accumulates of this call (0 except for conv and linear layers).
        params: Parameters held directly by the module (``recurse=False``).
        in_shape: Shape of the first input, e.g. ``(1, 64, 32, 32)``.
        out_shape: Shape of the output (``()`` if it is not a tensor).
    """

    name: str
    kind: str
    macs: int
    params: int
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]


@dataclass(frozen=True)
class CountResult:
    """Totals and per-layer costs, layers in call order.

    Attributes:
        macs: Total multiply-accumulates for the input counted (batch included).
        params: Number of distinct parameters of the whole model.
        layers: One :class:`LayerCount` per leaf-module call (a module called twice
            appears twice).
    """

    macs: int
    params: int
    layers: tuple[LayerCount, ...]


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of distinct parameter elements (shared parameters counted once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def layer_macs(module: nn.Module, inputs: torch.Tensor, output: torch.Tensor) -> int:
    """MACs of one call of ``module`` (0 for modules that are not conv or linear)."""
    if isinstance(module, nn.modules.conv._ConvTransposeNd):
        per_input = module.out_channels // module.groups * math.prod(module.kernel_size)
        return inputs.numel() * per_input
    if isinstance(module, nn.modules.conv._ConvNd):
        return output.numel() * (module.in_channels // module.groups) * math.prod(module.kernel_size)
    if isinstance(module, nn.Linear):
        return output.numel() * module.in_features
    return 0


def _shape(value: object) -> tuple[int, ...]:
    """Shape of a tensor, or of the first tensor of a tuple/list; ``()`` otherwise."""
    if isinstance(value, (tuple, list)) and value:
        value = value[0]
    return tuple(value.shape) if isinstance(value, torch.Tensor) else ()


def _example_input(model: nn.Module, input_shape: Sequence[int] | torch.Tensor) -> torch.Tensor:
    """The tensor to feed: ``input_shape`` itself, or zeros on the model's device and dtype."""
    if isinstance(input_shape, torch.Tensor):
        return input_shape
    shape = tuple(input_shape) if isinstance(input_shape, Sequence) else ()
    if len(shape) < 2 or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape):
        raise LassopruneError(
            f"input_shape must be a tensor or a tuple of positive ints with the batch dimension "
            f"first, e.g. (1, 3, 32, 32); got {input_shape!r}"
        )
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    return torch.zeros(shape, device=device, dtype=dtype)


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Put ``model`` in eval mode, restoring each submodule's own ``training`` flag on exit."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


@contextmanager
def _leaf_hooks(model: nn.Module, records: list[LayerCount]) -> Iterator[None]:
    """Record a :class:`LayerCount` for every call of a leaf module; hooks removed on exit."""
    handles: list[RemovableHandle] = []

    def make_hook(name: str) -> Callable[[nn.Module, tuple[object, ...], object], None]:
        def hook(module: nn.Module, args: tuple[object, ...], output: object) -> None:
            first = args[0] if args and isinstance(args[0], torch.Tensor) else None
            macs = layer_macs(module, first, output) if first is not None else 0
            params = sum(p.numel() for p in module.parameters(recurse=False))
            kind = type(module).__name__
            records.append(LayerCount(name, kind, int(macs), params, _shape(first), _shape(output)))

        return hook

    try:
        for name, module in model.named_modules():
            if next(module.children(), None) is None:
                handles.append(module.register_forward_hook(make_hook(name or type(module).__name__)))
        yield
    finally:
        for handle in handles:
            handle.remove()


def count(model: nn.Module, input_shape: tuple[int, ...] | torch.Tensor) -> CountResult:
    """Count the MACs and parameters of ``model`` on one forward pass.

    The model runs once in eval mode under ``torch.no_grad()``; afterwards every
    submodule has its previous train/eval flag back and all hooks are removed,
    even if the forward pass raises.

    Args:
        model: Any module whose forward takes one tensor.
        input_shape: Input shape with the batch dimension, e.g. ``(1, 3, 32, 32)``
            (a zero tensor on the model's device is fed), or the input tensor itself.

    Returns:
        A :class:`CountResult`; ``macs`` is for the whole batch given.
    """
    x = _example_input(model, input_shape)
    records: list[LayerCount] = []
    with _eval_mode(model), _leaf_hooks(model, records), torch.no_grad():
        model(x)
    return CountResult(
        macs=sum(layer.macs for layer in records), params=count_params(model), layers=tuple(records)
    )
