"""The Torch-Pruning peers of benchmarks/compare.py: the ratio search meets a MACs target within 1% and
reports what lassoprune counts; GroupNormPruner's sparse learning really shrinks the group norms."""

import copy

import pytest
import torch
from benchmark_modules import load

import lassoprune as lp
from lassoprune.errors import LassopruneError, UnknownNameError
from lassoprune.training import TrainConfig

peers = load("compare_peers")
compare = load("compare")  # imports compare_peers by name, registered above

EXAMPLE = torch.zeros(1, 1, 28, 28)


def _resnet20() -> torch.nn.Module:
    torch.manual_seed(0)
    return lp.create_model("resnet20", num_classes=10, in_channels=1).eval()


@pytest.mark.parametrize("peer", peers.PEERS)
@pytest.mark.parametrize("target", [0.5, 0.25])
def test_ratio_search_meets_the_macs_target_and_reports_lassoprune_counts(peer: str, target: float) -> None:
    model = _resnet20()
    dense = lp.count(model, EXAMPLE)
    cut = peers.peer_cut(peer, model, EXAMPLE, target, num_classes=10)
    assert cut.within_tolerance
    assert abs(cut.macs_ratio - target) <= 0.01
    counted = lp.count(cut.model, EXAMPLE)
    assert (counted.macs, counted.params) == (cut.macs_after, cut.params_after)
    assert (dense.macs, dense.params) == (cut.macs_before, cut.params_before)
    assert lp.count(model, EXAMPLE).macs == dense.macs  # the search prunes copies only
    assert cut.model.fc.out_features == 10  # classifier outputs ignored
    assert cut.model(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    assert 0 < cut.ratio < 1 and cut.evaluations == len(cut.trials)


def test_ratio_search_meets_a_parameter_target() -> None:
    model = _resnet20()
    cut = peers.peer_cut("tp-magnitude", model, EXAMPLE, 0.25, num_classes=10, measure="params")
    assert cut.within_tolerance and abs(cut.params_ratio - 0.25) <= 0.01
    assert cut.macs_ratio > cut.params_ratio  # the late, wide layers hold the parameters


def test_ratio_search_rejects_a_target_outside_zero_one() -> None:
    with pytest.raises(LassopruneError, match="fraction kept"):
        peers.peer_cut("tp-magnitude", _resnet20(), EXAMPLE, 1.2, num_classes=10)


def test_unknown_peer_lists_the_valid_ones() -> None:
    with pytest.raises(UnknownNameError, match="tp-magnitude"):
        peers.make_pruner("tp-lamp", _resnet20(), EXAMPLE, 0.5, num_classes=10)


def test_group_sparse_learning_shrinks_group_norms() -> None:
    gen = torch.Generator().manual_seed(0)
    batches = [(torch.randn(8, 1, 28, 28, generator=gen), torch.randint(0, 10, (8,), generator=gen)) for _ in range(4)]
    cfg = TrainConfig(epochs=1, lr=0.05, weight_decay=0.0, schedule="constant", seed=0)
    start = _resnet20()
    before = peers.group_norms(start, EXAMPLE, num_classes=10)
    plain, sparse = copy.deepcopy(start), copy.deepcopy(start)
    peers.sparse_train_group_sl(plain, EXAMPLE, batches, cfg, num_classes=10, reg=0.0)
    peers.sparse_train_group_sl(sparse, EXAMPLE, batches, cfg, num_classes=10, reg=0.1)
    without, with_reg = peers.group_norms(plain, EXAMPLE, 10), peers.group_norms(sparse, EXAMPLE, 10)
    assert before.shape == with_reg.shape == without.shape
    assert with_reg.sum() < 0.9 * before.sum()
    assert with_reg.sum() < without.sum()
    assert (with_reg < without).float().mean() > 0.9  # nearly every channel group shrinks


def test_cli_rejects_unknown_names_at_once(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        compare.parse_args(["--standard", "--methods", "l1", "tp-lamp"])
    assert "tp-magnitude" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        compare.parse_args(["--standard", "--models", "resnet57"])
    assert "resnet56" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        compare.parse_args(["--standard", "--checkpoint", "resnet57=model.pt"])
    assert "MODEL=FILE" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        compare.parse_args(["--standard", "--shard", "2/2"])
    assert "0 <= I < N" in capsys.readouterr().err
