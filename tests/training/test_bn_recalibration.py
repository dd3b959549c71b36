"""Adaptive BatchNorm re-estimation: exact statistics, nothing else changes."""

import torch
from torch import nn

from lassoprune.training.bn_recalibration import recalibrate_batchnorm


def test_running_stats_equal_the_data_statistics():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 1, bias=False), nn.BatchNorm2d(4))
    x = torch.randn(64, 3, 5, 5) * 3 + 1
    batches = [(x[i : i + 16], torch.zeros(16)) for i in range(0, 64, 16)]
    weight = model[0].weight.clone()
    model.eval()
    seen = recalibrate_batchnorm(model, batches)
    bn = model[1]
    features = model[0](x)
    assert seen == 64 and not model.training
    torch.testing.assert_close(bn.running_mean, features.mean(dim=(0, 2, 3)), atol=1e-5, rtol=1e-5)
    # cumulative average of the per-batch unbiased variances
    per_batch = torch.stack([model[0](b).var(dim=(0, 2, 3), unbiased=True) for b, _ in batches])
    torch.testing.assert_close(bn.running_var, per_batch.mean(0), atol=1e-5, rtol=1e-5)
    assert torch.equal(model[0].weight, weight) and bn.momentum == 0.1


def test_only_the_batchnorm_layers_run_in_training_mode():
    """Dropout stays off while the statistics are re-estimated (the running mean is the inputs' exact mean),
    a head that runs only in training mode is not called, and every module's mode comes back."""

    class WithHead(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.drop, self.bn = torch.nn.Dropout(0.5), torch.nn.BatchNorm1d(4)
            self.head_calls = 0

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if self.training:  # an auxiliary head, as GoogLeNet's
                self.head_calls += 1
            return self.bn(self.drop(x))

    model = WithHead().train()
    model.drop.eval()  # a mixed state, restored as it was
    x = torch.randn(64, 4) + 3.0
    assert recalibrate_batchnorm(model, [(x, torch.zeros(64))]) == 64
    torch.testing.assert_close(model.bn.running_mean, x.mean(0))
    assert model.head_calls == 0
    assert model.training and model.bn.training and not model.drop.training
