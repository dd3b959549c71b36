"""Evidence for the class-wise lasso methods: one-shot and fine-tuned accuracy at a MACs target.

A ResNet-20 is trained on Fashion-MNIST with the engine (cached), then pruned
to each MACs target with every method from the same calibration set (500
images, 50 per class); BatchNorm statistics are re-estimated on that set
after the cut (METHODS.md section 3), the model is evaluated on the full test
set, fine-tuned one epoch on a training subset and evaluated again.
Results are appended to RUN_DIR/results.json as they come, so an interrupted
run resumes where it stopped.

    python benchmarks/lasso_evidence.py                       # defaults below, ~20 min on 2 cores
    python benchmarks/lasso_evidence.py --methods l1 sglp-ib --targets 0.5
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import lassoprune as lp
from lassoprune.io import atomic_write_json
from lassoprune.training import TrainConfig, evaluate, fit
from lassoprune.training.bn_recalibration import recalibrate_batchnorm
from lassoprune.training.data_setup import calibration_batches, make_loaders

METHODS = ("sglp-ib", "stlp-ib", "hsic-ib", "class-lasso", "l1", "bn-scale", "random")


def pretrained(run_dir: Path, epochs: int, subset: int) -> Path:
    """Train (or resume) the dense ResNet-20 and return its model file."""
    out = run_dir / "pretrain"
    if (out / "model.pt").exists():
        return out / "model.pt"
    loaders = make_loaders("fashion-mnist", image_size=32, batch_size=64, train_subset=subset, seed=0)
    lp.seed_everything(0)
    model = lp.create_model("resnet20", num_classes=10, in_channels=1)
    fit(model, loaders.train, loaders.test, TrainConfig(epochs=epochs, lr=0.1), num_classes=10,
        class_names=loaders.info.class_names, out_dir=out, resume=True, progress=False,
        model_extra={"dataset": "fashion-mnist", "image_size": 32})
    return out / "model.pt"


def one_run(checkpoint: Path, method: str, ratio: float, calib: list, loaders, finetune_subset: int) -> dict:
    model = lp.load(checkpoint)
    started = time.perf_counter()
    result = lp.prune(model, torch.randn(1, 1, 32, 32), method=method, target_macs=ratio, data=calib, seed=0)
    seconds = time.perf_counter() - started
    pruned = result.model
    recalibrate_batchnorm(pruned, calib)
    oneshot = evaluate(pruned, loaders.test, 10)
    tune = make_loaders("fashion-mnist", image_size=32, batch_size=64, train_subset=finetune_subset, seed=1)
    lp.seed_everything(0)
    fit(pruned, tune.train, tune.test, TrainConfig(epochs=1, lr=0.01), num_classes=10, progress=False)
    tuned = evaluate(pruned, loaders.test, 10)
    return {
        "method": method, "target_macs": ratio, "macs_ratio": result.macs_after / result.macs_before,
        "params_ratio": result.params_after / result.params_before,
        "oneshot_top1": oneshot.top1, "oneshot_worst": oneshot.worst_class,
        "finetuned_top1": tuned.top1, "finetuned_worst": tuned.worst_class, "prune_seconds": seconds,
        "widths": {gid: list(w) for gid, w in result.widths.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", default="runs/lasso_evidence")
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--targets", type=float, nargs="+", default=[0.5, 0.3])
    parser.add_argument("--pretrain-epochs", type=int, default=3)
    parser.add_argument("--pretrain-subset", type=int, default=20000)
    parser.add_argument("--finetune-subset", type=int, default=10000)
    args = parser.parse_args()
    run_dir = Path(args.run_dir)
    checkpoint = pretrained(run_dir, args.pretrain_epochs, args.pretrain_subset)
    loaders = make_loaders("fashion-mnist", image_size=32, with_train=False)
    dense = evaluate(lp.load(checkpoint), loaders.test, 10)
    calib = calibration_batches("fashion-mnist", image_size=32, size=500, seed=0)
    results_file = run_dir / "results.json"
    rows = json.loads(results_file.read_text()) if results_file.exists() else []
    done = {(r["method"], r["target_macs"]) for r in rows}
    for ratio in args.targets:
        for method in args.methods:
            if (method, ratio) in done:
                continue
            rows.append(one_run(checkpoint, method, ratio, calib, loaders, args.finetune_subset))
            atomic_write_json(results_file, rows)
            print(json.dumps({k: v for k, v in rows[-1].items() if k != "widths"}), flush=True)
    print(f"dense ResNet-20: top-1 {dense.top1:.4f}, worst class {dense.worst_class:.4f}")
    print("| target MACs | method | MACs kept | params kept | one-shot top-1 / worst | fine-tuned (1 ep) top-1 / worst | prune s |")
    print("|---|---|---|---|---|---|---|")
    for r in sorted(rows, key=lambda r: (-r["target_macs"], METHODS.index(r["method"]) if r["method"] in METHODS else 99)):
        print(f"| {r['target_macs']} | {r['method']} | {r['macs_ratio']:.3f} | {r['params_ratio']:.3f} "
              f"| {r['oneshot_top1']:.4f} / {r['oneshot_worst']:.3f} | {r['finetuned_top1']:.4f} / "
              f"{r['finetuned_worst']:.3f} | {r['prune_seconds']:.1f} |")


if __name__ == "__main__":
    main()
