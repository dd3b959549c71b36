"""How fast fine-tuning erases the differences between pruning criteria: accuracy against fine-tuning steps.

One-shot accuracy (after the cut and BatchNorm re-estimation) separates the
criteria by tens of points; after the protocol's fine-tuning (2 epochs on all
training images) nothing separates them (docs/BENCHMARKS.md). Between the two
lies the question users with little compute ask: after how many steps does the
choice of criterion stop mattering?

Every (method, target, seed) prunes the shipped converged model once (the
library's ``lp.prune`` with the method's defaults, 500 class-balanced
calibration images drawn with the seed, BatchNorm re-estimated on them); then,
for every budget of N training images, a copy of the pruned model is
fine-tuned for one pass over a class-stratified subset of N images (seeded by
the seed) with the pipeline's fine-tuning settings (SGD, lr 0.01 cosine to 0,
momentum 0.9, weight decay 5e-4, batch 64, the dataset's augmentation) and
evaluated on the whole Fashion-MNIST test split. Budget 0 is the one-shot
accuracy. Each budget is its own schedule, not a checkpoint of a longer one.

Rows are appended to RUNS/results.json as they finish (atomically); a rerun
skips finished rows.

    OMP_NUM_THREADS=1 python benchmarks/recovery.py --methods l1 hsic-ib sglp-ib --seeds 0 1 2
    OMP_NUM_THREADS=1 python benchmarks/recovery.py --methods l1 --reconstruct --lr 0.001 --runs runs/recovery-rc
    # the learning rate after reconstruction, chosen on 5,000 held-out training images (not the test split)
    OMP_NUM_THREADS=1 python benchmarks/recovery.py --methods l1 sglp-ib --reconstruct --lr 0.001 \
        --validation-size 5000 --runs runs/recovery-rc-val-lr0.001
    python benchmarks/recovery.py --report            # the table of the finished rows
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path
from typing import Any

import torch
from bench.results import ResultsStore
from bench.stats import Estimate
from bench.tables import markdown_table

import lassoprune as lp
from lassoprune.data import BatchLoader, load_dataset
from lassoprune.pruning import list_methods
from lassoprune.training import TrainConfig, fit
from lassoprune.training.data_setup import calibration_batches, make_loaders

DATASET = "fashion-mnist"
BATCH_SIZE = 64  # the benchmark protocol's
LR = 0.01  # chosen for every one-shot method by the protocol's select phase
BUDGETS = (0, 640, 1920, 6400, 19200)  # training images: 0, 10, 30, 100 and 300 steps of 64


def prune_once(model_file: str, method: str, target: float, seed: int, calib_size: int,
               image_size: int, reconstruct: bool = False, validation_size: int = 0) -> torch.nn.Module:  # fmt: skip
    """The method's cut at ``target`` of the MACs (least-squares reconstruction with ``reconstruct``),
    BatchNorm re-estimated on the calibration images (drawn outside the ``validation_size`` held-out ones)."""
    model = lp.load(model_file)
    calib = calibration_batches(DATASET, image_size=image_size, size=calib_size, seed=seed,
                                validation_size=validation_size)
    in_channels = model.lp_spec.kwargs.get("in_channels", 1)
    example = torch.zeros(1, in_channels, image_size, image_size)
    result = lp.prune(model, example, method=method, target_macs=target, data=calib, seed=seed,
                      reconstruct=reconstruct)  # BatchNorm re-estimated on calib by lp.prune
    return result.model


def fine_tuned(pruned: torch.nn.Module, budget: int, seed: int, image_size: int, test: BatchLoader,
               lr: float = LR, validation_size: int = 0) -> lp.EvalResult:  # fmt: skip
    """Metrics on ``test`` of ``pruned`` after one cosine pass of a copy over ``budget`` training images (0: as
    it is); the images come from outside the ``validation_size`` held-out ones."""
    if budget == 0:
        return lp.evaluate(pruned, test, 10)
    model = copy.deepcopy(pruned)
    loaders = make_loaders(DATASET, image_size=image_size, batch_size=BATCH_SIZE, train_subset=budget, seed=seed,
                           validation_size=validation_size)
    lp.seed_everything(seed)
    result = fit(model, loaders.train, test, TrainConfig(epochs=1, lr=lr, seed=seed), num_classes=10,
                 progress=False)
    return result.final


def table(rows: list[dict[str, Any]], budgets: tuple[int, ...]) -> str:
    """Markdown: per target, one line per method, top-1 mean ± SE over seeds for every budget."""
    lines = []
    header = ["method", "n", *(f"{b // BATCH_SIZE} steps" for b in budgets)]
    for target in sorted({r["target_macs"] for r in rows}, reverse=True):
        methods = dict.fromkeys(r["method"] for r in rows if r["target_macs"] == target)
        body = []
        for method in methods:
            mine = [r for r in rows if r["method"] == method and r["target_macs"] == target]
            body.append([method, len(mine), *(Estimate.of([r["top1"][str(b)] for r in mine]).text() for b in budgets)])
        lines += [f"**{target:g} of the MACs** (top-1, mean ± SE over seeds; n = seeds)", "",
                  markdown_table(header, body), ""]
    return "\n".join(lines)


def run(args: argparse.Namespace, store: ResultsStore) -> None:
    """Every (method, target, seed) of ``args`` not yet in ``store``: one cut, then every budget's fine-tuning."""
    image_size = int(lp.load(args.model).lp_extra.get("image_size", 32))
    if args.validation_size:
        test = make_loaders(DATASET, image_size=image_size, with_train=False,
                            validation_size=args.validation_size).validation
    else:
        test = BatchLoader(load_dataset(DATASET, split="test"), 500, image_size=image_size)
    for method in args.methods:
        for target in args.targets:
            for seed in args.seeds:
                if (method, target, seed) in store:
                    continue
                started = time.perf_counter()
                pruned = prune_once(args.model, method, target, seed, args.calib_size, image_size,
                                    args.reconstruct, args.validation_size)
                scores = {str(b): fine_tuned(pruned, b, seed, image_size, test, args.lr, args.validation_size)
                          for b in BUDGETS}
                store.add({"method": method, "target_macs": target, "seed": seed,
                           "top1": {b: s.top1 for b, s in scores.items()},
                           "worst": {b: s.worst_class for b, s in scores.items()}})
                print(f"{method:<10s} {target:<5g} seed {seed}: " + "  ".join(
                    f"{int(b) // BATCH_SIZE}: {s.top1:.4f}" for b, s in scores.items()) +
                    f"  ({time.perf_counter() - started:.0f} s)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="pretrained:resnet20-fashion-mnist", help="model file or pretrained:NAME")
    parser.add_argument("--methods", nargs="+", default=["l1", "hsic-ib", "sglp-ib", "stlp-ib", "random"],
                        choices=list_methods())
    parser.add_argument("--targets", type=float, nargs="+", default=[0.33])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--calib-size", type=int, default=500)
    parser.add_argument("--lr", type=float, default=LR, help="peak fine-tuning learning rate")
    parser.add_argument("--reconstruct", action="store_true", help="least-squares reconstruction after the cut")
    parser.add_argument("--validation-size", type=int, default=0,
                        help="judge on N held-out training images (class-stratified, the pipeline's validation "
                             "split) instead of the test split; calibration and fine-tuning never see them")
    parser.add_argument("--runs", default="runs/recovery", help="results directory (resumed)")
    parser.add_argument("--report", action="store_true", help="only print the table of the finished rows")
    args = parser.parse_args()
    settings = {"model": args.model, "calib_size": args.calib_size, "budgets": list(BUDGETS), "lr": args.lr,
                "batch_size": BATCH_SIZE, **({"reconstruct": True} if args.reconstruct else {}),
                **({"validation_size": args.validation_size} if args.validation_size else {})}
    store = ResultsStore(Path(args.runs) / "results.json", key=("method", "target_macs", "seed"), settings=settings)
    if not args.report:
        run(args, store)
    text = table(store.rows, BUDGETS)
    store.write_table(json.dumps(settings), text)
    print(text)


if __name__ == "__main__":
    main()
