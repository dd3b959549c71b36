"""Real torchvision / timm architectures (random weights, 64x64): cut to target, reconstructed, deployed, reloaded.

Needs the vision extra (``make test-vision``); skipped where torchvision or timm is missing.
"""

from __future__ import annotations

import pytest
import torch

import lassoprune as lp
from lassoprune.deployment import deploy

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
