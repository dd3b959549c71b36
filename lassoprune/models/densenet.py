"""DenseNet-40 (k = 12) for 32x32 images.

Reference: G. Huang, Z. Liu, L. van der Maaten, K. Q. Weinberger, "Densely
Connected Convolutional Networks", CVPR 2017 (arXiv:1608.06993), Section 3 and
Table 2 (DenseNet, L = 40, k = 12: 1.0M params).

Basic DenseNet (no bottleneck, compression 1.0), ``(depth - 4) / 3`` layers per
block. Layout (input ``(N, C, 32, 32)``, k = 12, default stem of 2k = 24 channels):

* 3x3 conv, 24 channels                              -> ``(N, 24, 32, 32)``
* dense block 1 (12 x [BN-ReLU-3x3 conv k, concat])  -> ``(N, 168, 32, 32)``
* transition (BN-ReLU-1x1 conv-2x2 avg pool)         -> ``(N, 168, 16, 16)``
* dense block 2, transition                          -> ``(N, 312, 8, 8)``
* dense block 3                                      -> ``(N, 456, 8, 8)``
* BN-ReLU, global average pool, fully connected      -> ``(N, num_classes)``

Stem width: the paper's text says 16 channels for the basic DenseNet, but the
authors' code (github.com/liuzhuang13/DenseNet, ``models/densenet.lua``) and
the CIFAR code used by the pruning literature use ``2 * growth_rate`` = 24; that
is the default here, ``stem_channels=16`` gives the text's variant. At 32x32 with
10 classes: 282,917,328 MACs / 1,059,298 params (default) and 264,812,928 MACs /
1,019,722 params (``stem_channels=16``).

Each dense layer returns ``torch.cat([x, new_features], 1)``, which
torch-pruning traces as a concatenation.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from lassoprune.models._init import init_weights
from lassoprune.models._registry import (
    ModelConfigError,
    check_head_options,
    check_probability,
    register_model,
)

__all__ = ["DenseLayer", "DenseNet", "Transition"]

NUM_BLOCKS = 3


class DenseLayer(nn.Module):
    """BN-ReLU-3x3 conv producing ``growth_rate`` maps, concatenated to the input.

    Shapes: ``(N, C, H, W) -> (N, C + growth_rate, H, W)``.
    """

    def __init__(self, in_channels: int, growth_rate: int, dropout: float) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(in_channels)
        self.relu = nn.ReLU(inplace=True)  # acts on the BN output, never on x itself
        self.conv = nn.Conv2d(in_channels, growth_rate, 3, padding=1, bias=False)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        new_features = self.dropout(self.conv(self.relu(self.bn(x))))
        return torch.cat([x, new_features], dim=1)


class Transition(nn.Module):
    """BN-ReLU-1x1 conv-2x2 average pool (compression 1.0 keeps the width).

    Shapes: ``(N, C, H, W) -> (N, C, H/2, W/2)``.
    """

    def __init__(self, channels: int, dropout: float) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv = nn.Conv2d(channels, channels, 1, bias=False)
        self.dropout = nn.Dropout(dropout)
        self.pool = nn.AvgPool2d(2, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.dropout(self.conv(self.relu(self.bn(x)))))


def make_dense_block(in_channels: int, layers: int, growth_rate: int, dropout: float) -> nn.Sequential:
    """``layers`` dense layers; the output has ``in_channels + layers * growth_rate`` channels."""
    return nn.Sequential(
        *(DenseLayer(in_channels + i * growth_rate, growth_rate, dropout) for i in range(layers))
    )


class DenseNet(nn.Module):
    """Basic DenseNet for CIFAR (Huang et al. 2017, Sec. 3 "Implementation Details").

    Args:
        depth: ``3 * layers_per_block + 4`` (40 for DenseNet-40).
        growth_rate: Channels added by each dense layer (k).
        stem_channels: Output channels of the first conv; ``None`` means ``2 * growth_rate``.
        num_classes: Number of logits.
        in_channels: Channels of the input images.
        dropout: Dropout after each conv (the paper uses 0.2 without augmentation).

    Shapes: ``(N, in_channels, H, W) -> (N, num_classes)``, ``H, W >= 4``.
    """

    def __init__(
        self,
        depth: int = 40,
        growth_rate: int = 12,
        stem_channels: int | None = None,
        num_classes: int = 10,
        in_channels: int = 3,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 7 or (depth - 4) % NUM_BLOCKS:
            raise ModelConfigError(f"DenseNet depth must be 3n + 4 with n >= 1, got {depth!r}")
        if isinstance(growth_rate, bool) or not isinstance(growth_rate, int) or growth_rate < 1:
            raise ModelConfigError(f"growth_rate must be a positive int, got {growth_rate!r}")
        if stem_channels is None:
            stem_channels = 2 * growth_rate
        if isinstance(stem_channels, bool) or not isinstance(stem_channels, int) or stem_channels < 1:
            raise ModelConfigError(f"stem_channels must be a positive int or None, got {stem_channels!r}")
        check_head_options(num_classes, in_channels)
        check_probability("dropout", dropout)
        layers = (depth - 4) // NUM_BLOCKS
        channels = stem_channels
        self.conv1 = nn.Conv2d(in_channels, channels, 3, padding=1, bias=False)
        self.features = nn.Sequential()
        for index in range(1, NUM_BLOCKS + 1):
            block = make_dense_block(channels, layers, growth_rate, dropout)
            self.features.add_module(f"block{index}", block)
            channels += layers * growth_rate
            if index < NUM_BLOCKS:
                self.features.add_module(f"trans{index}", Transition(channels, dropout))
        self.bn = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(self.conv1(x))  # (N, 456, H/4, W/4) for DenseNet-40
        x = self.avgpool(self.relu(self.bn(x)))  # (N, 456, 1, 1)
        return self.fc(torch.flatten(x, 1))  # (N, num_classes)


@register_model("densenet40", family="densenet", default_image_size=32)
def densenet40(num_classes: int = 10, in_channels: int = 3, **kwargs: Any) -> DenseNet:
    """DenseNet-40, k = 12: 1.06M params, 0.283G MACs at 32x32 (24-channel stem)."""
    return DenseNet(depth=40, growth_rate=12, num_classes=num_classes, in_channels=in_channels, **kwargs)
