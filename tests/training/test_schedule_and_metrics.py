"""Learning-rate schedules and evaluation metrics: exact values on hand-made cases."""

import math

import pytest
import torch
from torch import nn

from lassoprune.errors import LassopruneError
from lassoprune.training import TrainConfig, evaluate, lr_factor


def test_cosine_with_warmup_values():
    cfg = TrainConfig(epochs=10, warmup_epochs=1, schedule="cosine")
    f = lr_factor(cfg, steps_per_epoch=10)
    assert f(0) == pytest.approx(0.1)
    assert f(5) == pytest.approx(0.1 + 0.9 * 0.5)
    assert f(10) == pytest.approx(1.0)  # warm-up done: cosine starts at its peak
    assert f(10 + 45) == pytest.approx(0.5)  # half-way through the 90 cosine steps
    assert f(100) == pytest.approx(0.0, abs=1e-12)


def test_multistep_milestones():
    cfg = TrainConfig(epochs=4, schedule="multistep", milestones=(0.5, 0.75), gamma=0.1)
    f = lr_factor(cfg, steps_per_epoch=25)
    assert [f(s) for s in (0, 49, 50, 74, 75, 99)] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])


def test_cosine_is_monotone_after_warmup():
    cfg = TrainConfig(epochs=3, schedule="cosine")
    f = lr_factor(cfg, steps_per_epoch=7)
    values = [f(s) for s in range(21)]
    assert all(a >= b for a, b in zip(values, values[1:]))
    assert values[0] == 1.0 and values[-1] == pytest.approx(0.5 * (1 + math.cos(math.pi * 20 / 21)))


@pytest.mark.parametrize(
    "kwargs, fragment",
    [({"epochs": 0}, "epochs"), ({"schedule": "linear"}, "cosine, multistep, constant"),
     ({"lr": -1.0}, "lr"), ({"warmup_epochs": 5, "epochs": 5}, "warmup_epochs")],
)
def test_config_rejects_bad_values_with_clear_message(kwargs, fragment):
    with pytest.raises(LassopruneError, match=fragment):
        TrainConfig(**kwargs)


def test_config_from_dict_lists_valid_keys():
    with pytest.raises(LassopruneError, match="valid:.*epochs"):
        TrainConfig.from_dict({"epoch": 3})
    cfg = TrainConfig(epochs=3, milestones=(0.3,))
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg


class _FixedLogits(nn.Module):
    """Predicts class ``pred[i]`` for the i-th image (images carry their index in pixel 0)."""

    def __init__(self, pred: torch.Tensor, num_classes: int) -> None:
        super().__init__()
        self.pred, self.num_classes = pred, num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        idx = x[:, 0, 0, 0].long()
        classes = torch.arange(self.num_classes)
        # rank: pred first, then pred+1, pred+2, ... (cyclic), so top-k is unambiguous
        return -((classes[None, :] - self.pred[idx][:, None]) % self.num_classes).float()


def test_evaluate_confusion_top1_top5_per_class():
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 2, 0])
    pred = torch.tensor([0, 1, 1, 1, 2, 0, 1, 0])
    images = torch.arange(8, dtype=torch.float32).view(8, 1, 1, 1)
    batches = [(images[:5], labels[:5]), (images[5:], labels[5:])]
    result = evaluate(_FixedLogits(pred, 6), batches, num_classes=6)
    assert result.num_samples == 8
    assert result.top1 == pytest.approx(5 / 8)
    assert result.per_class[:3] == pytest.approx((2 / 3, 1.0, 1 / 3))
    assert all(math.isnan(a) for a in result.per_class[3:])  # classes without samples
    assert result.worst_class == pytest.approx(1 / 3)
    assert result.confusion[2][:3] == (1, 1, 1)
    assert sum(map(sum, result.confusion)) == 8
    # top-5 of 6 classes misses only label == pred - 1 (mod 6): sample 1 (label 0, pred 1)
    assert result.top5 == pytest.approx(7 / 8)
