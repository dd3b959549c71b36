"""ResNet-18/34/50, ImageNet layout with torchvision's parameter names.

Reference: K. He, X. Zhang, S. Ren, J. Sun, "Deep Residual Learning for Image
Recognition", CVPR 2016 (arXiv:1512.03385), Table 1. Shortcuts are projections
(option B: 1x1 conv + BN) where the shape changes; in the bottleneck the stride
sits on the 3x3 conv ("ResNet v1.5", as in torchvision), which gives 4.1G MACs
for ResNet-50 at 224x224 instead of 3.8G.

The module names (``conv1``, ``bn1``, ``layer1.0.conv1``, ...,
``layerK.0.downsample.0``/``.1``, ``fc``) match torchvision's, so its ImageNet
checkpoints load with ``load_state_dict(..., strict=True)``. Layout (input
``(N, C, 224, 224)``):

* 7x7/2 conv 64, BN, ReLU, 3x3/2 max pool   -> ``(N, 64, 56, 56)``
* ``layer1`` .. ``layer4`` (64/128/256/512 x expansion channels; strides 1, 2, 2, 2)
  -> ``(N, 512 * expansion, 7, 7)``
* global average pool, fully connected       -> ``(N, num_classes)``

At 224x224 with 1000 classes (MACs / params): ResNet-18 1,814,073,344 /
11,689,512; ResNet-34 3,663,761,408 / 21,797,672; ResNet-50 4,089,184,256 /
25,557,032.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from lassoprune.models._init import init_weights
from lassoprune.models._registry import check_head_options, register_model

__all__ = ["BasicBlock", "Bottleneck", "ImageNetResNet"]

STAGE_WIDTHS: tuple[int, int, int, int] = (64, 128, 256, 512)
STEM_CHANNELS = 64


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    """3x3 convolution with padding 1 and no bias."""
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


def conv1x1(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    """1x1 convolution without bias."""
    return nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)


def make_downsample(in_channels: int, out_channels: int, stride: int) -> nn.Sequential | None:
    """Projection shortcut (1x1 conv + BN) when the shape changes, else ``None`` (identity)."""
    if stride == 1 and in_channels == out_channels:
        return None
    return nn.Sequential(conv1x1(in_channels, out_channels, stride), nn.BatchNorm2d(out_channels))


class BasicBlock(nn.Module):
    """Two 3x3 convs (ResNet-18/34). Shapes: ``(N, C_in, H, W) -> (N, width, H/s, W/s)``."""

    expansion = 1

    def __init__(self, in_channels: int, width: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_channels, width, stride)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(width, width)
        self.bn2 = nn.BatchNorm2d(width)
        self.relu2 = nn.ReLU(inplace=True)
        self.downsample = make_downsample(in_channels, width, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided), 1x1 expand x4 (ResNet-50).

    Shapes: ``(N, C_in, H, W) -> (N, 4 * width, H/s, W/s)``.
    """

    expansion = 4

    def __init__(self, in_channels: int, width: int, stride: int = 1) -> None:
        super().__init__()
        out_channels = width * self.expansion
        self.conv1 = conv1x1(in_channels, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(width, width, stride)
        self.bn2 = nn.BatchNorm2d(width)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv3 = conv1x1(width, out_channels)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu3 = nn.ReLU(inplace=True)
        self.downsample = make_downsample(in_channels, out_channels, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.relu2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu3(out + identity)


class ImageNetResNet(nn.Module):
    """ResNet with the ImageNet stem (He et al. 2016, Table 1), torchvision names.

    Args:
        block: :class:`BasicBlock` or :class:`Bottleneck`.
        blocks_per_stage: Blocks in ``layer1`` .. ``layer4`` (e.g. ``(3, 4, 6, 3)``).
        num_classes: Number of logits.
        in_channels: Channels of the input images.

    Shapes: ``(N, in_channels, H, W) -> (N, num_classes)``, ``H, W >= 32``.
    """

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        blocks_per_stage: tuple[int, int, int, int],
        num_classes: int = 1000,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        check_head_options(num_classes, in_channels)
        self.conv1 = nn.Conv2d(in_channels, STEM_CHANNELS, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(STEM_CHANNELS)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        channels = STEM_CHANNELS
        for index, (width, blocks) in enumerate(zip(STAGE_WIDTHS, blocks_per_stage), start=1):
            stage = make_stage(block, channels, width, blocks, 1 if index == 1 else 2)
            self.add_module(f"layer{index}", stage)
            channels = width * block.expansion
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)
        init_weights(self, linear="default")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # (N, 64, H/4, W/4)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))  # (N, 512 * expansion, H/32, W/32)
        return self.fc(torch.flatten(self.avgpool(x), 1))  # (N, num_classes)


def make_stage(
    block: type[BasicBlock] | type[Bottleneck], in_channels: int, width: int, blocks: int, stride: int
) -> nn.Sequential:
    """``blocks`` residual blocks; the first one may change stride and channels."""
    layers: list[nn.Module] = [block(in_channels, width, stride)]
    layers += [block(width * block.expansion, width) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


@register_model("resnet18", family="resnet_imagenet", default_image_size=224)
def resnet18(num_classes: int = 1000, in_channels: int = 3, **kwargs: Any) -> ImageNetResNet:
    """ResNet-18: 1.81G MACs at 224x224, 11.69M params (1000 classes)."""
    return ImageNetResNet(BasicBlock, (2, 2, 2, 2), num_classes, in_channels, **kwargs)


@register_model("resnet34", family="resnet_imagenet", default_image_size=224)
def resnet34(num_classes: int = 1000, in_channels: int = 3, **kwargs: Any) -> ImageNetResNet:
    """ResNet-34: 3.66G MACs at 224x224, 21.80M params (1000 classes)."""
    return ImageNetResNet(BasicBlock, (3, 4, 6, 3), num_classes, in_channels, **kwargs)


@register_model("resnet50", family="resnet_imagenet", default_image_size=224)
def resnet50(num_classes: int = 1000, in_channels: int = 3, **kwargs: Any) -> ImageNetResNet:
    """ResNet-50 (v1.5): 4.09G MACs at 224x224, 25.56M params (1000 classes)."""
    return ImageNetResNet(Bottleneck, (3, 4, 6, 3), num_classes, in_channels, **kwargs)
