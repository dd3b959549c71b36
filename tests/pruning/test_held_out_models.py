"""Models written elsewhere: the network's outputs are never pruned, and what cannot be cut fails clearly.

The protection must follow what feeds the outputs, not a layer type: a
SqueezeNet-style conv classifier (1x1 conv to the classes, then global
pooling), a fully convolutional net whose output is a map, a linear head after
flattening, and a net with two outputs all keep every output channel, for every
registered method. A net that slices channels (``x[:, :k]`` then a
concatenation, as dual-path blocks do) either prunes to a model equivalent to
its masked original or stops with a :class:`LassopruneError` naming a layer.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import lassoprune as lp
from lassoprune.errors import LassopruneError
from lassoprune.pruning import METHODS, analyse_groups, mask_channels
from tests.pruning.pruning_helpers import randomise_batchnorm

NUM_CLASSES = 10
SIDE = 16


def _conv_bn(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class ConvClassifierNet(nn.Module):
    """SqueezeNet-style head: the classes come out of a 1x1 conv, then ReLU and global pooling."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(_conv_bn(3, 16), _conv_bn(16, 32, 2), _conv_bn(32, 32))
        self.classifier = nn.Sequential(nn.Dropout(0.0), nn.Conv2d(32, NUM_CLASSES, 1), nn.ReLU(),
                                        nn.AdaptiveAvgPool2d(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.classifier(self.features(x)), 1)


class FullyConvNet(nn.Module):
    """Dense prediction: the output is a (N, classes, H, W) map (a BN after the last conv, then upsampling)."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(_conv_bn(3, 16), _conv_bn(16, 32, 2))
        self.head = nn.Sequential(nn.Conv2d(32, NUM_CLASSES, 1, bias=False), nn.BatchNorm2d(NUM_CLASSES))
        self.up = nn.Upsample(scale_factor=2, mode="nearest")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.head(self.encoder(x)))


class FlattenHeadNet(nn.Module):
    """No pooling: a linear classifier reads the flattened last feature map, and its logits pass a scale."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(_conv_bn(3, 32), _conv_bn(32, 64, 2), _conv_bn(64, 32, 2))
        self.fc = nn.Linear(32 * (SIDE // 4) ** 2, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2.0 * self.fc(torch.flatten(self.features(x), 1))


class TwoOutputNet(nn.Module):
    """Two outputs: class logits from a linear head and an auxiliary conv map (deep supervision)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = _conv_bn(3, 16)
        self.body = _conv_bn(16, 32, 2)
        self.aux = nn.Conv2d(16, 4, 1)
        self.fc = nn.Linear(32, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        stem = self.stem(x)
        pooled = torch.flatten(nn.functional.adaptive_avg_pool2d(self.body(stem), 1), 1)
        return self.fc(pooled), self.aux(stem)


class DualPathNet(nn.Module):
    """Dual-path blocks: the first ``k`` channels of a conv's output are added to a residual path, the
    rest are concatenated to a dense path (Chen et al., "Dual path networks", NeurIPS 2017)."""

    def __init__(self, width: int = 16, dense: int = 8) -> None:
        super().__init__()
        self.width = width
        self.stem = _conv_bn(3, width + dense)
        self.block = _conv_bn(width + dense, width + dense)
        self.fc = nn.Linear(width + 2 * dense, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        stem = self.stem(x)
        out = self.block(stem)
        k = self.width
        merged = torch.cat([stem[:, :k] + out[:, :k], stem[:, k:], out[:, k:]], dim=1)
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(merged, 1), 1))


def _build(cls: type[nn.Module]) -> nn.Module:
    torch.manual_seed(0)
    return randomise_batchnorm(cls())


def _calibration() -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(2)
    labels = torch.arange(20) % NUM_CLASSES
    images = torch.randn(20, 3, SIDE, SIDE, generator=gen) + 0.3 * labels.view(-1, 1, 1, 1) / NUM_CLASSES
    return [(images, labels)]


def _prune(model: nn.Module, method: str, **kwargs: object) -> lp.PruneResult:
    data = _calibration() if METHODS.get(method).needs_data else None
    return lp.prune(model, torch.zeros(1, 3, SIDE, SIDE), method=method, target_macs=0.6, data=data, seed=0,
                    **kwargs)


def _outputs(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    with torch.no_grad():
        out = model.eval()(x)
    return out if isinstance(out, tuple) else (out,)


OUTPUT_NETS = (ConvClassifierNet, FullyConvNet, FlattenHeadNet, TwoOutputNet)


@pytest.mark.parametrize("method", sorted(METHODS.names()))
@pytest.mark.parametrize("cls", OUTPUT_NETS, ids=lambda c: c.__name__)
def test_outputs_keep_their_shape_for_every_method(cls: type[nn.Module], method: str) -> None:
    model = _build(cls)
    x = torch.randn(2, 3, SIDE, SIDE, generator=torch.Generator().manual_seed(3))
    result = _prune(model, method)
    assert result.macs_after < result.macs_before  # something was cut
    before, after = _outputs(model, x), _outputs(result.model, x)
    assert [tuple(t.shape) for t in after] == [tuple(t.shape) for t in before]


@pytest.mark.parametrize("cls", OUTPUT_NETS, ids=lambda c: c.__name__)
def test_no_group_holds_an_output_channel(cls: type[nn.Module]) -> None:
    """The layers whose channels are the outputs' channels belong to no prunable group."""
    model = _build(cls)
    heads = {"ConvClassifierNet": {"classifier.1"}, "FullyConvNet": {"head.0", "head.1"},
             "FlattenHeadNet": {"fc"}, "TwoOutputNet": {"fc", "aux"}}[cls.__name__]
    analysis = analyse_groups(model, torch.zeros(1, 3, SIDE, SIDE))
    producing = {s.module for g in analysis.groups for s in g.producers + g.norms}
    assert not heads & producing
    assert analysis.groups  # the bodies stay prunable


@pytest.mark.parametrize("method", ["l1", "sglp-ib"])
def test_pruned_conv_classifier_equals_its_masked_original(method: str) -> None:
    model = _build(ConvClassifierNet)
    result = _prune(model, method, reconstruct=False, recalibrate=False)  # the cut alone, as masking does it
    masked = copy.deepcopy(model)
    mask_channels(masked, result.groups, result.keep)
    x = torch.randn(3, 3, SIDE, SIDE, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(_outputs(result.model, x)[0], _outputs(masked, x)[0], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("method", ["l1", "random", "sglp-ib", "hsic-ib", "dwgl-vote", "taylor"])
def test_channel_slicing_net_prunes_correctly_or_fails_clearly(method: str) -> None:
    model = _build(DualPathNet)
    x = torch.randn(3, 3, SIDE, SIDE, generator=torch.Generator().manual_seed(5))
    try:
        result = _prune(model, method, reconstruct=False, recalibrate=False)
    except LassopruneError as exc:
        message = str(exc)
        assert "\n" not in message and any(name in message for name in ("stem", "block", "fc")), message
        return
    masked = copy.deepcopy(model)
    mask_channels(masked, result.groups, result.keep)
    (got,), (expected,) = _outputs(result.model, x), _outputs(masked, x)
    assert got.shape == (3, NUM_CLASSES)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
