"""The foundation's acceptance run end to end (about a minute on 2 cores; `make test-slow`)."""

import json
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_two_epoch_fashion_mnist_run_reaches_80_percent_and_eval_reproduces_it(tmp_path):
    run = tmp_path / "RUN"
    train = subprocess.run(
        [sys.executable, "-m", "lassoprune", "--quiet", "train", "--model", "resnet20", "--data", "fashion-mnist",
         "--epochs", "2", "--train-subset", "10000", "--seed", "0", "--out", str(run), "--no-progress"],
        capture_output=True, text=True, timeout=1800,
    )
    assert train.returncode == 0, train.stderr
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["num_samples"] == 10000 and metrics["top1"] >= 0.80
    assert len(metrics["per_class"]) == 10
    evaluated = subprocess.run(
        [sys.executable, "-m", "lassoprune", "eval", "--checkpoint", str(run / "model.pt"), "--data", "fashion-mnist",
         "--json"],
        capture_output=True, text=True, timeout=600,
    )
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads(evaluated.stdout)["top1"] == pytest.approx(metrics["top1"], abs=1e-9)


@pytest.mark.slow
def test_demo_config_prunes_the_shipped_resnet56_and_writes_the_report(tmp_path):
    """`make demo`'s job: sglp-ib to 50% MACs, one fine-tuning epoch, a report with plots (a few minutes)."""
    run = tmp_path / "demo"
    proc = subprocess.run(
        [sys.executable, "-m", "lassoprune", "run", "configs/demo.yaml", "--out", str(run), "--no-progress", "--json"],
        capture_output=True, text=True, timeout=1800,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)
    assert abs(summary["macs_after"] / summary["macs_before"] - 0.5) <= 0.01
    assert summary["method"] == "sglp-ib" and summary["class_structure"]["kind"] == "graph"
    assert summary["metrics"]["final"]["top1"] >= 0.80
    for name in ("report.md", "report.json", "summary.json"):
        assert (run / name).is_file()
    assert len(list(run.glob("*.png"))) >= 3
