"""The training loop: resume equals an uninterrupted run, runs are never overwritten, learning is real."""

import json
from pathlib import Path

import pytest
import torch

import lassoprune as lp
from lassoprune.data import BatchLoader, load_dataset
from lassoprune.errors import CheckpointError
from lassoprune.io import load_checkpoint, save_checkpoint
from lassoprune.training import TrainConfig, fit
from lassoprune.training.data_setup import make_loaders

SYNTH = {"num_classes": 4, "in_channels": 3, "image_size": 16, "n_per_class": 24, "seed": 3}


def _synthetic_batches(seed: int = 0) -> tuple[BatchLoader, BatchLoader]:
    train = load_dataset("synthetic", split="train", **SYNTH)
    test = load_dataset("synthetic", split="test", **{**SYNTH, "n_per_class": 8})
    return BatchLoader(train, 16, shuffle=True, seed=seed, drop_last=True), BatchLoader(test, 32)


def _fresh_model() -> torch.nn.Module:
    torch.manual_seed(123)
    return lp.create_model("resnet20", num_classes=4, in_channels=3)


class _Crash(RuntimeError):
    pass


def _crash_after_first_epoch(epoch: int, record: dict) -> None:
    if epoch == 0:
        raise _Crash("simulated crash")


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(tmp_path):
    cfg = TrainConfig(epochs=2, lr=0.05, seed=7, warmup_epochs=0.5)
    train, test = _synthetic_batches(cfg.seed)
    straight = _fresh_model()
    fit(straight, train, test, cfg, num_classes=4, out_dir=tmp_path / "a", progress=False)

    interrupted = _fresh_model()
    with pytest.raises(_Crash):
        fit(interrupted, train, test, cfg, num_classes=4, out_dir=tmp_path / "b", progress=False,
            on_epoch_end=_crash_after_first_epoch)
    resumed = _fresh_model()  # a new process would start from scratch weights
    result = fit(resumed, train, test, cfg, num_classes=4, out_dir=tmp_path / "b", resume=True, progress=False)

    assert result.resumed_from == 1
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    lines = (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]


def test_resume_reads_an_older_runs_history_in_todays_names(tmp_path):
    cfg = TrainConfig(epochs=2, lr=0.05, seed=7)
    train, test = _synthetic_batches(cfg.seed)
    with pytest.raises(_Crash):
        fit(_fresh_model(), train, test, cfg, num_classes=4, out_dir=tmp_path, progress=False,
            on_epoch_end=_crash_after_first_epoch)
    state = load_checkpoint(tmp_path / "last.pt")
    (record,) = state["history"]
    state["history"] = [{"epoch": 1, "train_loss": record["train"]["loss"], "train_top1": record["train"]["top1"],
                         "test_top1": record["test"]["top1"], "test_top5": record["test"]["top5"],
                         "test_loss": record["test"]["loss"], "test_worst_class": record["test"]["worst_class"],
                         "lr": record["lr"], "images_per_s": record["images_per_s"], "seconds": record["seconds"]}]
    save_checkpoint(state, tmp_path / "last.pt")  # as an older version wrote it

    result = fit(_fresh_model(), train, test, cfg, num_classes=4, out_dir=tmp_path, resume=True, progress=False)
    assert result.resumed_from == 1 and result.history[0] == record
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert lines[0] == record and set(lines[1]) == set(record)
    assert json.loads((tmp_path / "metrics.json").read_text())["history"] == lines


def test_existing_run_is_not_overwritten_without_resume(tmp_path):
    cfg = TrainConfig(epochs=1, seed=0)
    train, test = _synthetic_batches()
    fit(_fresh_model(), train, test, cfg, num_classes=4, out_dir=tmp_path, progress=False)
    before = (tmp_path / "last.pt").read_bytes()
    with pytest.raises(CheckpointError, match="resume=True"):
        fit(_fresh_model(), train, test, cfg, num_classes=4, out_dir=tmp_path, progress=False)
    assert (tmp_path / "last.pt").read_bytes() == before


def test_resume_with_changed_settings_names_the_change(tmp_path):
    train, test = _synthetic_batches()
    fit(_fresh_model(), train, test, TrainConfig(epochs=1), num_classes=4, out_dir=tmp_path, progress=False)
    with pytest.raises(CheckpointError, match=r"lr: 0\.1 -> 0\.2"):
        fit(_fresh_model(), train, test, TrainConfig(epochs=1, lr=0.2), num_classes=4,
            out_dir=tmp_path, resume=True, progress=False)


def test_run_directory_holds_model_and_metrics(tmp_path):
    train, test = _synthetic_batches()
    model = _fresh_model()
    result = fit(model, train, test, TrainConfig(epochs=2, lr=0.05), num_classes=4, out_dir=tmp_path,
                 progress=False, class_names=["a", "b", "c", "d"], model_extra={"image_size": 16})
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["top1"] == result.final.top1
    assert set(metrics["per_class"]) == {"a", "b", "c", "d"}
    assert sum(map(sum, metrics["confusion"])) == 32
    reloaded = lp.load(tmp_path / "model.pt")
    assert reloaded.lp_extra["image_size"] == 16
    assert reloaded.lp_extra["metrics"]["top1"] == result.final.top1
    # the synthetic classes are easy: two epochs must learn them
    assert result.final.top1 >= 0.9


def test_regularizer_prox_runs_after_every_step():
    calls: list[float] = []

    class Recorder:
        def penalty(self) -> torch.Tensor:
            return torch.zeros(())

        def prox_(self, lr: float) -> None:
            calls.append(lr)

    train, test = _synthetic_batches()
    fit(_fresh_model(), train, test, TrainConfig(epochs=1, schedule="constant", lr=0.03), num_classes=4,
        progress=False, regularizer=Recorder())
    assert calls == [pytest.approx(0.03)] * len(train)


def test_after_backward_hook_sees_the_gradients_before_the_step():
    """A hook that zeroes every gradient after backward freezes the weights (no decay, no momentum left)."""
    calls = []

    def freeze(model: torch.nn.Module) -> None:
        calls.append(all(p.grad is not None for p in model.parameters() if p.requires_grad))
        for p in model.parameters():
            if p.grad is not None:
                p.grad.zero_()

    train, test = _synthetic_batches()
    model = _fresh_model()
    before = {k: v.clone() for k, v in model.state_dict().items() if k.endswith("weight")}
    fit(model, train, test, TrainConfig(epochs=1, schedule="constant", lr=0.1, weight_decay=0.0), num_classes=4,
        progress=False, after_backward=freeze)
    assert calls == [True] * len(train)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items() if k in before)


FMNIST = Path("/usr/share/datasets/fashion-mnist")


def test_resnet20_learns_fashion_mnist(tmp_path):
    """Real learning on real data: a short run is far better than chance (10%)."""
    loaders = make_loaders("fashion-mnist", image_size=32, batch_size=64, train_subset=3000, seed=0)
    test_subset = BatchLoader(loaders.test.dataset, 256, image_size=32, indices=torch.arange(0, 10000, 5))
    lp.seed_everything(0)
    model = lp.create_model("resnet20", num_classes=10, in_channels=1)
    result = fit(model, loaders.train, test_subset, TrainConfig(epochs=1, lr=0.05), num_classes=10, progress=False)
    assert result.final.num_samples == 2000
    assert result.final.top1 >= 0.6
