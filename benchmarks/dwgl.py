"""DWGL vs plain group lasso vs BN-L1 before ``dwgl-vote`` pruning (docs/BENCHMARKS.md).

One pretrained network (cached), then for each regulariser, with the same
``lam``, learning rate and epochs:

1. sparse training (``lp.fit(..., regularizer=reg)``, proximal mode),
2. votes at the same ``tau``: a channel of an elementwise group is removable
   when every conv of the group votes it out (the intersection); the votes
   read filter norms for DWGL / group lasso and BN ``|gamma|`` for BN-L1
   (network slimming's criterion), and the filter-norm votes of BN-L1 are
   reported too,
3. ``lp.prune(method="dwgl-vote", threshold=tau)``, accuracy straight after
   pruning, one epoch of fine-tuning, accuracy and MACs.

The proximal step shrinks filters by a few percent per step here (short
runs need a large ``lr * lam``); BatchNorm's running statistics lag behind
such fast-moving weights and the test accuracy read with them is far too low
(e.g. 0.46 instead of 0.875). Accuracies marked "recal." are measured after
re-estimating the BN statistics on 30 training batches (no weight changes),
the usual step after pruning.

``--control-scale s`` adds a plain group-lasso run with ``lam * s`` (e.g.
1.5 = DWGL's mean coefficient with alpha = 1), so the comparison is also
made at equal average strength.

Every run directory is kept under ``--runs`` and resumed, so a second call
only re-reads the results. Prints a Markdown table and writes JSON.

    python benchmarks/dwgl.py                                  # ResNet-20, Fashion-MNIST
    python benchmarks/dwgl.py --model resnet56 --runs runs/dwgl56
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import time
from pathlib import Path
from typing import Any

import torch
from bench.settings import vote_options
from bench.tables import markdown_table
from torch import nn

import lassoprune as lp
from lassoprune.pruning import after_cut
from lassoprune.regularizers import REGULARIZERS, create_regularizer
from lassoprune.training import TrainConfig, evaluate, fit
from lassoprune.training.data_setup import Loaders, make_loaders


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="resnet20")
    p.add_argument("--data", default="fashion-mnist")
    p.add_argument("--runs", default="runs/dwgl", help="cache of run directories (default: runs/dwgl)")
    p.add_argument("--pretrain-epochs", type=int, default=3)
    p.add_argument("--pretrain-subset", type=int, default=20000)
    p.add_argument("--subset", type=int, default=10000, help="training images for sparse training and fine-tuning")
    p.add_argument("--epochs", type=int, default=2, help="sparse-training epochs")
    p.add_argument("--lr", type=float, default=0.02, help="sparse-training peak learning rate (cosine)")
    p.add_argument("--lam", type=float, default=0.5)
    p.add_argument("--alpha", type=float, default=1.0, help="DWGL c_n = 1 + alpha (linear schedule)")
    p.add_argument("--tau", type=float, default=0.05)
    p.add_argument("--finetune-epochs", type=int, default=1)
    p.add_argument("--regs", nargs="+", default=list(REGULARIZERS), choices=REGULARIZERS)
    p.add_argument("--control-scale", type=float, default=None, help="add group-lasso with lam x this")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="write the results here (default: RUNS/results.json)")
    return p.parse_args()


def loaders(args: argparse.Namespace, subset: int) -> Loaders:
    return make_loaders(args.data, image_size=32, batch_size=64, train_subset=subset, seed=args.seed)


def train(model: nn.Module, data: Loaders, cfg: TrainConfig, out: Path, reg: Any = None) -> float:
    """Fit (resuming ``out``) and return the final test top-1."""
    result = fit(model, data.train, data.test, cfg, num_classes=data.info.num_classes, out_dir=out, resume=True,
                 device="cpu", regularizer=reg, progress=False, model_extra={"image_size": 32})
    model.to("cpu")
    return result.final.top1


def pretrained(args: argparse.Namespace) -> nn.Module:
    """The shared starting point, trained once and cached in RUNS/pretrain."""
    out = Path(args.runs) / "pretrain"
    if (out / "model.pt").exists():
        return lp.load(out / "model.pt")
    lp.seed_everything(args.seed)
    data = loaders(args, args.pretrain_subset)
    model = lp.create_model(args.model, num_classes=data.info.num_classes, in_channels=data.info.in_channels)
    train(model, data, TrainConfig(epochs=args.pretrain_epochs, lr=0.1, seed=args.seed), out)
    return lp.load(out / "model.pt")


def first_batches(data: Loaders, steps: int = 30) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The first ``steps`` training batches: the images BatchNorm statistics are re-estimated on."""
    return list(itertools.islice(iter(data.train), steps))


def recalibrated(model: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> nn.Module:
    """``model`` with BatchNorm statistics re-estimated on ``batches`` by the library's post-cut path."""
    after_cut(model, model, batches)
    return model.eval()


def accuracy(model: nn.Module, data: Loaders) -> float:
    return evaluate(model, data.test, data.info.num_classes, torch.device("cpu")).top1


def eltwise_votes(model: nn.Module, example: torch.Tensor, tau: float, vote_on: str) -> dict[str, Any]:
    """Counts of the votes at ``tau`` (no pruning kept): eltwise channels, intersection, union, MACs ratio."""
    result = lp.prune(model, example, method="dwgl-vote", **vote_options(tau, vote_on))
    summary = result.diagnostics.extra["eltwise"]
    return {"channels": summary["channels"], "intersection": summary["intersection"], "union": summary["union"],
            "removable": summary["intersection"] / summary["channels"],
            "all_removed": sum(g.values["removed"] for g in result.diagnostics.groups.values()),
            "macs_ratio": result.macs_after / result.macs_before}


def run_one(
    args: argparse.Namespace, name: str, start: nn.Module, data: Loaders, base_top1: float, scale: float = 1.0
) -> dict[str, Any]:
    lam = args.lam * scale
    label = name if scale == 1.0 else f"{name} (lam x{scale:g})"
    root = Path(args.runs) / f"{name}-lam{lam:g}-a{args.alpha:g}-e{args.epochs}-lr{args.lr:g}-n{args.subset}"
    model = copy.deepcopy(start)
    example = torch.zeros(1, data.info.in_channels, 32, 32)
    reg = create_regularizer(name, model, example, lam, "linear", args.alpha)
    cfg = TrainConfig(epochs=args.epochs, lr=args.lr, seed=args.seed)
    started = time.perf_counter()
    sparse_top1 = train(model, data, cfg, root / "sparse", reg)
    model = lp.load(root / "sparse" / "model.pt").eval()
    vote_on = "bn" if name == "bn-l1" else "filters"
    calib = first_batches(data)
    row: dict[str, Any] = {"reg": label, "lam": lam, "sparse_top1": sparse_top1, "pretrained_top1": base_top1,
                           "sparse_top1_recal": accuracy(recalibrated(copy.deepcopy(model), calib), data),
                           "votes": eltwise_votes(model, example, args.tau, vote_on)}
    if name == "bn-l1":
        row["votes_filters"] = eltwise_votes(model, example, args.tau, "filters")
    result = lp.prune(model, example, method="dwgl-vote", **vote_options(args.tau, vote_on), data=calib,
                      reconstruct=False)  # BatchNorm re-estimated on calib by lp.prune
    row["macs_before"], row["macs_after"] = result.macs_before, result.macs_after
    row["params_before"], row["params_after"] = result.params_before, result.params_after
    row["pruned_top1_recal"] = accuracy(result.model.eval(), data)
    tune = TrainConfig(epochs=args.finetune_epochs, lr=0.01, seed=args.seed)
    row["finetuned_top1"] = train(result.model, data, tune, root / "finetune")
    row["seconds"] = time.perf_counter() - started
    return row


def table(rows: list[dict[str, Any]], tau: float) -> str:
    """Markdown: one line per regulariser, its votes at ``tau`` and the accuracy before and after the cut."""
    header = ["reg", "lam", "top-1 after sparse training (raw / recal.)",
              f"eltwise channels removable at tau={tau} (all convs agree)", "voted by any conv",
              "channels removed (all groups)", "MACs after / before", "top-1 pruned (recal.)", "top-1 fine-tuned"]
    lines = []
    for r in rows:
        v = r["votes"]
        lines.append([r["reg"], f"{r['lam']:g}", f"{r['sparse_top1']:.4f} / {r['sparse_top1_recal']:.4f}",
                      f"{v['intersection']}/{v['channels']} ({v['removable']:.1%})", v["union"], v["all_removed"],
                      f"{r['macs_after'] / r['macs_before']:.3f}", f"{r['pruned_top1_recal']:.4f}",
                      f"{r['finetuned_top1']:.4f}"])
    return markdown_table(header, lines)


def main() -> None:
    args = parse_args()
    torch.set_num_threads(1)
    started = time.perf_counter()
    start = pretrained(args)
    data = loaders(args, args.subset)
    base_top1 = accuracy(start, data)
    rows = []
    for name in args.regs:
        rows.append(run_one(args, name, start, data, base_top1))
        print(json.dumps(rows[-1]), flush=True)
    if args.control_scale:
        rows.append(run_one(args, "group-lasso", start, data, base_top1, args.control_scale))
    out = Path(args.json or Path(args.runs) / "results.json")
    settings = {k: v for k, v in vars(args).items() if k != "json"}
    out.write_text(json.dumps({"settings": settings, "pretrained_top1": base_top1, "rows": rows}, indent=2))
    print(f"pretrained top-1 {base_top1:.4f}; {time.perf_counter() - started:.0f} s")
    print(table(rows, args.tau))
    for r in rows:
        if "votes_filters" in r:
            vf = r["votes_filters"]
            print(f"{r['reg']}: filter-norm votes at the same tau: {vf['intersection']}/{vf['channels']} removable")


if __name__ == "__main__":
    main()
