"""The command line: JSON outputs, train -> eval in a new process, clear errors without tracebacks."""

import json
import subprocess
import sys

import pytest

from lassoprune.cli import main
from lassoprune.models import list_models, model_entry
from tests.marks import fast_only

#: `lassoprune info` in `make test`: the zoo's layouts (an ImageNet ResNet at --image-size 64); the rest run slow.
FAST_INFO = ("resnet20", "vgg16", "mobilenetv2", "densenet40", "resnet18")


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lassoprune", *args], capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("name", fast_only(list_models(), FAST_INFO))
def test_info_json_has_integer_macs_and_params(name, capsys):
    size = model_entry(name).default_image_size
    args = ["info", "--model", name, "--num-classes", "10", "--json"]
    if size == 224:
        args += ["--image-size", "64"]  # keeps the suite fast; 224 is checked in the counting tests
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert isinstance(report["macs"], int) and report["macs"] > 0
    assert isinstance(report["params"], int) and report["params"] > 0
    assert report["model"] == name


def test_info_resnet56_matches_published_macs(capsys):
    assert main(["info", "--model", "resnet56", "--num-classes", "10", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["macs"] == pytest.approx(127e6, rel=0.01)


def test_unknown_model_lists_valid_names():
    proc = _run("info", "--model", "resnet57")
    assert proc.returncode == 2
    assert "unknown model 'resnet57'" in proc.stderr and "resnet56" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_unknown_dataset_lists_valid_names(tmp_path):
    proc = _run("train", "--model", "resnet20", "--data", "cifar11", "--out", str(tmp_path / "r"))
    assert proc.returncode == 2
    assert "cifar10" in proc.stderr and "fashion-mnist" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_corrupted_checkpoint_is_a_clear_error(tmp_path):
    bad = tmp_path / "model.pt"
    bad.write_bytes(b"not a model")
    proc = _run("eval", "--checkpoint", str(bad), "--data", "synthetic")
    assert proc.returncode == 2
    assert "corrupted" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_train_then_eval_in_a_new_process_reproduces_accuracy(tmp_path):
    run = tmp_path / "run"
    proc = _run("--quiet", "train", "--model", "resnet20", "--data", "synthetic", "--epochs", "1",
                "--batch-size", "32", "--lr", "0.05", "--out", str(run), "--json", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    trained = json.loads(proc.stdout)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["top1"] == trained["top1"]
    assert 0.0 <= metrics["top1"] <= 1.0 and len(metrics["per_class"]) == 10

    proc = _run("eval", "--checkpoint", str(run / "model.pt"), "--data", "synthetic", "--json")
    assert proc.returncode == 0, proc.stderr
    evaluated = json.loads(proc.stdout)
    assert evaluated["top1"] == pytest.approx(metrics["top1"], abs=1e-9)
    assert evaluated["per_class"] == pytest.approx(metrics["per_class"])

    # a second train into the same directory refuses to overwrite it
    proc = _run("train", "--model", "resnet20", "--data", "synthetic", "--epochs", "1", "--out", str(run))
    assert proc.returncode == 2 and "--resume" in proc.stderr


def test_help_explains_the_commands():
    proc = _run("--help")
    assert proc.returncode == 0
    for command in ("train", "eval", "info", "fetch"):
        assert command in proc.stdout
