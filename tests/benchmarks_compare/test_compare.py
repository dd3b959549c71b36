"""benchmarks/compare.py: every phase of the protocol runs end to end through the library's pipeline stages,
resumes without redoing rows, chooses learning rates on held-out training images only, and reports
mean ± SE with the two-standard-error marks (the statistics themselves: test_bench.py)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from benchmark_modules import load

import lassoprune as lp
from lassoprune.pipeline import parse_config
from lassoprune.training import TrainConfig, fit
from lassoprune.training.data_setup import make_loaders

load("compare_peers")
compare = load("compare")


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ResNet-20 trained for two epochs on the synthetic dataset (the tiny profile's baseline)."""
    lp.seed_everything(0)
    model = lp.create_model("resnet20", num_classes=10, in_channels=3)
    loaders = make_loaders("synthetic", image_size=32, batch_size=50)
    fit(model, loaders.train, loaders.test, TrainConfig(epochs=2, lr=0.05, seed=0), num_classes=10,
        progress=False)
    path = tmp_path_factory.mktemp("baseline") / "resnet20.pt"
    lp.save(model.to("cpu"), path, extra={"dataset": "synthetic", "image_size": 32})
    return path


@pytest.fixture(scope="module")
def tiny_run(baseline: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    runs = tmp_path_factory.mktemp("compare")
    compare.main(["--tiny", "--runs", str(runs), "--checkpoint", f"resnet20={baseline}", "--no-progress",
                  "--methods", "l1", "hsic-ib", "tp-group-sl"])
    return runs


@pytest.mark.slow
def test_every_phase_finishes_every_row(tiny_run: Path) -> None:
    results = json.loads((tiny_run / "results.json").read_text())
    profile = compare.PROFILES["tiny"]
    methods = {"l1", "hsic-ib", "tp-group-sl"}
    assert {(r["method"], r["lr"]) for r in results["select"]} == {
        (m, lr) for m in methods for lr in profile.lr_candidates}
    assert [r["method"] for r in results["pilot"]] == ["l1"]
    assert len(results["pilot"][0]["epoch_top1"]) == profile.pilot_epochs
    assert {(r["method"], r["seed"]) for r in results["table"]} == {(m, s) for m in methods for s in (0, 1)}
    for r in results["table"]:
        assert abs(r["macs_ratio"] - 0.5) <= compare.TOLERANCE
        assert 0.0 <= r["final_top1"] <= 1.0
    assert (tiny_run / "tradeoff-resnet20.png").stat().st_size > 1000
    assert "vs best" in (tiny_run / "table.md").read_text()


@pytest.mark.slow
def test_table_rows_use_the_learning_rate_chosen_on_validation(tiny_run: Path) -> None:
    results = json.loads((tiny_run / "results.json").read_text())
    for r in results["table"]:
        scores = {s["lr"]: s["final_top1"] for s in results["select"] if s["method"] == r["method"]}
        assert scores[r["lr"]] == max(scores.values())


@pytest.mark.slow
def test_select_and_pilot_are_judged_on_held_out_training_images_and_the_table_on_test(tiny_run: Path) -> None:
    for phase in ("select", "pilot", "table"):
        for state in (tiny_run / phase).glob("*/*/*/state.json"):
            config = parse_config({k: v for k, v in json.loads(state.read_text())["config"].items()
                                   if k != "benchmark_row"})
            held_out = phase != "table"
            assert (config.evaluate.split == "validation") == held_out
            assert (config.data.validation_size > 0) == held_out


@pytest.mark.slow
def test_sparse_model_is_trained_once_and_shared_by_every_target_and_phase(tiny_run: Path) -> None:
    shared = sorted(p.name for p in (tiny_run / "sparse" / "resnet20").iterdir())
    assert shared == ["tp-group-sl-s0", "tp-group-sl-s1"]
    sources = {json.loads(s.read_text())["stages"]["sparse"]["shared"]
               for s in tiny_run.glob("*/resnet20/tp-group-sl/*/state.json")}
    assert sources == {"sparse/resnet20/tp-group-sl-s0", "sparse/resnet20/tp-group-sl-s1"}
    for state in tiny_run.glob("*/resnet20/tp-group-sl/*/state.json"):
        assert json.loads(state.read_text())["stages"]["prune"]["model"] == "prune/model.pt"


@pytest.mark.slow
def test_a_rerun_does_no_work_and_gives_the_same_report(tiny_run: Path, baseline: Path) -> None:
    before = (tiny_run / "results.json").read_text()
    stamps = {p: p.stat().st_mtime_ns for p in tiny_run.glob("*/*/*/*/state.json")}
    compare.main(["--tiny", "--runs", str(tiny_run), "--checkpoint", f"resnet20={baseline}", "--no-progress",
                  "--methods", "l1", "hsic-ib", "tp-group-sl"])
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert (tiny_run / "results.json").read_text() == before


def test_table_before_select_says_what_to_run(tmp_path: Path, baseline: Path) -> None:
    with pytest.raises(SystemExit, match="--phase select"):
        compare.main(["--tiny", "--phase", "table", "--runs", str(tmp_path), "--checkpoint",
                      f"resnet20={baseline}", "--methods", "l1"])


def test_shards_split_whole_units_and_cover_every_row() -> None:
    rows = [compare.Row("table", "resnet20", m, t, s, 0.01, 2)
            for s in (0, 1) for m in ("l1", "dwgl", "random") for t in (0.5, 0.33)]
    shares = [compare.shard(rows, i, 2) for i in range(2)]
    assert sorted(map(repr, shares[0] + shares[1])) == sorted(map(repr, rows))
    units = [{(r.method, r.seed) for r in share} for share in shares]
    assert not units[0] & units[1]


@pytest.mark.slow
def test_a_table_can_take_its_learning_rates_from_another_studys_select_phase(
        tiny_run: Path, baseline: Path, tmp_path: Path) -> None:
    compare.main(["--tiny", "--phase", "table", "--runs", str(tmp_path), "--select-runs", str(tiny_run),
                  "--checkpoint", f"resnet20={baseline}", "--no-progress", "--methods", "l1"])
    results = json.loads((tmp_path / "results.json").read_text())
    assert not (tmp_path / "select").exists()
    assert {r["lr"] for r in results["table"]} == {compare.chosen_lr(compare.PROFILES["tiny"], tiny_run, "l1")}
    assert len(results["table"]) == 2


def test_the_short_profile_differs_from_the_standard_only_in_its_fine_tuning_and_rows() -> None:
    short, standard = compare.PROFILES["short"], compare.PROFILES["standard"]
    assert short.select_from == "standard"
    for field in ("lr_candidates", "select_epochs", "select_subset", "select_target", "validation_size",
                  "calib_size", "batch_size", "checkpoints", "dataset"):
        assert getattr(short, field) == getattr(standard, field), field
    assert short.finetune_epochs * (short.finetune_subset or 60_000) < standard.finetune_epochs * 60_000 / 10


def test_every_profile_row_is_a_valid_pipeline_config(tmp_path: Path) -> None:
    for name in ("standard", "full", "short"):
        profile = compare.PROFILES[name]
        for model in profile.models:
            for method in profile.methods:
                row = compare.Row("table", model, method, profile.targets[-1], 0, 0.01, profile.finetune_epochs)
                config = compare.row_config(profile, row)
                assert parse_config(config.to_dict()) == config



def test_the_dwgl_paper_rows_train_equal_epochs_and_steer_towards_their_own_target(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    profile = compare.PROFILES["dwgl-paper"]
    for method in profile.methods:  # fixed rates stand in for a select phase that has not run
        monkeypatch.setitem(compare.METHODS, method, dataclasses.replace(compare.METHODS[method], lr=0.01))
    rows = compare.table_rows(profile, tmp_path, profile.models, profile.methods, ())
    epochs = {r.method: r.epochs for r in rows}
    assert epochs["sglp-ib-rc"] == profile.finetune_epochs + profile.sparse_epochs
    assert {epochs[m] for m in ("dwgl", "group-lasso", "tp-group-sl")} == {profile.finetune_epochs}
    assert {(r.target, r.target_params) for r in rows if r.method == "tp-group-sl"} == {(None, 0.25), (0.5, None)}
    for row in rows:
        config = compare.row_config(profile, row)
        assert parse_config(config.to_dict()) == config
        if row.method in ("dwgl", "group-lasso"):
            assert config.sparse.regularizer == row.method and config.sparse.steer
            assert (config.prune.target_macs, config.prune.target_params) == (row.target, row.target_params)


def _prune_record(runs: Path, method: str) -> dict:
    (state,) = (runs / "table" / "resnet20" / method).glob("*/state.json")
    return json.loads(state.read_text())["stages"]["prune"]


@pytest.mark.slow
def test_a_profile_copies_another_studys_cut_only_where_it_is_the_cut_it_would_make(
        baseline: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    oneshot = dataclasses.replace(compare.PROFILES["tiny"], name="tiny-oneshot", finetune_epochs=0,
                                  seeds={"resnet20": (0,)}, methods=("l1", "random"))
    short = dataclasses.replace(oneshot, name="tiny-short", finetune_epochs=1, fixed_lr=0.01,
                                cuts_from="tiny-oneshot")
    other_calibration = dataclasses.replace(short, name="tiny-short-calib", calib_size=oneshot.calib_size // 2)
    for profile in (oneshot, short, other_calibration):
        monkeypatch.setitem(compare.PROFILES, profile.name, profile)
    common = ["--checkpoint", f"resnet20={baseline}", "--no-progress", "--cuts-runs", str(tmp_path / "oneshot")]
    compare.main(["--tiny-oneshot", "--runs", str(tmp_path / "oneshot"), "--methods", "l1", *common])
    compare.main(["--tiny-short", "--runs", str(tmp_path / "short"), "--methods", "l1", "random", *common])
    compare.main(["--tiny-short-calib", "--runs", str(tmp_path / "calib"), "--methods", "l1", *common])

    source, copied = _prune_record(tmp_path / "oneshot", "l1"), _prune_record(tmp_path / "short", "l1")
    assert copied["reused_from"] and copied["metrics"] == source["metrics"]
    (source_dir,) = (tmp_path / "oneshot" / "table" / "resnet20" / "l1").glob("*")
    (copied_dir,) = (tmp_path / "short" / "table" / "resnet20" / "l1").glob("*")
    for name, tensor in lp.load(source_dir / "prune" / "model.pt").state_dict().items():
        assert tensor.equal(lp.load(copied_dir / "prune" / "model.pt").state_dict()[name]), name
    assert "reused_from" not in _prune_record(tmp_path / "short", "random")  # no such row in the source
    assert "reused_from" not in _prune_record(tmp_path / "calib", "l1")  # another calibration: its own cut
    results = json.loads((tmp_path / "short" / "results.json").read_text())["table"]
    assert {(r["method"], r["lr"], r["epochs"]) for r in results} == {("l1", 0.01, 1), ("random", 0.01, 1)}
