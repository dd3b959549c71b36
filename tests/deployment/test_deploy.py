"""Deployment: BatchNorm folding is exact, deployed files reproduce the pruned model, the CLI writes them."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import lassoprune as lp
from lassoprune.cli import main
from lassoprune.deployment import deploy, fold_batchnorm, load_aoti, load_torchscript
from lassoprune.errors import LassopruneError
from tests.pruning.pruning_helpers import model_with_random_bn
from tests.marks import fast_only

SIDE = {"resnet18": 64, "resnet34": 64, "resnet50": 64}


def _relative_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max()) / max(1.0, float(a.abs().max()))


@pytest.mark.parametrize("name", fast_only(lp.list_models(),
                                           {"resnet20", "mobilenetv2", "densenet40", "vgg11", "resnet18"}))
def test_folding_changes_no_output_on_every_zoo_model(name):
    model = model_with_random_bn(name).eval()
    x = torch.randn(2, 3, SIDE.get(name, 32), SIDE.get(name, 32), generator=torch.Generator().manual_seed(0))
    result = fold_batchnorm(model)
    with torch.no_grad():
        assert _relative_diff(model(x), result.model(x)) <= 1e-4
    assert result.traced
    batchnorms = [m for m in result.model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(batchnorms) == len(result.kept)
    if name != "densenet40":  # pre-activation blocks: a BatchNorm follows a concatenation, not a conv
        assert result.folded and not result.kept
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())  # the original is untouched


def test_fold_formula_on_a_bias_free_conv_and_a_non_affine_batchnorm():
    """``W' = s W``, ``b' = s (b - mu) + beta`` with ``s = gamma / sqrt(var + eps)``; a BN after an add stays."""

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, bias=False)
            self.bn = nn.BatchNorm2d(4)
            self.conv2 = nn.Conv2d(4, 4, 1)
            self.bn2 = nn.BatchNorm2d(4, affine=False)
            self.bn3 = nn.BatchNorm2d(4)

        def forward(self, x):
            y = self.bn(self.conv(x))
            z = self.bn2(self.conv2(y))
            return self.bn3(y + z)

    net = Net()
    gen = torch.Generator().manual_seed(1)
    for bn in (net.bn, net.bn2, net.bn3):
        bn.running_mean.copy_(torch.randn(4, generator=gen))
        bn.running_var.copy_(torch.rand(4, generator=gen) + 0.5)
    net.bn.weight.data.copy_(torch.randn(4, generator=gen))
    net.eval()
    result = fold_batchnorm(net)
    assert set(result.folded) == {"bn", "bn2"} and result.kept == ("bn3",)
    s = net.bn.weight / torch.sqrt(net.bn.running_var + net.bn.eps)
    folded_conv = result.model.conv
    assert torch.allclose(folded_conv.weight, net.conv.weight * s.view(-1, 1, 1, 1), atol=1e-6)
    assert torch.allclose(folded_conv.bias, net.bn.bias - net.bn.running_mean * s, atol=1e-6)
    x = torch.randn(2, 3, 8, 8, generator=gen)
    with torch.no_grad():
        assert _relative_diff(net(x), result.model(x)) <= 1e-5


def test_untraceable_model_is_deployed_unfolded():
    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.bn = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)

        def forward(self, x):
            if x.sum() > 0:  # data-dependent control flow: torch.fx cannot trace it
                x = -x
            return self.bn(self.conv(x))

    result = fold_batchnorm(Branchy().eval())
    assert not result.traced and result.folded == () and result.kept == ("bn",)


@pytest.mark.parametrize("name", fast_only(lp.list_models(), {"resnet20", "mobilenetv2", "vgg11"}))
def test_deployed_files_reproduce_the_pruned_model(tmp_path, name):
    model = model_with_random_bn(name)
    side = SIDE.get(name, 32)
    pruned = lp.prune(model, torch.zeros(1, 3, side, side), method="l1", target_macs=0.5, round_to=8).model
    result = deploy(pruned, tmp_path, (1, 3, side, side), latency=False)
    assert set(result.files) == {"torchscript", "onnx"}
    assert max(result.max_abs_diff.values()) <= 1e-4
    x = torch.randn(5, 3, side, side, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert _relative_diff(pruned.eval()(x), load_torchscript(tmp_path / "model.torchscript.pt")(x)) <= 1e-4
    report = json.loads((tmp_path / "deploy.json").read_text())
    assert report["max_abs_diff"] == result.max_abs_diff and report["latency"] == []


def test_deploy_times_dense_and_deployed_and_rejects_bad_runtimes(tmp_path):
    dense = lp.create_model("resnet20", num_classes=10)
    pruned = lp.prune(dense, torch.zeros(1, 3, 32, 32), method="l1", target_macs=0.5).model
    result = deploy(pruned, tmp_path, (1, 3, 32, 32), dense=dense, batch_sizes=(2,), warmup=1, repeats=2)
    assert {(r["runtime"], r["batch_size"]) for r in result.latency} == {("torchscript", 2), ("onnx", 2)}
    for record in result.latency:
        assert record["speedup"] == pytest.approx(record["dense_ms"] / record["deployed_ms"])
    assert result.fastest == {2: min(result.latency, key=lambda r: r["deployed_ms"])["runtime"]}
    assert json.loads((tmp_path / "deploy.json").read_text())["fastest"] == {"2": result.fastest[2]}
    with pytest.raises(LassopruneError, match="torchscript, onnx, aoti"):
        deploy(pruned, tmp_path, (1, 3, 32, 32), runtimes=("tensorrt",))


def test_cli_deploy(tmp_path, capsys):
    dense = lp.create_model("resnet20", num_classes=10)
    pruned = lp.prune(dense, torch.zeros(1, 3, 32, 32), method="l1", target_macs=0.5).model
    lp.save(pruned, tmp_path / "p.pt")
    out = tmp_path / "deployed"
    assert main(["deploy", "--checkpoint", str(tmp_path / "p.pt"), "--out", str(out), "--batch-sizes", "2",
                 "--warmup", "1", "--repeats", "2", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (out / "model.torchscript.pt").exists() and (out / "model.onnx").exists()
    assert all(r["speedup"] > 0 for r in report["latency"])  # the dense model came from the file's architecture
    assert main(["deploy", "--checkpoint", str(tmp_path / "missing.pt"), "--out", str(out)]) != 0
    assert main(["deploy", "--checkpoint", str(tmp_path / "p.pt"), "--out", str(out), "--warmup", "-1"]) != 0


def test_linear_batchnorm1d_is_left_alone_and_a_failed_check_writes_no_model_file(tmp_path, monkeypatch):
    """Linear -> BatchNorm1d on a 3-D input normalises another axis: folding it would be wrong, so it stays."""
    net = nn.Sequential(nn.Linear(8, 4), nn.BatchNorm1d(4)).eval()
    net[1].running_mean.copy_(torch.randn(4))
    x = torch.randn(5, 4, 8)
    result = fold_batchnorm(net)
    assert result.folded == () and len(result.kept) == 1
    with torch.no_grad():
        assert torch.equal(net(x), result.model(x))
    model = lp.create_model("resnet20", num_classes=10)
    deploy(model, tmp_path, (1, 3, 32, 32), latency=False)
    before = (tmp_path / "model.onnx").read_bytes()
    from lassoprune.deployment import package

    monkeypatch.setattr(package, "_max_diff", lambda *args: 1.0)
    with pytest.raises(LassopruneError, match="nothing was written"):
        deploy(model, tmp_path, (1, 3, 32, 32), latency=False)
    assert (tmp_path / "model.onnx").read_bytes() == before  # the earlier good file is untouched
    assert not list(tmp_path.glob("*.tmp*"))
    monkeypatch.undo()
    deploy(model, tmp_path, (1, 3, 32, 32), runtimes=("onnx",), latency=False)
    assert not (tmp_path / "model.torchscript.pt").exists()  # stale: not deployed this time
    model.train()
    deploy(model, tmp_path, (1, 3, 32, 32), runtimes=("onnx",), latency=False)
    assert model.training


@pytest.mark.slow
def test_aoti_package_reproduces_the_pruned_model_at_any_batch(tmp_path):
    """``aoti``: torch.export with a dynamic batch, compiled by AOTInductor; needs a C++ compiler."""
    from lassoprune.deployment.package import check_cxx_compiler

    try:
        check_cxx_compiler()
    except LassopruneError:
        pytest.skip("no C++ compiler on this machine")
    dense = model_with_random_bn("resnet20")
    pruned = lp.prune(dense, torch.zeros(1, 3, 16, 16), method="l1", target_macs=0.5, round_to=8).model
    result = deploy(pruned, tmp_path, (1, 3, 16, 16), dense=dense, runtimes=("aoti",), batch_sizes=(3,), warmup=1,
                    repeats=2)
    assert set(result.files) == {"aoti"} and result.max_abs_diff["aoti"] <= 1e-4
    assert [(r["runtime"], r["batch_size"]) for r in result.latency] == [("aoti", 3)] and result.fastest == {3: "aoti"}
    runner = load_aoti(tmp_path / "model.pt2")
    for batch in (1, 7):
        x = torch.randn(batch, 3, 16, 16, generator=torch.Generator().manual_seed(batch))
        with torch.no_grad():
            assert _relative_diff(pruned.eval()(x), runner(x)) <= 1e-4
    assert not list(tmp_path.glob("*.tmp*"))


def test_aoti_without_a_compiler_is_a_clear_error_before_any_file(tmp_path, monkeypatch):
    from lassoprune.deployment import package

    monkeypatch.setattr(package.shutil, "which", lambda name: None)
    monkeypatch.delenv("CXX", raising=False)
    with pytest.raises(LassopruneError, match="no C\\+\\+ compiler"):
        deploy(lp.create_model("resnet20", num_classes=10), tmp_path, (1, 3, 32, 32), runtimes=("aoti",))
    assert list(tmp_path.iterdir()) == []


class _Cancel(nn.Module):
    """``(x + big) - big``: exact in real numbers, ``big`` x 2^-24 of roundoff in float32."""

    def __init__(self, big: float) -> None:
        super().__init__()
        self.big = big

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x + self.big) - self.big


def test_float32_error_measures_the_models_own_roundoff():
    from lassoprune.deployment.package import float32_error

    well = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(5)).eval()
    ill = nn.Sequential(nn.Conv2d(3, 4, 3), _Cancel(1e4), nn.Flatten(), nn.LazyLinear(5)).eval()
    with torch.no_grad():
        well(torch.randn(1, 3, 8, 8)), ill(torch.randn(1, 3, 8, 8))
    assert float32_error(well, (1, 3, 8, 8)) < 1e-5
    # float32 spacing at 1e4 is 2^-10: the cancellation loses up to half of it per value
    assert 1e-5 < float32_error(ill, (1, 3, 8, 8)) < 1e-2
    assert ill[0].weight.dtype == torch.float32  # the model itself is untouched


def test_a_difference_within_the_models_own_roundoff_is_accepted(tmp_path, monkeypatch):
    """A runtime differing by more than ``tolerance`` but less than ROUNDOFF_FACTOR x the pruned model's own
    float32 error deploys (a deep reconstructed ResNeXt did); the same difference on a well-conditioned model
    is refused."""
    from lassoprune.deployment import package

    torch.manual_seed(0)
    ill = nn.Sequential(nn.Conv2d(3, 4, 3), _Cancel(1e4), nn.Flatten(), nn.Linear(4 * 6 * 6, 5)).eval()
    roundoff = package.float32_error(ill, (1, 3, 8, 8))
    assert 2 * roundoff > 1e-4  # so the difference below is beyond the plain tolerance
    monkeypatch.setattr(package, "_max_diff", lambda *args: 2 * roundoff)
    result = deploy(ill, tmp_path / "ill", (1, 3, 8, 8), latency=False)
    assert result.tolerance == pytest.approx(package.ROUNDOFF_FACTOR * roundoff)
    assert json.loads((tmp_path / "ill" / "deploy.json").read_text())["tolerance"] == result.tolerance
    well = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 5)).eval()
    with pytest.raises(LassopruneError, match="float32 error"):
        deploy(well, tmp_path / "well", (1, 3, 8, 8), latency=False)
