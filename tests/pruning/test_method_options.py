"""No method accepts an option it ignores: every option of every registered method, set away from its
default, either changes the method's answer or is refused with a clear error."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import torch
from torch import nn

import lassoprune as lp
from lassoprune.errors import LassopruneError
from lassoprune.pruning import METHODS, PruneResult
from lassoprune.pruning.method import EXPERIMENTAL

#: A value away from the default for every option name any built-in method has (a new option must be added here).
OTHER_VALUE: dict[str, Any] = {
    "pool": 1, "solver_tol": 1e-2, "max_iter": 3, "target_tolerance": 0.002, "class_fit": "label",
    "lambda2_ratio": 10.0, "edge_threshold": 1.0,
    "threshold": 0.5, "vote": "union", "vote_k": 1, "vote_on": "bn",
}
OTHER_EXPERIMENTAL: dict[str, Any] = {
    "kernel": "gaussian", "normalise": True, "nonneg": True, "ridge": 1.0, "magnitude": True, "strength": "global",
    "class_weight": "confusable", "structure_from": "layer", "block": 12, "permutations": 2, "products": "float64",
}
NUM_CLASSES = 4


class _Tiny(nn.Module):
    """A stem, a residual block (inner conv), a strided conv, a linear classifier: every group kind, fast."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.inner, self.bn_inner = nn.Conv2d(8, 12, 3, padding=1, bias=False), nn.BatchNorm2d(12)
        self.conv2, self.bn2 = nn.Conv2d(12, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.conv3, self.bn3 = nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(16)
        self.fc = nn.Linear(16, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(x + self.bn2(self.conv2(torch.relu(self.bn_inner(self.inner(x))))))
        x = torch.relu(self.bn3(self.conv3(x)))
        return self.fc(x.mean((2, 3)))


def _model() -> nn.Module:
    torch.manual_seed(0)
    model = _Tiny()
    with torch.no_grad():
        for bn in (model.bn1, model.bn_inner, model.bn2, model.bn3):  # distinct scales, so that BN votes differ from filter votes
            bn.weight.uniform_(0.2, 1.5)
    return model.eval()


def _data() -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(1)
    y = torch.arange(48) % NUM_CLASSES
    pattern = torch.randn(NUM_CLASSES, 3, 16, 16, generator=gen)
    return [(torch.randn(48, 3, 16, 16, generator=gen) + pattern[y], y)]


def _prune(method: str, **options: Any) -> PruneResult:
    data = _data() if METHODS.get(method).needs_data else None
    target = {} if "threshold" in options else {"target_macs": 0.6}
    return lp.prune(_model(), torch.randn(1, 3, 16, 16), method=method, data=data, reconstruct=False,
                    recalibrate=False, **target, **options)


def _answer(result: PruneResult) -> tuple:
    """Everything a method decides: keep sets, scores, the search's path."""
    search = result.diagnostics.search
    return (result.keep, {gid: s.tolist() for gid, s in result.scores.items()},
            None if search is None else (search.value, search.steps))


def _cases() -> list[tuple[str, str, dict[str, Any]]]:
    cases = []
    for name, spec in METHODS.items():
        for option in spec.options.names():
            if option != EXPERIMENTAL:
                cases.append((name, option, {option: OTHER_VALUE[option]}))
        experimental = spec.options.experimental_type()
        for setting in experimental.names() if experimental else ():
            cases.append((name, f"experimental.{setting}", {EXPERIMENTAL: {setting: OTHER_EXPERIMENTAL[setting]}}))
    return cases


@pytest.fixture(scope="module")
def defaults() -> dict[str, tuple]:
    return {}


@pytest.mark.parametrize(("method", "option", "options"), _cases(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_option_changes_the_answer_or_is_refused(defaults, method, option, options) -> None:
    if method not in defaults:
        defaults[method] = _answer(_prune(method))
    try:
        changed = _answer(_prune(method, **options))
    except LassopruneError as exc:
        assert "Traceback" not in str(exc) and len(str(exc).splitlines()) == 1
        return
    assert changed != defaults[method], f"{method} accepted {option}={options} and ignored it"


def test_every_option_of_every_method_has_a_test_value() -> None:
    names = {n for _, spec in METHODS.items() for n in spec.options.names()} - {EXPERIMENTAL}
    assert names <= set(OTHER_VALUE), sorted(names - set(OTHER_VALUE))
    for _, spec in METHODS.items():
        experimental = spec.options.experimental_type()
        if experimental is not None:
            assert set(experimental.names()) <= set(OTHER_EXPERIMENTAL)
            assert all(f.default != OTHER_EXPERIMENTAL[f.name] for f in dataclasses.fields(experimental))


def test_the_command_line_lists_few_lasso_flags() -> None:
    """The lasso methods' main options stay few (the ablations live under --experimental)."""
    lasso = [spec for name, spec in METHODS.items() if name in ("sglp-ib", "stlp-ib", "hsic-ib", "class-lasso")]
    flags = {n for spec in lasso for n in spec.options.names()} - {EXPERIMENTAL}
    assert len(flags) <= 8, sorted(flags)
