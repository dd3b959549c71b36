"""A pruning method is a plug-in: registered from anywhere, it runs through lp.prune, run configs and the CLI.

The toy method below is complete: an options dataclass, a run function and a
``MethodSpec``. Nothing in ``prune()``, the pipeline config or the command
line knows its name.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
import torch
from torch import nn

import lassoprune as lp
from lassoprune.cli import main
from lassoprune.errors import LassopruneError, UnknownNameError
from lassoprune.pipeline.config import parse_config
from lassoprune.pruning.criteria import CriterionSpec
from lassoprune.pruning import (
    METHODS,
    Diagnostics,
    MethodContext,
    MethodOptions,
    MethodSpec,
    Selection,
    register_method,
)
from lassoprune.pruning.methods import METHOD_MODULES

TOY = "keep-last"


@dataclass(frozen=True)
class KeepLastOptions(MethodOptions):
    """``weight``: how much more a later channel is worth (> 0)."""

    weight: float = 1.0

    def validate(self, method: str) -> None:
        if not self.weight > 0:
            raise LassopruneError(f"{method}: weight must be > 0, got {self.weight}")


def keep_last(ctx: MethodContext) -> Selection:
    """Scores grow with the channel number: the allocation keeps each group's last channels."""
    opts: KeepLastOptions = ctx.options
    scores = {g.id: opts.weight * torch.arange(1, g.num_channels + 1, dtype=torch.float64)
              for g in ctx.analysis.groups}
    return Selection(keep={}, scores=scores, diagnostics=Diagnostics(settings={"weight": opts.weight}))


@pytest.fixture
def toy_method():
    register_method(MethodSpec(TOY, keep_last, "keeps the last channels", KeepLastOptions))
    yield METHODS.get(TOY)
    METHODS.remove(TOY)


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    return lp.create_model("resnet20", num_classes=10)


def test_toy_method_runs_through_prune(toy_method) -> None:
    result = lp.prune(_net(), torch.zeros(1, 3, 32, 32), method=TOY, target_macs=0.5, weight=2.0)
    assert abs(result.macs_after / result.macs_before - 0.5) <= 0.01
    assert result.diagnostics.settings == {"weight": 2.0} and result.method == TOY
    for group in result.groups:  # the kept channels are a suffix of every group
        kept = result.keep[group.id]
        assert kept == tuple(range(group.num_channels - len(kept), group.num_channels))


def test_options_are_checked_before_any_work(toy_method) -> None:
    model = _net()
    with pytest.raises(UnknownNameError, match="valid keep-last options: weight"):
        lp.prune(model, torch.zeros(1, 3, 32, 32), method=TOY, target_macs=0.5, ridge=0.1)
    with pytest.raises(LassopruneError, match="weight must be > 0"):
        lp.prune(model, torch.zeros(1, 3, 32, 32), method=TOY, target_macs=0.5, weight=-1.0)
    with pytest.raises(LassopruneError, match="takes no options"):
        lp.prune(model, torch.zeros(1, 3, 32, 32), method="l1", target_macs=0.5, ridge=0.1)


def test_toy_method_in_a_run_config(toy_method) -> None:
    document = {"model": "resnet20", "data": {"name": "synthetic"},
                "prune": {"method": TOY, "target_macs": 0.5, "calib_size": 20, "options": {"weight": 3.0}}}
    assert parse_config(document).prune.options == {"weight": 3.0}
    document["prune"]["options"] = {"wieght": 3.0}
    with pytest.raises(UnknownNameError, match="wieght"):
        parse_config(document)


def test_toy_method_on_the_command_line(toy_method, tmp_path, capsys) -> None:
    out = tmp_path / "p.pt"
    code = main(["--quiet", "prune", "--model", "resnet20", "--num-classes", "10", "--method", TOY,
                 "--target-macs", "0.5", "--weight", "2", "--out", str(out), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["method"] == TOY and report["diagnostics"]["settings"] == {"weight": 2}
    assert abs(report["macs_ratio"] - 0.5) <= 0.01 and out.is_file()
    assert main(["prune", "--list-methods"]) == 0
    assert TOY in capsys.readouterr().out


def test_every_module_in_methods_registers_a_method() -> None:
    def home(spec: MethodSpec) -> str:
        fn = spec.criterion.fn if isinstance(spec, CriterionSpec) else spec.run
        return fn.__module__

    package = "lassoprune.pruning.methods."
    homes = {home(spec)[len(package):] for _, spec in METHODS.items() if home(spec).startswith(package)}
    assert homes == set(METHOD_MODULES)
    assert {"l1", "l2", "bn-scale", "random", "taylor", "sglp-ib", "stlp-ib", "hsic-ib", "class-lasso",
            "dwgl-vote"} <= set(lp.pruning.list_methods())


def test_no_method_name_in_the_core() -> None:
    """prune(), the pipeline config and the CLI ask the spec, never the name (defaults aside)."""
    from pathlib import Path

    root = Path(lp.__file__).parent
    files = [root / "pruning" / "api.py", root / "pipeline" / "config.py", *sorted((root / "cli").glob("*.py"))]
    for path in files:
        text = path.read_text()
        for name in lp.pruning.list_methods():
            mentions = text.count(f'"{name}"')
            allowed = text.count(f'method: str = "{name}"') + text.count(f'default="{name}"') \
                + text.count(f'str | Callable[..., torch.Tensor] = "{name}"')
            assert mentions <= allowed, f"{path.name} names method {name!r} outside a documented default"


def test_a_vote_far_below_its_target_is_refused_with_the_reason() -> None:
    """After strong sparse training every all-zero filter ties at the smallest vote threshold."""
    torch.manual_seed(0)
    model = lp.create_model("resnet20", num_classes=10, in_channels=1).eval()
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, nn.Conv2d) and name != "conv1":
                module.weight[2:] = 0.0  # all but two filters of every conv are zero
    with pytest.raises(LassopruneError, match=r"channels are exactly zero .* keeps 0\.\d+ of the macs"):
        lp.prune(model, torch.zeros(1, 1, 32, 32), method="dwgl-vote", target_macs=0.6)
