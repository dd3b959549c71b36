"""Reference keep sets of the zoo, to check that refactors keep behaviour.

``python tests/pruning/keep_sets.py --write`` records, for every zoo model, the
sha256 of the kept channels that ``l1``, ``random``, ``sglp-ib`` and
``dwgl-vote`` choose at half the MACs (fixed seeds, synthetic calibration
data) into ``tests/pruning/data/keep_sets.json``, and for a few models the
:data:`EXTRA_CASES` (uniform allocation, ``round_to``, a params target, the
lasso's drop and add fix-ups) into ``keep_sets_extra.json``; the test compares
against both. The references were recorded before the methods moved to
plug-ins over one target search, with the lasso methods' first defaults: the
lasso cases pass :data:`FIRST_SPEC` explicitly, so the test also checks that the
first spec stays reachable by options.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import torch

import lassoprune as lp

REFERENCE = Path(__file__).parent / "data" / "keep_sets.json"
EXTRA_REFERENCE = Path(__file__).parent / "data" / "keep_sets_extra.json"
METHODS = ("l1", "random", "sglp-ib", "dwgl-vote")
EXTRA_MODELS = ("resnet20", "resnet56", "vgg16", "mobilenetv2", "densenet40")
#: case name -> keyword arguments of lp.prune (the method included); data is given to every lasso method.
EXTRA_CASES: dict[str, dict[str, object]] = {
    "l1-uniform": {"method": "l1", "allocation": "uniform"},
    "l1-round8": {"method": "l1", "round_to": 8},
    "random-uniform-params": {"method": "random", "allocation": "uniform", "target_params": 0.4},
    "sglp-ib-round8": {"method": "sglp-ib", "round_to": 8, "pool": 2},
    "class-lasso-drop": {"method": "class-lasso", "pool": 2, "target_tolerance": 1e-4},
    "hsic-ib-add": {"method": "hsic-ib", "pool": 2, "target_macs": 0.9},
    "dwgl-vote-union": {"method": "dwgl-vote", "vote": "union", "target_macs": 0.4},
}
LASSO = ("sglp-ib", "stlp-ib", "hsic-ib", "class-lasso")
#: The lasso methods' defaults when the references were recorded (median kernels, normalised, B >= 0, residual cut;
#: the class-wise methods also ``class_fit="block"``).
FIRST_SPEC: dict[str, object] = {"kernel": "median", "normalise": True, "nonneg": True, "prune_residual": True}
SIDE = {"resnet18": 64, "resnet34": 64, "resnet50": 64, "googlenet": 32}


def example(model_name: str) -> torch.Tensor:
    side = SIDE.get(model_name, 32)
    return torch.zeros(1, 3, side, side)


def calibration(model_name: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """40 seeded images, 4 of each of 10 classes (class-dependent mean so the class structure is not empty)."""
    side = SIDE.get(model_name, 32)
    gen = torch.Generator().manual_seed(1)
    labels = torch.arange(10).repeat(4)
    images = torch.randn(40, 3, side, side, generator=gen) + 0.3 * labels.view(-1, 1, 1, 1).float() / 10
    return [(images[:20], labels[:20]), (images[20:], labels[20:])]


def keep_digest(model_name: str, method: str) -> dict[str, object]:
    """sha256 of the sorted keep sets and the pruned MACs of ``method`` at half the MACs."""
    options: dict[str, object] = {"pool": 2} if method == "sglp-ib" else {}
    return case_digest(model_name, {"method": method, **options})


def case_digest(model_name: str, case: dict[str, object]) -> dict[str, object]:
    """sha256 of the sorted keep sets and the pruned MACs of one ``lp.prune`` call (default: half the MACs)."""
    torch.manual_seed(0)
    model = lp.create_model(model_name, num_classes=10)
    kwargs = dict(case)
    if "target_params" not in kwargs:
        kwargs.setdefault("target_macs", 0.5)
    data = None
    if kwargs["method"] in LASSO:
        first_fit = {} if kwargs["method"] == "hsic-ib" else {"class_fit": "block"}
        kwargs = {**FIRST_SPEC, **first_fit, **kwargs}
        data = calibration(model_name)
    result = lp.prune(model, example(model_name), data=data, seed=0, **kwargs)
    keep = {gid: list(kept) for gid, kept in sorted(result.keep.items())}
    digest = hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()
    return {"sha256": digest, "macs_after": result.macs_after}


def main() -> None:
    table = {name: {m: keep_digest(name, m) for m in METHODS} for name in lp.list_models()}
    extra = {name: {case: case_digest(name, kwargs) for case, kwargs in EXTRA_CASES.items()} for name in EXTRA_MODELS}
    if "--write" in sys.argv:
        REFERENCE.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")
        EXTRA_REFERENCE.write_text(json.dumps(extra, indent=1, sort_keys=True) + "\n")
    print(json.dumps({"zoo": table, "extra": extra}, indent=1))


if __name__ == "__main__":
    main()
