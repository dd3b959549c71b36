"""The one post-cut path: reconstruction and BatchNorm re-estimation are called from one place only.

``lp.prune`` with calibration data reconstructs (by default) and re-estimates
BatchNorm statistics; every caller (the CLI, the pipeline, the benchmarks)
goes through it or through :func:`after_cut`, never through its own copy.
"""

from __future__ import annotations

import ast
import copy
from pathlib import Path

import pytest
import torch
from torch import nn

import lassoprune as lp
from lassoprune.errors import LassopruneError
from lassoprune.pruning import PruneSettings, mask_channels, prune_with
from tests.pruning.pruning_helpers import model_with_random_bn

ROOT = Path(__file__).resolve().parents[2]
#: function name -> the files allowed to call it (outside the module that defines it)
ONE_CALL_SITE = {
    "reconstruct": {"lassoprune/pruning/post_cut.py"},
    # the training engine re-estimates statistics after proximal sparse-training epochs: not a cut
    "recalibrate_batchnorm": {"lassoprune/pruning/post_cut.py", "lassoprune/training/engine.py"},
}


def _calls(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call):
            func = node.func
            names.add(func.id if isinstance(func, ast.Name) else getattr(func, "attr", ""))
    return names


def test_reconstruction_and_batchnorm_re_estimation_have_one_call_site() -> None:
    files = sorted((ROOT / "lassoprune").rglob("*.py")) + sorted((ROOT / "benchmarks").rglob("*.py"))
    assert any("benchmarks/compare.py" in str(f) for f in files)
    for name, allowed in ONE_CALL_SITE.items():
        callers = {str(f.relative_to(ROOT)) for f in files if name in _calls(f)}
        assert callers == allowed, f"{name} called from {sorted(callers - allowed)}: use lassoprune.pruning.after_cut"


def _data(n: int = 40) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(4)
    return [(torch.randn(n // 2, 3, 32, 32, generator=gen), torch.arange(n // 2) % 10) for _ in range(2)]


def test_with_data_the_cut_is_reconstructed_and_recalibrated_by_default() -> None:
    model = model_with_random_bn("resnet20")
    result = lp.prune(model, torch.zeros(1, 3, 32, 32), method="l1", target_macs=0.5, data=_data())
    assert result.reconstruction and result.recalibrated_images == 40
    stale = lp.prune(model, torch.zeros(1, 3, 32, 32), method="l1", target_macs=0.5)
    assert not stale.reconstruction and stale.recalibrated_images == 0
    assert result.keep == stale.keep  # the post-cut steps never change the cut


def test_without_post_cut_steps_the_pruned_model_equals_its_masked_original() -> None:
    model = model_with_random_bn("resnet20")
    result = lp.prune(model, torch.zeros(1, 3, 32, 32), method="taylor", target_macs=0.5, data=_data(),
                      reconstruct=False, recalibrate=False)
    masked = copy.deepcopy(model)
    mask_channels(masked, result.groups, result.keep)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(result.model(x), masked(x), rtol=1e-4, atol=1e-4)


def test_one_shot_metrics_before_and_after_reconstruction_are_recorded() -> None:
    model = model_with_random_bn("resnet20")
    data = _data()
    images, labels = data[0]

    def score(m: nn.Module) -> dict[str, float]:
        with torch.no_grad():
            return {"top1": float((m.eval()(images).argmax(1) == labels).float().mean())}

    result = lp.prune(model, torch.zeros(1, 3, 32, 32), method="l1", target_macs=0.5, data=data, evaluate=score)
    assert set(result.one_shot) == {"cut", "reconstructed"}
    assert result.one_shot["reconstructed"] == score(result.model)
    plain = lp.prune(model, torch.zeros(1, 3, 32, 32), method="l1", target_macs=0.5, data=data, evaluate=score,
                     reconstruct=False)
    assert plain.one_shot["cut"] == result.one_shot["cut"]  # the same cut, statistics re-estimated, no refit
    assert set(plain.to_dict()["one_shot"]) == {"cut"}


def test_round_to_auto_takes_the_widest_step_that_reaches_the_target() -> None:
    model = lp.create_model("resnet20", num_classes=10)
    result = prune_with(model, torch.zeros(1, 3, 32, 32), PruneSettings("l1", target_macs=0.5, round_to="auto"))
    assert result.round_to == 16
    assert all(kept % 16 == 0 or kept == total for kept, total in result.widths.values())
    narrow = prune_with(model, torch.zeros(1, 3, 32, 32), PruneSettings("l1", target_macs=0.12, round_to="auto"))
    assert narrow.round_to in (8, 4, None) and abs(narrow.macs_after / narrow.macs_before - 0.12) <= 0.01


@pytest.mark.parametrize("settings, message", [
    (PruneSettings("l1", target_macs=0.5, reconstruct=True), "reconstruct=True refits"),
    (PruneSettings("l1", target_macs=0.5, round_to="wide"), "round_to must be"),
    (PruneSettings("l1", target_macs=0.5, ignore=("nope",)), "no module named nope"),
])
def test_bad_settings_fail_clearly(settings: PruneSettings, message: str) -> None:
    with pytest.raises(LassopruneError, match=message):
        prune_with(lp.create_model("resnet20", num_classes=10), torch.zeros(1, 3, 32, 32), settings)
