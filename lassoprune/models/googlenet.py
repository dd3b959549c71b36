"""GoogLeNet (Inception-v1), the common CIFAR adaptation.

Reference: C. Szegedy et al., "Going Deeper with Convolutions", CVPR 2015
(arXiv:1409.4842), Table 1 (widths of inception modules 3a-5b).

The CIFAR adaptation used throughout the pruning literature (e.g. HRank,
Lin et al. CVPR 2020) replaces the ImageNet stem (7x7/2 conv, pools, 3x3 convs)
by a single 3x3 conv with 192 channels at full resolution, drops the auxiliary
classifiers, adds BN after every conv and builds the 5x5 branch from two stacked
3x3 convs. Layout (input ``(N, C, 32, 32)``):

* stem: 3x3 conv 192, BN, ReLU                 -> ``(N, 192, 32, 32)``
* inception 3a, 3b                             -> ``(N, 480, 32, 32)``
* 3x3/2 max pool, inception 4a-4e              -> ``(N, 832, 16, 16)``
* 3x3/2 max pool, inception 5a, 5b             -> ``(N, 1024, 8, 8)``
* global average pool, fully connected         -> ``(N, num_classes)``

At 32x32 with 10 classes: 1,521,756,160 MACs and 6,158,346 params (convs have
no bias since a BN follows; with conv biases it would be 6,166,250).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import nn

from lassoprune.models._init import init_weights
from lassoprune.models._registry import check_head_options, check_probability, register_model

__all__ = ["INCEPTION_WIDTHS", "CifarGoogLeNet", "Inception", "InceptionWidths"]

STEM_CHANNELS = 192


class InceptionWidths(NamedTuple):
    """Widths of one inception module (Szegedy et al. 2015, Table 1 columns)."""

    b1x1: int  # "#1x1"
    b3x3_reduce: int  # "#3x3 reduce"
    b3x3: int  # "#3x3"
    b5x5_reduce: int  # "#5x5 reduce"
    b5x5: int  # "#5x5"
    pool_proj: int  # "pool proj"

    @property
    def out_channels(self) -> int:
        """Channels of the concatenated output."""
        return self.b1x1 + self.b3x3 + self.b5x5 + self.pool_proj


#: Inception modules in order; ``"pool"`` marks a 3x3/2 max pool.
INCEPTION_WIDTHS: tuple[tuple[str, InceptionWidths | None], ...] = (
    ("a3", InceptionWidths(64, 96, 128, 16, 32, 32)),
    ("b3", InceptionWidths(128, 128, 192, 32, 96, 64)),
    ("pool3", None),
    ("a4", InceptionWidths(192, 96, 208, 16, 48, 64)),
    ("b4", InceptionWidths(160, 112, 224, 24, 64, 64)),
    ("c4", InceptionWidths(128, 128, 256, 24, 64, 64)),
    ("d4", InceptionWidths(112, 144, 288, 32, 64, 64)),
    ("e4", InceptionWidths(256, 160, 320, 32, 128, 128)),
    ("pool4", None),
    ("a5", InceptionWidths(256, 160, 320, 32, 128, 128)),
    ("b5", InceptionWidths(384, 192, 384, 48, 128, 128)),
)


def conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int) -> nn.Sequential:
    """Conv (same padding, no bias), BN, ReLU. Shapes: ``(N, C_in, H, W) -> (N, C_out, H, W)``."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class Inception(nn.Module):
    """Inception module with four parallel branches, concatenated on channels.

    Shapes: ``(N, C_in, H, W) -> (N, widths.out_channels, H, W)``.
    """

    def __init__(self, in_channels: int, widths: InceptionWidths) -> None:
        super().__init__()
        self.branch1x1 = conv_bn_relu(in_channels, widths.b1x1, 1)
        self.branch3x3 = nn.Sequential(
            conv_bn_relu(in_channels, widths.b3x3_reduce, 1),
            conv_bn_relu(widths.b3x3_reduce, widths.b3x3, 3),
        )
        self.branch5x5 = nn.Sequential(  # the 5x5 conv as two stacked 3x3 convs
            conv_bn_relu(in_channels, widths.b5x5_reduce, 1),
            conv_bn_relu(widths.b5x5_reduce, widths.b5x5, 3),
            conv_bn_relu(widths.b5x5, widths.b5x5, 3),
        )
        self.branch_pool = nn.Sequential(
            nn.MaxPool2d(3, stride=1, padding=1),
            conv_bn_relu(in_channels, widths.pool_proj, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = (self.branch1x1(x), self.branch3x3(x), self.branch5x5(x), self.branch_pool(x))
        return torch.cat(branches, dim=1)


def make_body(in_channels: int) -> tuple[nn.Sequential, int]:
    """Inception modules 3a-5b with the two max pools; returns the body and its out channels."""
    body = nn.Sequential()
    channels = in_channels
    for name, widths in INCEPTION_WIDTHS:
        if widths is None:
            body.add_module(name, nn.MaxPool2d(3, stride=2, padding=1))
            continue
        body.add_module(name, Inception(channels, widths))
        channels = widths.out_channels
    return body, channels


class CifarGoogLeNet(nn.Module):
    """GoogLeNet for 32x32 inputs (see the module docstring).

    Args:
        num_classes: Number of logits.
        in_channels: Channels of the input images.
        dropout: Dropout rate before the classifier, in ``[0, 1)``.

    Shapes: ``(N, in_channels, H, W) -> (N, num_classes)``.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 3, dropout: float = 0.0) -> None:
        super().__init__()
        check_head_options(num_classes, in_channels)
        check_probability("dropout", dropout)
        self.stem = conv_bn_relu(in_channels, STEM_CHANNELS, 3)
        self.inception, channels = make_body(STEM_CHANNELS)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(channels, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.inception(self.stem(x))  # (N, 1024, H/4, W/4)
        return self.fc(self.dropout(torch.flatten(self.avgpool(x), 1)))  # (N, num_classes)


@register_model("googlenet", family="googlenet", default_image_size=32)
def googlenet(num_classes: int = 10, in_channels: int = 3, **kwargs: Any) -> CifarGoogLeNet:
    """GoogLeNet, CIFAR adaptation: 1.52G MACs, 6.16M params at 32x32."""
    return CifarGoogLeNet(num_classes=num_classes, in_channels=in_channels, **kwargs)
