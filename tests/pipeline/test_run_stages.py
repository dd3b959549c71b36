"""Held-out validation images and the pipeline's stage API (replaced stages, stop_after) used by studies."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

import lassoprune as lp
from lassoprune.data import BatchLoader, load_dataset
from lassoprune.errors import LassopruneError
from lassoprune.pipeline import StageContext, parse_config, run_stages
from lassoprune.pipeline.stages import MODEL_FILE, metrics_record
from lassoprune.training.data_setup import calibration_batches, make_loaders, split_validation

SMALL = {
    "model": "resnet20",
    "data": {"name": "synthetic", "batch_size": 50},
    "pretrain": {"epochs": 1, "train_subset": 300},
    "prune": {"method": "l1", "target_macs": 0.5, "calib_size": 100},
    "finetune": {"epochs": 1, "train_subset": 200},
    "evaluate": {"latency": False},
}


def _image_keys(batches: Any) -> set[bytes]:
    """One key per image (its exact bytes after the loader's transform)."""
    return {image.numpy().tobytes() for images, _ in batches for image in images}


def test_validation_holdout_is_stratified_disjoint_and_the_same_for_every_seed() -> None:
    train = load_dataset("synthetic", split="train")
    rest, held = split_validation(train, 200)
    assert held is not None and len(held) == 200 and len(rest) == len(train) - 200
    assert torch.bincount(held.labels, minlength=10).tolist() == [20] * 10
    a, b = make_loaders("synthetic", image_size=32, validation_size=200, seed=0), \
        make_loaders("synthetic", image_size=32, validation_size=200, seed=5)
    assert a.validation is not None and b.validation is not None
    assert _image_keys(a.validation) == _image_keys(b.validation) == _image_keys(
        BatchLoader(held, batch_size=100, image_size=32))
    whole = _image_keys(BatchLoader(train, batch_size=100, image_size=32))
    assert _image_keys(a.validation) | _image_keys(BatchLoader(rest, batch_size=100, image_size=32)) == whole
    assert len(a.train.dataset) == len(train) - 200


def test_training_and_calibration_never_see_the_held_out_images() -> None:
    loaders = make_loaders("synthetic", image_size=32, validation_size=800, batch_size=50, augment=False)
    held = _image_keys(loaders.validation)
    assert not held & _image_keys(loaders.train)
    # 200 images are left (20 per class): a 200-image balanced calibration set is exactly them
    calib = calibration_batches("synthetic", image_size=32, size=200, validation_size=800, seed=3)
    assert not held & _image_keys(calib)
    assert _image_keys(calib) == _image_keys(loaders.train)


def test_validation_size_out_of_range_says_the_limit() -> None:
    with pytest.raises(LassopruneError, match=r"validation_size must be in \[0, 999\]"):
        make_loaders("synthetic", image_size=32, validation_size=1000)


def test_validation_split_needs_held_out_images() -> None:
    with pytest.raises(LassopruneError, match="data.validation_size"):
        parse_config({**SMALL, "evaluate": {"split": "validation"}})
    with pytest.raises(LassopruneError, match="evaluate.split"):
        parse_config({**SMALL, "evaluate": {"split": "train"}})


def test_a_run_judged_on_validation_reports_validation_accuracy(tmp_path: Path) -> None:
    config = parse_config({**SMALL, "data": {**SMALL["data"], "validation_size": 100},
                           "evaluate": {"split": "validation", "latency": False}})
    run, ctx, _ = run_stages(config, tmp_path / "run", progress=False, stop_after="pretrain")
    assert len(ctx.test.dataset) == 100
    model = lp.load(run.path("pretrain", MODEL_FILE))
    expected = lp.evaluate(model, make_loaders("synthetic", image_size=32, validation_size=100).validation, 10)
    assert run.stages["pretrain"]["metrics"]["top1"] == pytest.approx(expected.top1)


def test_replaced_stages_run_in_place_of_the_library_ones_and_stop_after_stops(tmp_path: Path) -> None:
    calls: list[str] = []

    def sparse(ctx: StageContext) -> dict[str, Any]:
        calls.append("sparse")
        model = lp.load(ctx.run.path("pretrain", MODEL_FILE))
        lp.save(model, ctx.run.path("sparse", MODEL_FILE))
        return {"model": f"sparse/{MODEL_FILE}", "metrics": metrics_record(ctx.evaluate(model))}

    config = parse_config(SMALL)  # no sparse section: a replaced sparse stage still runs
    run, _, ran = run_stages(config, tmp_path / "run", progress=False, replace={"sparse": sparse},
                             extra_state={"study": "x"}, stop_after="prune")
    assert ran == ["pretrain", "sparse", "prune"] and calls == ["sparse"]
    assert run.stages["prune"]["source"] == "sparse/model.pt"
    assert not run.path("finetune").exists()
    assert json.loads(run.path("state.json").read_text())["config"]["study"] == "x"
    _, _, ran = run_stages(config, tmp_path / "run", progress=False, replace={"sparse": sparse},
                           extra_state={"study": "x"})
    assert ran == ["finetune", "evaluate"] and calls == ["sparse"]


def test_unknown_stage_names_are_refused() -> None:
    with pytest.raises(LassopruneError, match="unknown stage.*prun"):
        run_stages(parse_config(SMALL), "unused", replace={"prun": lambda ctx: {}})
    with pytest.raises(LassopruneError, match="unknown stage.*report"):
        run_stages(parse_config(SMALL), "unused", stop_after="report")


def test_reconstructing_run_reports_one_shot_accuracy_without_and_with_and_per_layer_errors(tmp_path: Path) -> None:
    from lassoprune.pipeline import run_pipeline

    config = parse_config({**SMALL, "prune": {**SMALL["prune"], "reconstruct": True}})
    outcome = run_pipeline(config, tmp_path / "run", progress=False)
    summary = outcome.summary
    assert summary["metrics"]["unreconstructed"] is not None and summary["metrics"]["pruned"] is not None
    layers = summary["reconstruction"]
    assert layers and all(layer["error_after"] <= layer["error_before"] + 1e-9 for layer in layers)
    report = (tmp_path / "run" / "report.md").read_text()
    assert "### Reconstruction" in report and "unreconstructed" in report
    assert json.loads((tmp_path / "run" / "prune" / "prune.json").read_text())["reconstruction"] == layers
