"""The staged pipeline (`lassoprune run`): config validation, artefacts, resume after a kill."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

import lassoprune as lp
from lassoprune.errors import CheckpointError, LassopruneError, UnknownNameError
from lassoprune.pipeline import apply_overrides, load_config, parse_config, run_pipeline

SMALL = {
    "model": "resnet20",
    "data": {"name": "synthetic", "batch_size": 50},
    "pretrain": {"epochs": 1, "train_subset": 500},
    "prune": {"method": "stlp-ib", "target_macs": 0.4, "calib_size": 100, "round_to": "auto"},
    "finetune": {"epochs": 1, "train_subset": 300},
    "evaluate": {"latency": True, "latency_batch": 4},
}


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lassoprune", *args], capture_output=True, text=True,
                          env=_env(), timeout=timeout)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- configuration ------------------------------------------------------------------------------------

def test_config_round_trips_through_yaml(tmp_path: Path) -> None:
    config = parse_config(SMALL)
    file = tmp_path / "c.yaml"
    file.write_text(yaml.safe_dump(config.to_dict()))
    assert load_config(file) == config
    assert config.prune.method == "stlp-ib" and config.finetune.train_subset == 300
    assert config.sparse is None and config.evaluate.latency_batch == 4


@pytest.mark.parametrize(
    ("patch", "kind", "valid"),
    [
        ({"prune": {"method": "sglp", "target_macs": 0.5}}, "pruning method", "sglp-ib"),
        ({"data": {"name": "cifar11"}}, "dataset", "cifar10"),
        ({"model": "resnet57"}, "model", "resnet56"),
        ({"finetune": {"epoch": 1}}, "key", "epochs"),
        ({"colour": "blue"}, "key", "prune"),
        ({"sparse": {"regularizer": "l0"}}, "regularizer", "dwgl"),
        ({"prune": {"method": "sglp-ib", "target_macs": 0.5, "options": {"pol": 4}}}, "option", "pool"),
        ({"pretrain": {"checkpoint": "pretrained:resnet57"}}, "pretrained model", "resnet56-fashion-mnist"),
    ],
)
def test_unknown_names_fail_with_the_valid_choices(patch: dict, kind: str, valid: str) -> None:
    with pytest.raises(UnknownNameError) as info:
        parse_config({**SMALL, **patch})
    assert kind in str(info.value) and valid in str(info.value)


@pytest.mark.parametrize(
    "patch",
    [
        {"prune": {"method": "l1"}},  # no target
        {"prune": {"method": "l1", "target_macs": 1.5}},
        {"prune": {"method": "l1", "target_macs": 0.5, "target_params": 1.2}},
        {"finetune": {"epochs": -1}},
        {"finetune": {"epochs": "two"}},
        {"data": "fashion-mnist"},
        {"prune": {"method": "l1", "target_macs": 0.5, "options": {"pool": 2}}},
        {"pretrain": {"checkpoint": "no/such/model.pt"}},
        {"prune": {"method": "l1", "target_macs": 0.5, "round_to": "wide"}},
        {"prune": {"method": "l1", "target_macs": 0.5, "round_to": 0}},
    ],
)
def test_bad_values_fail_before_any_compute(patch: dict) -> None:
    with pytest.raises(LassopruneError):
        parse_config({**SMALL, **patch})


def test_overrides_set_nested_keys_and_parse_scalars() -> None:
    document = apply_overrides(SMALL, ["prune.target_macs=0.3", "sparse.regularizer=dwgl", "evaluate.latency=false"])
    config = parse_config(document)
    assert config.prune.target_macs == 0.3 and config.prune.method == "stlp-ib"
    assert config.sparse is not None and config.sparse.regularizer == "dwgl" and config.evaluate.latency is False
    assert SMALL["prune"]["target_macs"] == 0.4  # the input is not modified
    with pytest.raises(LassopruneError, match="KEY=VALUE"):
        apply_overrides(SMALL, ["prune.target_macs"])


def test_cli_rejects_an_unknown_method_before_creating_anything(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({**SMALL, "prune": {"method": "magic", "target_macs": 0.5}}))
    proc = _cli("run", str(config), "--out", str(tmp_path / "run"), timeout=60)
    assert proc.returncode == 2
    assert "unknown pruning method 'magic'" in proc.stderr and "sglp-ib" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "run").exists()


# --- a whole run ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("pipeline") / "run"
    outcome = run_pipeline(parse_config(SMALL), root, progress=False)
    assert outcome.ran == ("pretrain", "prune", "finetune", "evaluate")
    return root, outcome.summary


def test_every_stage_writes_its_artefacts(finished_run: tuple[Path, dict]) -> None:
    root, _ = finished_run
    for name in ("config.yaml", "state.json", "summary.json", "pretrain/model.pt", "pretrain/metrics.json",
                 "prune/model.pt", "prune/prune.json", "finetune/model.pt", "finetune/last.pt",
                 "evaluate/metrics.json", "report.md", "report.json"):
        assert (root / name).is_file(), name
    assert len(list(root.glob("*.png"))) >= 3


def test_summary_agrees_with_the_model_files(finished_run: tuple[Path, dict]) -> None:
    root, summary = finished_run
    final = lp.load(root / "finetune" / "model.pt")
    counted = lp.count(final, (1, 3, 32, 32))  # synthetic images: 3 x 32 x 32
    assert counted.macs == summary["macs_after"]
    assert abs(summary["macs_after"] / summary["macs_before"] - 0.4) <= 0.01
    assert {g["id"]: (g["kept"], g["total"]) for g in summary["groups"]} == {
        gid: (g["kept"], g["total"]) for gid, g in json.loads((root / "prune" / "prune.json").read_text())["groups"].items()
    }
    assert summary["class_structure"]["kind"] == "tree"
    dense = json.loads((root / "pretrain" / "metrics.json").read_text())
    assert summary["metrics"]["baseline"]["top1"] == dense["top1"]
    assert len(summary["metrics"]["final"]["per_class"]) == 10
    assert summary["latency"]["speedup"] == pytest.approx(
        summary["latency"]["before_ms"] / summary["latency"]["after_ms"])


def test_auto_round_to_is_the_widest_step_that_reaches_the_target(finished_run: tuple[Path, dict]) -> None:
    """``round_to: auto``: the widest of 16, 8, 4, free that reaches the target; widths follow it."""
    from lassoprune.errors import UnreachableTargetError
    from lassoprune.pipeline.config import AUTO_ROUND_TO

    root, _ = finished_run
    step = json.loads((root / "state.json").read_text())["stages"]["prune"]["round_to"]
    assert step in AUTO_ROUND_TO
    dense = lp.load(root / "pretrain" / "model.pt")
    example = torch.zeros(1, 3, 32, 32)
    for wider in AUTO_ROUND_TO[: AUTO_ROUND_TO.index(step)]:  # every wider step cannot reach 0.4
        with pytest.raises(UnreachableTargetError):
            lp.prune(dense, example, method="l1", target_macs=SMALL["prune"]["target_macs"], round_to=wider,
                     prune_residual=False)
    pruned = lp.load(root / "prune" / "model.pt")
    full = {n: m.out_channels for n, m in dense.named_modules() if isinstance(m, torch.nn.Conv2d)}
    for name, module in pruned.named_modules():
        if isinstance(module, torch.nn.Conv2d) and module.out_channels < full[name]:
            assert module.out_channels % (step or 1) == 0, (name, module.out_channels, step)


def test_rerun_of_a_finished_run_does_nothing(finished_run: tuple[Path, dict]) -> None:
    root, summary = finished_run
    model = root / "finetune" / "model.pt"
    before = (_digest(model), model.stat().st_mtime_ns)
    outcome = run_pipeline(parse_config(SMALL), root, progress=False)
    assert outcome.ran == ()
    assert (_digest(model), model.stat().st_mtime_ns) == before
    assert outcome.summary["metrics"] == summary["metrics"]


def test_a_changed_config_is_refused_with_the_changed_keys(finished_run: tuple[Path, dict]) -> None:
    root, _ = finished_run
    changed = apply_overrides(SMALL, ["prune.target_macs=0.5"])
    with pytest.raises(CheckpointError, match="prune.target_macs"):
        run_pipeline(parse_config(changed), root, progress=False)


def test_a_directory_that_is_not_a_run_is_refused(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(CheckpointError, match="not empty"):
        run_pipeline(parse_config(SMALL), tmp_path, progress=False)


@pytest.mark.slow
def test_killed_during_finetune_resumes_without_redoing_earlier_stages(tmp_path: Path) -> None:
    root = tmp_path / "run"
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({**SMALL, "finetune": {"epochs": 4, "train_subset": 500}}))
    proc = subprocess.Popen([sys.executable, "-m", "lassoprune", "run", str(config), "--out", str(root),
                             "--no-progress"], env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    checkpoint = root / "finetune" / "last.pt"
    deadline = time.monotonic() + 240
    while not checkpoint.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    state = json.loads((root / "state.json").read_text())
    assert set(state["stages"]) == {"pretrain", "prune"}
    earlier = {p: (_digest(p), p.stat().st_mtime_ns) for p in (root / "pretrain" / "model.pt", root / "prune" / "model.pt")}

    resumed = _cli("run", str(config), "--out", str(root), "--no-progress", "--json")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "[pretrain] already finished" in resumed.stderr and "[prune] already finished" in resumed.stderr
    state = json.loads((root / "state.json").read_text())
    assert state["stages"]["finetune"]["resumed_from"] >= 1
    assert {p: (_digest(p), p.stat().st_mtime_ns) for p in earlier} == earlier
    assert len(json.loads((root / "finetune" / "metrics.json").read_text())["history"]) == 4
    summary = json.loads(resumed.stdout)
    assert summary["metrics"]["final"]["top1"] == state["stages"]["evaluate"]["metrics"]["top1"]


@pytest.mark.parametrize("path", sorted((Path(__file__).parents[2] / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_example_configs_are_valid(path: Path) -> None:
    config = load_config(path)
    assert config.prune.target_macs is not None or config.prune.target_params is not None


@pytest.mark.slow
def test_sparse_training_stage_feeds_the_vote(tmp_path: Path) -> None:
    """With `sparse:`, DWGL training runs before the cut and dwgl-vote prunes the sparse model to the target."""
    document = {**SMALL, "sparse": {"regularizer": "dwgl", "lam": 0.5, "epochs": 1, "train_subset": 300},
                "prune": {"method": "dwgl-vote", "target_macs": 0.5}, "evaluate": {"latency": False}}
    outcome = run_pipeline(parse_config(document), tmp_path / "run", progress=False)
    assert outcome.ran == ("pretrain", "sparse", "prune", "finetune", "evaluate")
    sparse = lp.load(tmp_path / "run" / "sparse" / "model.pt")
    assert sparse.lp_extra["stage"] == "sparse"
    assert abs(outcome.summary["macs_after"] / outcome.summary["macs_before"] - 0.5) <= 0.01
    assert outcome.summary["sparse"]["regularizer"] == "dwgl" and outcome.summary["latency"] is None
    steering = json.loads((tmp_path / "run" / "state.json").read_text())["stages"]["sparse"]["steering"]
    assert steering[0]["removed"] > 0 and steering[-1]["lam"] >= 0.5  # steered towards the prune target
