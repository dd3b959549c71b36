"""Self-attention blocks: found before any tracing, so that a transformer is refused at once and clearly.

Channel pruning here follows convolutions, normalisation and elementwise
operations. A self-attention block mixes tokens through query / key / value
projections whose heads and head widths couple channels in ways the analysis
does not model (Torch-Pruning needs per-model head settings for them, and its
tracing of some of them runs for minutes). Vision transformers (ViT, DeiT,
Swin) and hybrids (MaxViT, CoAtNet, MobileViT, EfficientFormer, LeViT) are
therefore out of scope: :func:`attention_blocks` lists their attention
modules so that the analysis can refuse them before any work.
"""

from __future__ import annotations

from torch import nn

__all__ = ["attention_blocks"]

#: Names that self-attention modules give their query / key / value projections.
_PROJECTIONS = frozenset({"qkv", "to_qkv", "q", "k", "v", "kv", "in_proj", "query", "key", "value"})


def attention_blocks(model: nn.Module) -> list[tuple[str, str]]:
    """``(qualified name, class name)`` of every self-attention module of ``model`` (outermost only).

    A module counts when it is an ``nn.MultiheadAttention``, or when its class name contains ``Attention``
    and it has a query / key / value projection (a child or parameter named as in :data:`_PROJECTIONS`);
    channel attention such as squeeze-excitation or CBAM's ``ChannelAttention`` has none and is not listed.
    """
    found: list[tuple[str, str]] = []
    for name, module in model.named_modules():
        if any(name.startswith(outer + ".") for outer, _ in found):
            continue
        if _is_self_attention(module):
            found.append((name, type(module).__name__))
    return found


def _is_self_attention(module: nn.Module) -> bool:
    if isinstance(module, nn.MultiheadAttention):
        return True
    if "Attention" not in type(module).__name__:
        return False
    names = {n for n, _ in module.named_children()} | {n for n, _ in module.named_parameters(recurse=False)}
    return bool(names & _PROJECTIONS) or any(n.split("_")[0] in _PROJECTIONS for n in names)
