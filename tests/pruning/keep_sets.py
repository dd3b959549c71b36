"""Reference keep sets of the zoo under four methods, to check that refactors keep behaviour.

``python tests/pruning/keep_sets.py --write`` records, for every zoo model, the
sha256 of the kept channels that ``l1``, ``random``, ``sglp-ib`` and
``dwgl-vote`` choose at half the MACs (fixed seeds, synthetic calibration
data) into ``tests/pruning/data/keep_sets.json``; the test compares against it.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import torch

import lassoprune as lp

REFERENCE = Path(__file__).parent / "data" / "keep_sets.json"
METHODS = ("l1", "random", "sglp-ib", "dwgl-vote")
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
    torch.manual_seed(0)
    model = lp.create_model(model_name, num_classes=10)
    options: dict[str, object] = {"pool": 2} if method == "sglp-ib" else {}
    data = calibration(model_name) if method == "sglp-ib" else None
    result = lp.prune(model, example(model_name), method=method, target_macs=0.5, data=data, seed=0, **options)
    keep = {gid: list(kept) for gid, kept in sorted(result.keep.items())}
    digest = hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()
    return {"sha256": digest, "macs_after": result.macs_after}


def main() -> None:
    names = lp.list_models()
    table = {name: {m: keep_digest(name, m) for m in METHODS} for name in names}
    if "--write" in sys.argv:
        REFERENCE.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")
    print(json.dumps(table, indent=1))


if __name__ == "__main__":
    main()
