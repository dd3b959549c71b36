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
import json
import math
import statistics
import time
from pathlib import Path
from typing import Any

import torch

import lassoprune as lp
from lassoprune.data import BatchLoader, load_dataset
from lassoprune.errors import UnreachableTargetError
from lassoprune.io import atomic_write_json
from lassoprune.training.data_setup import calibration_batches

#: APIB's kernels and lasso (METHODS.md 1.1): fixed-bandwidth Gaussian 1/D, unnormalised, signed.
APIB = {"kernel": "gaussian", "normalise": False, "nonneg": False}
#: APIB's final kernel (Laplace): the lasso methods' defaults.
LAPLACE = {**APIB, "kernel": "laplace"}
#: The lasso methods' first defaults: median-bandwidth kernels, normalised, B >= 0.
FIRST_SPEC = {"kernel": "median", "normalise": True, "nonneg": True}
CLASS_FITS = ("block", "conditional", "cross", "label")

#: name -> (method, options, prune_residual)
VARIANTS: dict[str, tuple[str, dict[str, Any], bool]] = {
    "random-keep-residual": ("random", {}, False),
    "l1": ("l1", {}, True),
    "l1-keep-residual": ("l1", {}, False),
    "hsic-ib-first-spec": ("hsic-ib", FIRST_SPEC, False),
    "hsic-ib-apib": ("hsic-ib", APIB, False),
    "hsic-ib-apib-laplace": ("hsic-ib", LAPLACE, False),
    "hsic-ib-apib-global": ("hsic-ib", {**APIB, "strength": "global"}, False),
    "sglp-ib-as-landed": ("sglp-ib", FIRST_SPEC, True),
    "sglp-ib-apib": ("sglp-ib", APIB, False),
    "stlp-ib-apib": ("stlp-ib", APIB, False),
    "class-lasso-apib": ("class-lasso", APIB, False),
    # the class-wise readings of METHODS.md 1.3 at the defaults (Laplace, unnormalised, signed, residual kept)
    **{f"{method}-{fit}": (method, {**LAPLACE, "class_fit": fit}, False)
       for method in ("class-lasso", "sglp-ib", "stlp-ib") for fit in CLASS_FITS},
    # the structure's weight (lambda2, a fraction of lambda1; default 0.1) with the cross fit
    **{f"{method}-cross-lambda2-{weight:g}": (method, {**LAPLACE, "class_fit": "cross", "lambda2": weight}, False)
       for method in ("sglp-ib", "stlp-ib") for weight in (1.0, 10.0)},
    # the class graph / tree from each group's own features instead of the penultimate ones
    **{f"{method}-cross-layer-structure": (method, {**LAPLACE, "class_fit": "cross", "structure_from": "layer"},
                                           False) for method in ("sglp-ib", "stlp-ib")},
    # class k's term of the cross fit weighted by how much its class mean resembles the others'
    **{f"{method}-cross-confusable": (method, {**LAPLACE, "class_fit": "cross", "class_weight": "confusable"},
                                      False) for method in ("sglp-ib", "stlp-ib", "class-lasso")},
    # widths in multiples of 16 / 8 (the pipeline's round_to: auto): the accuracy cost of rounding
    "l1-round16": ("l1", {"round_to": 16}, True),
    "l1-round8": ("l1", {"round_to": 8}, True),
    "hsic-ib-round8": ("hsic-ib", {"round_to": 8}, False),
}


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
        "macs_ratio": result.macs_after / result.macs_before, "params_ratio": result.params_after / result.params_before,
        "top1": scored.top1, "worst": scored.worst_class, "prune_seconds": seconds,
        "adjustment": result.details.get("adjustment"),
    }  # fmt: skip


def mean_se(values: list[float]) -> tuple[float, float]:
    """Mean and standard error (0 for a single value)."""
    if len(values) < 2:
        return values[0], 0.0
    return statistics.fmean(values), statistics.stdev(values) / math.sqrt(len(values))


def table(rows: list[dict[str, Any]], targets: list[float]) -> str:
    """Markdown: one line per variant, top-1 / worst class (mean +- SE over seeds) per target."""
    head = "| variant | " + " | ".join(f"{t:g} MACs: top-1 / worst" for t in targets) + " | params kept |"
    lines = [head, "|---" * (len(targets) + 2) + "|"]
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
            lines.append(f"| {variant} | " + " | ".join(cells) + f" | {' / '.join(params)} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="pretrained:resnet20-fashion-mnist", help="model file or pretrained:NAME")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--targets", type=float, nargs="+", default=[0.5, 0.33])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--calib-size", type=int, default=500)
    parser.add_argument("--runs", default="runs/oneshot_sweep", help="results directory (resumed)")
    args = parser.parse_args()
    out = Path(args.runs)
    out.mkdir(parents=True, exist_ok=True)
    results_file = out / "results.json"
    settings = {"model": args.model, "calib_size": args.calib_size}
    data = json.loads(results_file.read_text()) if results_file.exists() else {"settings": settings, "rows": []}
    if data["settings"] != settings:
        raise SystemExit(f"{results_file} holds rows of other settings {data['settings']}; use another --runs")
    image_size = int(lp.load(args.model).lp_extra.get("image_size", 32))
    test = BatchLoader(load_dataset("fashion-mnist", split="test"), 500, image_size=image_size)
    dense = lp.evaluate(lp.load(args.model), test, 10)
    print(f"{args.model}: dense top-1 {dense.top1:.4f}, worst class {dense.worst_class:.3f} (10,000 test images)")
    done = {(r["variant"], r["target_macs"], r["seed"]) for r in data["rows"]}
    for variant in args.variants:
        for target in args.targets:
            for seed in args.seeds:
                if (variant, target, seed) in done:
                    continue
                try:
                    row = one_row(args.model, variant, target, seed, args.calib_size, test, image_size)
                except UnreachableTargetError as exc:
                    print(f"{variant:<22s} {target:<5g}: skipped, {str(exc).split(';')[0]}", flush=True)
                    break
                print(f"{variant:<22s} {target:<5g} seed {seed}: top-1 {row['top1']:.4f}  worst {row['worst']:.3f}  "
                      f"MACs {row['macs_ratio']:.3f}  params {row['params_ratio']:.3f}  {row['prune_seconds']:.0f} s",
                      flush=True)
                data["rows"].append(row)
                atomic_write_json(results_file, data)
    text = table(data["rows"], args.targets)
    (out / "table.md").write_text(f"dense top-1 {dense.top1:.4f} / worst {dense.worst_class:.3f}\n\n{text}\n")
    print(text)


if __name__ == "__main__":
    main()
