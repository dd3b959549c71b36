"""Architecture patterns of torchvision / timm CNNs on tiny models: pruned to target, reconstructed, deployed.

Each pattern (grouped conv, split / slice / shuffle and concatenation, partial
residual, conv classifier, layer scale, squeeze-excitation, depthwise) is cut
to 0.5 of the MACs within 1% (or refused with a one-line error naming the
layer); the cut equals the masked original, the outputs keep their classes,
reconstruction runs on calibration images, and the deployed TorchScript and
ONNX files reproduce the pruned model to 1e-4.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch_pruning as tp
from torch import nn

import lassoprune as lp
from lassoprune.channels import groups as group_module
from lassoprune.deployment import deploy, load_torchscript
from lassoprune.errors import LassopruneError
from lassoprune.pruning import (
    METHODS,
    Diagnostics,
    MethodContext,
    MethodSpec,
    Selection,
    analyse_groups,
    mask_channels,
    register_method,
)
from tests.patterns.pattern_models import CLASSES, NOT_MASKABLE, PATTERNS, ConvClassifier, Grouped, build
from tests.pruning.pruning_helpers import randomise_batchnorm

SIDE = 16
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # Torch-Pruning's note on the bare gamma


def _x(n: int = 1, seed: int = 3) -> torch.Tensor:
    return torch.randn(n, 3, SIDE, SIDE, generator=torch.Generator().manual_seed(seed))


def _data() -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(2)
    return [(torch.randn(16, 3, SIDE, SIDE, generator=gen), torch.arange(16) % CLASSES) for _ in range(2)]


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max()) / max(1.0, float(a.abs().max()))


def _prune(model: nn.Module, **kwargs) -> lp.PruneResult:
    try:
        return lp.prune(model, _x(), method=kwargs.pop("method", "l1"), target_macs=0.5, **kwargs)
    except LassopruneError as exc:  # a refusal must be one line naming the layer
        message = str(exc)
        assert "\n" not in message and any(name in message for name, _ in model.named_modules() if name), message
        pytest.skip(f"refused: {message}")


@pytest.mark.parametrize("name", sorted(PATTERNS))
def test_cut_meets_target_keeps_classes_and_equals_masking(name):
    model = build(name)
    result = _prune(model, reconstruct=False, recalibrate=False)
    assert abs(result.macs_after / result.macs_before - 0.5) <= 0.01
    x = _x(3)
    with torch.no_grad():
        got = result.model.eval()(x)
        assert got.shape == (3, CLASSES)
        if name not in NOT_MASKABLE:
            masked = copy.deepcopy(model)
            mask_channels(masked, result.groups, result.keep)
            assert _relative(masked(x), got) <= 1e-4


@pytest.mark.parametrize("name", sorted(PATTERNS))
def test_reconstructed_model_deploys_to_identical_files(tmp_path, name):
    result = _prune(build(name), data=_data(), reconstruct=True)
    assert abs(result.macs_after / result.macs_before - 0.5) <= 0.01
    pruned = result.model.eval()
    deployed = deploy(pruned, tmp_path, (1, 3, SIDE, SIDE), latency=False)
    assert max(deployed.max_abs_diff.values()) <= 1e-4
    x = _x(4, seed=5)
    with torch.no_grad():
        expected = pruned(x)
        assert expected.shape == (4, CLASSES) and torch.isfinite(expected).all()
        assert _relative(expected, load_torchscript(tmp_path / "model.torchscript.pt")(x)) <= 1e-4


def test_channels_addressed_by_number_are_left_whole_with_the_reason():
    analysis = analyse_groups(build("cross_stage"), _x())
    assert "expand.0" in analysis.protected and "sliced" in analysis.protected["expand.0"]
    assert not any(s.module == "expand.0" for g in analysis.groups for s in g.producers)
    shuffle = analyse_groups(build("shuffle"), _x()).protected
    assert "stem.0" in shuffle and "branch.2.0" in shuffle
    assert "split" in analyse_groups(build("mixconv"), _x()).protected["stem.0"]


@pytest.mark.parametrize("groups", [2, 4])
def test_grouped_convs_are_pruned_in_whole_units_that_keep_every_group_equal(groups):
    model = randomise_batchnorm(Grouped(groups=groups)).eval()
    result = lp.prune(model, _x(), method="l1", target_macs=0.5, reconstruct=False, recalibrate=False)
    grouped = result.model.grouped[0]
    assert grouped.groups == groups and grouped.in_channels < 16 and grouped.out_channels < 16
    assert grouped.in_channels % groups == 0 and grouped.out_channels % groups == 0
    blocked = [g for g in result.groups if g.blocks > 1]
    assert {g.id for g in blocked} == {"reduce.0", "grouped.0"} and all(g.blocks == groups for g in blocked)
    for group in blocked:  # the same positions kept in every block
        kept = set(result.keep[group.id])
        assert all(set(unit) <= kept or not set(unit) & kept for unit in group.unit_channels)
    masked = copy.deepcopy(model)
    mask_channels(masked, result.groups, result.keep)
    with torch.no_grad():
        assert _relative(masked(_x(3)), result.model(_x(3))) <= 1e-4


def test_a_layer_reaching_one_concatenation_twice_is_left_whole():
    protected = analyse_groups(build("ghost_even"), _x()).protected
    assert "concatenation twice" in protected["primary.0"]
    assert "stem.0" not in protected  # reaches the concatenation once, through primary


def test_grouped_conv_cuts_keep_two_units_so_the_pruned_model_can_be_analysed_again():
    model = randomise_batchnorm(Grouped(groups=4)).eval()
    first = lp.prune(model, _x(), method="l1", target_macs=0.3, reconstruct=False, recalibrate=False)
    grouped = first.model.grouped[0]
    assert grouped.out_channels >= 2 * grouped.groups and grouped.in_channels >= 2 * grouped.groups
    again = analyse_groups(first.model.eval(), _x())
    assert {g.id: g.blocks for g in again.groups if g.blocks > 1} == {"reduce.0": 4, "grouped.0": 4}


def test_a_grouped_conv_with_one_output_per_group_is_left_whole_with_the_reason():
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 8, 3, padding=1, groups=8),
                          nn.ReLU(), nn.Conv2d(8, 16, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, CLASSES))
    analysis = analyse_groups(model.eval(), _x())
    assert "one output per group" in analysis.protected["2"] and "feed a grouped" in analysis.protected["0"]
    result = lp.prune(model, _x(), method="l1", target_macs=0.9, reconstruct=False, recalibrate=False)
    assert (result.model[2].in_channels, result.model[2].out_channels) == (16, 8)


@pytest.mark.parametrize(("method", "groups"), [("hsic-ib", 4), ("sglp-ib", 2)])
def test_lasso_methods_prune_grouped_conv_channels_in_whole_units(method, groups):
    model = randomise_batchnorm(Grouped(groups=groups)).eval()
    result = lp.prune(model, _x(), method=method, target_macs=0.5, data=_data(), reconstruct=False,
                      recalibrate=False, prune_residual=True)
    assert abs(result.macs_after / result.macs_before - 0.5) <= 0.01
    blocked = [g for g in result.groups if g.blocks > 1]
    assert blocked and any(len(result.keep[g.id]) < g.num_channels for g in blocked)
    for group in blocked:  # whole units, two at least: every group of the conv keeps the same positions
        kept = set(result.keep[group.id])
        assert all(set(unit) <= kept or not set(unit) & kept for unit in group.unit_channels)
        assert len(kept) >= 2 * group.blocks
    grouped = result.model.grouped[0]
    assert grouped.groups == groups and grouped.in_channels % groups == 0 and grouped.out_channels % groups == 0
    masked = copy.deepcopy(model)
    mask_channels(masked, result.groups, result.keep)
    with torch.no_grad():
        assert _relative(masked(_x(3)), result.model(_x(3))) <= 1e-4


def _keep_floors(ctx: MethodContext) -> Selection:
    """A width-deciding method that keeps each group's floor in whole units: its first ``floor / B`` units."""
    keep = {g.id: tuple(sorted(c for unit in g.unit_channels[: int(f) // g.blocks] for c in unit))
            for g, f in zip(ctx.analysis.groups, ctx.floors)}
    return Selection(keep=keep, scores={}, diagnostics=Diagnostics())


@pytest.mark.parametrize("keeps_units", [False, True])
def test_grouped_conv_channels_stay_whole_for_width_deciding_methods_without_units(keeps_units):
    register_method(MethodSpec("keep-floors", _keep_floors, decides_widths=True, keeps_units=keeps_units))
    try:
        result = lp.prune(randomise_batchnorm(Grouped(groups=4)).eval(), _x(), method="keep-floors",
                          target_macs=0.9, reconstruct=False, recalibrate=False)
    finally:
        METHODS.remove("keep-floors")
    blocked = [g for g in result.groups if g.blocks > 1]
    kept = [len(result.keep[g.id]) for g in blocked]
    assert kept == ([2 * g.blocks for g in blocked] if keeps_units else [g.num_channels for g in blocked])


def test_keep_sets_that_split_a_unit_are_refused():
    def split_units(ctx: MethodContext) -> Selection:
        keep = {g.id: tuple(range(g.num_channels - 1 if g.blocks > 1 else g.num_channels))
                for g in ctx.analysis.groups}
        return Selection(keep=keep, scores={}, diagnostics=Diagnostics())

    register_method(MethodSpec("split-units", split_units, decides_widths=True, keeps_units=True))
    try:
        with pytest.raises(LassopruneError, match="kept part of a unit of group"):
            lp.prune(randomise_batchnorm(Grouped(groups=4)).eval(), _x(), method="split-units", target_macs=0.9)
    finally:
        METHODS.remove("split-units")


def test_unreachable_target_names_the_layers_left_whole():
    with pytest.raises(LassopruneError, match=r"expand\.0: its channels are sliced"):
        lp.prune(build("cross_stage"), _x(), method="l1", target_macs=0.05)


def test_conv_classifier_keeps_its_classes_with_frozen_weights():
    model = ConvClassifier().eval()
    for p in model.parameters():
        p.requires_grad_(False)
    result = lp.prune(model, _x(), method="l1", target_macs=0.5)
    assert result.model.classifier[1].out_channels == CLASSES
    assert result.model(_x(2)).shape == (2, CLASSES)
    assert not any(p.requires_grad for p in model.parameters())  # tracing left the flags as they were


def test_a_cut_that_would_drop_classes_is_refused(monkeypatch):
    monkeypatch.setattr(group_module, "output_producers", lambda model, x: [])  # blind to the conv classifier
    with pytest.raises(LassopruneError, match="output shapes"):
        lp.prune(ConvClassifier().eval(), _x(), method="l1", target_macs=0.5, reconstruct=False)


def test_group_analysis_that_does_not_finish_names_the_layer(monkeypatch):
    def endless(*args, **kwargs):
        while True:
            pass

    monkeypatch.setattr(group_module, "ANALYSIS_SECONDS", 0.5)
    monkeypatch.setattr(tp.DependencyGraph, "get_pruning_group", endless)
    with pytest.raises(LassopruneError, match=r"did not finish within .*layer '\w+\.0'"):
        analyse_groups(build("grouped"), _x())


def test_lasso_method_on_the_patterns_that_change_the_graph():
    result = lp.prune(build("ghost"), _x(), method="sglp-ib", target_macs=0.5, data=_data(), prune_residual=True)
    assert abs(result.macs_after / result.macs_before - 0.5) <= 0.01
    assert result.model(_x(2)).shape == (2, CLASSES)


class _Attention(nn.Module):
    """A timm-style self-attention block: one qkv projection, heads, an output projection."""

    def __init__(self, dim: int = 16, heads: int = 2) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, T, D)
        q, k, v = self.qkv(x).chunk(3, -1)
        return self.proj(torch.softmax(q @ k.transpose(1, 2) / 4.0, -1) @ v)


class _TinyViT(nn.Module):
    def __init__(self, attention: nn.Module) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, 16, 4, 4)
        self.block = attention
        self.head = nn.Linear(16, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.patch(x).flatten(2).transpose(1, 2)
        if isinstance(self.block, nn.MultiheadAttention):
            tokens = self.block(tokens, tokens, tokens)[0]
        else:
            tokens = self.block(tokens)
        return self.head(tokens.mean(1))


class ChannelAttention(nn.Module):
    """CBAM's channel attention (a CNN block despite its name): pooled descriptors through a shared MLP."""

    def __init__(self, channels: int = 16) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Conv2d(channels, 4, 1), nn.ReLU(), nn.Conv2d(4, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.mlp(x.mean((2, 3), keepdim=True)) + self.mlp(x.amax((2, 3), keepdim=True)))


@pytest.mark.parametrize("attention", [_Attention(), nn.MultiheadAttention(16, 2, batch_first=True)],
                         ids=["qkv", "multihead"])
def test_self_attention_is_refused_at_once_with_one_line_naming_the_block(attention):
    with pytest.raises(LassopruneError, match=r"^block \((_Attention|MultiheadAttention)\) is a self-attention") as info:
        lp.prune(_TinyViT(attention).eval(), _x(), method="l1", target_macs=0.5)
    assert "\n" not in str(info.value) and "not supported" in str(info.value)


def test_channel_attention_of_a_cnn_is_not_mistaken_for_self_attention():
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), ChannelAttention(),
                          nn.Conv2d(16, 32, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, CLASSES))
    result = lp.prune(randomise_batchnorm(model).eval(), _x(), method="l1", target_macs=0.5, reconstruct=False)
    assert abs(result.macs_after / result.macs_before - 0.5) <= 0.01
