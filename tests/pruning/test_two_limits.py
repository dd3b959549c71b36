"""Two limits at once (the seed's headline is a pair: -61% FLOPs and -85% parameters): the binding one is met
within 1%, the other is kept at most, by every route."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import lassoprune as lp
from lassoprune.errors import LassopruneError
from lassoprune.pipeline import parse_config

EXAMPLE = torch.randn(1, 3, 32, 32)


def _ratios(result: lp.pruning.PruneResult) -> tuple[float, float]:
    return result.macs_after / result.macs_before, result.params_after / result.params_before


@pytest.mark.parametrize(("macs", "params", "binding"), [(0.5, 0.2, "params"), (0.5, 0.95, "macs")])
def test_the_binding_limit_is_met_and_the_other_kept_at_most(macs, params, binding):
    model = lp.create_model("resnet20", num_classes=10).eval()
    result = lp.prune(model, EXAMPLE, method="l1", target_macs=macs, target_params=params)
    got_macs, got_params = _ratios(result)
    assert got_macs <= macs + 0.01 and got_params <= params + 0.01
    assert result.target.kind == binding
    assert abs((got_macs if binding == "macs" else got_params) - result.target.ratio) <= 0.01


def test_a_lasso_method_takes_two_limits():
    model = lp.create_model("resnet20", num_classes=10).eval()
    gen = torch.Generator().manual_seed(0)
    y = torch.arange(40) % 10
    data = [(torch.randn(40, 3, 32, 32, generator=gen) + torch.randn(10, 3, 32, 32, generator=gen)[y], y)]
    result = lp.prune(model, EXAMPLE, method="hsic-ib", target_macs=0.6, target_params=0.3, data=data, pool=2)
    got_macs, got_params = _ratios(result)
    assert got_macs <= 0.61 and got_params <= 0.31
    assert min(abs(got_macs - 0.6), abs(got_params - 0.3)) <= 0.01


def test_two_limits_in_a_run_config_and_refused_with_a_threshold():
    config = parse_config({"model": "resnet20", "data": {"name": "synthetic"},
                           "prune": {"method": "l1", "target_macs": 0.39, "target_params": 0.15}})
    assert (config.prune.target_macs, config.prune.target_params) == (0.39, 0.15)
    model = lp.create_model("resnet20", num_classes=10).eval()
    with pytest.raises(LassopruneError, match="threshold"):
        lp.prune(model, EXAMPLE, method="dwgl-vote", threshold=0.1, target_macs=0.5, target_params=0.5)


def test_two_limits_in_place_prune_the_model_itself():
    """The pipeline prunes in place: the binding cut is made on the model itself."""
    model = lp.create_model("resnet20", num_classes=10).eval()
    before = lp.count_params(model)
    result = lp.prune(model, EXAMPLE, method="l1", target_macs=0.5, target_params=0.95, inplace=True)
    assert result.model is model and result.target.kind == "macs"
    assert lp.count_params(model) == result.params_after < before


def test_in_place_two_limits_run_the_method_once_and_equal_the_copy(monkeypatch):
    """A binding MACs cut is made on a copy first (to test the params limit); in place, its keep sets are then
    applied to the model itself instead of running the method a second time."""
    spec = lp.pruning.METHODS.get("l1")
    calls = []

    def counted(ctx):
        calls.append(1)
        return spec.run(ctx)

    monkeypatch.setattr(lp.pruning.api, "_method_spec", lambda method: dataclasses.replace(spec, run=counted))
    model = lp.create_model("resnet20", num_classes=10).eval()
    copied = lp.prune(model, EXAMPLE, method="l1", target_macs=0.5, target_params=0.95)
    calls.clear()
    result = lp.prune(model, EXAMPLE, method="l1", target_macs=0.5, target_params=0.95, inplace=True)
    assert len(calls) == 1 and result.model is model and result.keep == copied.keep
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), copied.model(x), rtol=1e-5, atol=1e-5)
