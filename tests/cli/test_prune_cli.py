"""`lassoprune prune`: targets met, the model file reloads in a new process, clear errors."""

import json
import subprocess
import sys

import pytest
import torch

import lassoprune as lp


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lassoprune", *args], capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("model, ratio", [pytest.param("resnet56", 0.5, marks=pytest.mark.slow), pytest.param("vgg16", 0.35, marks=pytest.mark.slow),
                                          ("mobilenetv2", 0.6)])
def test_prune_json_then_info_and_load_agree(tmp_path, model, ratio):
    out = tmp_path / "P.pt"
    proc = _run("prune", "--model", model, "--num-classes", "10", "--method", "l1",
                "--target-macs", str(ratio), "--out", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert abs(report["macs_after"] / report["macs_before"] - ratio) <= 0.01
    assert all(1 <= g["kept"] <= g["total"] for g in report["groups"].values())

    info = _run("info", "--checkpoint", str(out), "--json")
    assert info.returncode == 0, info.stderr
    assert json.loads(info.stdout)["macs"] == report["macs_after"]

    loaded = lp.load(out)
    assert loaded(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    counted = lp.count(loaded, (1, 3, 32, 32))
    assert counted.macs == report["macs_after"] and counted.params == report["params_after"]


def test_prune_with_data_criterion_and_finetune(tmp_path):
    out = tmp_path / "p.pt"
    proc = _run("--quiet", "prune", "--model", "resnet20", "--data", "synthetic", "--method", "taylor",
                "--target-params", "0.5", "--calib-size", "50", "--finetune-epochs", "1", "--batch-size", "32",
                "--out", str(out), "--json", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert abs(report["params_after"] / report["params_before"] - 0.5) <= 0.01
    assert 0.0 <= report["finetune"]["top1"] <= 1.0
    model = lp.load(out)
    assert model.lp_extra["pruning"]["method"] == "taylor"
    assert model.lp_extra["metrics"]["top1"] == report["finetune"]["top1"]


@pytest.mark.slow
def test_prune_with_reconstruction_reports_the_refitted_layers(tmp_path):
    out = tmp_path / "p.pt"
    proc = _run("--quiet", "prune", "--model", "resnet20", "--data", "synthetic", "--method", "l1",
                "--target-macs", "0.5", "--calib-size", "50", "--reconstruct", "--out", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    layers = json.loads(proc.stdout)["reconstruction"]
    assert layers and all(layer["error_after"] <= layer["error_before"] + 1e-9 for layer in layers)
    assert lp.load(out)(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "resnet20", "--out", "x.pt"], "--target-macs"),
        (["--model", "resnet20", "--target-macs", "1.5", "--out", "x.pt"], "(0, 1)"),
        (["--model", "resnet20", "--method", "l7", "--target-macs", "0.5", "--out", "x.pt"], "bn-scale"),
        (["--model", "resnet20", "--method", "taylor", "--target-macs", "0.5", "--out", "x.pt"], "--data"),
        (["--model", "resnet20", "--target-macs", "0.5", "--reconstruct", "--out", "x.pt"], "--reconstruct refits"),
        (["--model", "resnet20", "--target-macs", "0.01", "--min-channels", "8", "--out", "x.pt"], "smallest reachable"),
        (["--model", "resnet20", "--target-macs", "0.5", "--steps", "0", "--out", "x.pt"], "--steps must be"),
        (["--model", "resnet20", "--target-macs", "0.5", "--steps", "2", "--step-epochs", "-1", "--out", "x.pt"],
         "--step-epochs must be >= 0"),
        (["--model", "resnet20", "--method", "dwgl-vote", "--threshold", "0.05", "--steps", "2", "--out", "x.pt"],
         "need a size target"),
    ],
)
def test_prune_errors_are_clear(tmp_path, args, message):
    proc = _run("prune", *[str(tmp_path / a) if a == "x.pt" else a for a in args])
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_method_options_reach_the_method(tmp_path):
    base = ["prune", "--model", "resnet20", "--data", "synthetic", "--method", "class-lasso", "--target-macs", "0.5",
            "--calib-size", "50", "--out", str(tmp_path / "p.pt")]
    proc = _run(*base, "--method-option", "pool=2", "--method-option", "bogus=1")
    assert proc.returncode == 2 and "unknown class-lasso option 'bogus'" in proc.stderr and "class_fit" in proc.stderr
    proc = _run("--quiet", *base, "--method-option", "pool=2", "--method-option", "class_fit=label",
                "--experimental", "kernel=gaussian", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert abs(report["macs_ratio"] - 0.5) <= 0.01
    settings = report["diagnostics"]["settings"]
    assert (settings["pool"], settings["class_fit"], settings["experimental"]) == (2, "label", {"kernel": "gaussian"})
    proc = _run(*base, "--experimental", "structure_from=layer")  # class-lasso has no class structure
    assert proc.returncode == 2 and "structure_from" in proc.stderr and "Traceback" not in proc.stderr


def test_prune_in_steps_matches_the_python_api_and_reports_every_step(tmp_path):
    """``--steps 2`` (no fine-tuning between cuts) makes the cuts of ``prune_iteratively`` with the same settings."""
    out = tmp_path / "p.pt"
    proc = _run("--quiet", "prune", "--model", "resnet20", "--num-classes", "10", "--method", "l1",
                "--target-macs", "0.3", "--steps", "2", "--step-epochs", "0", "--seed", "0", "--out", str(out),
                "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert [step["step"] for step in report["steps"]] == [1, 2]
    assert abs(report["steps"][0]["macs_ratio"] - 0.3 ** 0.5) <= 0.01
    assert abs(report["macs_ratio"] - 0.3) <= 0.01

    lp.seed_everything(0)
    model = lp.create_model("resnet20", num_classes=10, in_channels=3)
    settings = lp.pruning.PruneSettings(method="l1", target_macs=0.3, steps=2)
    expected = lp.pruning.prune_iteratively(model, torch.randn(1, 3, 32, 32), settings, seed=0)
    assert {gid: group["kept"] for gid, group in report["groups"].items()} == {
        gid: kept for gid, (kept, _) in expected.widths.items()}
    assert lp.count(lp.load(out), (1, 3, 32, 32)).macs == report["macs_after"]


@pytest.mark.slow
def test_prune_in_steps_fine_tunes_between_the_cuts(tmp_path):
    out = tmp_path / "p.pt"
    proc = _run("--quiet", "prune", "--model", "resnet20", "--data", "synthetic", "--method", "l1",
                "--target-macs", "0.4", "--steps", "2", "--calib-size", "50", "--train-subset", "200",
                "--batch-size", "50", "--out", str(out), "--json", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    first, last = report["steps"]
    assert 0.0 <= first["finetuned"]["top1"] <= 1.0 and not last["finetuned"]
    assert (tmp_path / "p_step_1" / "metrics.jsonl").exists()
    assert abs(report["macs_ratio"] - 0.4) <= 0.01
