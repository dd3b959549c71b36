"""VGG-11/13/16/19 with batch normalisation, CIFAR variant.

Reference: K. Simonyan, A. Zisserman, "Very Deep Convolutional Networks for
Large-Scale Image Recognition", ICLR 2015 (arXiv:1409.1556), Table 1,
configurations A (11), B (13), D (16) and E (19); batch normalisation after each
conv (S. Ioffe, C. Szegedy, ICML 2015), as in the CIFAR variants used by the
pruning literature (e.g. Li et al., "Pruning Filters for Efficient ConvNets",
ICLR 2017).

Layout (input ``(N, C, 32, 32)``): stacks of 3x3 conv-BN-ReLU separated by five
2x2 max pools -> ``(N, 512, 1, 1)``; global average pool (a no-op at 32x32);
classifier ``Linear(512, 512)-ReLU-Dropout-Linear(512, 512)-ReLU-Dropout-
Linear(512, num_classes)`` (dropout 0 by default; the Dropout modules are always
present so that ``state_dict`` keys do not depend on the rate).

Five max pools need inputs of at least 32x32: 28x28 (Fashion-MNIST) must be
padded to 32x32 first (``default_image_size`` is 32).

VGG-16 at 32x32: 313,725,952 MACs (313,196,544 conv + 529,408 fc) and
15,249,354 params with 10 classes (convs have no bias since a BN follows).
"""

from __future__ import annotations

from collections.abc import Sequence
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

__all__ = ["CONFIGS", "CifarVGG"]

POOL = "M"
#: Conv widths per configuration; ``"M"`` is a 2x2 max pool (Simonyan & Zisserman, Table 1).
CONFIGS: dict[int, tuple[int | str, ...]] = {
    11: (64, POOL, 128, POOL, 256, 256, POOL, 512, 512, POOL, 512, 512, POOL),
    13: (64, 64, POOL, 128, 128, POOL, 256, 256, POOL, 512, 512, POOL, 512, 512, POOL),
    16: (64, 64, POOL, 128, 128, POOL, 256, 256, 256, POOL, 512, 512, 512, POOL, 512, 512, 512, POOL),
    19: (
        64, 64, POOL, 128, 128, POOL, 256, 256, 256, 256, POOL,
        512, 512, 512, 512, POOL, 512, 512, 512, 512, POOL,
    ),  # fmt: skip
}
HIDDEN = 512


def make_features(config: Sequence[int | str], in_channels: int) -> nn.Sequential:
    """Conv-BN-ReLU stacks and max pools. Shapes: ``(N, C, 32, 32) -> (N, last, 1, 1)``."""
    layers: list[nn.Module] = []
    channels = in_channels
    for item in config:
        if item == POOL:
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            continue
        layers += [nn.Conv2d(channels, int(item), 3, padding=1, bias=False), nn.BatchNorm2d(int(item))]
        layers.append(nn.ReLU(inplace=True))
        channels = int(item)
    return nn.Sequential(*layers)


def make_classifier(in_features: int, num_classes: int, dropout: float) -> nn.Sequential:
    """Three fully connected layers. Shapes: ``(N, in_features) -> (N, num_classes)``."""
    return nn.Sequential(
        nn.Linear(in_features, HIDDEN),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
        nn.Linear(HIDDEN, HIDDEN),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
        nn.Linear(HIDDEN, num_classes),
    )


class CifarVGG(nn.Module):
    """VGG with BN for 32x32 inputs.

    Args:
        depth: 11, 13, 16 or 19 (see :data:`CONFIGS`).
        num_classes: Number of logits.
        in_channels: Channels of the input images.
        dropout: Dropout rate in the classifier, in ``[0, 1)``.

    Shapes: ``(N, in_channels, 32, 32) -> (N, num_classes)``.
    """

    def __init__(self, depth: int, num_classes: int = 10, in_channels: int = 3, dropout: float = 0.0) -> None:
        super().__init__()
        if depth not in CONFIGS:
            raise ModelConfigError(f"VGG depth must be one of {sorted(CONFIGS)}, got {depth!r}")
        check_head_options(num_classes, in_channels)
        check_probability("dropout", dropout)
        config = CONFIGS[depth]
        self.features = make_features(config, in_channels)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = make_classifier(int([c for c in config if c != POOL][-1]), num_classes, dropout)
        init_weights(self, linear="normal")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x))  # (N, 512, 1, 1)
        return self.classifier(torch.flatten(x, 1))  # (N, num_classes)


@register_model("vgg11", family="vgg", default_image_size=32)
def vgg11(num_classes: int = 10, in_channels: int = 3, **kwargs: Any) -> CifarVGG:
    """VGG-11 with BN (configuration A)."""
    return CifarVGG(11, num_classes=num_classes, in_channels=in_channels, **kwargs)


@register_model("vgg13", family="vgg", default_image_size=32)
def vgg13(num_classes: int = 10, in_channels: int = 3, **kwargs: Any) -> CifarVGG:
    """VGG-13 with BN (configuration B)."""
    return CifarVGG(13, num_classes=num_classes, in_channels=in_channels, **kwargs)


@register_model("vgg16", family="vgg", default_image_size=32)
def vgg16(num_classes: int = 10, in_channels: int = 3, **kwargs: Any) -> CifarVGG:
    """VGG-16 with BN (configuration D): 313.7M MACs, 15.25M params at 32x32."""
    return CifarVGG(16, num_classes=num_classes, in_channels=in_channels, **kwargs)


@register_model("vgg19", family="vgg", default_image_size=32)
def vgg19(num_classes: int = 10, in_channels: int = 3, **kwargs: Any) -> CifarVGG:
    """VGG-19 with BN (configuration E)."""
    return CifarVGG(19, num_classes=num_classes, in_channels=in_channels, **kwargs)
