"""Which layers produce the network's outputs: the channels no pruning may remove.

A classifier is not always an ``nn.Linear`` whose output *is* the logits: a
SqueezeNet-style head ends in a 1x1 conv followed by ReLU and global pooling, a
segmentation net returns a conv's map after a BatchNorm and an upsampling, a
detector returns several tensors. What they share is that the channels of
every output tensor are the output channels of the last weighted layers on the
paths that lead to it.

:func:`output_producers` finds those layers by tracing the autograd graph of
one forward pass backwards from every output tensor. The walk passes through
every operation that is not a weighted layer (activations, normalisation,
pooling, resizing, flattening, scaling, additions, concatenations: each
output channel of those is made of the same channels of its input) and stops
at the first ``Conv*d`` or ``nn.Linear`` on each path, which produce the
output's channels. Depthwise convs carry their input channels through, so the
walk records them and continues. Walking through an operation that mixes
channels (a matmul, a reshape that moves channels to space) only protects more
layers than needed, never fewer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["first_output_producer", "flatten_outputs", "output_producers"]


def output_producers(model: nn.Module, example_inputs: Tensor | tuple[Tensor, ...]) -> list[nn.Module]:
    """The conv / linear layers whose output channels are channels of a model output.

    Args:
        model: any module; run once in eval mode (BatchNorm statistics untouched).
        example_inputs: a batch such as ``torch.randn(1, 3, 32, 32)`` (or a tuple of inputs).

    Returns:
        The producing layers, in the order the forward pass called them, without
        repeats: for every output tensor, the last conv / linear on each path to it,
        plus the depthwise convs the walk passed through.

    Raises:
        whatever the model's forward pass raises on ``example_inputs`` (callers wrap it).
    """
    producers, outputs = _traced_forward(model, example_inputs)
    found = _walk_back(outputs, producers)
    order = {id(fn): i for i, fn in enumerate(producers)}
    hits = sorted(found, key=lambda fn: order[id(fn)])
    return list(dict.fromkeys(producers[fn] for fn in hits))


def first_output_producer(
    model: nn.Module, example_inputs: Tensor | tuple[Tensor, ...]
) -> tuple[nn.Module | None, Tensor | None]:
    """The model's first output (the logits) and the last-called conv / linear producing its channels.

    Returns:
        ``(layer or None, first output or None)`` from one traced forward pass.
    """
    producers, outputs = _traced_forward(model, example_inputs)
    if not outputs:
        return None, None
    found = _walk_back(outputs[:1], producers)
    weighted = [fn for fn in found if not _is_depthwise(producers[fn])]
    if not weighted:
        return None, outputs[0]
    order = {id(fn): i for i, fn in enumerate(producers)}
    return producers[max(weighted, key=lambda fn: order[id(fn)])], outputs[0]


def flatten_outputs(outputs: Any) -> list[Tensor]:
    """Every tensor in a model's output: a tensor, or nested tuples / lists / dicts of them."""
    return list(_tensors(outputs))


def _tensors(value: Any) -> Iterator[Tensor]:
    if isinstance(value, Tensor):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _tensors(item)


def _traced_forward(
    model: nn.Module, example_inputs: Tensor | tuple[Tensor, ...]
) -> tuple[dict[Any, nn.Module], list[Tensor]]:
    """One eval-mode forward with autograd on: (grad_fn of each conv / linear output -> layer, output tensors)."""
    producers: dict[Any, nn.Module] = {}

    def remember(module: nn.Module, _inputs: Any, output: Any) -> None:
        if isinstance(output, Tensor) and output.grad_fn is not None:
            producers[output.grad_fn] = module

    return producers, traced_forward(model, example_inputs, remember)


def traced_forward(
    model: nn.Module, example_inputs: Tensor | tuple[Tensor, ...], hook: Callable[[nn.Module, Any, Any], None],
    context: AbstractContextManager[Any] | None = None,
) -> list[Tensor]:
    """One eval-mode forward with autograd on and ``hook(module, inputs, output)`` on every conv / linear layer.

    ``context`` is entered around the forward (e.g. a torch function mode); the model's mode is restored and
    the hooks removed afterwards. Returns the output tensors (:func:`flatten_outputs`).
    """
    layers = [m for m in model.modules() if isinstance(m, nn.modules.conv._ConvNd | nn.Linear)]
    handles = [m.register_forward_hook(hook) for m in layers]
    inputs = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
    # inputs that require grad make autograd record every op, even in a model whose weights are frozen
    traced = tuple(t.detach().requires_grad_(True) if t.is_floating_point() else t for t in inputs)
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad(), context if context is not None else nullcontext():
            return flatten_outputs(model(*traced))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()


def _walk_back(outputs: list[Tensor], producers: dict[Any, nn.Module]) -> set[Any]:
    """The producer grad_fns reached from ``outputs`` without passing through a (non-depthwise) weighted layer."""
    return walk_back_from([t.grad_fn for t in outputs if t.grad_fn is not None], producers)


def walk_back_from(nodes: list[Any], producers: dict[Any, nn.Module]) -> set[Any]:
    """The producer grad_fns reached from the autograd ``nodes`` without passing through a (non-depthwise) layer.

    Args:
        nodes: autograd nodes (``tensor.grad_fn``) to start from.
        producers: grad_fn of each conv / linear output -> its layer.
    """
    found: set[Any] = set()
    seen: set[Any] = set()
    stack = list(nodes)
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        module = producers.get(fn)
        if module is not None:
            found.add(fn)
            if not _is_depthwise(module):
                continue
        stack.extend(next_fn for next_fn, _ in fn.next_functions)
    return found


def is_depthwise(module: nn.Module) -> bool:
    """True for a conv whose groups equal its input and output channels (it carries channels through)."""
    return _is_depthwise(module)


def _is_depthwise(module: nn.Module) -> bool:
    return (
        isinstance(module, nn.modules.conv._ConvNd)
        and module.groups > 1
        and module.groups == module.in_channels == module.out_channels
    )
