"""BatchNorm folded into the layer before it, for inference.

In eval mode a BatchNorm after a convolution (or linear layer) is an affine map
per output channel, ``y = s * (z - mu) + beta`` with ``s = gamma / sqrt(var + eps)``,
so it can be absorbed by the layer that produced ``z = W x + b``:

    W' = s * W   (scaled along the output channels),     b' = s * (b - mu) + beta.

The network is traced with ``torch.fx``; a BatchNorm is folded when its only
input is a convolution of its dimension (Conv2d for BatchNorm2d, ...) with as
many output channels, called once, whose output nothing else reads.
Everything else (a BatchNorm after an add, a module that cannot be traced) stays
as it is, and the count of folded layers says what happened.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import fx, nn

__all__ = ["FoldResult", "fold_batchnorm"]

_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
#: A BatchNorm of each kind folds into a convolution of the same dimension. Linear -> BatchNorm1d is left
#: alone: on a 3-D input (N, L, F) BatchNorm1d normalises L, not the linear layer's outputs.
_PAIRS = {nn.BatchNorm1d: nn.Conv1d, nn.BatchNorm2d: nn.Conv2d, nn.BatchNorm3d: nn.Conv3d}


@dataclass(frozen=True)
class FoldResult:
    """The folded copy and what was folded.

    Attributes:
        model: an eval-mode copy (a ``torch.fx.GraphModule`` when tracing worked, else the plain copy).
        folded: names of the BatchNorm modules absorbed by the layer before them.
        kept: names of the BatchNorm modules left in place (no foldable producer).
        traced: False when ``torch.fx`` could not trace the model (nothing folded).
    """

    model: nn.Module
    folded: tuple[str, ...]
    kept: tuple[str, ...]
    traced: bool


def fold_batchnorm(model: nn.Module) -> FoldResult:
    """An eval-mode copy of ``model`` with every foldable BatchNorm absorbed (module docstring).

    ``model`` itself is not changed (not even its train / eval mode).
    """
    work = copy.deepcopy(model).eval()
    try:
        graph_module = fx.symbolic_trace(work)
    except Exception:  # noqa: BLE001 -- any tracing failure means: deploy the unfolded model
        names = tuple(name for name, m in work.named_modules() if isinstance(m, _BATCHNORMS))
        return FoldResult(work, (), names, traced=False)
    modules = dict(graph_module.named_modules())
    calls: dict[str, int] = {}
    for node in graph_module.graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    folded, kept = [], []
    for node in list(graph_module.graph.nodes):
        if node.op != "call_module" or not isinstance(modules[node.target], _BATCHNORMS):
            continue
        producer = node.args[0] if node.args else None
        if not _foldable(producer, modules[node.target], modules, calls) or not _has_statistics(modules[node.target]):
            kept.append(node.target)
            continue
        _absorb(modules[producer.target], modules[node.target])
        node.replace_all_uses_with(producer)
        graph_module.graph.erase_node(node)
        folded.append(node.target)
    graph_module.graph.lint()
    graph_module.recompile()
    graph_module.delete_all_unused_submodules()
    return FoldResult(graph_module.eval(), tuple(folded), tuple(kept), traced=True)


def _foldable(producer: object, bn: nn.Module, modules: dict[str, nn.Module], calls: dict[str, int]) -> bool:
    """A convolution node of ``bn``'s dimension and width, called once, whose output only ``bn`` reads."""
    if not (isinstance(producer, fx.Node) and producer.op == "call_module"):
        return False
    layer = modules[producer.target]
    return (
        type(layer) is _PAIRS.get(type(bn))
        and layer.out_channels == bn.num_features
        and calls.get(producer.target, 0) == 1
        and len(producer.users) == 1
    )


def _has_statistics(bn: nn.Module) -> bool:
    return bn.running_mean is not None and bn.running_var is not None


@torch.no_grad()
def _absorb(layer: nn.Module, bn: nn.Module) -> None:
    """``W <- s W``, ``b <- s (b - mu) + beta`` with ``s = gamma / sqrt(var + eps)`` (per output channel)."""
    scale = torch.rsqrt(bn.running_var.double() + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight.double()
    shift = -bn.running_mean.double() * scale
    if bn.bias is not None:
        shift = shift + bn.bias.double()
    weight = layer.weight
    shape = (-1,) + (1,) * (weight.dim() - 1)
    bias = layer.bias.double() if layer.bias is not None else torch.zeros_like(scale)
    weight.copy_((weight.double() * scale.view(shape)).to(weight.dtype))
    new_bias = (bias * scale + shift).to(weight.dtype)
    if layer.bias is None:
        layer.bias = nn.Parameter(new_bias)
    else:
        layer.bias.copy_(new_bias)
