"""``taylor``: first-order Taylor importance of each channel on calibration data (Molchanov et al., CVPR 2019)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lassoprune.channels import ChannelGroup, LayerKind, flatten_outputs, layer_kind
from lassoprune.pruning.criteria import ScoreContext, register_criterion, require_batches


@register_criterion("taylor", needs_data=True, summary="first-order Taylor importance on data (Molchanov et al. 2019)")
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
        if layer_kind(module) is not LayerKind.OTHER and _has_affine_weight(module)
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
    """``dL/dw`` for each of ``params``, ``L`` the mean cross-entropy of one batch.

    The logits are the model's first output; a map ``(N, K, H, W)`` read with one
    label per image ``(N,)`` is averaged over its positions first (the global
    pooling of a fully convolutional classifier), while per-pixel labels
    ``(N, H, W)`` are used as they are.
    """
    with torch.enable_grad():
        logits = flatten_outputs(ctx.model(x.to(ctx.device)))[0]
        target = y.to(ctx.device)
        if logits.dim() > 2 and target.dim() == 1:
            logits = logits.flatten(2).mean(2)
        loss = F.cross_entropy(logits, target)
        return torch.autograd.grad(loss, params, allow_unused=True)


def _has_affine_weight(module: nn.Module) -> bool:
    return isinstance(getattr(module, "weight", None), Tensor)


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
