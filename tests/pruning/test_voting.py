"""dwgl-vote: intersection / union / k-of-n on hand-made votes, thresholds, target search, reports, errors."""

import copy
import re

import pytest
import torch
from torch import nn

import lassoprune as lp
from lassoprune.errors import LassopruneError, UnknownNameError
from lassoprune.pruning import mask_channels
from lassoprune.pruning.methods.dwgl_vote import combine_votes, keep_mask, removal_statistic

EXAMPLE = torch.zeros(1, 3, 32, 32)
STAGE1 = ["conv1", "layer1.0.conv2", "layer1.1.conv2", "layer1.2.conv2"]  # the eltwise group "conv1"


def test_combine_votes_on_hand_made_votes():
    votes = torch.tensor([
        [1, 1, 0, 0, 1],
        [1, 0, 1, 0, 1],
        [1, 0, 0, 0, 1],
    ], dtype=torch.bool)
    assert combine_votes(votes, "intersection").tolist() == [True, False, False, False, True]
    assert combine_votes(votes, "union").tolist() == [True, True, True, False, True]
    assert combine_votes(votes, "k-of-n", k=2).tolist() == [True, False, False, False, True]
    assert combine_votes(votes, "k-of-n", k=1).tolist() == combine_votes(votes, "union").tolist()
    assert combine_votes(votes, "k-of-n", k=9).tolist() == combine_votes(votes, "intersection").tolist()  # capped
    assert combine_votes(votes[:1], "intersection").tolist() == votes[0].tolist()  # one voter: its own votes


@pytest.mark.parametrize("rule, k", [("intersection", None), ("union", None), ("k-of-n", 2), ("k-of-n", 3)])
def test_the_statistic_thresholded_equals_the_combined_votes(rule, k):
    ratios = torch.rand(4, 50, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    statistic = removal_statistic(ratios, rule, k)
    for tau in (0.05, 0.3, 0.5, 0.9):
        assert torch.equal(statistic < tau, combine_votes(ratios < tau, rule, k))


def test_keep_mask_tops_up_to_the_floor_with_the_strongest():
    statistic = torch.tensor([0.0, 0.3, 0.1, 0.02, 0.9])
    assert keep_mask(statistic, 0.5, floor=1).tolist() == [False, False, False, False, True]
    assert keep_mask(statistic, 0.5, floor=3).tolist() == [False, True, True, False, True]


def _model() -> nn.Module:
    """ResNet-20 with hand-set zero filters in the stage-1 eltwise group and in one plain conv."""
    torch.manual_seed(0)
    model = lp.create_model("resnet20", num_classes=10)
    with torch.no_grad():
        modules = dict(model.named_modules())
        for name in STAGE1:
            modules[name].weight[12:].zero_()  # voted out by every conv: the intersection
        modules["conv1"].weight[3].mul_(1e-3)  # voted out by the stem only: union, not intersection
        modules["layer1.0.conv2"].weight[5].zero_()
        modules["layer2.1.conv1"].weight[::2].zero_()  # a plain group: 16 of 32
    return model.eval()


def test_intersection_and_union_reported_and_removed():
    model = _model()
    result = lp.prune(model, EXAMPLE, method="dwgl-vote", threshold=0.01)
    stage1 = result.diagnostics.groups["conv1"].values
    assert stage1["votes"] == {"conv1": 5, "layer1.0.conv2": 5, "layer1.1.conv2": 4, "layer1.2.conv2": 4}
    assert (stage1["intersection"], stage1["union"], stage1["removed"]) == (4, 6, 4)
    assert result.diagnostics.extra["voted"]["conv1"]["conv1"] == [3, 12, 13, 14, 15]
    assert result.keep["conv1"] == tuple(range(12))
    assert result.keep["layer2.1.conv1"] == tuple(range(1, 32, 2))
    assert result.target is None and result.diagnostics.search.value == 0.01
    assert not result.diagnostics.search.searched
    summary = result.diagnostics.extra["eltwise"]
    assert (summary["channels"], summary["intersection"], summary["union"]) == (16 + 32 + 64, 4, 6)
    report = result.to_dict()
    assert report["target"] is None
    assert report["groups"]["conv1"]["intersection"] == 4 and report["groups"]["conv1"]["union"] == 6
    assert result.macs_after < result.macs_before
    masked = copy.deepcopy(model)
    mask_channels(masked, result.groups, result.keep)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(result.model(x), masked(x), atol=1e-4, rtol=1e-4)


def test_union_and_k_of_n_rules():
    model = _model()
    union = lp.prune(model, EXAMPLE, method="dwgl-vote", threshold=0.01, vote="union")
    assert union.keep["conv1"] == tuple(c for c in range(12) if c not in (3, 5))
    two = lp.prune(model, EXAMPLE, method="dwgl-vote", threshold=0.01, vote="k-of-n", vote_k=2)
    assert two.keep["conv1"] == tuple(range(12))


def test_bn_votes_read_gamma():
    model = _model()
    with torch.no_grad():
        for name in ("bn1", "layer1.0.bn2", "layer1.1.bn2", "layer1.2.bn2"):
            dict(model.named_modules())[name].weight[:2].zero_()
    result = lp.prune(model, EXAMPLE, method="dwgl-vote", threshold=0.01, vote_on="bn")
    assert result.keep["conv1"] == tuple(range(2, 16))
    assert result.diagnostics.settings["vote_on"] == "bn"


def test_tau_is_searched_for_a_macs_target():
    model = lp.create_model("resnet20", num_classes=10).eval()
    result = lp.prune(model, EXAMPLE, method="dwgl-vote", target_macs=0.6)
    assert result.macs_after / result.macs_before <= 0.6
    assert result.diagnostics.search.searched and result.diagnostics.search.parameter == "tau"
    tau = result.diagnostics.search.value
    assert any(step["value"] == tau for step in result.diagnostics.search.steps)  # the search tried it
    statistics = torch.cat(list(result.scores.values()))
    previous = statistics[statistics < tau].max().item()  # the next smaller removal set
    smaller = lp.prune(model, EXAMPLE, method="dwgl-vote", threshold=previous)
    assert smaller.macs_after / smaller.macs_before > 0.6  # tau is the smallest that meets the target


@pytest.mark.parametrize(
    "options, error, message",
    [
        ({"threshold": 0.05, "vote": "majority"}, UnknownNameError, "intersection, k-of-n, union"),
        ({"threshold": 0.05, "vote": "k-of-n"}, LassopruneError, "vote_k"),
        ({"threshold": 0.05, "vote_k": 2}, LassopruneError, "k-of-n"),
        ({"threshold": 1.5}, LassopruneError, "(0, 1]"),
        ({"threshold": 0.05, "vote_on": "gamma"}, UnknownNameError, "bn, filters"),
        ({"threshold": 0.05, "tau": 0.1}, UnknownNameError, "threshold"),
        ({"threshold": 0.05, "target_macs": 0.5}, LassopruneError, "not both"),
        ({}, LassopruneError, "target_macs"),
    ],
)
def test_option_errors_are_clear(options, error, message):
    model = lp.create_model("resnet20", num_classes=10)
    with pytest.raises(error, match=re.escape(message)):
        lp.prune(model, EXAMPLE, method="dwgl-vote", **options)


def test_unreachable_target_is_a_clear_error():
    model = lp.create_model("resnet20", num_classes=10)
    with pytest.raises(LassopruneError, match="smallest reachable|unreachable"):
        lp.prune(model, EXAMPLE, method="dwgl-vote", target_macs=0.001)
