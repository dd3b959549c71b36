"""Iterative pruning (``prune.steps``): the geometric schedule, the config checks, a run in steps and its resume."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

import lassoprune as lp
from lassoprune.analysis import count
from lassoprune.errors import CheckpointError, LassopruneError
from lassoprune.io.model_file import layer_widths
from lassoprune.pipeline import parse_config, run_pipeline, run_stages
from lassoprune.pipeline import stages as pipeline_stages
from lassoprune.pipeline.config import RunConfig
from lassoprune.pipeline.run_dir import RunDirectory
from lassoprune.pruning import PruneSettings, StepRecord, geometric_schedule, prune_iteratively
from lassoprune.pruning.iterative import check_steps
from lassoprune.report.summary import check_summary

TARGET = 0.4
STEPS = 3
CONFIG = {
    "model": "resnet20",
    "data": {"name": "synthetic", "batch_size": 50},
    "pretrain": {"epochs": 1, "train_subset": 100},
    "prune": {"method": "l1", "target_macs": TARGET, "calib_size": 50, "steps": STEPS, "step_epochs": 1},
    "finetune": {"epochs": 1, "train_subset": 100},
    "evaluate": {"latency": False},
}


def _with_prune(**prune: Any) -> dict[str, Any]:
    return {**CONFIG, "prune": {**CONFIG["prune"], **prune}}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One run in three steps, start to finish."""
    root = tmp_path_factory.mktemp("iterative") / "run"
    run_pipeline(parse_config(CONFIG), root, progress=False)
    return root


def _state(root: Path) -> dict[str, Any]:
    return json.loads((root / "state.json").read_text())["stages"]


def test_the_schedule_is_geometric_and_ends_at_the_target() -> None:
    schedule = geometric_schedule(0.3, 4)
    assert schedule[-1] == 0.3 and len(schedule) == 4
    assert list(schedule) == pytest.approx([0.3 ** (i / 4) for i in range(1, 5)])
    steps = [schedule[0]] + [b / a for a, b in zip(schedule, schedule[1:])]
    assert steps == pytest.approx([0.3 ** 0.25] * 4)  # every step keeps the same fraction of the one before
    assert geometric_schedule(0.5, 1) == (0.5,)
    for bad in (0, -1, True):
        with pytest.raises(LassopruneError, match="steps must be an integer >= 1"):
            geometric_schedule(0.5, bad)
    with pytest.raises(LassopruneError, match=r"in \(0, 1\)"):
        geometric_schedule(1.0, 2)


def test_steps_are_checked_before_any_compute() -> None:
    with pytest.raises(LassopruneError, match="prune.steps must be an integer >= 1"):
        parse_config(_with_prune(steps=0))
    with pytest.raises(LassopruneError, match="prune.step_epochs must be >= 0"):
        parse_config(_with_prune(step_epochs=-1))
    threshold = _with_prune(method="dwgl-vote", options={"threshold": 0.1})
    del threshold["prune"]["target_macs"]
    with pytest.raises(LassopruneError, match=r"prune.steps: 3 cuts need a size target.*prune.options.threshold"):
        parse_config(threshold)
    assert parse_config({**threshold, "prune": {**threshold["prune"], "steps": 1}}).prune.steps == 1
    with pytest.raises(LassopruneError, match="steps: 2 cuts need a size target"):
        check_steps(PruneSettings("l1"), steps=2)


def test_a_run_started_before_the_steps_keys_existed_still_resumes(tmp_path: Path) -> None:
    defaults = RunConfig().to_dict()
    config = parse_config(_with_prune(steps=1)).to_dict()
    old = {**config, "prune": {k: v for k, v in config["prune"].items() if k not in ("steps", "step_epochs")}}
    RunDirectory.open(tmp_path / "run", old)
    RunDirectory.open(tmp_path / "run", config, defaults=defaults)  # the new keys at their defaults: the same run
    changed = {**config, "prune": {**config["prune"], "steps": 3}}
    with pytest.raises(CheckpointError, match=r"changed: prune.steps\)"):
        RunDirectory.open(tmp_path / "run", changed, defaults=defaults)


def test_prune_iteratively_composes_keep_sets_back_to_the_original_channels() -> None:
    model = lp.create_model("resnet20", num_classes=10, in_channels=3)
    calls: list[int] = []
    settings = PruneSettings("l1", target_params=0.5, steps=2)
    result = prune_iteratively(model, torch.zeros(1, 3, 32, 32), settings,
                               finetune=lambda m, step: calls.append(step))
    assert calls == [1]  # fine-tuned between the cuts, not after the last
    assert [s.step for s in result.steps] == [1, 2] and [s.kind for s in result.steps] == ["params"] * 2
    assert result.steps[0].params_ratio == pytest.approx(0.5 ** 0.5, abs=0.01)
    assert abs(result.steps[-1].params_ratio - 0.5) <= 0.01
    assert model.conv1.out_channels == 16  # not in place: the original is untouched
    keep = result.keep["conv1"]  # the stem: its inputs are the image, so its kept filters are plain copies
    assert result.model.conv1.out_channels == len(keep) == result.widths["conv1"][0]
    assert torch.equal(result.model.conv1.weight, model.conv1.weight[list(keep)])
    assert set(result.steps[-1].keep["conv1"]) <= set(result.steps[0].keep["conv1"])
    record = result.steps[-1]
    assert StepRecord.from_dict(json.loads(json.dumps(record.to_dict()))) == record


def test_a_run_in_steps_meets_the_target_and_records_every_step(uninterrupted: Path) -> None:
    prune = _state(uninterrupted)["prune"]
    record = json.loads((uninterrupted / "prune" / "prune.json").read_text())
    assert record["target"] == {"kind": "macs", "ratio": TARGET}
    assert abs(record["macs_after"] / record["macs_before"] - TARGET) <= 0.01
    steps = prune["steps"]
    assert [s["step"] for s in steps] == [1, 2, 3] and record["steps"] == steps
    ratios = [s["macs_ratio"] for s in steps]
    assert ratios == sorted(ratios, reverse=True) and len(set(ratios)) == STEPS
    for step, target in zip(steps, geometric_schedule(TARGET, STEPS)):
        assert abs(step["macs_ratio"] - target) <= 0.01 and step["target"] == pytest.approx(target)
        assert step["one_shot"]["top1"] is not None
    assert [s["finetuned"] is not None for s in steps] == [True, True, False]  # the last: the finetune stage
    for step in (1, 2, 3):
        assert (uninterrupted / "prune" / f"step_{step}.json").is_file()
    # counts and per-group widths refer to the original model and agree with the pruned one
    example = torch.zeros(1, 3, 32, 32)
    assert count(lp.load(uninterrupted / "prune" / "model.pt"), example).macs == record["macs_after"]
    assert count(lp.load(uninterrupted / "pretrain" / "model.pt"), example).macs == record["macs_before"]
    first = json.loads((uninterrupted / "prune" / "step_1.json").read_text())
    assert {g: e["total"] for g, e in record["groups"].items()} == first["totals"]
    assert all(e["total"] >= e["kept"] >= 1 for e in record["groups"].values())
    summary = check_summary(json.loads((uninterrupted / "summary.json").read_text()))
    assert summary["prune_steps"] == steps
    summary["prune_steps"][0]["macs_ratio"] = 1.5
    with pytest.raises(LassopruneError, match=r"prune_steps\[0\].macs_ratio"):
        check_summary(summary)
    assert "### Pruning steps" in (uninterrupted / "report.md").read_text()


@pytest.mark.slow
def test_a_run_killed_in_the_second_step_resumes_to_the_same_model(
    uninterrupted: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = pipeline_stages.finetune
    root = tmp_path / "run"
    calls: list[tuple[str, int]] = []

    def killed_after_step_2_training(model: Any, loaders: Any, settings: Any, out_dir: Path, **kw: Any) -> Any:
        result = real(model, loaders, settings, out_dir, **kw)
        where = Path(out_dir).relative_to(root).as_posix()
        calls.append((where, result.resumed_from))
        if where == "prune/step_2/finetune" and len(calls) == 2:
            raise KeyboardInterrupt  # killed after the training, before the step was recorded
        return result

    monkeypatch.setattr(pipeline_stages, "finetune", killed_after_step_2_training)
    with pytest.raises(KeyboardInterrupt):
        run_stages(parse_config(CONFIG), root, progress=False)
    assert (root / "prune" / "step_1.json").is_file() and not (root / "prune" / "step_2.json").exists()
    assert (root / "prune" / "step_2" / "finetune" / "last.pt").is_file() and "prune" not in _state(root)

    calls.clear()
    run, _, ran = run_stages(parse_config(CONFIG), root, progress=False)
    assert ran == ["prune", "finetune", "evaluate"]
    # step 1 is not redone; step 2's fine-tuning resumes after its one finished epoch; then the finetune stage
    assert calls == [("prune/step_2/finetune", 1), ("finetune", 0)]
    _assert_same_run(root, uninterrupted, run)


def _assert_same_run(root: Path, reference: Path, run: RunDirectory) -> None:
    """Widths exactly, ratios and metrics within a tolerance."""
    for name in ("prune", "finetune"):
        assert layer_widths(lp.load(root / name / "model.pt")) == layer_widths(lp.load(reference / name / "model.pt"))
    mine, theirs = (json.loads((r / "prune" / "prune.json").read_text()) for r in (root, reference))
    assert {g: e["kept"] for g, e in mine["groups"].items()} == {g: e["kept"] for g, e in theirs["groups"].items()}
    for a, b in zip(mine["steps"], theirs["steps"]):
        assert a["macs_ratio"] == pytest.approx(b["macs_ratio"], abs=1e-12)
        for key in ("one_shot", "finetuned"):
            if b[key] is not None:
                assert math.isclose(a[key]["top1"], b[key]["top1"], abs_tol=0.011)
    final = _state(reference)["evaluate"]["metrics"]["top1"]
    assert run.stages["evaluate"]["metrics"]["top1"] == pytest.approx(final, abs=0.011)
