"""ONNX export of pruned models: onnxruntime agrees with PyTorch, dynamic batch, atomic write, CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch
import torch_pruning as tp
from torch import nn

import lassoprune as lp
from lassoprune.cli import main
from lassoprune.errors import LassopruneError
from lassoprune.io.onnx_export import INPUT_NAME, OUTPUT_NAME, check_onnx, export_onnx, onnx_session


def pruned(name: str, ratio: float = 0.4, in_channels: int = 3) -> nn.Module:
    """Zoo model pruned by torch-pruning (L1), BN statistics calibrated so logits are O(1), eval mode."""
    torch.manual_seed(0)
    model = lp.create_model(name, num_classes=10, in_channels=in_channels).eval()
    classifier = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    tp.pruner.MagnitudePruner(
        model, torch.randn(1, in_channels, 32, 32), importance=tp.importance.MagnitudeImportance(p=1),
        pruning_ratio=ratio, ignored_layers=[classifier],
    ).step()  # fmt: skip
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(8, in_channels, 32, 32))
    return model.eval()


@pytest.mark.parametrize("name", ["resnet20", "mobilenetv2"])
def test_onnxruntime_matches_torch_for_pruned_model_at_batch_1_and_3(tmp_path, name):
    model = pruned(name)
    path = export_onnx(model, tmp_path / f"{name}.onnx", (1, 3, 32, 32))
    session = onnx_session(path, threads=1)
    for batch in (1, 3):
        x = torch.randn(batch, 3, 32, 32)
        with torch.no_grad():
            expected = model(x).numpy()
        got = session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0]
        assert got.shape == (batch, 10)
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)
    report = check_onnx(model, path, (1, 3, 32, 32))
    assert report.ok and report.max_abs_diff < 1e-4 and report.opset == 17


def test_exported_graph_has_pruned_widths_and_a_dynamic_batch_axis(tmp_path):
    model = pruned("mobilenetv2")
    path = export_onnx(model, tmp_path / "m.onnx", (1, 3, 32, 32))
    graph = onnx.load(str(path)).graph
    (inp,), (out,) = graph.input, graph.output
    dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert inp.name == INPUT_NAME and dims == ["batch", 3, 32, 32]
    assert out.name == OUTPUT_NAME and out.type.tensor_type.shape.dim[0].dim_param == "batch"
    first_conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))  # 32 filters unpruned
    shapes = {tuple(t.dims) for t in graph.initializer}
    assert tuple(first_conv.weight.shape) in shapes and first_conv.out_channels < 32


def test_export_keeps_training_mode_and_grey_inputs_work(tmp_path):
    model = pruned("resnet20", in_channels=1).train()
    export_onnx(model, tmp_path / "g.onnx", (2, 1, 28, 28))
    assert model.training and all(m.training for m in model.modules())
    assert check_onnx(model, tmp_path / "g.onnx", (1, 1, 28, 28)).ok


def test_failed_export_keeps_previous_file(tmp_path):
    path = tmp_path / "m.onnx"
    path.write_bytes(b"previous")

    class Broken(nn.Module):
        def forward(self, x):
            return torch.linalg.eig(x)[0]  # no ONNX symbol

    with pytest.raises(LassopruneError, match="cannot be exported"):
        export_onnx(Broken(), path, (1, 4, 4))
    assert path.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]


def test_bad_input_shape_is_a_clear_error(tmp_path):
    with pytest.raises(LassopruneError, match="positive integers"):
        export_onnx(pruned("resnet20"), tmp_path / "m.onnx", (1, 3, 0, 32))


def test_cli_export_of_pruned_model_file(tmp_path, capsys):
    model_file, onnx_file = tmp_path / "p.safetensors", tmp_path / "out" / "p.onnx"
    lp.save(pruned("resnet20"), model_file, extra={"image_size": 32})
    assert main(["export", "--checkpoint", str(model_file), "--onnx", str(onnx_file), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["input"]["shape"] == ["batch", 3, 32, 32]
    assert report["check"]["ok"] and report["check"]["max_abs_diff"] < 1e-4
    assert onnx_file.is_file()


def test_cli_export_of_damaged_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a model")
    proc = subprocess.run([sys.executable, "-m", "lassoprune", "export", "--checkpoint", str(bad), "--onnx",
                           str(tmp_path / "x.onnx")], capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 2 and "corrupted" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "x.onnx").exists()
