"""One-shot accuracy of pruning variants on a shipped model: the quick proxy that narrows a grid.

Every variant (a method, its options and whether the residual stream may be
cut) prunes the same shipped network (``pretrained:NAME``) to each MACs
target from a class-balanced calibration set drawn with each seed;
BatchNorm statistics are re-estimated on that set (the library's
``recalibrate_batchnorm``) and the pruned network is evaluated on the whole
Fashion-MNIST test split (10,000 images) with ``lp.evaluate``. The table gives
mean top-1 and worst-class accuracy over the seeds with their standard errors
(seed changes the calibration set only). One-shot accuracy is a proxy: a
finding here is a candidate for the fine-tuned protocol, not a result.

Rows are appended to RUNS/results.json as they finish (atomically); a rerun
skips finished rows.

    python benchmarks/oneshot_sweep.py --model pretrained:resnet20-fashion-mnist --seeds 0 1
    python benchmarks/oneshot_sweep.py --variants l1 hsic-ib-apib --targets 0.5 --seeds 0
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from bench.results import ResultsStore
from bench.settings import ONESHOT_VARIANTS
from bench.stats import mean_se
from bench.tables import markdown_table

import lassoprune as lp
from lassoprune.data import BatchLoader, load_dataset
from lassoprune.errors import UnreachableTargetError
from lassoprune.training.data_setup import calibration_batches

VARIANTS = ONESHOT_VARIANTS
"""name -> (method, options, prune_residual): :data:`bench.settings.ONESHOT_VARIANTS`."""


def one_row(model_file: str, variant: str, target: float, seed: int, calib_size: int, test: BatchLoader,
            image_size: int) -> dict[str, Any]:
    """Prune, re-estimate BN, evaluate: one (variant, target, seed) row."""
    method, options, prune_residual = VARIANTS[variant]
    model = lp.load(model_file)
    calib = calibration_batches("fashion-mnist", image_size=image_size, size=calib_size, seed=seed)
    in_channels = model.lp_spec.kwargs.get("in_channels", 1)
    started = time.perf_counter()
    result = lp.prune(model, torch.zeros(1, in_channels, image_size, image_size), method=method,
                      target_macs=target, data=calib, seed=seed, prune_residual=prune_residual,
                      reconstruct=False, **options)  # BatchNorm re-estimated on calib by lp.prune
    seconds = time.perf_counter() - started
    scored = lp.evaluate(result.model, test, 10)
    return {
        "variant": variant, "target_macs": target, "seed": seed,
        "macs_ratio": result.macs_after / result.macs_before,
        "params_ratio": result.params_after / result.params_before,
        "top1": scored.top1, "worst": scored.worst_class, "prune_seconds": seconds,
        "adjustment": result.diagnostics.search.adjustment if result.diagnostics.search else None,
    }  # fmt: skip


def table(rows: list[dict[str, Any]], targets: list[float]) -> str:
    """Markdown: one line per variant, top-1 / worst class (mean ± SE over seeds, SE 0 for one seed) per target."""
    lines = []
    for variant in VARIANTS:
        cells, params = [], []
        for target in targets:
            mine = [r for r in rows if r["variant"] == variant and r["target_macs"] == target]
            if not mine:
                cells.append("-")
                continue
            top1, se1 = mean_se([r["top1"] for r in mine])
            worst, se2 = mean_se([r["worst"] for r in mine])
            cells.append(f"{top1:.4f} ± {se1:.4f} / {worst:.3f} ± {se2:.3f} (n={len(mine)})")
            params.append(f"{statistics.fmean(r['params_ratio'] for r in mine):.2f}")
        if any(c != "-" for c in cells):
            lines.append([variant, *cells, " / ".join(params)])
    header = ["variant", *(f"{t:g} MACs: top-1 / worst" for t in targets), "params kept"]
    return markdown_table(header, lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="pretrained:resnet20-fashion-mnist", help="model file or pretrained:NAME")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--targets", type=float, nargs="+", default=[0.5, 0.33])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--calib-size", type=int, default=500)
    parser.add_argument("--runs", default="runs/oneshot_sweep", help="results directory (resumed)")
    args = parser.parse_args()
    store = ResultsStore(Path(args.runs) / "results.json", key=("variant", "target_macs", "seed"),
                         settings={"model": args.model, "calib_size": args.calib_size})
    image_size = int(lp.load(args.model).lp_extra.get("image_size", 32))
    test = BatchLoader(load_dataset("fashion-mnist", split="test"), 500, image_size=image_size)
    dense = lp.evaluate(lp.load(args.model), test, 10)
    print(f"{args.model}: dense top-1 {dense.top1:.4f}, worst class {dense.worst_class:.3f} (10,000 test images)")
    for variant in args.variants:
        for target in args.targets:
            for seed in args.seeds:
                if (variant, target, seed) in store:
                    continue
                try:
                    row = one_row(args.model, variant, target, seed, args.calib_size, test, image_size)
                except UnreachableTargetError as exc:
                    print(f"{variant:<22s} {target:<5g}: skipped, {str(exc).split(';')[0]}", flush=True)
                    break
                print(f"{variant:<22s} {target:<5g} seed {seed}: top-1 {row['top1']:.4f}  worst {row['worst']:.3f}  "
                      f"MACs {row['macs_ratio']:.3f}  params {row['params_ratio']:.3f}  {row['prune_seconds']:.0f} s",
                      flush=True)
                store.add(row)
    text = table(store.rows, args.targets)
    store.write_table(f"dense top-1 {dense.top1:.4f} / worst {dense.worst_class:.3f}", text)
    print(text)


if __name__ == "__main__":
    main()
