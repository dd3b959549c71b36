"""The finished-module cache of reconstruction: same results, prefix not run again."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import lassoprune as lp
from lassoprune.pruning.prefix_cache import FinishedModuleCache
from lassoprune.pruning.reconstruct import reconstruct


class CountedConv(nn.Conv2d):
    """A conv that counts how often it really computes."""

    def __init__(self, *args: int) -> None:
        super().__init__(*args, padding=1)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return super().forward(x)


def _chain() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(CountedConv(3, 4, 3), nn.ReLU(), CountedConv(4, 4, 3), nn.ReLU(), CountedConv(4, 2, 3)).eval()


@torch.no_grad()
def test_a_finished_prefix_is_served_from_memory_with_the_same_outputs() -> None:
    model = _chain()
    batches = [torch.randn(2, 3, 6, 6), torch.randn(2, 3, 6, 6)]
    cache = FinishedModuleCache(model, pending=["2", "4"])
    seen = []
    with cache.installed():
        for finished in (None, "2", "4"):
            if finished:
                cache.finish(finished)
            for b, x in enumerate(batches):
                cache.batch = b
                seen.append(model(x))
    plain = [model(x) for x in batches] * 3
    assert all(torch.equal(a, b) for a, b in zip(seen, plain))
    # pass 1 runs everything; pass 2 resumes after the finished "0", "1"; pass 3 after "0".."3"
    assert [model[i].calls for i in (0, 2, 4)] == [2 + 2, 4 + 2, 6 + 2]  # the last +2: the plain passes
    assert "forward" not in vars(model[0])  # the wrappers are gone


@torch.no_grad()
def test_a_cached_module_recomputes_when_its_input_changes() -> None:
    model = _chain()
    cache = FinishedModuleCache(model, pending=["4"])
    x, other = torch.randn(2, 3, 6, 6), torch.randn(2, 3, 6, 6)
    with cache.installed():
        first = model(x)
        again = model(x.clone())  # equal values, another tensor: served
        second = model(other)  # same batch index, new values: computed
    assert torch.equal(second, _chain()(other)) and torch.equal(first, again)
    assert model[0].calls == 2


class InPlaceBlock(nn.Module):
    """A residual block written the torchvision way: ``out += x`` and an in-place ReLU after cached modules."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn(self.conv(x))
        out += x
        return self.relu(out)


class InPlaceNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.block = InPlaceBlock(4)
        self.head = nn.Conv2d(4, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.stem(x)
        y.relu_()  # changes the stem's output in place after the call
        return self.head(self.block(y))


@torch.no_grad()
def test_in_place_operations_after_a_cached_module_do_not_corrupt_its_entry() -> None:
    torch.manual_seed(0)
    model = InPlaceNet().eval()
    for p in model.block.bn.parameters():
        p.data.uniform_(0.5, 1.5)
    batches = [torch.randn(2, 3, 6, 6) for _ in range(2)]
    expected = [model(x) for x in batches]
    cache = FinishedModuleCache(model, pending=["block.conv", "head"])
    with cache.installed():
        seen = []
        for finished in (None, None, "block.conv", None):  # pass 2: bn served inside the pending block
            if finished:
                cache.finish(finished)
            for b, x in enumerate(batches):
                cache.batch = b
                seen.append(model(x))
    assert cache.hits > 0  # the stem and then the block were served
    assert all(torch.equal(got, expected[i % 2]) for i, got in enumerate(seen))


FAST = ("resnet20", "mobilenetv2")  # vgg* (4,608-unknown solves) and the others run with -m slow


@pytest.mark.parametrize("name", [n if n in FAST else pytest.param(n, marks=pytest.mark.slow)
                                  for n in lp.list_models()])
def test_every_prefix_mode_gives_the_same_reconstruction(name: str) -> None:
    from lassoprune.training.data_setup import calibration_batches

    torch.manual_seed(0)
    model = lp.create_model(name, num_classes=10, in_channels=3).eval()
    calib = calibration_batches("synthetic", image_size=32, size=48, batch_size=16)
    cut = lp.prune(model, calib[0][0][:1], method="l1", target_macs=0.5)
    results = []
    for mode in ("none", "cache", "frontier"):
        pruned = copy.deepcopy(cut.model)
        refits = reconstruct(model, pruned, cut.groups, cut.keep, calib, prefix=mode, targets_in_memory=0)
        results.append((pruned.state_dict(), refits))
    (plain, refits_plain) = results[0]
    assert refits_plain
    for state, refits in results[1:]:
        assert refits == refits_plain
        assert all(torch.equal(state[k], plain[k]) for k in plain)
