"""ResNet-20/32/44/56/110 for 32x32 images.

Reference: K. He, X. Zhang, S. Ren, J. Sun, "Deep Residual Learning for Image
Recognition", CVPR 2016 (arXiv:1512.03385), Section 4.2 "CIFAR-10 and Analysis".

Layout for depth ``6n + 2`` (input ``(N, C, 32, 32)``):

* 3x3 conv, 16 channels, BN, ReLU                    -> ``(N, 16, 32, 32)``
* ``layer1``: n BasicBlocks, 16 channels, stride 1    -> ``(N, 16, 32, 32)``
* ``layer2``: n BasicBlocks, 32 channels, first stride 2 -> ``(N, 32, 16, 16)``
* ``layer3``: n BasicBlocks, 64 channels, first stride 2 -> ``(N, 64, 8, 8)``
* global average pool, fully connected               -> ``(N, num_classes)``

Shortcuts where the shape changes (first block of ``layer2``/``layer3``):

* ``"conv"`` (default, the paper's option B): 1x1 conv with stride 2 + BN.
* ``"pad"`` (the paper's option A, used for its CIFAR table): take every second
  pixel and append zero channels; parameter free.

MACs at 32x32 (counted as in the paper: conv and fc only): ResNet-56 has
125,485,696 with option A and 125,747,840 with option B (the two 1x1 shortcut
convs add 2 x 131,072); ResNet-20 has 40,551,040 (option A) / 40,813,184 (B).
Global average pooling makes any input of at least 8x8 work (28x28 included).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lassoprune.models._init import init_weights
from lassoprune.models._registry import ModelConfigError, check_choice, check_head_options, register_model

__all__ = ["SHORTCUTS", "BasicBlock", "CifarResNet", "PadShortcut"]

SHORTCUTS: tuple[str, ...] = ("conv", "pad")
STAGE_CHANNELS: tuple[int, int, int] = (16, 32, 64)


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    """3x3 convolution with padding 1 and no bias (a BN follows)."""
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


class PadShortcut(nn.Module):
    """Option A shortcut: spatial subsampling by 2 and zero channels appended at the end.

    Shapes: ``(N, C_in, H, W) -> (N, C_out, ceil(H/2), ceil(W/2))``.

    torch-pruning traces this module but cannot prune through it (it does not
    know that the padded channels carry no input channel); prune models built
    with ``shortcut="conv"``.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.extra_channels = out_channels - in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, 0, self.extra_channels))


def make_shortcut(in_channels: int, out_channels: int, stride: int, kind: str) -> nn.Module:
    """Identity when the shape is kept, otherwise option B (``"conv"``) or option A (``"pad"``)."""
    if stride == 1 and in_channels == out_channels:
        return nn.Identity()
    if kind == "pad":
        return PadShortcut(in_channels, out_channels)
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
        nn.BatchNorm2d(out_channels),
    )


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual connection (He et al. 2016, Fig. 2).

    Shapes: ``(N, C_in, H, W) -> (N, C_out, H/stride, W/stride)``.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, shortcut: str) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_channels, out_channels, stride)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(out_channels, out_channels)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = make_shortcut(in_channels, out_channels, stride, shortcut)
        self.relu2 = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """CIFAR ResNet of depth ``6n + 2`` (He et al. 2016, Sec. 4.2).

    Args:
        depth: Total number of weighted layers, ``6n + 2`` (20, 32, 44, 56, 110, ...).
        num_classes: Number of logits.
        in_channels: Channels of the input images.
        shortcut: ``"conv"`` (option B) or ``"pad"`` (option A), see the module docstring.

    Shapes: ``(N, in_channels, H, W) -> (N, num_classes)``, ``H, W >= 8``.
    """

    def __init__(
        self, depth: int, num_classes: int = 10, in_channels: int = 3, shortcut: str = "conv"
    ) -> None:
        super().__init__()
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
            raise ModelConfigError(f"CIFAR ResNet depth must be 6n + 2 with n >= 1, got {depth!r}")
        check_head_options(num_classes, in_channels)
        check_choice("shortcut", shortcut, SHORTCUTS)
        blocks = (depth - 2) // 6
        self.conv1 = conv3x3(in_channels, STAGE_CHANNELS[0])
        self.bn1 = nn.BatchNorm2d(STAGE_CHANNELS[0])
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = make_stage(STAGE_CHANNELS[0], STAGE_CHANNELS[0], blocks, 1, shortcut)
        self.layer2 = make_stage(STAGE_CHANNELS[0], STAGE_CHANNELS[1], blocks, 2, shortcut)
        self.layer3 = make_stage(STAGE_CHANNELS[1], STAGE_CHANNELS[2], blocks, 2, shortcut)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(STAGE_CHANNELS[2], num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))  # (N, 16, H, W)
        x = self.layer3(self.layer2(self.layer1(x)))  # (N, 64, H/4, W/4)
        return self.fc(torch.flatten(self.avgpool(x), 1))  # (N, num_classes)


def make_stage(in_channels: int, out_channels: int, blocks: int, stride: int, shortcut: str) -> nn.Sequential:
    """``blocks`` BasicBlocks; only the first one changes stride and channels."""
    layers = [BasicBlock(in_channels, out_channels, stride, shortcut)]
    layers += [BasicBlock(out_channels, out_channels, 1, shortcut) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


@register_model("resnet20", family="resnet_cifar", default_image_size=32)
def resnet20(num_classes: int = 10, in_channels: int = 3, **kwargs: Any) -> CifarResNet:
    """ResNet-20 (n = 3): 0.27M params, 40.8M MACs at 32x32 (conv shortcuts)."""
    return CifarResNet(20, num_classes=num_classes, in_channels=in_channels, **kwargs)


@register_model("resnet32", family="resnet_cifar", default_image_size=32)
def resnet32(num_classes: int = 10, in_channels: int = 3, **kwargs: Any) -> CifarResNet:
    """ResNet-32 (n = 5): 0.47M params, 69.1M MACs at 32x32 (conv shortcuts)."""
    return CifarResNet(32, num_classes=num_classes, in_channels=in_channels, **kwargs)


@register_model("resnet44", family="resnet_cifar", default_image_size=32)
def resnet44(num_classes: int = 10, in_channels: int = 3, **kwargs: Any) -> CifarResNet:
    """ResNet-44 (n = 7): 0.66M params, 97.4M MACs at 32x32 (conv shortcuts)."""
    return CifarResNet(44, num_classes=num_classes, in_channels=in_channels, **kwargs)


@register_model("resnet56", family="resnet_cifar", default_image_size=32)
def resnet56(num_classes: int = 10, in_channels: int = 3, **kwargs: Any) -> CifarResNet:
    """ResNet-56 (n = 9): 0.86M params, 125.7M MACs at 32x32 (conv shortcuts)."""
    return CifarResNet(56, num_classes=num_classes, in_channels=in_channels, **kwargs)


@register_model("resnet110", family="resnet_cifar", default_image_size=32)
def resnet110(num_classes: int = 10, in_channels: int = 3, **kwargs: Any) -> CifarResNet:
    """ResNet-110 (n = 18): 1.73M params, 253.1M MACs at 32x32 (conv shortcuts)."""
    return CifarResNet(110, num_classes=num_classes, in_channels=in_channels, **kwargs)
