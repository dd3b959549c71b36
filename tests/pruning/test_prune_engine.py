"""The pruning engine: physical pruning equals masking, targets are met, floors hold, errors are clear."""

import copy

import pytest
import torch
from torch import nn

import lassoprune as lp
from lassoprune.errors import LassopruneError
from lassoprune.models import list_models, model_entry
from lassoprune.pruning import CostModel, analyse_groups, list_criteria, mask_channels, prune
from tests.pruning.pruning_helpers import model_with_random_bn
from tests.marks import fast_only

CRITERIA = ("l1", "l2", "bn-scale", "taylor", "random")


def _input_size(name: str) -> int:
    return 64 if model_entry(name).default_image_size == 224 else 32


def _model(name: str, num_classes: int = 10) -> nn.Module:
    return model_with_random_bn(name, num_classes)


def _calibration(size: int, num_classes: int = 10) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(2)
    return [(torch.randn(8, 3, size, size, generator=gen), torch.arange(8) % num_classes)]


def _assert_equivalent(model: nn.Module, result, size: int) -> None:
    masked = copy.deepcopy(model)
    mask_channels(masked, result.groups, result.keep)
    x = torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected, got = masked(x), result.model.eval()(x)
    scale = max(1.0, expected.abs().max().item())
    assert (got - expected).abs().max().item() <= 1e-4 * scale


def test_criteria_registry_is_complete():
    assert set(CRITERIA) <= set(list_criteria())


@pytest.mark.parametrize("criterion", CRITERIA)
@pytest.mark.parametrize("name", fast_only(list_models(), set(list_models()) - {"resnet34", "resnet44", "resnet110",
                                                                                "resnet50", "vgg19"}))
def test_pruned_equals_masked_and_meets_target(name, criterion):
    size = _input_size(name)
    model = _model(name)
    data = _calibration(size) if criterion == "taylor" else None
    result = prune(model, torch.randn(1, 3, size, size), method=criterion, target_macs=0.5, data=data,
                   reconstruct=False, recalibrate=False)  # the cut alone, as masking does it
    assert abs(result.macs_after / result.macs_before - 0.5) <= 0.01
    assert all(kept >= 1 for kept, _ in result.widths.values())
    assert result.macs_after == lp.count(result.model, (1, 3, size, size)).macs
    _assert_equivalent(model, result, size)


@pytest.mark.parametrize("ratio", [0.3, 0.7])
@pytest.mark.parametrize("name", list_models())
def test_macs_targets_across_ratios(name, ratio):
    size = _input_size(name)
    result = prune(_model(name), torch.randn(1, 3, size, size), method="l1", target_macs=ratio)
    assert abs(result.macs_after / result.macs_before - ratio) <= 0.01
    assert min(kept for kept, _ in result.widths.values()) >= 1


@pytest.mark.parametrize("allocation", ["uniform", "global"])
def test_params_target_and_allocations(allocation):
    model = _model("vgg11")
    result = prune(model, torch.randn(1, 3, 32, 32), method="l1", target_params=0.4, allocation=allocation)
    assert abs(result.params_after / result.params_before - 0.4) <= 0.01
    fractions = [kept / total for kept, total in result.widths.values()]
    if allocation == "uniform":
        assert max(fractions) - min(fractions) <= 0.1  # one fraction for all, up to rounding steps
    _assert_equivalent(model, result, 32)


def test_cost_model_is_exact_on_random_configurations():
    model = _model("mobilenetv2")
    x = torch.randn(1, 3, 32, 32)
    analysis = analyse_groups(copy.deepcopy(model), x)
    cost = CostModel(model, x, analysis.groups)
    gen = torch.Generator().manual_seed(5)
    keep = {g.id: tuple(sorted(torch.randperm(g.num_channels, generator=gen)[: max(1, g.num_channels // 3)].tolist()))
            for g in analysis.groups}
    from lassoprune.pruning import remove_channels

    remove_channels(analysis, keep)
    pruned = analysis.graph.model
    counted = lp.count(pruned, x)
    sizes = {gid: len(k) for gid, k in keep.items()}
    assert cost.macs(sizes) == counted.macs
    assert cost.params(sizes) == counted.params


def test_round_to_and_min_channels():
    result = prune(_model("resnet56"), torch.randn(1, 3, 32, 32), method="l1", target_macs=0.5, round_to=8, min_channels=8)
    for kept, total in result.widths.values():
        assert kept >= 8 and (kept % 8 == 0 or kept == total)
    assert abs(result.macs_after / result.macs_before - 0.5) <= 0.01


def test_ignored_layers_keep_their_width():
    model = _model("vgg11")
    first = model.features[0] if hasattr(model, "features") else next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    width = first.out_channels
    result = prune(model, torch.randn(1, 3, 32, 32), method="l1", target_macs=0.5, ignored_layers=[first])
    pruned_first = dict(result.model.named_modules())[next(n for n, m in model.named_modules() if m is first)]
    assert pruned_first.out_channels == width


@pytest.mark.parametrize("ratio", [0.0, 1.0, 1.5, -0.2])
def test_target_outside_unit_interval(ratio):
    with pytest.raises(LassopruneError, match=r"in \(0, 1\)"):
        prune(_model("resnet20"), torch.randn(1, 3, 32, 32), target_macs=ratio)


def test_unreachable_target_names_the_smallest_reachable():
    with pytest.raises(LassopruneError, match="smallest reachable target is 0\\.[0-9]+"):
        prune(_model("resnet20"), torch.randn(1, 3, 32, 32), target_macs=0.05, min_channels=12)


def test_untraceable_inputs_name_the_shape():
    with pytest.raises(LassopruneError, match=r"\(1, 5, 32, 32\)"):
        prune(_model("resnet20"), torch.randn(1, 5, 32, 32), target_macs=0.5)


def test_unknown_method_lists_valid_ones():
    with pytest.raises(LassopruneError, match="l1"):
        prune(_model("resnet20"), torch.randn(1, 3, 32, 32), method="l3", target_macs=0.5)


class _UserNet(nn.Module):
    """A model that is not in the zoo: two branches joined by an add, then a concat."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 24, 3, padding=1), nn.BatchNorm2d(24), nn.ReLU())
        self.a = nn.Sequential(nn.Conv2d(24, 24, 3, padding=1), nn.BatchNorm2d(24))
        self.b = nn.Sequential(nn.Conv2d(24, 16, 1), nn.BatchNorm2d(16), nn.ReLU())
        self.head = nn.Linear(24 + 16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        y = torch.relu(self.a(x) + x)
        z = torch.cat([y, self.b(y)], dim=1)
        return self.head(z.mean(dim=(2, 3)))


def test_user_model_prunes_and_matches_masking():
    torch.manual_seed(0)
    model = _UserNet().eval()
    result = prune(model, torch.randn(1, 3, 16, 16), method="l2", target_macs=0.5)
    assert abs(result.macs_after / result.macs_before - 0.5) <= 0.01
    assert any(g.is_eltwise for g in result.groups)
    masked = copy.deepcopy(model)
    mask_channels(masked, result.groups, result.keep)
    x = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(result.model(x), masked(x), atol=1e-5, rtol=1e-4)
    assert result.model.head.out_features == 5  # the classifier output is never pruned


class _ChannelMixer(nn.Module):
    """A custom layer that mixes channels through a bare (C, C) parameter: Torch-Pruning cuts only one side."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.mix = nn.Parameter(torch.eye(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("nchw,cd->ndhw", x, self.mix)


class _NetWithMixer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.mixer, self.conv2 = nn.Conv2d(3, 32, 3), _ChannelMixer(32), nn.Conv2d(32, 32, 3)
        self.fc = nn.Linear(32, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv2(self.mixer(self.conv1(x))).mean(dim=(2, 3)))


def test_layer_that_cannot_be_cut_is_named_with_advice():
    with pytest.warns(UserWarning):  # Torch-Pruning's own warning about the bare parameter
        with pytest.raises(LassopruneError, match=r"mixer \(_ChannelMixer\).*ignored_layers"):
            prune(_NetWithMixer(), torch.randn(1, 3, 16, 16), target_macs=0.5)
    model = _NetWithMixer()
    result = prune(model, torch.randn(1, 3, 16, 16), target_macs=0.7, ignored_layers=[model.conv1])
    assert result.model.conv1.out_channels == 32


@pytest.mark.parametrize("method, options", [("l1", {}), ("random", {}), ("dwgl-vote", {}),
                                             ("hsic-ib", {"pool": 2})])
def test_residual_stream_kept_whole_for_every_method(method, options):
    """prune_residual=False: every eltwise group keeps all its channels, the target is met by the inner ones,
    and the pruned network equals the masked original."""
    torch.manual_seed(0)
    model = lp.create_model("resnet20", num_classes=10)
    gen = torch.Generator().manual_seed(1)
    data = [(torch.randn(30, 3, 32, 32, generator=gen), torch.arange(30) % 10)] if method == "hsic-ib" else None
    result = lp.prune(model, torch.zeros(1, 3, 32, 32), method=method, target_macs=0.6, data=data,
                      prune_residual=False, reconstruct=False, recalibrate=False, **options)
    assert abs(result.macs_after / result.macs_before - 0.6) <= 0.01
    eltwise = [g for g in result.groups if g.is_eltwise]
    assert eltwise and all(len(result.keep[g.id]) == g.num_channels for g in eltwise)
    assert any(len(result.keep[g.id]) < g.num_channels for g in result.groups if not g.is_eltwise)
    masked = copy.deepcopy(model).eval()
    mask_channels(masked, result.groups, result.keep)
    x = torch.randn(2, 3, 32, 32, generator=gen)
    with torch.no_grad():
        assert torch.allclose(result.model.eval()(x), masked(x), atol=1e-4)
