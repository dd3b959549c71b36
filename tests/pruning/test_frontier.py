"""The frozen frontier of reconstruction: each node once per batch, only the frontier held, refusals."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lassoprune as lp
from lassoprune.errors import LassopruneError
from lassoprune.pruning.frontier import FrozenPrefix, UntraceableNetwork
from lassoprune.pruning.reconstruct import conv_patches, reconstruct


def _chain() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(4, 4, 3, padding=1),
                         nn.ReLU(inplace=True), nn.Conv2d(4, 2, 3, padding=1)).eval()


@torch.no_grad()
def test_inputs_match_the_network_and_each_node_runs_once_per_batch() -> None:
    model = _chain()
    batches = [torch.randn(2, 3, 6, 6), torch.randn(2, 3, 6, 6)]
    prefix = FrozenPrefix(model, layers=["2", "4"], pending=["2", "4"])
    for name, upto in (("2", 2), ("4", 4)):
        for b, x in enumerate(batches):
            assert torch.equal(prefix.layer_input(name, b, x), model[:upto](x))
        prefix.finish(name)
    # placeholder, 0, 1 for layer "2" (3 nodes); then 2, 3 from the stored relu output (2 nodes); per batch
    assert prefix.computed == 2 * (3 + 2)


@torch.no_grad()
def test_the_frontier_holds_one_activation_not_every_finished_one() -> None:
    model = _chain()
    x = torch.randn(2, 3, 6, 6)
    prefix = FrozenPrefix(model, layers=["2", "4"], pending=["2", "4"])
    prefix.layer_input("2", 0, x)
    assert prefix.stored_bytes() == model[:2](x).numel() * 4  # the relu output only, not conv 0's as well
    prefix.finish("2")
    prefix.layer_input("4", 0, x)
    assert prefix.stored_bytes() == 0  # nothing is asked for after layer "4"


@torch.no_grad()
def test_a_stored_value_is_not_changed_by_an_in_place_op_downstream() -> None:
    model = _chain()  # ReLU(inplace=True) after every conv
    x = torch.randn(2, 3, 6, 6)
    prefix = FrozenPrefix(model, layers=["2", "4"], pending=["2", "4"])
    first = prefix.layer_input("2", 0, x).clone()
    prefix.finish("2")
    prefix.layer_input("4", 0, x)  # runs ReLU(inplace) on conv 2's output, computed from the stored value
    assert torch.equal(first, model[:2](x))


class ReadAfterInPlace(nn.Module):
    """A pre-activation pattern: an in-place ReLU changes x, and the shortcut reads x afterwards."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.head = nn.Conv2d(4, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        y = self.conv2(self.relu(x))
        return self.head(y + x)  # x was changed in place by the ReLU


class Branching(nn.Module):
    """Control flow on a value: torch.fx cannot trace it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        return self.conv2(x) if x.sum() > 0 else self.conv2(-x)


@pytest.mark.parametrize("model_class", [ReadAfterInPlace, Branching])
def test_networks_it_cannot_follow_are_refused(model_class: type[nn.Module]) -> None:
    with pytest.raises(UntraceableNetwork):
        FrozenPrefix(model_class().eval(), layers=["conv2"], pending=["conv2"])


def test_reconstruction_falls_back_when_the_network_does_not_trace() -> None:
    torch.manual_seed(0)
    model = Branching().eval()
    calib = [(torch.randn(8, 3, 8, 8), torch.zeros(8, dtype=torch.int64)) for _ in range(2)]
    cut = lp.prune(model, calib[0][0][:1], method="l1", target_macs=0.75)
    states = []
    for mode in ("auto", "none"):
        pruned = copy.deepcopy(cut.model)
        reconstruct(model, pruned, cut.groups, cut.keep, calib, prefix=mode)
        states.append(pruned.state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[1])
    with pytest.raises(LassopruneError, match="prefix='cache'"):
        reconstruct(model, copy.deepcopy(cut.model), cut.groups, cut.keep, calib, prefix="frontier")


@pytest.mark.parametrize("conv", [
    nn.Conv2d(6, 8, 3, padding=1), nn.Conv2d(6, 8, 3, stride=2, padding=1),
    nn.Conv2d(6, 6, 3, padding=2, dilation=2, groups=3), nn.Conv2d(6, 4, (1, 3), stride=(2, 1), padding=(0, 1)),
    nn.Conv2d(6, 4, 5, stride=2), nn.Conv2d(6, 4, 3, padding="same"),
])
def test_patches_are_the_im2col_rows_at_the_sampled_positions(conv: nn.Conv2d) -> None:
    torch.manual_seed(0)
    x = torch.randn(3, 6, 11, 9)
    count = conv(x).shape[-2] * conv(x).shape[-1]
    where = torch.stack([torch.randperm(count)[:7] for _ in range(3)])
    padding = (1, 1) if conv.padding == "same" else conv.padding
    cols = F.unfold(x, conv.kernel_size, conv.dilation, padding, conv.stride)  # (B, C k k, L)
    expected = cols.gather(2, where[:, None, :].expand(-1, cols.shape[1], -1)).transpose(1, 2).flatten(0, 1)
    assert torch.equal(conv_patches(conv, x, where), expected)
    assert torch.equal(conv_patches(conv, x.contiguous(memory_format=torch.channels_last), where), expected)


class WithFlag(nn.Module):
    """A forward argument with a default besides the images."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x: torch.Tensor, scale: float = 2.0) -> torch.Tensor:
        return self.conv2(self.conv1(x) * scale)


@torch.no_grad()
def test_later_forward_arguments_take_their_defaults() -> None:
    torch.manual_seed(0)
    model = WithFlag().eval()
    x = torch.randn(2, 3, 6, 6)
    prefix = FrozenPrefix(model, layers=["conv2"], pending=["conv2"])
    assert torch.equal(prefix.layer_input("conv2", 0, x), model.conv1(x) * 2.0)
