"""Groups read by a linear layer on channels-last maps (ConvNeXt's MLP: ``(N, H, W, C)``) are observed on the
channel axis, so the lasso methods score them (before: an index error from inside the feature collection)."""

from __future__ import annotations

import torch
from torch import nn

import lassoprune as lp


class _ConvNeXtLike(nn.Module):
    """Stem, one ConvNeXt block (depthwise conv, channels-last LayerNorm and MLP, layer scale), a linear head."""

    def __init__(self, width: int = 16, classes: int = 4) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, width, 2, stride=2)
        self.dw = nn.Conv2d(width, width, 3, padding=1, groups=width)
        self.norm = nn.LayerNorm(width)
        self.up, self.down = nn.Linear(width, 4 * width), nn.Linear(4 * width, width)
        self.gamma = nn.Parameter(torch.full((width,), 0.5))
        self.head = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        h = self.norm(self.dw(x).permute(0, 2, 3, 1))
        h = self.down(torch.nn.functional.gelu(self.up(h))).permute(0, 3, 1, 2)
        x = x + self.gamma.view(1, -1, 1, 1) * h
        return self.head(x.mean((2, 3)))


def test_a_channels_last_mlp_is_scored_by_the_lasso():
    torch.manual_seed(0)
    model = _ConvNeXtLike().eval()
    y = torch.arange(32) % 4
    data = [(torch.randn(32, 3, 16, 16) + torch.randn(4, 3, 16, 16)[y], y)]
    result = lp.prune(model, torch.randn(1, 3, 16, 16), method="sglp-ib", target_macs=0.6, data=data,
                      reconstruct=False, pool=2)
    assert abs(result.macs_after / result.macs_before - 0.6) <= 0.01
    mlp = [g for g in result.groups if g.num_channels == 64]  # the MLP's hidden width, cut by the lasso
    assert mlp and len(result.keep[mlp[0].id]) < 64
    assert result.model(torch.randn(2, 3, 16, 16)).shape == (2, 4)
