"""Regularisers: the prox is the exact group-lasso step, DWGL's coefficients are directed and shared,
sparse training zeroes the same high filters in every conv of an eltwise group, lam = 0 changes nothing."""

import copy

import pytest
import torch
from torch import nn

import lassoprune as lp
from lassoprune.data import BatchLoader, load_dataset
from lassoprune.errors import LassopruneError, UnknownNameError
from lassoprune.pruning import filter_norms
from lassoprune.regularizers import (
    BNL1,
    DWGL,
    REGULARIZERS,
    GroupLasso,
    coefficients,
    create_regularizer,
    group_soft_threshold_,
)

SYNTH = {"num_classes": 4, "in_channels": 3, "image_size": 8, "n_per_class": 32, "seed": 3}


class Block(nn.Module):
    """conv-BN-ReLU-conv-BN plus identity; ``norm=False`` drops the BNs."""

    def __init__(self, c: int, norm: bool) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c) if norm else nn.Identity()
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c) if norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))))


class TinyRes(nn.Module):
    """stem + 2 residual blocks + linear head: one eltwise group (stem, blocks.0.conv2, blocks.1.conv2)."""

    def __init__(self, c: int = 8, classes: int = 4, norm: bool = True) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, c, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(c) if norm else nn.Identity()
        self.blocks = nn.Sequential(Block(c, norm), Block(c, norm))
        self.head = nn.Linear(c, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(torch.relu(self.bn(self.stem(x)))).mean((2, 3)))


ELTWISE = ("stem", "blocks.0.conv2", "blocks.1.conv2")
EXAMPLE = torch.zeros(1, 3, 8, 8)


def _tiny(norm: bool = True, seed: int = 0) -> TinyRes:
    torch.manual_seed(seed)
    return TinyRes(norm=norm)


def _loader(seed: int = 0) -> BatchLoader:
    return BatchLoader(load_dataset("synthetic", split="train", **SYNTH), 16, shuffle=True, seed=seed, drop_last=True)


# --- coefficients -------------------------------------------------------------------------------


@pytest.mark.parametrize("schedule", ["linear", "exp", "step"])
def test_coefficients_increase_from_one_to_one_plus_alpha(schedule):
    c = coefficients(8, schedule, alpha=3.0)
    assert c.shape == (8,) and c[0] == 1.0 and c[-1] == pytest.approx(4.0)
    assert torch.all(c[1:] >= c[:-1])
    assert torch.equal(coefficients(8, schedule, alpha=0.0), torch.ones(8, dtype=torch.float64))
    assert torch.equal(coefficients(1, schedule, alpha=3.0), torch.ones(1, dtype=torch.float64))


def test_coefficient_formulas():
    def f64(*values: float) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.float64)

    torch.testing.assert_close(coefficients(5, "linear", 2.0), f64(1.0, 1.5, 2.0, 2.5, 3.0))
    torch.testing.assert_close(coefficients(3, "exp", 3.0), f64(1.0, 2.0, 4.0))
    torch.testing.assert_close(coefficients(5, "step", 1.0), f64(1.0, 1.0, 2.0, 2.0, 2.0))


def test_bad_options_are_clear_errors():
    model = _tiny()
    with pytest.raises(UnknownNameError, match="linear, step"):
        DWGL(model, EXAMPLE, 1e-3, schedule="cosine")
    with pytest.raises(LassopruneError, match="alpha"):
        DWGL(model, EXAMPLE, 1e-3, alpha=-1.0)
    with pytest.raises(LassopruneError, match="lam"):
        GroupLasso(model, EXAMPLE, -1e-3)
    with pytest.raises(UnknownNameError, match="bn-l1, dwgl, group-lasso"):
        create_regularizer("l0", model, EXAMPLE, 1e-3)


def test_dwgl_coefficients_are_shared_by_the_eltwise_group_and_plain_elsewhere():
    reg = DWGL(_tiny(), EXAMPLE, 1e-3, alpha=2.0)
    c = reg.coefficients()
    expected = coefficients(8, "linear", 2.0).float()
    for name in ELTWISE:
        assert torch.equal(c[name], expected), name
    for name in ("blocks.0.conv1", "blocks.1.conv1"):
        assert torch.equal(c[name], torch.ones(8)), name
    assert "head" not in c  # the classifier is never regularised
    plain = GroupLasso(_tiny(), EXAMPLE, 1e-3).coefficients()
    assert all(torch.equal(v, torch.ones(8)) for v in plain.values())


def test_resnet20_eltwise_groups_share_coefficients():
    model = lp.create_model("resnet20", num_classes=10, in_channels=1)
    reg = DWGL(model, torch.zeros(1, 1, 32, 32), 1e-3, schedule="exp", alpha=1.0)
    c = reg.coefficients()
    stage3 = ["layer3.0.shortcut.0", "layer3.0.conv2", "layer3.1.conv2", "layer3.2.conv2"]
    assert all(torch.equal(c[n], coefficients(64, "exp", 1.0).float()) for n in stage3)
    assert torch.equal(c["layer3.1.conv1"], torch.ones(64))


# --- penalty and prox ---------------------------------------------------------------------------


def test_penalty_is_the_weighted_sum_of_filter_norms_and_differentiable():
    model = _tiny()
    with torch.no_grad():
        model.stem.weight[7].zero_()  # a zero filter must not give NaN gradients
    reg = DWGL(model, EXAMPLE, 0.01, alpha=1.0)
    expected = 0.0
    for name, module in model.named_modules():
        if name in reg.coefficients():
            expected += (reg.coefficients()[name] * filter_norms(module.weight)).sum().item()
    value = reg.penalty()
    assert value.item() == pytest.approx(0.01 * expected, rel=1e-5)
    value.backward()
    assert torch.isfinite(model.stem.weight.grad).all()
    assert torch.equal(model.stem.weight.grad[7], torch.zeros_like(model.stem.weight.grad[7]))


def test_group_soft_threshold_is_the_exact_minimiser():
    """prox_t(w) = argmin_v 1/2 ||v - w||^2 + t ||v||, checked against a dense grid over R^2."""
    weight = torch.tensor([[0.9, -0.4], [0.05, 0.1], [-1.2, 0.7], [0.3, 0.3]], dtype=torch.float64)
    thresholds = torch.tensor([0.25, 0.2, 0.6, 0.0], dtype=torch.float64)
    prox = group_soft_threshold_(weight.clone().view(4, 1, 1, 2), thresholds).view(4, 2)
    axis = torch.linspace(-1.6, 1.6, 1601, dtype=torch.float64)  # step 0.002
    grid = torch.stack(torch.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2)
    for w, t, v in zip(weight, thresholds, prox):
        objective = 0.5 * ((grid - w) ** 2).sum(1) + t * grid.norm(dim=1)
        best = grid[objective.argmin()]
        assert (best - v).abs().max().item() <= 0.002 + 1e-12
        at_prox = 0.5 * ((v - w) ** 2).sum() + t * v.norm()
        assert at_prox.item() <= objective.min().item() + 1e-12
    assert torch.equal(prox[1], torch.zeros(2))  # ||w|| <= t: exactly zero
    assert torch.equal(prox[3], weight[3])  # t = 0: unchanged


def test_dwgl_prox_scales_each_filter_by_its_coefficient():
    model = _tiny()
    before = copy.deepcopy(model)
    reg = DWGL(model, EXAMPLE, 0.05, alpha=3.0)
    reg.prox_(0.5)
    c = reg.coefficients()
    for name, module in before.named_modules():
        if name not in c:
            continue
        norms = filter_norms(module.weight)
        scale = torch.clamp(1 - 0.5 * 0.05 * c[name] / norms, min=0)
        after = dict(model.named_modules())[name].weight
        torch.testing.assert_close(after, module.weight * scale.view(-1, 1, 1, 1))
    assert torch.equal(model.head.weight, before.head.weight)


def test_bn_l1_penalty_and_prox_are_l1_on_gamma():
    model = _tiny()
    with torch.no_grad():
        model.bn.weight.copy_(torch.linspace(-0.3, 0.4, 8))
    reg = BNL1(model, EXAMPLE, 0.1)
    gammas = [m.weight for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(reg.terms) == 5
    assert reg.penalty().item() == pytest.approx(0.1 * sum(g.abs().sum().item() for g in gammas), rel=1e-6)
    old = model.bn.weight.detach().clone()
    reg.prox_(1.0)  # threshold 0.1
    torch.testing.assert_close(model.bn.weight.detach(), torch.sign(old) * torch.clamp(old.abs() - 0.1, min=0))
    assert reg.sparsity()["blocks.1.conv2"]["zero"]["bn"] == [c for c in range(8) if abs(old[c]) <= 0.1]


@pytest.mark.parametrize("name", REGULARIZERS)
@pytest.mark.parametrize("mode", ["prox", "penalty"])
def test_lam_zero_leaves_training_unchanged(name, mode):
    cfg = lp.TrainConfig(epochs=1, lr=0.05, seed=1)
    test = [next(iter(_loader()))]
    plain, regularised = _tiny(), _tiny()
    lp.fit(plain, _loader(), test, cfg, num_classes=4, progress=False)
    reg = create_regularizer(name, regularised, EXAMPLE, 0.0)
    lp.fit(regularised, _loader(), test, cfg, num_classes=4, progress=False,
           regularizer=reg, regularizer_mode=mode)
    for (key, a), b in zip(plain.state_dict().items(), regularised.state_dict().values()):
        assert torch.equal(a, b), key


# --- sparse training ----------------------------------------------------------------------------


def _sparse_train(reg_name: str, lam: float, alpha: float, steps: int = 120, lr: float = 0.05) -> tuple[TinyRes, object]:
    """Plain SGD with the prox step, on a BN-free TinyRes whose filters all start at norm 1."""
    model = _tiny(norm=False)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv2d):
                module.weight.div_(filter_norms(module.weight).view(-1, 1, 1, 1))
    reg = create_regularizer(reg_name, model, EXAMPLE, lam, alpha=alpha)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    done = 0
    while done < steps:
        for images, labels in _loader(seed=done):
            loss = nn.functional.cross_entropy(model(images), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            reg.prox_(lr)
            done += 1
            if done == steps:
                break
    return model, reg


def test_dwgl_zeroes_the_same_high_filters_in_every_conv_of_the_eltwise_group():
    model, reg = _sparse_train("dwgl", lam=0.1, alpha=4.0)
    report = reg.sparsity()["blocks.1.conv2"]
    zero = report["zero"]
    assert set(zero) == set(ELTWISE)
    first = zero["stem"]
    assert 0 < len(first) < 8
    assert first == list(range(8 - len(first), 8))  # the high indices
    assert all(z == first for z in zero.values())  # coincide across the group's convs
    assert report["intersection"] == report["union"] == len(first)
    # ... so the vote removes exactly them from the whole group
    result = lp.prune(model, EXAMPLE, method="dwgl-vote", threshold=1e-3)
    assert result.keep["blocks.1.conv2"] == tuple(range(8 - len(first)))
    assert result.macs_after < result.macs_before
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(result.model(x), model.eval()(x), atol=1e-5, rtol=1e-5)


def test_plain_group_lasso_scatters_the_zeros():
    """Without direction (c_i = 1, a comparable total shrinkage) the convs zero different filters."""
    _, reg = _sparse_train("group-lasso", lam=0.2, alpha=0.0)
    report = reg.sparsity()["blocks.1.conv2"]
    assert report["union"] > 0
    assert report["intersection"] < report["union"]
    assert any(z != list(range(8 - len(z), 8)) for z in report["zero"].values())
