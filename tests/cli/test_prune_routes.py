"""The same settings give the same model by every route: ``lassoprune prune`` + ``eval`` and ``lassoprune run``.

Both routes end in the one post-cut path (cut, reconstruction, BatchNorm
re-estimation on the calibration images), so the file ``lassoprune prune``
writes scores exactly what ``lassoprune run`` records for its prune stage.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import lassoprune as lp
from lassoprune.pipeline import parse_config, run_stages
from lassoprune.pipeline.stages import MODEL_FILE

TRAINED = {
    "model": "resnet20",
    "data": {"name": "synthetic", "batch_size": 50},
    "pretrain": {"epochs": 1, "train_subset": 400, "lr": 0.05},
    "evaluate": {"latency": False},
}


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lassoprune", "--quiet", *args], capture_output=True, text=True,
                          timeout=600)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ResNet-20 trained briefly on the synthetic dataset (so BatchNorm statistics matter)."""
    root = tmp_path_factory.mktemp("routes")
    config = parse_config({**TRAINED, "prune": {"method": "l1", "target_macs": 0.5, "calib_size": 100}})
    run, _, _ = run_stages(config, root / "base", progress=False, stop_after="pretrain")
    return run.path("pretrain", MODEL_FILE)


@pytest.mark.parametrize("reconstruct", [pytest.param(True, marks=pytest.mark.slow), False],
                         ids=["reconstructed", "cut-only"])
def test_prune_then_eval_gives_what_run_records(trained: Path, tmp_path: Path, reconstruct: bool) -> None:
    out = tmp_path / "P.pt"
    flag = "--reconstruct" if reconstruct else "--no-reconstruct"
    proc = _cli("prune", "--checkpoint", str(trained), "--data", "synthetic", "--method", "l1", "--target-macs",
                "0.5", "--calib-size", "100", flag, "--out", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["recalibrated_images"] == 100
    scored = _cli("eval", "--checkpoint", str(out), "--data", "synthetic", "--json")
    assert scored.returncode == 0, scored.stderr
    report = json.loads(scored.stdout)

    config = parse_config({**TRAINED, "pretrain": {"checkpoint": str(trained)},
                           "prune": {"method": "l1", "target_macs": 0.5, "calib_size": 100,
                                     "reconstruct": reconstruct},
                           "finetune": {"epochs": 0}})
    run, _, _ = run_stages(config, tmp_path / "run", progress=False, stop_after="prune")
    recorded = run.stages["prune"]["metrics"]
    images = report["num_samples"]
    assert round(report["top1"] * images) == round(recorded["top1"] * images)  # to the last image
    assert (run.stages["prune"]["unreconstructed"] is not None) == reconstruct


def test_cli_output_has_re_estimated_batchnorm_statistics(trained: Path, tmp_path: Path) -> None:
    """The CLI's BatchNorm statistics are not the unpruned model's (which the plain cut keeps)."""
    out = tmp_path / "P.pt"
    proc = _cli("prune", "--checkpoint", str(trained), "--data", "synthetic", "--method", "l1", "--target-macs",
                "0.5", "--calib-size", "100", "--no-reconstruct", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "re-estimated on 100 calibration images" in proc.stdout
    stale = lp.prune(lp.load(trained), torch.zeros(1, 3, 32, 32), method="l1", target_macs=0.5,
                     reconstruct=False, recalibrate=False)
    assert stale.recalibrated_images == 0
    pruned = dict(lp.load(out).named_modules())
    norms = [(name, m) for name, m in stale.model.named_modules() if isinstance(m, nn.BatchNorm2d)]
    for name, kept_stats in norms:
        cli = pruned[name]
        assert cli.running_mean.shape == kept_stats.running_mean.shape  # the same cut (l1 is deterministic)
        assert torch.equal(cli.weight, kept_stats.weight)  # affine terms untouched
        assert not torch.allclose(cli.running_mean, kept_stats.running_mean), name


def test_prune_with_finetuning_gives_the_model_run_fine_tunes(trained: Path, tmp_path: Path) -> None:
    """``lassoprune prune --finetune-epochs`` draws the same batches in the same order as ``lassoprune run``'s
    finetune stage (seed + FINETUNE_SEED_OFFSET), so one epoch ends at the same weights."""
    out = tmp_path / "P.pt"
    proc = _cli("prune", "--checkpoint", str(trained), "--data", "synthetic", "--method", "l1", "--target-macs",
                "0.5", "--calib-size", "100", "--no-reconstruct", "--finetune-epochs", "1", "--lr", "0.01",
                "--train-subset", "200", "--batch-size", "50", "--out", str(out), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    config = parse_config({**TRAINED, "pretrain": {"checkpoint": str(trained)},
                           "prune": {"method": "l1", "target_macs": 0.5, "calib_size": 100, "reconstruct": False},
                           "finetune": {"epochs": 1, "lr": 0.01, "train_subset": 200}})
    run, _, _ = run_stages(config, tmp_path / "run", progress=False, stop_after="finetune")
    by_cli = lp.load(out).state_dict()
    by_run = lp.load(run.path("finetune", MODEL_FILE)).state_dict()
    assert by_cli.keys() == by_run.keys()
    for name, tensor in by_run.items():
        if tensor.is_floating_point():
            scale = float(tensor.abs().max()) or 1.0
            assert float((by_cli[name] - tensor).abs().max()) <= 1e-4 * scale, name
