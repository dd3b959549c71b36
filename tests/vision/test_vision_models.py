"""Real torchvision / timm architectures (random weights, 64x64): cut to target, reconstructed, deployed, reloaded.

Needs the vision extra (``make test-vision``); skipped where torchvision or timm is missing.
"""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import lassoprune as lp
from lassoprune.deployment import deploy
from lassoprune.errors import LassopruneError
from lassoprune.pruning import mask_channels
from tests.pruning.pruning_helpers import randomise_batchnorm

pytest.importorskip("torchvision")
pytest.importorskip("timm")
pytestmark = [pytest.mark.vision, pytest.mark.filterwarnings("ignore::UserWarning")]

SIDE = 64
MODELS = (
    "torchvision:resnet18",  # a ResNet
    "torchvision:mobilenet_v3_small",  # depthwise-separable with squeeze-excitation
    "timm:convnext_atto",  # ConvNeXt: layer scale, channels-last LayerNorm
    "torchvision:densenet121",  # DenseNet: concatenations
    "torchvision:regnet_y_400mf",  # RegNet: grouped convs and SE
    "timm:efficientnet_b0",  # EfficientNet
    "torchvision:squeezenet1_1",  # conv classifier
    "torchvision:shufflenet_v2_x0_5",  # chunk + channel shuffle (Torch-Pruning 1.6 alone divides by zero)
)


def _data() -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(2)
    return [(torch.randn(16, 3, SIDE, SIDE, generator=gen), torch.arange(16) % 10)]


@pytest.mark.parametrize("name", MODELS)
def test_prune_reconstruct_deploy_and_reload(tmp_path, name):
    torch.manual_seed(0)
    model = lp.create_model(name, num_classes=10).eval()
    x = torch.randn(2, 3, SIDE, SIDE, generator=torch.Generator().manual_seed(3))
    result = lp.prune(model, x[:1], method="l1", target_macs=0.5, data=_data(), reconstruct=True)
    assert abs(result.macs_after / result.macs_before - 0.5) <= 0.01
    pruned = result.model.eval()
    with torch.no_grad():
        out = pruned(x)
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    deployed = deploy(pruned, tmp_path / "deploy", (1, 3, SIDE, SIDE), latency=False)
    assert max(deployed.max_abs_diff.values()) <= 1e-4
    lp.save(pruned, tmp_path / "model.pt")
    again = lp.load(tmp_path / "model.pt")
    assert again.lp_spec.name == name
    with torch.no_grad():
        assert torch.allclose(again(x), out, atol=1e-5)


@pytest.mark.parametrize("name", ["torchvision:resnext50_32x4d", "torchvision:regnet_y_400mf"])
def test_grouped_convolutions_of_real_models_are_cut_and_equal_the_masked_model(name):
    torch.manual_seed(0)
    model = randomise_batchnorm(lp.create_model(name, num_classes=10)).eval()
    x = torch.randn(2, 3, SIDE, SIDE, generator=torch.Generator().manual_seed(4))
    result = lp.prune(model, x[:1], method="l1", target_macs=0.5, reconstruct=False, recalibrate=False)
    blocked = [g for g in result.groups if g.blocks > 1]
    assert sum(len(result.keep[g.id]) < g.num_channels for g in blocked) >= len(blocked) // 2
    masked = copy.deepcopy(model)
    mask_channels(masked, result.groups, result.keep)
    with torch.no_grad():
        want = masked(x)
        assert float((result.model.eval()(x) - want).abs().max()) <= 1e-4 * float(want.abs().max())


def test_the_torchvision_example_runs_end_to_end_on_an_image_folder(tmp_path):
    """examples/prune_torchvision_resnet50.py on a tiny ImageFolder tree (PNG files, 2 classes, 64x64)."""
    from PIL import Image

    gen = torch.Generator().manual_seed(5)
    for split in ("train", "val"):
        for label in ("cat", "dog"):
            folder = tmp_path / "data" / split / label
            folder.mkdir(parents=True)
            for i in range(6):
                pixels = (torch.rand(72, 72, 3, generator=gen) * 255).to(torch.uint8).numpy()
                Image.fromarray(pixels).save(folder / f"{i}.png")
    example = Path(__file__).resolve().parents[2] / "examples" / "prune_torchvision_resnet50.py"
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, str(example), "--root", str(tmp_path / "data"), "--out", str(out),
                           "--calibration", "8", "--size", "64"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "MACs" in done.stdout and "deployed" in done.stdout
    again = lp.load(out / "model.pt")
    assert again.lp_spec.name == "torchvision:resnet50"
    with torch.no_grad():
        assert again(torch.zeros(1, 3, 64, 64)).shape == (1, 2)


@pytest.mark.parametrize("name", ["torchvision:vit_b_16", "torchvision:swin_t", "torchvision:maxvit_t",
                                  "timm:mobilevit_xxs"])
def test_vision_transformers_are_refused_at_once_with_one_line(name):
    model = lp.create_model(name, num_classes=10).eval()
    with pytest.raises(LassopruneError, match="self-attention block") as info:
        lp.prune(model, torch.zeros(1, 3, 224, 224), method="l1", target_macs=0.5)
    assert "\n" not in str(info.value)
