"""Tiny models, one architecture pattern of torchvision / timm CNNs each (16x16 inputs, 10 classes)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tests.pruning.pruning_helpers import randomise_batchnorm

CLASSES = 10


def conv_bn(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
    """Conv (no bias), BatchNorm, ReLU: (N, cin, H, W) -> (N, cout, H / stride, W / stride)."""
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU())


class Grouped(nn.Module):
    """ResNeXt bottleneck: 1x1, grouped 3x3 (``groups`` divides the width), 1x1, residual; linear head."""

    def __init__(self, groups: int = 4) -> None:
        super().__init__()
        self.stem = conv_bn(3, 32)
        self.reduce = conv_bn(32, 16, 1)
        self.grouped = conv_bn(16, 16, 3, groups=groups)
        self.expand = nn.Sequential(nn.Conv2d(16, 32, 1, bias=False), nn.BatchNorm2d(32))
        self.tail = conv_bn(32, 32)
        self.head = nn.Linear(32, CLASSES)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        x = F.relu(x + self.expand(self.grouped(self.reduce(x))))
        return self.head(self.tail(x).mean((2, 3)))


class ShuffleUnit(nn.Module):
    """ShuffleNetV2 unit: ``chunk`` in halves, a branch on one, ``cat``, channel shuffle by ``view``."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = conv_bn(3, 16)
        self.branch = nn.Sequential(conv_bn(8, 8, 1), conv_bn(8, 8, 3, groups=8), conv_bn(8, 8, 1))
        self.tail = conv_bn(16, 32)
        self.head = nn.Linear(32, CLASSES)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        kept, branch = x.chunk(2, dim=1)
        x = torch.cat([kept, self.branch(branch)], 1)
        n, c, h, w = x.shape
        x = x.view(n, 2, c // 2, h, w).transpose(1, 2).reshape(n, c, h, w)
        return self.head(self.tail(x).mean((2, 3)))


def channel_shuffle(x: Tensor, groups: int = 2) -> Tensor:
    """torchvision's ShuffleNetV2 shuffle: view to (N, groups, C / groups, H, W), transpose, view back."""
    n, c, h, w = x.shape
    x = torch.transpose(x.view(n, groups, c // groups, h, w), 1, 2).contiguous()
    return x.view(n, -1, h, w)


class ShuffleDown(nn.Module):
    """ShuffleNetV2's stride-2 unit: two branches on the whole input, ``cat``, shuffle."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        half = cout // 2
        self.branch1 = nn.Sequential(nn.Conv2d(cin, cin, 3, 2, 1, groups=cin, bias=False), nn.BatchNorm2d(cin),
                                     conv_bn(cin, half, 1))
        self.branch2 = nn.Sequential(conv_bn(cin, half, 1), nn.Conv2d(half, half, 3, 2, 1, groups=half, bias=False),
                                     nn.BatchNorm2d(half), conv_bn(half, half, 1))

    def forward(self, x: Tensor) -> Tensor:
        return channel_shuffle(torch.cat((self.branch1(x), self.branch2(x)), 1))


class ShuffleBasic(nn.Module):
    """ShuffleNetV2's stride-1 unit: ``chunk``, a branch on the second half, ``cat``, shuffle."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        half = channels // 2
        self.branch2 = nn.Sequential(conv_bn(half, half, 1), nn.Conv2d(half, half, 3, 1, 1, groups=half, bias=False),
                                     nn.BatchNorm2d(half), conv_bn(half, half, 1))

    def forward(self, x: Tensor) -> Tensor:
        kept, branch = x.chunk(2, dim=1)
        return channel_shuffle(torch.cat((kept, self.branch2(branch)), 1))


class ShuffleStage(nn.Module):
    """A ShuffleNetV2 stage as torchvision writes it (Torch-Pruning 1.6's index mapping divides by zero on it)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = conv_bn(3, 16)
        self.stage = nn.Sequential(ShuffleDown(16, 32), ShuffleBasic(32), ShuffleBasic(32))
        self.tail = conv_bn(32, 64, 1)
        self.head = nn.Linear(64, CLASSES)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.tail(self.stage(self.stem(x))).mean((2, 3)))


class GainConv2d(nn.Conv2d):
    """A conv subclass with its own per-output parameter (timm's ``ScaledStdConv2d`` ``gain`` without the
    weight standardisation, so that removing channels still equals masking them)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.gain = nn.Parameter(torch.linspace(0.5, 1.5, self.out_channels).reshape(-1, 1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(x, self.weight * self.gain, self.bias)


class GainConvs(nn.Module):
    """NF-ResNet-like convs with a per-output gain parameter (a depthwise one too), BatchNorm-free."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(GainConv2d(3, 16, 3, padding=1), nn.ReLU(), GainConv2d(16, 32, 3, padding=1),
                                  nn.ReLU(), GainConv2d(32, 32, 3, padding=1, groups=32), nn.ReLU(),
                                  GainConv2d(32, 32, 1), nn.ReLU())
        self.head = nn.Linear(32, CLASSES)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x).mean((2, 3)))


class GhostModule(nn.Module):
    """GhostNet: a primary conv, a cheap depthwise conv on its output, ``cat``, then ``[:, :k]``."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = conv_bn(3, 16)
        self.primary = conv_bn(16, 12, 1)
        self.cheap = conv_bn(12, 12, 3, groups=12)
        self.tail = conv_bn(20, 32)
        self.head = nn.Linear(32, CLASSES)

    def forward(self, x: Tensor) -> Tensor:
        primary = self.primary(self.stem(x))
        x = torch.cat([primary, self.cheap(primary)], 1)[:, :20]
        return self.head(self.tail(x).mean((2, 3)))


class GhostEven(nn.Module):
    """timm's GhostNet module at an even width: ``cat`` of a conv and a depthwise conv of it, no effective slice
    (Torch-Pruning maps the conv onto the second half of the concatenation only)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = conv_bn(3, 16)
        self.primary = conv_bn(16, 12, 1)
        self.cheap = conv_bn(12, 12, 3, groups=12)
        self.tail = conv_bn(24, 32)
        self.head = nn.Linear(32, CLASSES)

    def forward(self, x: Tensor) -> Tensor:
        primary = self.primary(self.stem(x))
        x = torch.cat([primary, self.cheap(primary)], 1)[:, :24]
        return self.head(self.tail(x).mean((2, 3)))


class MixConv(nn.Module):
    """MixNet: ``torch.split`` with fixed sizes, a depthwise kernel size per part, ``cat``."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = conv_bn(3, 24)
        self.k3 = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.k5 = nn.Conv2d(16, 16, 5, padding=2, groups=16)
        self.tail = nn.Sequential(conv_bn(24, 32), conv_bn(32, 32))
        self.head = nn.Linear(32, CLASSES)

    def forward(self, x: Tensor) -> Tensor:
        small, large = torch.split(self.stem(x), [8, 16], dim=1)
        x = torch.cat([self.k3(small), self.k5(large)], 1)
        return self.head(self.tail(x).mean((2, 3)))


class CrossStage(nn.Module):
    """CSPNet stage: a conv, its output sliced in halves, blocks with a residual on one half, ``cat``."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = conv_bn(3, 16)
        self.expand = conv_bn(16, 32, 1)
        self.block = nn.Sequential(conv_bn(16, 16, 1), conv_bn(16, 16, 3))
        self.transition = conv_bn(32, 32, 1)
        self.head = nn.Linear(32, CLASSES)

    def forward(self, x: Tensor) -> Tensor:
        x = self.expand(self.stem(x))
        part, rest = x[:, :16], x[:, 16:]
        rest = rest + self.block(rest)
        return self.head(self.transition(torch.cat([part, rest], 1)).mean((2, 3)))


class PartialResidual(nn.Module):
    """ReXNet: a block widening 16 -> 24 channels whose first 16 channels take the shortcut."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = conv_bn(3, 16)
        self.block = nn.Sequential(conv_bn(16, 32, 1), nn.Conv2d(32, 24, 1, bias=False), nn.BatchNorm2d(24))
        self.tail = conv_bn(24, 32)
        self.head = nn.Linear(32, CLASSES)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        out = self.block(x)
        out = torch.cat([out[:, :16] + x, out[:, 16:]], 1)
        return self.head(self.tail(out).mean((2, 3)))


class ConvClassifier(nn.Module):
    """SqueezeNet: fire module (squeeze, two expands concatenated), dropout, 1x1 conv classifier, ReLU, pool."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2), nn.ReLU(inplace=True))
        self.squeeze = nn.Sequential(nn.Conv2d(16, 8, 1), nn.ReLU(inplace=True))
        self.expand1 = nn.Sequential(nn.Conv2d(8, 16, 1), nn.ReLU(inplace=True))
        self.expand3 = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(inplace=True))
        self.classifier = nn.Sequential(nn.Dropout(0.5), nn.Conv2d(32, CLASSES, 1), nn.ReLU(inplace=True),
                                        nn.AdaptiveAvgPool2d((1, 1)))

    def forward(self, x: Tensor) -> Tensor:
        x = self.squeeze(self.stem(x))
        x = torch.cat([self.expand1(x), self.expand3(x)], 1)
        return torch.flatten(self.classifier(x), 1)


class LayerScale(nn.Module):
    """ConvNeXt block: depthwise 7x7, channels-last LayerNorm and MLP, a learnable ``gamma`` (C,), residual."""

    def __init__(self, dim: int = 16) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, dim, 2, 2)
        self.depthwise = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, 4 * dim)
        self.fc2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.rand(dim) + 0.5)
        self.head = nn.Linear(dim, CLASSES)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        y = self.depthwise(x).permute(0, 2, 3, 1)  # (N, H, W, C)
        y = self.fc2(F.gelu(self.fc1(self.norm(y))))
        x = x + (self.gamma * y).permute(0, 3, 1, 2)
        return self.head(x.mean((2, 3)))


class SqueezeExcite(nn.Module):
    """MobileNetV3 / EfficientNet block: expand, depthwise, squeeze-excitation gate, project, residual."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = conv_bn(3, 16)
        self.expand = conv_bn(16, 32, 1)
        self.depthwise = conv_bn(32, 32, 3, groups=32)
        self.se_reduce = nn.Conv2d(32, 8, 1)
        self.se_expand = nn.Conv2d(8, 32, 1)
        self.project = nn.Sequential(nn.Conv2d(32, 16, 1, bias=False), nn.BatchNorm2d(16))
        self.tail = conv_bn(16, 32, 1)
        self.head = nn.Linear(32, CLASSES)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        y = self.depthwise(self.expand(x))
        gate = torch.sigmoid(self.se_expand(F.relu(self.se_reduce(y.mean((2, 3), keepdim=True)))))
        x = x + self.project(y * gate)
        return self.head(self.tail(x).mean((2, 3)))


class Depthwise(nn.Module):
    """MobileNetV1: depthwise-separable convs."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(conv_bn(3, 16, 3, 2), conv_bn(16, 16, 3, groups=16), conv_bn(16, 32, 1),
                                  conv_bn(32, 32, 3, 2, groups=32), conv_bn(32, 64, 1))
        self.head = nn.Linear(64, CLASSES)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x).mean((2, 3)))


PATTERNS: dict[str, type[nn.Module]] = {
    "grouped": Grouped, "shuffle": ShuffleUnit, "shuffle_stage": ShuffleStage, "ghost": GhostModule, "ghost_even": GhostEven,
    "mixconv": MixConv, "gain_conv": GainConvs,
    "cross_stage": CrossStage, "partial_residual": PartialResidual, "conv_classifier": ConvClassifier,
    "layer_scale": LayerScale, "squeeze_excite": SqueezeExcite, "depthwise": Depthwise,
}
#: Patterns whose channel-normalising layers (LayerNorm over channels) make the pruned model differ from
#: the masked one by design: removing a channel changes the statistics the others are normalised with.
NOT_MASKABLE = frozenset({"layer_scale"})


def build(name: str) -> nn.Module:
    """The pattern model ``name``, seeded, with random BatchNorm statistics, in eval mode."""
    torch.manual_seed(0)
    return randomise_batchnorm(PATTERNS[name]())
