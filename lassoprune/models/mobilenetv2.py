"""MobileNetV2 (width 1.0), CIFAR variant.

Reference: M. Sandler, A. Howard, M. Zhu, A. Zhmoginov, L.-C. Chen,
"MobileNetV2: Inverted Residuals and Linear Bottlenecks", CVPR 2018
(arXiv:1801.04381), Table 2 (layout) and Fig. 4 (the inverted residual block).

The common CIFAR variant keeps every width of Table 2 but removes two of the five
stride-2 steps, so that a 32x32 input ends at 4x4: the stem conv and the first
bottleneck of the ``c = 24`` stage use stride 1. Residual connections exist only
where the paper has them (stride 1 and equal widths). Layout (input
``(N, C, 32, 32)``):

* stem: 3x3 conv 32, BN, ReLU6                        -> ``(N, 32, 32, 32)``
* bottlenecks (t, c, n, s): (1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2),
  (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1) -> ``(N, 320, 4, 4)``
* 1x1 conv 1280, BN, ReLU6                             -> ``(N, 1280, 4, 4)``
* global average pool, dropout, fully connected        -> ``(N, num_classes)``

At 32x32 with 10 classes: 87,976,448 MACs and 2,236,682 params. (The widely
copied CIFAR code that also adds 1x1-conv shortcuts to blocks that change width
has about 2.30M params and 90.1M MACs; those shortcuts are not in the paper.)
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import nn

from lassoprune.models._init import init_weights
from lassoprune.models._registry import check_head_options, check_probability, register_model

__all__ = ["CIFAR_SETTINGS", "BottleneckSetting", "InvertedResidual", "MobileNetV2"]

STEM_CHANNELS = 32
LAST_CHANNELS = 1280


class BottleneckSetting(NamedTuple):
    """One row of Sandler et al. 2018, Table 2."""

    expansion: int  # t
    channels: int  # c
    repeats: int  # n
    stride: int  # s, of the first block of the stage


#: Table 2 with the stride of the ``c = 24`` stage set to 1 (CIFAR variant).
CIFAR_SETTINGS: tuple[BottleneckSetting, ...] = (
    BottleneckSetting(1, 16, 1, 1),
    BottleneckSetting(6, 24, 2, 1),
    BottleneckSetting(6, 32, 3, 2),
    BottleneckSetting(6, 64, 4, 2),
    BottleneckSetting(6, 96, 3, 1),
    BottleneckSetting(6, 160, 3, 2),
    BottleneckSetting(6, 320, 1, 1),
)


def conv_bn_relu6(
    in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, groups: int = 1
) -> nn.Sequential:
    """Conv (no bias), BN, ReLU6. Shapes: ``(N, C_in, H, W) -> (N, C_out, H/stride, W/stride)``."""
    padding = kernel_size // 2
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, groups=groups, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU6(inplace=True),
    )


class InvertedResidual(nn.Module):
    """Expand (1x1) - depthwise 3x3 - linear project (1x1), with a residual when shapes match.

    The expansion conv is omitted for ``expansion == 1`` (as in the paper's first
    bottleneck). Shapes: ``(N, C_in, H, W) -> (N, C_out, H/stride, W/stride)``.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = in_channels * expansion
        self.use_residual = stride == 1 and in_channels == out_channels
        layers: list[nn.Module] = []
        if expansion != 1:
            layers.append(conv_bn_relu6(in_channels, hidden, 1))
        layers += [
            conv_bn_relu6(hidden, hidden, 3, stride=stride, groups=hidden),
            nn.Conv2d(hidden, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return out + x if self.use_residual else out


def make_bottlenecks(in_channels: int, settings: tuple[BottleneckSetting, ...]) -> tuple[nn.Sequential, int]:
    """All inverted residual blocks; returns them and their output channels."""
    blocks: list[nn.Module] = []
    channels = in_channels
    for setting in settings:
        for index in range(setting.repeats):
            stride = setting.stride if index == 0 else 1
            blocks.append(InvertedResidual(channels, setting.channels, stride, setting.expansion))
            channels = setting.channels
    return nn.Sequential(*blocks), channels


class MobileNetV2(nn.Module):
    """MobileNetV2, width 1.0, for 32x32 inputs (see the module docstring).

    Args:
        num_classes: Number of logits.
        in_channels: Channels of the input images.
        dropout: Dropout rate before the classifier, in ``[0, 1)`` (the paper trains
            ImageNet with 0.2; 0 by default here).

    Shapes: ``(N, in_channels, H, W) -> (N, num_classes)``.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 3, dropout: float = 0.0) -> None:
        super().__init__()
        check_head_options(num_classes, in_channels)
        check_probability("dropout", dropout)
        self.stem = conv_bn_relu6(in_channels, STEM_CHANNELS, 3)
        self.blocks, channels = make_bottlenecks(STEM_CHANNELS, CIFAR_SETTINGS)
        self.head = conv_bn_relu6(channels, LAST_CHANNELS, 1)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(LAST_CHANNELS, num_classes)
        init_weights(self, linear="normal")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.blocks(self.stem(x)))  # (N, 1280, H/8, W/8)
        return self.fc(self.dropout(torch.flatten(self.avgpool(x), 1)))  # (N, num_classes)


@register_model("mobilenetv2", family="mobilenetv2", default_image_size=32)
def mobilenetv2(num_classes: int = 10, in_channels: int = 3, **kwargs: Any) -> MobileNetV2:
    """MobileNetV2 1.0, CIFAR variant: 2.24M params, 88.0M MACs at 32x32."""
    return MobileNetV2(num_classes=num_classes, in_channels=in_channels, **kwargs)
