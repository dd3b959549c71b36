"""Least-squares reconstruction after the cut: its cost, and the one-shot accuracy it gives back.

``--cost``: wall time and peak memory of ``reconstruct`` alone (after an l1 cut to
half the MACs, 500 class-balanced calibration images, 64 sampled positions per
image and layer) for ResNet-56 and VGG-16 at 32x32 and the ImageNet ResNet-50 at
224x224 (Fashion-MNIST images resized, one input channel), each in a fresh
process so that its peak resident memory is its own. Run it with nothing else
on the machine.

``--accuracy``: one-shot top-1 / worst-class accuracy on the whole test split of
the shipped converged ResNet-56, without and with reconstruction, for each
method, MACs target and calibration seed (BatchNorm statistics re-estimated on
the calibration images in both cases). Rows are appended to
``RUNS/accuracy.json`` as they finish; a rerun skips them.

    python benchmarks/reconstruction.py --cost
    OMP_NUM_THREADS=1 python benchmarks/reconstruction.py --accuracy --runs runs/reconstruction
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from bench.results import ResultsStore
from bench.settings import RECONSTRUCTION_VARIANTS

import lassoprune as lp
from lassoprune.pruning import after_cut
from lassoprune.training.data_setup import calibration_batches, make_loaders

COST_MODELS = {"resnet56": 32, "vgg16": 32, "resnet50": 224}
"""Model -> image size of the ``--cost`` rows."""
VARIANTS = RECONSTRUCTION_VARIANTS
"""Row name -> (method, options, prune_residual): :data:`bench.settings.RECONSTRUCTION_VARIANTS`."""


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cost_of(model_name: str, calib_size: int) -> dict[str, Any]:
    """Time and memory of one reconstruction (this process)."""
    torch.manual_seed(0)
    model = lp.create_model(model_name, num_classes=10, in_channels=1).eval()
    calib = calibration_batches("fashion-mnist", image_size=COST_MODELS[model_name], size=calib_size, seed=0,
                                batch_size=50)
    example = calib[0][0][:1]
    cut = lp.prune(model, example, method="l1", target_macs=0.5, data=calib, reconstruct=False, recalibrate=False)
    before = _peak_mb()
    started = time.perf_counter()
    post = after_cut(model, cut.model, calib, cut.groups, cut.keep, reconstruct_layers=True, recalibrate=False)
    refits = post.reconstruction
    seconds = time.perf_counter() - started
    return {"model": model_name, "image_size": COST_MODELS[model_name], "calib_size": calib_size,
            "layers": len(refits), "seconds": seconds,
            "peak_mb_before": before, "peak_mb": _peak_mb(), "threads": torch.get_num_threads()}


def accuracy_rows(runs: Path, targets: Sequence[float], seeds: Sequence[int], calib_size: int) -> list[dict]:
    """One-shot accuracy without and with reconstruction on the converged ResNet-56 (resumable)."""
    store = ResultsStore(runs / "accuracy.json", key=("variant", "target", "seed"))
    dense = lp.load("pretrained:resnet56-fashion-mnist").eval()
    test = make_loaders("fashion-mnist", image_size=32, with_train=False).test
    example = torch.zeros(1, 1, 32, 32)

    def scorer(model: torch.nn.Module) -> dict[str, float]:
        scored = lp.evaluate(model, test, 10)
        return {"top1": scored.top1, "worst": scored.worst_class}

    for seed in seeds:
        calib = calibration_batches("fashion-mnist", image_size=32, size=calib_size, seed=seed)
        for variant, (method, options, prune_residual) in VARIANTS.items():
            for target in targets:
                if (variant, target, seed) in store:
                    continue
                result = lp.prune(dense, example, method=method, target_macs=target, data=calib, seed=seed,
                                  prune_residual=prune_residual, reconstruct=True, evaluate=scorer, **options)
                without, with_rc = result.one_shot["cut"], result.one_shot["reconstructed"]
                store.add({"variant": variant, "target": target, "seed": seed,
                           "macs_ratio": result.macs_after / result.macs_before,
                           "without_top1": without["top1"], "without_worst": without["worst"],
                           "with_top1": with_rc["top1"], "with_worst": with_rc["worst"],
                           "layers": len(result.reconstruction)})
                print(json.dumps(store.rows[-1]), flush=True)
    return store.rows


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--cost", action="store_true", help="time and memory, ResNet-56, VGG-16, ResNet-50")
    which.add_argument("--accuracy", action="store_true", help="one-shot accuracy on the converged ResNet-56")
    which.add_argument("--one", choices=list(COST_MODELS), help=argparse.SUPPRESS)  # a --cost child process
    p.add_argument("--calib-size", type=int, default=500)
    p.add_argument("--targets", nargs="+", type=float, default=[0.5, 0.33])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    p.add_argument("--runs", default="runs/reconstruction")
    args = p.parse_args(argv)
    if args.one:
        print(json.dumps(cost_of(args.one, args.calib_size)))
    elif args.cost:
        for name in COST_MODELS:
            proc = subprocess.run([sys.executable, __file__, "--one", name, "--calib-size", str(args.calib_size)],
                                  capture_output=True, text=True, check=True)
            print(proc.stdout.strip().splitlines()[-1], flush=True)
    else:
        runs = Path(args.runs)
        runs.mkdir(parents=True, exist_ok=True)
        accuracy_rows(runs, args.targets, args.seeds, args.calib_size)


if __name__ == "__main__":
    main()
