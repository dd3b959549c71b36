"""Sparse training steered towards a target: the vote then lands on it; a fixed strong lam is refused clearly."""

from __future__ import annotations

import pytest
import torch

import lassoprune as lp
from lassoprune.channels import Target
from lassoprune.errors import LassopruneError
from lassoprune.pruning.steering import TargetSteering
from lassoprune.regularizers import create_regularizer
from lassoprune.training import TrainConfig, fit
from lassoprune.training.data_setup import make_loaders

EXAMPLE = torch.zeros(1, 3, 32, 32)


def _sparse_train(lam: float, target: Target | None, epochs: int = 2, name: str = "dwgl"):
    torch.manual_seed(0)
    model = lp.create_model("resnet20", num_classes=10, in_channels=3)
    loaders = make_loaders("synthetic", image_size=32, batch_size=64, train_subset=512, seed=0)
    reg = create_regularizer(name, model, EXAMPLE, lam)
    steps = epochs * len(loaders.train)
    term = TargetSteering(reg, EXAMPLE, target, steps) if target is not None else reg
    cfg = TrainConfig(epochs=epochs, lr=0.05, seed=0)
    test = [next(iter(loaders.test))]
    fit(model, loaders.train, test, cfg, num_classes=10, regularizer=term, progress=False)
    return model.eval(), term


@pytest.mark.parametrize("kind", ["macs", "params"])
def test_steered_training_then_the_vote_lands_on_the_target(kind: str) -> None:
    target = Target(kind, 0.5)
    model, steering = _sparse_train(lam=0.05, target=target)
    last = steering.history[-1]
    assert last.removed > 0 and last.zero > 0  # the training shrank what the target removes
    assert steering.lam >= 0.05  # grew while the removal set was not yet zero, never shrank
    result = lp.prune(model, EXAMPLE, method="dwgl-vote", **{f"target_{kind}": 0.5})
    after, before = (result.macs_after, result.macs_before) if kind == "macs" else (result.params_after,
                                                                                  result.params_before)
    assert abs(after / before - 0.5) <= 0.01
    eltwise = result.diagnostics.extra["eltwise"]
    assert result.residual_channels == {"total": eltwise["channels"], "removed": eltwise["removed"]}
    assert eltwise["channels"] > 0 and 0 <= eltwise["removed"] <= eltwise["channels"]


def test_the_penalty_never_reaches_channels_the_target_keeps() -> None:
    model, steering = _sparse_train(lam=20.0, target=Target("macs", 0.5))  # keeps 0.21 of the MACs unsteered
    zero = sum(g["intersection"] for g in steering.sparsity().values())  # channels zero in every voter
    assert 0 < zero <= steering.history[-1].removed  # only inside what the cut at the target removes
    result = lp.prune(model, EXAMPLE, method="dwgl-vote", target_macs=0.5)
    assert abs(result.macs_after / result.macs_before - 0.5) <= 0.01


def test_a_fixed_lam_too_strong_for_the_target_gets_a_clear_message() -> None:
    model, _ = _sparse_train(lam=20.0, target=None)
    with pytest.raises(LassopruneError, match="exactly zero .* sparse-train --target-macs"):
        lp.prune(model, EXAMPLE, method="dwgl-vote", target_macs=0.5)
