"""The one fine-tuning path: learning rate choice, the run directory, resume, the model back on the CPU."""

import json
from pathlib import Path

import pytest
import torch

import lassoprune as lp
from lassoprune.errors import LassopruneError
from lassoprune.pipeline import FinetuneSection
from lassoprune.pipeline.config import FINETUNE_LR as PIPELINE_FINETUNE_LR
from lassoprune.training.data_setup import Loaders, make_loaders
from lassoprune.training.finetune import (
    FINETUNE_LR,
    FINETUNE_LR_AFTER_RECONSTRUCTION,
    FinetuneSettings,
    finetune,
)


@pytest.fixture(scope="module")
def loaders() -> Loaders:
    return make_loaders("synthetic", image_size=16, batch_size=32, train_subset=64, seed=0)


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return lp.create_model("resnet20", num_classes=10, in_channels=3)


def test_learning_rate_follows_reconstruction_unless_given() -> None:
    assert FinetuneSettings().lr_after(reconstructed=False) == FINETUNE_LR
    assert FinetuneSettings().lr_after(reconstructed=True) == FINETUNE_LR_AFTER_RECONSTRUCTION
    assert FinetuneSettings(lr=0.3).lr_after(reconstructed=True) == 0.3


def test_the_pipeline_section_is_the_training_settings() -> None:
    assert FinetuneSection is FinetuneSettings and PIPELINE_FINETUNE_LR == FINETUNE_LR


def test_finetune_writes_a_run_returns_the_summary_and_leaves_the_model_on_cpu(loaders, tmp_path: Path) -> None:
    model = _model()
    result = finetune(model, loaders, FinetuneSettings(epochs=1), tmp_path / "ft", reconstructed=True, seed=3,
                      progress=False, model_extra={"image_size": 16})
    assert result.lr == FINETUNE_LR_AFTER_RECONSTRUCTION and result.resumed_from == 0
    assert all(p.device.type == "cpu" for p in model.parameters())
    summary = result.summary()
    assert list(summary) == ["lr", "top1", "top5", "worst_class", "epochs"] and summary["epochs"] == 1
    assert set(result.metrics) == {"top1", "top5", "worst_class", "per_class", "loss"}
    saved = json.loads((tmp_path / "ft" / "metrics.json").read_text())
    assert saved["top1"] == summary["top1"] and saved["config"]["lr"] == result.lr and saved["config"]["seed"] == 3
    assert lp.load(tmp_path / "ft" / "model.pt").lp_extra["metrics"] == {
        key: summary[key] for key in ("top1", "top5", "worst_class", "epochs")}


def test_finetune_resumes_a_finished_run_and_passes_training_options(loaders, tmp_path: Path) -> None:
    settings = FinetuneSettings(epochs=1, lr=0.02)
    options = {"weight_decay": 0.0, "schedule": "constant"}
    first = finetune(_model(), loaders, settings, tmp_path, options=options, progress=False)
    again = finetune(_model(), loaders, settings, tmp_path, options=options, progress=False)
    assert again.resumed_from == 1 and again.final == first.final
    saved = json.loads((tmp_path / "metrics.json").read_text())["config"]
    assert saved["schedule"] == "constant" and saved["weight_decay"] == 0.0 and saved["lr"] == 0.02


def test_finetune_without_training_batches_is_refused(tmp_path: Path) -> None:
    test_only = make_loaders("synthetic", image_size=16, with_train=False)
    with pytest.raises(LassopruneError, match="training batches"):
        finetune(_model(), test_only, FinetuneSettings(), tmp_path)
