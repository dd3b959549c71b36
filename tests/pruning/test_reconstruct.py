"""Least-squares reconstruction after the cut: exact recovery, agreement with lstsq, fidelity on every zoo model."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lassoprune as lp
from lassoprune.errors import LassopruneError
from lassoprune.pruning.reconstruct import (
    _accumulate,
    _Stats,
    effective_padding,
    reconstruct,
    residual_sum,
    solve_ridge,
    stats_of,
)


class TwoConvs(nn.Module):
    """conv1 -> conv2 with nothing non-linear between them (so removed channels can be exactly recoverable)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2, 4, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(4, 3, 3, padding=1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x))


def _drop_last_channel(group, ctx) -> torch.Tensor:  # noqa: ANN001 - a criterion
    return torch.arange(group.num_channels, 0, -1, dtype=torch.float32)


def _batches(n: int = 3, size: int = 8, channels: int = 2, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(16, channels, size, size, generator=gen), torch.zeros(16, dtype=torch.int64))
            for _ in range(n)]


def test_removed_channel_that_is_a_combination_of_kept_ones_is_reconstructed_exactly() -> None:
    torch.manual_seed(0)
    model = TwoConvs().eval()
    with torch.no_grad():
        w = model.conv1.weight
        w[3] = 0.5 * w[0] - 1.5 * w[1] + 0.25 * w[2]  # channel 3 = linear combination of 0, 1, 2
    data = _batches()
    example = data[0][0][:1]
    plain = lp.prune(model, example, method=_drop_last_channel, target_macs=0.75, data=data, reconstruct=False)
    assert plain.keep["conv1"] == (0, 1, 2)
    result = lp.prune(model, example, method=_drop_last_channel, target_macs=0.75, data=data, reconstruct=True)
    assert [r.name for r in result.reconstruction] == ["conv2"]
    x = torch.randn(4, 2, 8, 8)
    with torch.no_grad():
        dense, cut, rebuilt = model(x), plain.model(x), result.model(x)
    assert (dense - cut).abs().max() > 0.1  # the cut alone loses channel 3
    assert (dense - rebuilt).abs().max() <= 1e-4
    refit = result.reconstruction[0]
    assert refit.inputs_kept == 3 and refit.inputs_before == 4
    assert refit.error_before > 0.05 and refit.error_after < 1e-5


class SameConv2d(nn.Conv2d):
    """TensorFlow-style "same" padding computed in forward (timm's ``Conv2dSame``): asymmetric at stride 2."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, k, s, d in zip(x.shape[:1:-1], self.kernel_size[::-1], self.stride[::-1], self.dilation[::-1]):
            total = max((-(-size // s) - 1) * s + (k - 1) * d + 1 - size, 0)
            pads += [total // 2, total - total // 2]
        return F.conv2d(F.pad(x, pads), self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class StandardisedConv2d(nn.Conv2d):
    """Weight standardisation in forward (NF-ResNet's ``ScaledStdConv2d``): the output is not ``x * weight``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight
        w = (w - w.mean((1, 2, 3), keepdim=True)) / (w.std((1, 2, 3), keepdim=True) + 1e-5)
        return self._conv_forward(x, w, self.bias)


@pytest.mark.parametrize("size", [8, 9])
def test_a_conv_that_pads_in_its_own_forward_is_reconstructed_exactly(size: int) -> None:
    torch.manual_seed(0)
    model = TwoConvs().eval()
    model.conv2 = SameConv2d(4, 3, 3, stride=2, bias=True)
    with torch.no_grad():
        w = model.conv1.weight
        w[3] = 0.5 * w[0] - 1.5 * w[1] + 0.25 * w[2]
    data = _batches(size=size)
    result = lp.prune(model, data[0][0][:1], method=_drop_last_channel, target_macs=0.75, data=data,
                      reconstruct=True)
    assert [r.name for r in result.reconstruction] == ["conv2"] and result.reconstruction[0].error_after < 1e-5
    x = torch.randn(4, 2, size, size)
    with torch.no_grad():
        assert (model(x) - result.model(x)).abs().max() <= 1e-4


class StandardisedInConvForward(nn.Conv2d):
    """The same weight standardisation, written in ``_conv_forward`` (``forward`` is nn.Conv2d's)."""

    def _conv_forward(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        w = (weight - weight.mean((1, 2, 3), keepdim=True)) / (weight.std((1, 2, 3), keepdim=True) + 1e-5)
        return super()._conv_forward(x, w, bias)


@pytest.mark.parametrize("conv", [StandardisedConv2d, StandardisedInConvForward])
def test_a_conv_whose_forward_transforms_its_weights_is_left_as_cut(conv: type[nn.Conv2d]) -> None:
    torch.manual_seed(0)
    model = TwoConvs().eval()
    model.conv2 = conv(4, 3, 3, padding=1, bias=True)
    data = _batches()
    result = lp.prune(model, data[0][0][:1], method=_drop_last_channel, target_macs=0.75, data=data,
                      reconstruct=True)
    assert result.reconstruction == ()
    assert effective_padding(model.conv2, data[0][0][:2].repeat(1, 2, 1, 1)) is None


class ConvThenFlatLinear(nn.Module):
    """conv -> flatten (4 channels x 4 x 4 positions) -> linear: each channel feeds 16 linear inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1, stride=2, bias=False)
        self.fc = nn.Linear(4 * 4 * 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).flatten(1))


def test_a_linear_layer_reading_a_flattened_map_is_reconstructed_exactly() -> None:
    """The removed channel's 16 features are a combination of the kept channels' features at the same positions.

    A linear layer has one row per image (no spatial positions to sample), so it needs more images than inputs.
    """
    torch.manual_seed(0)
    model = ConvThenFlatLinear().eval()
    with torch.no_grad():
        w = model.conv.weight
        w[3] = 0.5 * w[0] - 1.5 * w[1] + 0.25 * w[2]
    data = _batches(n=20)
    example = data[0][0][:1]
    result = lp.prune(model, example, method=_drop_last_channel, target_macs=0.75, data=data, reconstruct=True)
    assert result.keep["conv"] == (0, 1, 2) and result.model.fc.in_features == 48
    refit = result.reconstruction[0]
    assert (refit.name, refit.inputs_kept, refit.inputs_before) == ("fc", 48, 64)
    x = torch.randn(4, 2, 8, 8)
    with torch.no_grad():
        assert (model(x) - result.model(x)).abs().max() <= 1e-4


def test_nothing_removed_means_nothing_refitted() -> None:
    torch.manual_seed(0)
    model = TwoConvs().eval()
    pruned = copy.deepcopy(model)
    groups = lp.channel_groups(model, torch.zeros(1, 2, 8, 8))
    keep = {g.id: tuple(range(g.num_channels)) for g in groups}
    assert reconstruct(model, pruned, groups, keep, _batches()) == ()
    for a, b in zip(model.state_dict().values(), pruned.state_dict().values()):
        assert torch.equal(a, b)


def _stats(x: torch.Tensor, y: torch.Tensor) -> _Stats:
    x, y = x.double()[None], y.double()[None]
    return _Stats(x.transpose(1, 2) @ x, x.transpose(1, 2) @ y, x.sum(1), y.sum(1), (y * y).sum((1, 2)), x.shape[1])


def test_exact_data_recovers_the_weights_and_intercept() -> None:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(200, 12, generator=gen, dtype=torch.float64)
    w, b = torch.randn(12, 5, generator=gen, dtype=torch.float64), torch.randn(5, generator=gen, dtype=torch.float64)
    got_w, got_b, _ = solve_ridge(_stats(x, x @ w + b), ridge=0.0, intercept=True)
    assert torch.allclose(got_w[0], w, atol=1e-8) and torch.allclose(got_b[0], b, atol=1e-8)


@pytest.mark.parametrize("intercept", [True, False])
def test_vanishing_ridge_agrees_with_lstsq(intercept: bool) -> None:
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(300, 10, generator=gen, dtype=torch.float64)
    y = torch.randn(300, 4, generator=gen, dtype=torch.float64) + x[:, :4] ** 2
    design = torch.cat([x, torch.ones(300, 1, dtype=torch.float64)], 1) if intercept else x
    reference = torch.linalg.lstsq(design, y).solution
    got_w, got_b, _ = solve_ridge(_stats(x, y), ridge=1e-12, intercept=intercept)
    assert torch.allclose(got_w[0], reference[:10], atol=1e-7)
    if intercept:
        assert torch.allclose(got_b[0], reference[10], atol=1e-7)
    residual = ((design @ reference - y) ** 2).sum()
    assert residual_sum(_stats(x, y), got_w, got_b) == pytest.approx(float(residual), rel=1e-8)


def test_ridge_shrinks_towards_the_prior() -> None:
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(100, 8, generator=gen)
    y = torch.randn(100, 3, generator=gen)
    prior = torch.randn(1, 8, 3, generator=gen, dtype=torch.float64)
    gaps = [(solve_ridge(_stats(x, y), ridge=r, intercept=True, prior=prior)[0] - prior).norm()
            for r in (0.0, 0.1, 10.0, 1e9)]
    assert gaps[0] > gaps[1] > gaps[2] > 1e3 * gaps[3]


def test_cross_validation_picks_a_small_ridge_for_plentiful_rows_and_a_large_one_for_few() -> None:
    gen = torch.Generator().manual_seed(4)
    w = torch.randn(20, 2, generator=gen)
    many = torch.randn(2000, 20, generator=gen)
    few = torch.randn(15, 20, generator=gen)  # fewer rows than unknowns
    _, _, chosen_many = solve_ridge(_stats(many, many @ w + 0.01 * torch.randn(2000, 2, generator=gen)), None, True)
    _, _, chosen_few = solve_ridge(_stats(few, few @ w + 0.5 * torch.randn(15, 2, generator=gen)), None, True)
    assert float(chosen_many) <= 1e-3 < float(chosen_few)


@pytest.mark.parametrize("intercept", [True, False])
@pytest.mark.parametrize("ridge", [None, 0.01, 1.0])
def test_few_rows_solved_from_the_kept_rows_give_the_gram_solution(intercept: bool, ridge: float | None) -> None:
    """Woodbury: the n x n kernel form (rows kept, n < D) and the D x D Gram form are the same estimator."""
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(2, 30, 120, generator=gen, dtype=torch.float64)  # 2 groups, 30 rows, 120 unknowns
    y = x[:, :, :3] * 2 + 0.3 * torch.randn(2, 30, 3, generator=gen, dtype=torch.float64) + 1.0
    prior = torch.randn(2, 120, 3, generator=gen, dtype=torch.float64)
    gram, rows = stats_of(x, y), stats_of(x, y, keep_rows=True)
    assert rows.keeps_rows and rows.xx is None
    w_gram, b_gram, rel_gram = solve_ridge(gram, ridge, intercept, prior=prior)
    w_rows, b_rows, rel_rows = solve_ridge(rows, ridge, intercept, prior=prior)
    assert torch.equal(rel_gram, rel_rows)
    assert torch.allclose(w_rows, w_gram, atol=1e-8, rtol=1e-6)
    assert torch.allclose(b_rows, b_gram, atol=1e-8, rtol=1e-6)
    assert residual_sum(rows, w_rows, b_rows) == pytest.approx(residual_sum(gram, w_gram, b_gram), rel=1e-6)


def test_a_wide_linear_layer_with_one_row_per_image_keeps_the_rows_not_the_gram() -> None:
    layer = nn.Linear(500, 4)
    inputs = [torch.randn(8, 500) for _ in range(2)]
    targets = [(torch.randn(8, 4), None) for _ in range(2)]
    stats = _accumulate(layer, inputs, targets)
    assert stats.keeps_rows and stats.x.shape == (1, 16, 500) and stats.n == 16
    assert not _accumulate(nn.Linear(10, 4), [torch.randn(8, 10)] * 2, targets).keeps_rows


def test_reconstruct_needs_calibration_data() -> None:
    with pytest.raises(LassopruneError, match="data="):
        lp.prune(TwoConvs(), torch.zeros(1, 2, 8, 8), method="l1", target_macs=0.75, reconstruct=True)


def _held_out_error(reference: nn.Module, model: nn.Module, x: torch.Tensor) -> float:
    with torch.no_grad():
        want = reference(x)
        return float((model(x) - want).norm() / want.norm())


FAST_ZOO = ("resnet20", "mobilenetv2")  # depthwise convs included; the others run with -m slow


@pytest.mark.parametrize("name", [n if n in FAST_ZOO else pytest.param(n, marks=pytest.mark.slow)
                                  for n in lp.list_models()])
def test_reconstruction_brings_every_zoo_model_closer_to_the_unpruned_one(name: str) -> None:
    """Logits on held-out class-structured images move towards the dense model's (random weights, eval mode)."""
    from lassoprune.training.data_setup import calibration_batches, make_loaders

    torch.manual_seed(0)
    model = lp.create_model(name, num_classes=10, in_channels=3).eval()
    calib = calibration_batches("synthetic", image_size=32, size=100, batch_size=50)
    held_out = next(iter(make_loaders("synthetic", image_size=32, with_train=False, eval_batch_size=32).test))[0]
    example = calib[0][0][:1]
    cut = lp.prune(model, example, method="l1", target_macs=0.5, data=calib, reconstruct=False, recalibrate=False)
    rebuilt = lp.prune(model, example, method="l1", target_macs=0.5, data=calib, reconstruct=True, recalibrate=False)
    assert rebuilt.keep == cut.keep and rebuilt.reconstruction
    assert all(r.error_after <= r.error_before + 1e-6 for r in rebuilt.reconstruction)
    assert _held_out_error(model, rebuilt.model, held_out) < _held_out_error(model, cut.model, held_out)



@pytest.mark.parametrize("failures", [1, 2])
def test_eigh_falls_back_when_lapack_does_not_converge(monkeypatch: pytest.MonkeyPatch, failures: int) -> None:
    """A rank-deficient Gram is decomposed exactly by the jitter or SVD fall-back (V diag(d) V^T = A)."""
    from lassoprune.pruning import reconstruct as module

    x = torch.randn(2, 5, 9, dtype=torch.float64)
    a = x.transpose(1, 2) @ x  # (2, 9, 9), rank 5
    real, calls = torch.linalg.eigh, []

    def flaky(m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        calls.append(1)
        if len(calls) <= failures:
            raise torch.linalg.LinAlgError("did not converge")
        return real(m)

    monkeypatch.setattr(torch.linalg, "eigh", flaky)
    d, v = module.eigh_psd(a)
    assert (d >= 0).all()
    assert torch.allclose(v @ torch.diag_embed(d) @ v.transpose(1, 2), a, atol=1e-8)


class OneByOneStandardised(nn.Conv2d):
    """timm's ``ScaledStdConv2d`` way: ``F.batch_norm`` over each filter's inputs, which needs two of them."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = F.batch_norm(self.weight.reshape(1, self.out_channels, -1), None, None, training=True, momentum=0.0)
        return self._conv_forward(x, w.reshape_as(self.weight), self.bias)


def test_a_group_read_by_a_weight_standardised_conv_keeps_two_channels() -> None:
    """An aggressive cut would leave the 1x1 standardised conv one input per filter; its group keeps two."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), OneByOneStandardised(8, 16, 1), nn.ReLU(),
                          nn.Conv2d(16, 16, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(16, 10)).eval()
    with torch.no_grad():  # seven of the eight channels the standardised conv reads go first under l1
        model[0].weight[1:] *= 1e-6
    result = lp.prune(model, torch.randn(1, 3, 8, 8), method="l1", target_macs=0.3, min_channels=1)
    assert result.model[2].in_channels == 2
    assert result.model(torch.randn(2, 3, 8, 8)).shape == (2, 10)
