"""`lassoprune sparse-train` then `prune --method dwgl-vote`: settings recorded, resume guarded, votes reported."""

import json
import subprocess
import sys

import pytest

import lassoprune as lp
from lassoprune.cli import main


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lassoprune", *args], capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_sparse_train_then_vote_prune(tmp_path):
    out = tmp_path / "S"
    common = ("--model", "resnet20", "--data", "synthetic", "--train-subset", "100", "--batch-size", "25",
              "--image-size", "16", "--no-progress", "--out", str(out))
    proc = _run("--quiet", "sparse-train", *common, "--reg", "dwgl", "--lam", "0.05", "--alpha", "2",
                "--epochs", "1", "--json")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["regularizer"] == {"reg": "dwgl", "lam": 0.05, "mode": "prox", "schedule": "linear", "alpha": 2.0}
    assert set(summary["sparsity"]["eltwise_groups"]) == {"conv1", "layer2.0.shortcut.0", "layer3.0.shortcut.0"}
    assert lp.load(out / "model.pt").lp_extra["regularizer"] == summary["regularizer"]
    assert json.loads((out / "regularizer.json").read_text()) == summary["regularizer"]

    changed = _run("sparse-train", *common, "--reg", "group-lasso", "--lam", "0.05", "--epochs", "2", "--resume")
    assert changed.returncode == 2
    assert "regulariser settings changed" in changed.stderr and "Traceback" not in changed.stderr

    pruned = tmp_path / "P.pt"
    proc = _run("prune", "--checkpoint", str(out / "model.pt"), "--method", "dwgl-vote", "--threshold", "0.6",
                "--out", str(pruned), "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["target"] is None and report["macs_after"] <= report["macs_before"]
    for gid, group in report["groups"].items():
        assert group["intersection"] <= group["union"] <= group["total"], gid
        assert group["kept"] == max(1, group["total"] - group["intersection"]), gid
    assert set(report["groups"]["conv1"]["votes"]) == {"conv1", "layer1.0.conv2", "layer1.1.conv2", "layer1.2.conv2"}
    assert report["diagnostics"]["search"]["value"] == 0.6
    assert lp.load(pruned).lp_extra["pruning"]["tau"] == 0.6


def test_sparse_train_towards_a_target_then_the_vote_lands_on_it(tmp_path):
    out = tmp_path / "S"
    proc = _run("--quiet", "sparse-train", "--model", "resnet20", "--data", "synthetic", "--train-subset", "256",
                "--batch-size", "32", "--image-size", "16", "--no-progress", "--out", str(out), "--reg", "dwgl",
                "--lam", "0.05", "--epochs", "1", "--lr", "0.05", "--target-params", "0.5", "--json")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["regularizer"]["steer"] == {"target_macs": None, "target_params": 0.5, "keep_residual": False}
    assert summary["steering"][-1]["zero"] > 0
    proc = _run("prune", "--checkpoint", str(out / "model.pt"), "--method", "dwgl-vote", "--target-params", "0.5",
                "--out", str(tmp_path / "P.pt"), "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert abs(report["params_after"] / report["params_before"] - 0.5) <= 0.01


@pytest.mark.parametrize(
    "args, message",
    [
        (["sparse-train", "--model", "resnet20", "--data", "synthetic", "--lam", "-1", "--out", "X"], "lam"),
        (["sparse-train", "--model", "resnet20", "--data", "synthetic", "--lam", "0.1", "--alpha", "-2",
          "--out", "X"], "alpha"),
        (["prune", "--model", "resnet20", "--method", "l1", "--threshold", "0.1", "--out", "x.pt"], "dwgl-vote"),
        (["prune", "--model", "resnet20", "--method", "dwgl-vote", "--out", "x.pt"], "--threshold"),
        (["prune", "--model", "resnet20", "--method", "dwgl-vote", "--threshold", "0.1", "--target-macs", "0.5",
          "--out", "x.pt"], "not both"),
        (["prune", "--model", "resnet20", "--method", "dwgl-vote", "--threshold", "0.1", "--vote", "k-of-n",
          "--out", "x.pt"], "vote_k"),
    ],
)
def test_errors_are_clear(tmp_path, capsys, args, message):
    args = [str(tmp_path / a) if a in ("X", "x.pt") else a for a in args]
    assert main(["--quiet", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
