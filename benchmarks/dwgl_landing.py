"""Does ``dwgl-vote`` land on its target after steered DWGL training, on every residual zoo model?

For each (model, target): a freshly initialised model (seeded), DWGL sparse
training steered towards the target (:class:`lassoprune.pruning.steering.TargetSteering`)
for ``--steps`` SGD steps on Fashion-MNIST (32x32, one channel, batch 64,
cosine lr from ``--lr``), then ``lp.prune(method="dwgl-vote")`` at the same
target. Reported: the cost kept against the target, the residual (eltwise)
channels removed, and how much of the removal set the training had brought
to exactly zero. This checks the mechanism (landing, no overshoot), not
accuracy: the models are not trained. Rows are appended to ``RUNS/landing.json``
as they finish; a rerun skips them.

    OMP_NUM_THREADS=2 python benchmarks/dwgl_landing.py --runs runs/dwgl-landing
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from bench.results import ResultsStore
from bench.tables import markdown_table

import lassoprune as lp
from lassoprune.channels import Target
from lassoprune.pruning.steering import TargetSteering
from lassoprune.regularizers import create_regularizer
from lassoprune.training import TrainConfig, fit
from lassoprune.training.data_setup import make_loaders

CASES: tuple[tuple[str, str, float], ...] = (
    ("resnet20", "macs", 0.5), ("resnet32", "macs", 0.5), ("resnet44", "macs", 0.5), ("resnet56", "macs", 0.5),
    ("resnet56", "params", 0.25), ("resnet110", "macs", 0.5), ("resnet18", "macs", 0.5), ("resnet34", "macs", 0.5),
    ("resnet50", "macs", 0.5), ("resnet50", "params", 0.47), ("mobilenetv2", "macs", 0.5),
)
"""(model, target kind, kept ratio): every residual zoo model at half its MACs, and the DWGL paper's two
compression rates (ResNet-56 at 75% fewer parameters, ResNet-50 at 53%)."""


def landing(model_name: str, kind: str, ratio: float, steps: int, lr: float, lam: float) -> dict[str, Any]:
    """One steered sparse training and the vote at its target."""
    torch.manual_seed(0)
    model = lp.create_model(model_name, num_classes=10, in_channels=1)
    example = torch.zeros(1, 1, 32, 32)
    data = make_loaders("fashion-mnist", image_size=32, batch_size=64, train_subset=64 * steps, seed=0)
    steering = TargetSteering(create_regularizer("dwgl", model, example, lam), example, Target(kind, ratio), steps)
    started = time.perf_counter()
    fit(model, data.train, [next(iter(data.test))], TrainConfig(epochs=1, lr=lr, seed=0), num_classes=10,
        regularizer=steering, progress=False)
    seconds = time.perf_counter() - started
    result = lp.prune(model.eval(), example, method="dwgl-vote", **{f"target_{kind}": ratio})
    after, before = ((result.macs_after, result.macs_before) if kind == "macs"
                     else (result.params_after, result.params_before))
    last = steering.history[-1]
    eltwise = result.diagnostics.extra["eltwise"]
    return {"model": model_name, "target": kind, "ratio": ratio, "kept": after / before,
            "eltwise_removed": eltwise["removed"], "eltwise_channels": eltwise["channels"],
            "removal_set": last.removed, "zero": last.zero, "final_lam": last.lam, "steps": steps,
            "train_seconds": seconds}


def table(rows: Sequence[dict[str, Any]]) -> str:
    """Markdown: one line per (model, target), the cost kept against the target and the residual channels."""
    header = ("model", "target", "kept", "off by", "residual channels removed", "removal set zero")
    return markdown_table(header, [
        [r["model"], f"{r['target']} {r['ratio']}", f"{r['kept']:.4f}", f"{r['kept'] - r['ratio']:+.4f}",
         f"{r['eltwise_removed']} / {r['eltwise_channels']}", f"{r['zero']} / {r['removal_set']}"] for r in rows])


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", default="runs/dwgl-landing")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--lam", type=float, default=0.05, help="the starting strength (the controller grows it)")
    args = p.parse_args(argv)
    store = ResultsStore(Path(args.runs) / "landing.json", key=("model", "target", "ratio"))
    for model_name, kind, ratio in CASES:
        if (model_name, kind, ratio) in store:
            continue
        store.add(landing(model_name, kind, ratio, args.steps, args.lr, args.lam))
        print(json.dumps(store.rows[-1]), flush=True)
    print(table(store.rows))


if __name__ == "__main__":
    main()
