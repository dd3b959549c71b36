"""Group norms, importance criteria and the Torch-Pruning adapters."""

from __future__ import annotations

import copy

import pytest
import torch
import torch_pruning as tp
from torch import nn

import lassoprune as lp
from lassoprune.errors import LassopruneError, UnknownNameError
from lassoprune.pruning import criteria as C
from lassoprune.channels.groups import ChannelGroup, LayerSlice, analyse_groups, channel_groups
from lassoprune.channels.norms import filter_norms, group_norms, group_power_sums, input_norms, slice_norms
from lassoprune.pruning.methods.taylor import taylor_score
from lassoprune.pruning.tp_adapter import as_tp_importance, from_tp_importance

X = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def _batches(n: int = 2, size: int = 4, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(size, 3, 32, 32, generator=g), torch.randint(0, 10, (size,), generator=g)) for _ in range(n)]


def _randomise_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Signed, distinct BN affine parameters (the zoo initialises gamma = 1, beta = 0)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
    return model


class Tiny(nn.Module):
    """conv(3 -> 4) -> BN -> ReLU -> conv(4 -> 5) -> BN -> ReLU -> pool -> fc(5 -> 3)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 4, 2), nn.BatchNorm2d(4)
        self.conv2, self.bn2 = nn.Conv2d(4, 5, 3, padding=1), nn.BatchNorm2d(5)
        self.fc = nn.Linear(5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        return self.fc(x.mean((2, 3)))


@pytest.fixture(scope="module")
def resnet20() -> tuple[nn.Module, dict[str, ChannelGroup]]:
    torch.manual_seed(0)
    model = _randomise_bn(lp.create_model("resnet20"))
    return model, {g.id: g for g in channel_groups(model, X)}


# --------------------------------------------------------------------------- norms


def test_filter_and_input_norms_of_known_weights() -> None:
    w = torch.tensor(
        [
            [[[1.0, -2.0], [0.0, 2.0]], [[0.0, 0.0], [3.0, 0.0]]],
            [[[0.0, 0.0], [0.0, 0.0]], [[-4.0, 0.0], [0.0, 0.0]]],
        ]
    )
    # w: (O=2, I=2, 2, 2); filter 0 = {1, -2, 2, 3}, filter 1 = {-4}; input 0 = {1, -2, 2}, input 1 = {3, -4}
    assert filter_norms(w, p=1).tolist() == [8.0, 4.0]
    assert torch.allclose(filter_norms(w, p=2), torch.tensor([18.0**0.5, 4.0]))
    assert input_norms(w, p=1).tolist() == [5.0, 7.0]
    assert torch.allclose(input_norms(w, p=2), torch.tensor([3.0, 5.0]))
    assert torch.allclose(filter_norms(torch.tensor([[3.0, 4.0], [0.0, -1.0]]), p=2), torch.tensor([5.0, 1.0]))


def test_grouped_conv_input_norms() -> None:
    conv = nn.Conv2d(4, 6, 3, groups=2, bias=False)
    expected = torch.stack([conv.weight[(i // 2) * 3 : (i // 2 + 1) * 3, i % 2].abs().sum() for i in range(4)])
    assert torch.allclose(input_norms(conv.weight, p=1, groups=2), expected)


def test_slice_norms_scatter_positions_into_channel_order() -> None:
    conv = nn.Conv2d(2, 3, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([1.0, 2.0, 3.0]).view(3, 1, 1, 1).expand(3, 2, 1, 1))
    # positions 2, 0 of the conv carry channels 0, 1
    out_slice = LayerSlice("conv", "conv", "out", indices=(2, 0), channels=(0, 1))
    assert slice_norms(conv, out_slice, p=1).tolist() == [6.0, 2.0]
    bn = nn.BatchNorm2d(3)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([-1.0, 0.5, -2.0]))
    assert slice_norms(bn, LayerSlice("bn", "norm", "out", (1, 2), (0, 1)), p=2).tolist() == [0.5, 2.0]
    # several positions of one channel (a flattened map read by a linear layer) pool into one norm
    fc = nn.Linear(4, 1, bias=False)
    with torch.no_grad():
        fc.weight.copy_(torch.tensor([[1.0, 2.0, 2.0, 4.0]]))
    pooled = slice_norms(fc, LayerSlice("fc", "linear", "in", (0, 1, 2, 3), (0, 0, 1, 1)), p=2)
    assert torch.allclose(pooled, torch.tensor([5.0**0.5, 20.0**0.5]))


def test_group_norms_aggregate_as_the_concatenated_filter(resnet20) -> None:
    model, groups = resnet20
    modules = dict(model.named_modules())
    group = groups["conv1"]
    assert group.is_eltwise and len(group.producers) == 4
    l1, sq = torch.zeros(group.num_channels), torch.zeros(group.num_channels)
    for s in group.producers:
        w = modules[s.module].weight.detach()
        for i, c in zip(s.indices, s.channels):
            l1[c] += w[i].abs().sum()
            sq[c] += w[i].pow(2).sum()
    assert torch.allclose(group_norms(modules, group, p=1), l1)
    assert torch.allclose(group_norms(modules, group, p=2), sq.sqrt())
    assert torch.allclose(group_power_sums(modules, group, p=2), sq)
    with pytest.raises(UnknownNameError):
        group_norms(modules, group, include=("producer",))


def test_group_norms_are_differentiable_without_nan_at_zero() -> None:
    model = Tiny()
    with torch.no_grad():
        model.conv1.weight[1] = 0.0
    group = next(g for g in channel_groups(model, X) if g.id == "conv1")
    group_norms(dict(model.named_modules()), group, p=2).sum().backward()
    grad = model.conv1.weight.grad
    assert torch.isfinite(grad).all() and grad[1].abs().sum() == 0 and grad[0].abs().sum() > 0


# --------------------------------------------------------------------------- registry


def test_registry_lists_and_rejects_unknown_names(monkeypatch) -> None:
    assert {"l1", "l2", "bn-scale", "taylor", "random"} <= set(C.list_criteria())
    assert C.get_criterion("taylor").needs_data and not C.get_criterion("l1").needs_data
    with pytest.raises(UnknownNameError) as info:
        C.get_criterion("l3")
    assert info.value.kind == "criterion" and "l1" in str(info.value)
    monkeypatch.setattr(C.METHODS, "_entries", dict(C.METHODS._entries))

    @C.register_criterion("ones")
    def ones(group: ChannelGroup, ctx: C.ScoreContext) -> torch.Tensor:
        return torch.ones(group.num_channels)

    assert "ones" in C.list_criteria()
    with pytest.raises(ValueError):
        C.register_criterion("ones")(ones)
    model = Tiny()
    scores = C.score_groups(model, channel_groups(model, X), "ones")
    assert all(bool((s == 1).all()) for s in scores.values())


def test_score_groups_rejects_bad_scores() -> None:
    model = Tiny()
    groups = channel_groups(model, X)
    with pytest.raises(LassopruneError, match="shape"):
        C.score_groups(model, groups, lambda g, ctx: torch.ones(g.num_channels + 1))
    with pytest.raises(LassopruneError, match="negative"):
        C.score_groups(model, groups, lambda g, ctx: -torch.ones(g.num_channels))


# --------------------------------------------------------------------------- magnitude


def test_l1_l2_of_a_hand_built_conv() -> None:
    model = Tiny()
    with torch.no_grad():
        model.conv1.weight.copy_(torch.arange(4.0).view(4, 1, 1, 1).expand(4, 3, 2, 2) - 1.0)  # filters of -1, 0, 1, 2
    groups = {g.id: g for g in channel_groups(model, X)}
    assert set(groups) == {"conv1", "conv2"}
    l1 = C.score_groups(model, groups.values(), "l1")["conv1"]
    l2 = C.score_groups(model, groups.values(), "l2")["conv1"]
    assert l1.tolist() == [12.0, 0.0, 12.0, 24.0]  # 12 weights each
    assert torch.allclose(l2, torch.tensor([12.0**0.5, 0.0, 12.0**0.5, 48.0**0.5]))


def test_bn_scale_is_abs_gamma_and_falls_back_to_l2(resnet20) -> None:
    model, groups = resnet20
    modules = dict(model.named_modules())
    scores = C.score_groups(model, groups.values(), "bn-scale")
    assert torch.equal(scores["layer1.0.conv1"], modules["layer1.0.bn1"].weight.detach().abs())
    residual = sum(modules[n].weight.detach().abs() for n in ("bn1", "layer1.0.bn2", "layer1.1.bn2", "layer1.2.bn2"))
    assert torch.allclose(scores["conv1"], residual)
    vgg = lp.create_model("vgg11")
    vgg_groups = channel_groups(vgg, X)
    linear = next(g for g in vgg_groups if g.id == "classifier.0")
    assert not linear.norms
    bn, l2 = (C.score_groups(vgg, [linear], m)["classifier.0"] for m in ("bn-scale", "l2"))
    assert torch.equal(bn, l2)


def test_random_is_seeded_per_group(resnet20) -> None:
    model, groups = resnet20
    a = C.score_groups(model, groups.values(), "random", seed=1)
    b = C.score_groups(model, groups.values(), "random", seed=1)
    c = C.score_groups(model, groups.values(), "random", seed=2)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["layer1.0.conv1"], c["layer1.0.conv1"])
    assert not torch.equal(a["layer1.0.conv1"], a["layer1.1.conv1"])  # same C, different group
    assert all(bool(((s >= 0) & (s < 1)).all()) for s in a.values())


# --------------------------------------------------------------------------- taylor


def test_taylor_needs_batches(resnet20) -> None:
    model, groups = resnet20
    with pytest.raises(LassopruneError, match="calibration"):
        C.score_groups(model, groups.values(), "taylor")
    with pytest.raises(LassopruneError, match="calibration"):
        taylor_score(groups["conv1"], C.ScoreContext.build(model))


def test_taylor_matches_the_formula_on_a_tiny_net() -> None:
    torch.manual_seed(1)
    model = _randomise_bn(Tiny())
    batches = [(torch.randn(3, 3, 8, 8), torch.tensor([0, 1, 2])) for _ in range(3)]
    group = next(g for g in channel_groups(model, torch.randn(1, 3, 8, 8)) if g.id == "conv1")
    expected = torch.zeros(4, dtype=torch.float64)
    reference = copy.deepcopy(model).eval()
    for x, y in batches:
        reference.zero_grad()
        nn.functional.cross_entropy(reference(x), y).backward()
        per_channel = torch.zeros(4, dtype=torch.float64)
        for p in (reference.conv1.weight, reference.conv1.bias, reference.bn1.weight, reference.bn1.bias):
            per_channel += (p * p.grad).detach().double().reshape(4, -1).sum(1)
        expected += per_channel**2 / len(batches)
    scores = C.score_groups(model, [group], "taylor", batches=batches)["conv1"]
    assert torch.allclose(scores, expected, rtol=1e-5, atol=1e-12)


def test_taylor_is_zero_for_a_zeroed_channel_and_leaves_the_model_alone(resnet20) -> None:
    model, groups = copy.deepcopy(resnet20[0]), resnet20[1]
    block = model.layer1[0]
    with torch.no_grad():
        block.conv1.weight[3] = 0.0
        block.bn1.weight[3] = 0.0
        block.bn1.bias[3] = 0.0
    model.train()
    model.fc.weight.grad = torch.full_like(model.fc.weight, 7.0)  # a gradient the caller already had
    block.conv2.weight.requires_grad_(False)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    forwards = []
    model.register_forward_pre_hook(lambda *_: forwards.append(1))
    scores = C.score_groups(model, groups.values(), "taylor", batches=_batches(2))
    assert len(forwards) == 2  # one pass per batch for all groups, not one per group
    target = scores["layer1.0.conv1"]
    assert target[3] == 0 and bool((target[torch.arange(16) != 3] > 0).all())
    assert all(bool(torch.isfinite(s).all() and (s >= 0).all()) for s in scores.values())
    assert model.training and not block.conv2.weight.requires_grad
    assert torch.equal(model.fc.weight.grad, torch.full_like(model.fc.weight, 7.0))
    assert all(p.grad is None for n, p in model.named_parameters() if n != "fc.weight")
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())  # BN statistics untouched


# --------------------------------------------------------------------------- every criterion on the zoo


@pytest.mark.parametrize("name", ["resnet20", "mobilenetv2", "densenet40", "vgg11"])
def test_every_criterion_scores_every_group(name: str) -> None:
    torch.manual_seed(0)
    model = lp.create_model(name)
    groups = channel_groups(model, X)
    batches = _batches(1, 2)
    methods = [*C.list_criteria(), from_tp_importance(tp.importance.GroupMagnitudeImportance())]
    for method in methods:
        scores = C.score_groups(model, groups, method, batches=batches, example_inputs=X)
        assert list(scores) == [g.id for g in groups]
        for g in groups:
            s = scores[g.id]
            assert s.shape == (g.num_channels,) and s.dtype in (torch.float32, torch.float64)
            assert bool(torch.isfinite(s).all()) and bool((s >= 0).all()), (method, g.id)


# --------------------------------------------------------------------------- Torch-Pruning adapters


def test_as_tp_importance_prunes_the_lowest_l1_channels(resnet20) -> None:
    model, groups = copy.deepcopy(resnet20[0]), resnet20[1]
    l1 = C.score_groups(model, groups.values(), "l1")
    imp = as_tp_importance("l1", model, X)
    assert isinstance(imp, tp.importance.Importance)
    pruner = tp.pruner.MagnitudePruner(model, X, importance=imp, pruning_ratio=0.5, ignored_layers=[model.fc])
    pruner.step()
    removed = {name: sorted(idxs) for name, is_out, idxs in pruner.DG.pruning_history() if is_out}
    for name in ("layer1.0.conv1", "conv1", "layer3.2.conv1"):  # a plain group, the residual stream, a wide one
        assert removed[name] == sorted(torch.argsort(l1[name])[: len(l1[name]) // 2].tolist()), name
    assert model.layer1[0].bn1.num_features == 8
    assert model(X).shape == (1, 10)


def test_as_tp_importance_skips_the_classifier_and_follows_iterative_pruning() -> None:
    torch.manual_seed(0)
    model = lp.create_model("resnet20")
    imp = as_tp_importance("taylor", model, X, batches=_batches(1, 2))
    pruner = tp.pruner.MagnitudePruner(model, X, importance=imp, pruning_ratio=0.5, iterative_steps=2)
    for _ in range(2):
        pruner.step()  # no ignored_layers: the classifier group is scored None, hence kept
    assert model.fc.out_features == 10
    assert model.layer1[0].conv1.out_channels == 8
    with pytest.raises(LassopruneError, match="calibration"):
        as_tp_importance("taylor", model, X)


def test_from_tp_importance_agrees_with_torch_pruning(resnet20) -> None:
    model, groups = resnet20
    tp_imp = tp.importance.GroupMagnitudeImportance(p=1, group_reduction="sum", normalizer=None)
    ours = C.score_groups(model, groups.values(), from_tp_importance(tp_imp), example_inputs=X)
    analysis = analyse_groups(model, X)
    modules = dict(model.named_modules())
    for group in analysis.groups:
        root, fn = analysis.roots[group.id]
        direct = tp_imp(analysis.graph.get_pruning_group(root, fn, list(range(group.num_channels))))
        assert torch.allclose(ours[group.id], direct)
        # tp's group L1 = our p=1 norm over producers, consumers and norms
        members = group_power_sums(modules, group, p=1, include=("producers", "consumers", "norms"))
        assert torch.allclose(ours[group.id], members.detach(), rtol=1e-5)
    with pytest.raises(LassopruneError, match="example_inputs"):
        C.score_groups(model, list(groups.values())[:1], from_tp_importance(tp_imp))
