"""MAC and parameter counting: agreement with FlopCounterMode, published figures, hygiene."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from lassoprune.analysis import CountResult, LayerCount, count, count_params
from lassoprune.errors import LassopruneError
from lassoprune.models import create_model, list_models, model_entry
from tests.marks import fast_only


def torch_flops(model: nn.Module, x: torch.Tensor) -> int:
    """FLOPs of one eval forward as counted by PyTorch (2 per multiply-accumulate)."""
    model.eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    return counter.get_total_flops()


def cifar_resnet_macs(depth: int, shortcut: str, classes: int = 10) -> int:
    """MACs of a CIFAR ResNet at 32x32, from its layout (He et al. 2016, Sec. 4.2)."""
    n = (depth - 2) // 6
    macs = 32 * 32 * 16 * 3 * 9  # stem
    macs += 2 * n * 32 * 32 * 16 * 16 * 9  # stage 1
    for side, c_in, c_out in ((16, 16, 32), (8, 32, 64)):  # stages 2 and 3
        macs += side * side * c_out * c_in * 9  # first, strided conv
        macs += (2 * n - 1) * side * side * c_out * c_out * 9
        macs += side * side * c_out * c_in if shortcut == "conv" else 0
    return macs + 64 * classes


def vgg16_macs_and_params(classes: int = 10) -> tuple[int, int]:
    """MACs at 32x32 and params of VGG-16-BN (CIFAR), from configuration D."""
    widths = [(64, 32), (64, 32), (128, 16), (128, 16), (256, 8), (256, 8), (256, 8)]
    widths += [(512, 4)] * 3 + [(512, 2)] * 3
    macs = params = 0
    c_in = 3
    for c_out, side in widths:
        macs += side * side * c_out * c_in * 9
        params += c_out * c_in * 9 + 2 * c_out  # conv (no bias) + BN affine
        c_in = c_out
    for f_in, f_out in ((512, 512), (512, 512), (512, classes)):
        macs += f_in * f_out
        params += f_in * f_out + f_out
    return macs, params


# --------------------------------------------------------------------------- agreement


#: Models whose count is checked by `make test` (a plain, a residual, a depthwise, a concatenating and an ImageNet
#: layout); the deeper variants of the same layouts run with `make test-slow`.
FAST_FLOP_CHECKS = ("resnet20", "vgg16", "mobilenetv2", "densenet40", "resnet18")


@pytest.mark.parametrize("name", fast_only(list_models(), FAST_FLOP_CHECKS))
def test_macs_match_flop_counter_mode(name: str) -> None:
    size = 32 if model_entry(name).default_image_size == 32 else 64
    model = create_model(name)
    x = torch.zeros(1, 3, size, size)
    result = count(model, x)
    assert 2 * result.macs == torch_flops(model, x)
    assert result.params == sum(p.numel() for p in model.parameters())
    assert result.macs == sum(layer.macs for layer in result.layers)


def test_macs_match_flop_counter_for_unusual_layers() -> None:
    model = nn.Sequential(
        nn.Conv2d(4, 8, 3, padding=1, groups=2),
        nn.Conv2d(8, 8, (3, 1), stride=2, groups=8),  # depthwise, non-square kernel
        nn.ConvTranspose2d(8, 6, 4, stride=2, groups=2),
        nn.Flatten(2),
        nn.Linear(12 * 18, 5),  # on a 3-D input (2, 6, 216)
    )
    x = torch.zeros(2, 4, 12, 15)
    assert 2 * count(model, x).macs == torch_flops(model, x)
    conv1d = nn.Conv1d(3, 5, 3)
    assert 2 * count(conv1d, (1, 3, 10)).macs == torch_flops(conv1d, torch.zeros(1, 3, 10))
    conv3d = nn.Conv3d(2, 4, 3, padding=1, bias=False)
    assert 2 * count(conv3d, (1, 2, 4, 5, 6)).macs == torch_flops(conv3d, torch.zeros(1, 2, 4, 5, 6))


# --------------------------------------------------------------------------- published figures


@pytest.mark.parametrize("shortcut", ["conv", "pad"])
@pytest.mark.parametrize("depth", fast_only([20, 56, 110], [20, 56]))
def test_cifar_resnet_macs_match_layout(depth: int, shortcut: str) -> None:
    model = create_model(f"resnet{depth}", shortcut=shortcut)
    assert count(model, (1, 3, 32, 32)).macs == cifar_resnet_macs(depth, shortcut)


def test_resnet56_published_figures() -> None:
    pad = count(create_model("resnet56", shortcut="pad"), (1, 3, 32, 32))
    conv = count(create_model("resnet56"), (1, 3, 32, 32))
    assert pad.macs == 125_485_696  # the "125.49M" quoted by the pruning literature
    assert conv.macs == 125_747_840  # + two 1x1 shortcut convs (2 x 131,072)
    assert conv.macs == pytest.approx(127e6, rel=0.01)
    assert (pad.params, conv.params) == (853_018, 855_770)  # "0.85M"
    assert count(create_model("resnet20"), (1, 3, 32, 32)).macs == pytest.approx(41e6, rel=0.01)


def test_vgg16_published_figures() -> None:
    result = count(create_model("vgg16"), (1, 3, 32, 32))
    assert (result.macs, result.params) == vgg16_macs_and_params()
    assert result.macs == 313_725_952  # "313.7M"
    assert result.params == 15_249_354
    assert result.macs == pytest.approx(313.7e6, rel=0.01)


@pytest.mark.parametrize(
    ("name", "macs", "params"),
    [
        ("resnet18", 1_814_073_344, 11_689_512),
        ("resnet34", 3_663_761_408, 21_797_672),
        ("resnet50", 4_089_184_256, 25_557_032),
    ],
)
def test_imagenet_resnet_published_figures(name: str, macs: int, params: int) -> None:
    result = count(create_model(name, num_classes=1000), (1, 3, 224, 224))
    assert (result.macs, result.params) == (macs, params)
    published_gmacs = {"resnet18": 1.82, "resnet34": 3.67, "resnet50": 4.1}[name]
    assert result.macs / 1e9 == pytest.approx(published_gmacs, rel=0.01)
    if name == "resnet50":  # torchvision's "4.09 GFLOPS"; the exact count is just under 4.09e9
        assert round(result.macs / 1e9, 2) == 4.09


@pytest.mark.parametrize(
    ("name", "kwargs", "macs", "params"),
    [
        ("googlenet", {}, 1_521_756_160, 6_158_346),  # "1.52G / 6.15M" (HRank)
        ("densenet40", {}, 282_917_328, 1_059_298),  # "282M / 1.04M" (HRank), 24-ch stem
        ("densenet40", {"stem_channels": 16}, 264_812_928, 1_019_722),  # paper text, "1.0M"
        ("mobilenetv2", {}, 87_976_448, 2_236_682),
    ],
)
def test_other_cifar_models_figures(name: str, kwargs: dict[str, int], macs: int, params: int) -> None:
    result = count(create_model(name, **kwargs), (1, 3, 32, 32))
    assert (result.macs, result.params) == (macs, params)


# --------------------------------------------------------------------------- result contents


def test_layers_in_call_order_with_shapes() -> None:
    result = count(create_model("resnet20"), (1, 3, 32, 32))
    assert isinstance(result, CountResult)
    first = result.layers[0]
    assert first == LayerCount("conv1", "Conv2d", 442_368, 432, (1, 3, 32, 32), (1, 16, 32, 32))
    assert result.layers[1].kind == "BatchNorm2d" and result.layers[1].macs == 0
    assert result.layers[-1].name == "fc" and result.layers[-1].out_shape == (1, 10)
    kinds = {layer.kind for layer in result.layers if layer.macs}
    assert kinds == {"Conv2d", "Linear"}


def test_macs_scale_with_batch_and_accept_tensors() -> None:
    model = create_model("resnet20")
    single = count(model, (1, 3, 32, 32)).macs
    assert count(model, torch.randn(3, 3, 32, 32)).macs == 3 * single


def test_module_called_twice_is_counted_twice() -> None:
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.fc(x))

    result = count(Twice(), (1, 4))
    assert result.macs == 32 and [layer.name for layer in result.layers] == ["fc", "fc"]
    assert result.params == 20


def test_leaf_model_is_counted() -> None:
    result = count(nn.Linear(3, 2), (5, 3))
    assert result.macs == 30 and result.layers[0].name == "Linear"


# --------------------------------------------------------------------------- count_params


def test_count_params_shared_and_trainable() -> None:
    shared = nn.Linear(3, 3)
    model = nn.Sequential(shared, nn.ReLU(), shared, nn.BatchNorm1d(3))
    assert count_params(model) == 12 + 6
    model[3].weight.requires_grad_(False)
    assert count_params(model, trainable_only=True) == 12 + 3


# --------------------------------------------------------------------------- hygiene


def test_modes_are_restored_and_no_state_changes() -> None:
    model = create_model("resnet20").train()
    model.layer2.eval()  # a mixed state must come back as it was
    before = {name: m.training for name, m in model.named_modules()}
    running_mean = model.bn1.running_mean.clone()
    count(model, (1, 3, 32, 32))
    assert {name: m.training for name, m in model.named_modules()} == before
    assert torch.equal(model.bn1.running_mean, running_mean)  # ran in eval mode
    assert all(p.grad is None for p in model.parameters())


def test_hooks_removed_and_mode_restored_on_error() -> None:
    model = create_model("resnet20").train()
    with pytest.raises(RuntimeError):
        count(model, (1, 5, 32, 32))  # wrong channel count
    assert model.training and model.layer1[0].bn1.training
    assert all(not m._forward_hooks for m in model.modules())


def test_hooks_removed_after_success() -> None:
    model = create_model("vgg11")
    count(model, (1, 3, 32, 32))
    assert all(not m._forward_hooks for m in model.modules())


@pytest.mark.parametrize("shape", [(3,), (1, 0, 4), (1, 3.0, 4), "1,3,32,32", (1, True)])
def test_bad_input_shape_raises(shape: object) -> None:
    with pytest.raises(LassopruneError, match="input_shape"):
        count(nn.Linear(3, 2), shape)  # type: ignore[arg-type]
