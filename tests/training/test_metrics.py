"""One metric vocabulary: today's names are written, older files (the shipped models among them) still read."""

import json
from pathlib import Path

import pytest

from lassoprune.io import read_model_file
from lassoprune.pretrained import resolve_model_path
from lassoprune.training.metrics import (
    current_epoch_record,
    current_extra,
    current_keys,
    model_metrics,
    read_history,
    read_run_metrics,
)

OLD_EPOCH = {"epoch": 1, "train_loss": 0.9, "train_top1": 0.6, "images_per_s": 100.0, "lr": 0.01,
             "test_top1": 0.7, "test_top5": 0.99, "test_loss": 0.8, "test_worst_class": 0.4, "seconds": 2.0}
NEW_EPOCH = {"epoch": 1, "images_per_s": 100.0, "lr": 0.01, "seconds": 2.0, "train": {"loss": 0.9, "top1": 0.6},
             "test": {"top1": 0.7, "top5": 0.99, "loss": 0.8, "worst_class": 0.4}}


@pytest.mark.parametrize("name", ["resnet20-fashion-mnist", "resnet56-fashion-mnist",
                                  "resnet56-fashion-mnist-2ep"])
def test_shipped_model_metadata_reads_in_todays_names(name: str) -> None:
    extra = read_model_file(resolve_model_path(f"pretrained:{name}")).extra
    metrics = model_metrics(extra)
    assert metrics is not None and set(metrics) == {"top1", "top5", "worst_class", "epochs"}
    assert 0.8 < metrics["top1"] <= metrics["top5"] <= 1.0 and metrics["worst_class"] < metrics["top1"]
    assert set(current_extra(extra)["metrics"]) == set(metrics)


def test_shipped_resnet20_metrics_are_the_documented_ones() -> None:
    extra = read_model_file(resolve_model_path("pretrained:resnet20-fashion-mnist")).extra
    assert model_metrics(extra) == {"top1": 0.9431, "top5": 0.9996, "worst_class": 0.81, "epochs": 30}


def test_old_keys_are_renamed_and_todays_win() -> None:
    old = {"test_top1": 0.5, "test_top5": 0.9, "test_loss": 1.0, "test_worst_class": 0.1,
           "per_class_accuracy": {"a": 0.1}, "confusion_matrix": [[1]], "test_samples": 1, "epochs": 2}
    assert current_keys(old) == {"top1": 0.5, "top5": 0.9, "loss": 1.0, "worst_class": 0.1, "per_class": {"a": 0.1},
                                 "confusion": [[1]], "num_samples": 1, "epochs": 2}
    assert current_keys({"top1": 0.7, "test_top1": 0.5}) == {"top1": 0.7}
    assert model_metrics({"image_size": 32}) is None and current_extra({"image_size": 32}) == {"image_size": 32}


def test_epoch_records_move_under_their_split() -> None:
    assert current_epoch_record(OLD_EPOCH) == NEW_EPOCH
    assert current_epoch_record(NEW_EPOCH) == NEW_EPOCH


def test_old_run_files_read_in_todays_names(tmp_path: Path) -> None:
    (tmp_path / "metrics.jsonl").write_text(json.dumps(OLD_EPOCH) + "\n" + json.dumps(NEW_EPOCH) + "\n")
    assert read_history(tmp_path / "metrics.jsonl") == [NEW_EPOCH, NEW_EPOCH]
    old_run = {"test_top1": 0.7, "test_samples": 10, "per_class_accuracy": {"a": 0.7}, "epochs": 1,
               "config": {"lr": 0.01}, "history": [OLD_EPOCH]}
    (tmp_path / "metrics.json").write_text(json.dumps(old_run))
    read = read_run_metrics(tmp_path / "metrics.json")
    assert read["top1"] == 0.7 and read["num_samples"] == 10 and read["per_class"] == {"a": 0.7}
    assert read["history"] == [NEW_EPOCH] and not any(key.startswith("test_") for key in read)
