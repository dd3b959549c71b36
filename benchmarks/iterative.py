"""One-shot vs iterative pruning at the same total fine-tuning budget (the seeds' aggressive regime).

ResNet-56 (the shipped converged baseline) cut to ``--target`` of its MACs by each method, two ways, with
the same number of fine-tuning epochs on the same training images:

- one-shot: one cut (BatchNorm re-estimated, reconstruction on), then ``steps`` epochs of fine-tuning;
- iterative: ``prune.steps = steps`` cuts on a geometric schedule with one epoch of fine-tuning after every
  cut but the last (:mod:`lassoprune.pruning.iterative`), then one epoch after the last.

Every run is a ``lassoprune run`` pipeline in ``RUNS/<method>-<route>-s<seed>`` (resumable: rerun the command);
the table reads their records::

    OMP_NUM_THREADS=1 python benchmarks/iterative.py --runs runs/iterative

``--routes one-shot --steps 9`` gives the one-shot rows of a longer budget alone (the fine-tuning pilot).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from lassoprune.pipeline import DataSection, EvaluateSection, FinetuneSection, PretrainSection, RunConfig, run_pipeline
from lassoprune.pruning import PruneSettings


ROUTES = ("one-shot", "iterative")


def config(method: str, target: float, steps: int, iterative: bool, subset: int, lr: float, seed: int) -> RunConfig:
    """The pipeline of one route: ``steps`` fine-tuning epochs in all, split around the cuts when iterative."""
    prune = PruneSettings(method=method, target_macs=target, calib_size=500,
                          steps=steps if iterative else 1, step_epochs=1 if iterative else 0)
    return RunConfig(
        seed=seed,
        data=DataSection(name="fashion-mnist", batch_size=64),
        pretrain=PretrainSection(checkpoint="pretrained:resnet56-fashion-mnist"),
        prune=prune,
        finetune=FinetuneSection(epochs=1 if iterative else steps, lr=lr, train_subset=subset),
        evaluate=EvaluateSection(latency=False),
    )


def row(out: Path) -> dict[str, float]:
    """The numbers of one finished run (its state file)."""
    stages = json.loads((out / "state.json").read_text())["stages"]
    prune = stages["prune"]
    return {"macs": prune["macs_after"] / prune["macs_before"], "params": prune["params_after"] / prune["params_before"],
            "pruned_top1": prune["metrics"]["top1"], "final_top1": stages["evaluate"]["metrics"]["top1"],
            "final_worst": stages["evaluate"]["metrics"]["worst_class"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=Path, default=Path("runs/iterative"))
    parser.add_argument("--methods", nargs="+", default=["l1", "sglp-ib"])
    parser.add_argument("--target", type=float, default=0.1, help="MACs kept")
    parser.add_argument("--steps", type=int, default=3, help="cuts of the iterative route = fine-tuning epochs")
    parser.add_argument("--subset", type=int, default=10_000, help="training images per fine-tuning epoch")
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--routes", nargs="+", choices=ROUTES, default=list(ROUTES))
    args = parser.parse_args()
    lines = ["| method | route | seed | MACs kept | params kept | top-1 after the (last) cut | final top-1 | "
             "final worst class |", "|---|---|---|---|---|---|---|---|"]
    for method in args.methods:
        for seed in args.seeds:
            for iterative in (route == "iterative" for route in args.routes):
                route = f"{args.steps} steps" if iterative else "one-shot"
                out = args.runs / f"{method}-{'iterative' if iterative else 'oneshot'}-s{seed}"
                run_pipeline(config(method, args.target, args.steps, iterative, args.subset, args.lr, seed), out,
                             progress=False)
                r = row(out)
                lines.append(f"| {method} | {route} | {seed} | {r['macs']:.3f} | {r['params']:.3f} | "
                             f"{r['pruned_top1']:.4f} | {r['final_top1']:.4f} | {r['final_worst']:.3f} |")
                print(lines[-1], flush=True)
    (args.runs / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
