"""Latency measurement and ``lassoprune bench`` on tiny inputs with few repeats (fast; numbers not judged)."""

from __future__ import annotations

import json

import pytest
import torch
import torch_pruning as tp

import lassoprune as lp
from lassoprune.analysis.latency import LatencyResult, measure_latency, summarize, time_interleaved
from lassoprune.cli import main
from lassoprune.errors import LassopruneError, UnknownNameError

SIZE = 8  # CIFAR ResNets pool globally: 8x8 inputs keep every call well under a millisecond


def pruned_resnet20(ratio: float = 0.5) -> torch.nn.Module:
    torch.manual_seed(0)
    model = lp.create_model("resnet20", num_classes=10).eval()
    tp.pruner.MagnitudePruner(
        model, torch.randn(1, 3, SIZE, SIZE), importance=tp.importance.MagnitudeImportance(p=1),
        pruning_ratio=ratio, ignored_layers=[model.fc],
    ).step()  # fmt: skip
    return model


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_measure_latency_positive_and_restores_threads_and_mode(backend):
    model = pruned_resnet20().train()
    before = torch.get_num_threads()
    result = measure_latency(model, (2, 3, SIZE, SIZE), threads=1, warmup=1, repeats=3, backend=backend)
    assert isinstance(result, LatencyResult)
    assert result.backend == backend and result.batch_size == 2 and result.repeats == 3 and result.threads == 1
    assert 0 < result.min_ms <= result.median_ms <= result.p90_ms
    assert result.images_per_second > 0
    assert torch.get_num_threads() == before
    assert model.training


def test_summary_statistics():
    result = summarize([4.0, 1.0, 3.0, 2.0, 10.0], "torch", batch_size=1, threads=2)
    assert result.median_ms == 3.0 and result.min_ms == 1.0 and result.mean_ms == 4.0
    assert result.p90_ms == pytest.approx(7.6)  # linear interpolation between 4 and 10


def test_time_interleaved_alternates_runners():
    calls: list[str] = []
    samples = time_interleaved([lambda: calls.append("A"), lambda: calls.append("B")], warmup=1, repeats=2, threads=1)
    assert calls == ["A", "B"] * 3 and [len(s) for s in samples] == [2, 2]


def test_bad_backend_and_threads_are_clear_errors():
    model = pruned_resnet20()
    with pytest.raises(UnknownNameError, match="onnxruntime"):
        measure_latency(model, (1, 3, SIZE, SIZE), backend="tensorrt")
    with pytest.raises(LassopruneError, match="threads"):
        measure_latency(model, (1, 3, SIZE, SIZE), threads=0)


@pytest.fixture()
def model_files(tmp_path):
    dense, thin = tmp_path / "dense.safetensors", tmp_path / "pruned.safetensors"
    torch.manual_seed(0)
    lp.save(lp.create_model("resnet20", num_classes=10), dense, extra={"image_size": SIZE})
    lp.save(pruned_resnet20(), thin, extra={"image_size": SIZE})
    return dense, thin


def _bench(capsys, *args: str) -> dict:
    common = ["--batch-sizes", "1", "2", "--threads", "1", "--warmup", "1", "--repeats", "2", "--json"]
    assert main(["bench", *args, *common]) == 0
    return json.loads(capsys.readouterr().out)


def test_bench_two_files_json(model_files, capsys):
    dense, thin = model_files
    report = _bench(capsys, "--checkpoint", str(dense), "--against", str(thin))
    assert report["input_shape"] == [3, SIZE, SIZE]
    counted = [lp.count(lp.load(p), (1, 3, SIZE, SIZE)) for p in (dense, thin)]
    assert report["a"]["macs"] == counted[0].macs and report["b"]["macs"] == counted[1].macs
    assert report["mac_ratio"] == pytest.approx(counted[1].macs / counted[0].macs)
    assert 0 < report["mac_ratio"] < 0.5
    assert [(r["backend"], r["batch_size"]) for r in report["results"]] == [
        ("torch", 1), ("torch", 2), ("onnxruntime", 1), ("onnxruntime", 2)
    ]  # fmt: skip
    for row in report["results"]:
        for side in ("a", "b"):
            assert row[side]["median_ms"] > 0 and row[side]["p90_ms"] > 0 and row[side]["repeats"] == 2
        assert row["latency_ratio"] == pytest.approx(row["b"]["median_ms"] / row["a"]["median_ms"])
        assert row["speedup"] == pytest.approx(1 / row["latency_ratio"])


def test_bench_zoo_baseline_takes_classes_from_against(model_files, capsys):
    _, thin = model_files
    report = _bench(capsys, "--model", "resnet20", "--against", str(thin), "--backends", "torch")
    assert report["a"]["source"] == "zoo:resnet20"
    dense = lp.count(lp.create_model("resnet20", num_classes=10), (1, 3, SIZE, SIZE))
    assert report["a"]["macs"] == dense.macs and len(report["results"]) == 2


def test_bench_single_model_and_text_table(model_files, capsys):
    dense, _ = model_files
    args = ["bench", "--checkpoint", str(dense), "--batch-sizes", "1", "--threads", "1", "--repeats", "2"]
    assert main([*args, "--backends", "onnxruntime"]) == 0
    out = capsys.readouterr().out
    assert "onnxruntime" in out and "A ms" in out and "B ms" not in out
    assert "after 200 warm-up" in out and "(warm process)" in out


def test_bench_fresh_regime_on_request(model_files, capsys):
    dense, _ = model_files
    args = ["bench", "--checkpoint", str(dense), "--batch-sizes", "1", "--threads", "1", "--repeats", "2", "--json"]
    assert main([*args, "--backends", "torch", "--fresh"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["regime"] == "fresh" and report["warmup"] == 3


def test_bench_needs_exactly_one_model_a(model_files, capsys):
    dense, _ = model_files
    assert main(["bench", "--checkpoint", str(dense), "--model", "resnet20"]) == 2
    assert "exactly one" in capsys.readouterr().err
    assert main(["bench", "--checkpoint", str(dense), "--batch-sizes", "0"]) == 2
