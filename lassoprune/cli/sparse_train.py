"""``lassoprune sparse-train``: training with a sparsity regulariser (DWGL, group lasso, BN-L1).

The options of ``train`` plus the regulariser's; the run directory is the
same (``last.pt`` resumable with ``--resume``, ``metrics.json``,
``model.pt``), with ``regularizer.json`` holding the regulariser's settings,
which a resumed run must repeat. The model file's extra records them under
``regularizer``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lassoprune.channels.target import target_from
from lassoprune.cli._common import print_json
from lassoprune.cli.train import add_training_args, train_from_args, training_summary
from lassoprune.errors import CheckpointError, LassopruneError
from lassoprune.io import atomic_write_json
from lassoprune.pruning.steering import TargetSteering, steering_summary
from lassoprune.regularizers import REGULARIZERS, SCHEDULES, Regularizer, create_regularizer
from lassoprune.regularizers.base import check_lam
from lassoprune.regularizers.coefficients import check_schedule
from lassoprune.training import RegularizerMode
from lassoprune.training.engine import CHECKPOINT_NAME, SparseTerm

HELP = "train with a sparsity regulariser (dwgl, group-lasso, bn-l1) before pruning"
EPILOG = """\
examples:
  lassoprune sparse-train --checkpoint runs/r20/model.pt --data fashion-mnist --reg dwgl --lam 5e-4 \\
      --epochs 10 --out runs/r20-dwgl
  lassoprune sparse-train --model resnet20 --num-classes 10 --in-channels 1 --data fashion-mnist \\
      --reg dwgl --lam 5e-4 --epochs 1 --train-subset 5000 --out S
  lassoprune prune --checkpoint runs/r20-dwgl/model.pt --data fashion-mnist --method dwgl-vote \\
      --threshold 0.05 --finetune-epochs 1 --out p.pt
  lassoprune sparse-train --checkpoint M.pt --data fashion-mnist --reg dwgl --lam 1e-3 --epochs 2 \\
      --target-macs 0.5 --out S      # then: prune --method dwgl-vote --target-macs 0.5

--reg dwgl: lam * sum_l sum_i c_i ||W^l_i||_2 with c_i increasing with the filter index
i and shared by the convs of each elementwise (residual) group, c_1 = 1, c_n = 1 + alpha
(--reg-schedule linear | exp | step); other convs get c_i = 1. group-lasso: c_i = 1
everywhere. bn-l1: lam * sum |gamma| over the BatchNorm scales (network slimming).
--reg-mode prox (default) applies the exact group soft-threshold after every optimiser
step (exact zeros); penalty adds the term to the loss.
"""

SETTINGS_NAME = "regularizer.json"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "sparse-train", help=HELP, description=HELP, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_training_args(parser, lr=0.01)
    group = parser.add_argument_group("regulariser")
    group.add_argument("--reg", choices=REGULARIZERS, default="dwgl", help="the regulariser (default: dwgl)")
    group.add_argument("--lam", type=float, required=True, help="regularisation strength lam >= 0")
    group.add_argument("--reg-schedule", choices=SCHEDULES, default="linear",
                       help="dwgl coefficients c_i: linear (default), exp or step")
    group.add_argument("--alpha", type=float, default=1.0, help="dwgl: c_n = 1 + alpha (default: 1)")
    group.add_argument("--reg-mode", choices=[m.value for m in RegularizerMode], default="prox",
                       help="prox: group soft-threshold after each step (default); penalty: add to the loss")
    steer = group.add_mutually_exclusive_group()
    steer.add_argument("--target-macs", type=float, default=None, metavar="R",
                       help="steer towards the dwgl-vote cut keeping R of the MACs: only the channels that cut "
                            "removes are penalised, lam (the start) grows until they are zero")
    steer.add_argument("--target-params", type=float, default=None, metavar="R",
                       help="as --target-macs, for the parameters")
    group.add_argument("--keep-residual", action="store_true",
                       help="with a target: the cut will keep residual (eltwise) channels (prune --keep-residual)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = regularizer_settings(args)
    holder: dict[str, Any] = {}
    target = target_from(args.target_macs, args.target_params)  # None: a fixed lam, as given

    def build(model: nn.Module, example: torch.Tensor, steps: int) -> SparseTerm:
        check_run_settings(Path(args.out), settings, args.resume)
        reg = create_regularizer(args.reg, model, example, args.lam, args.reg_schedule, args.alpha)
        holder["reg"] = reg
        if target is not None:
            holder["steering"] = TargetSteering(reg, example, target, steps, prune_residual=not args.keep_residual)
            return holder["steering"]
        return reg

    result = train_from_args(args, build, args.reg_mode, extra={"regularizer": settings})
    summary = {**training_summary(args, result), "regularizer": settings,
               "sparsity": sparsity_summary(holder["reg"])}
    if "steering" in holder:
        summary["steering"] = steering_summary(holder["steering"])
    if args.json:
        print_json(summary)
    else:
        _print_summary(summary)
    return 0


def regularizer_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The regulariser's settings from the options (validated)."""
    lam = check_lam(args.lam)
    check_schedule(args.reg_schedule, args.alpha)
    settings: dict[str, Any] = {"reg": args.reg, "lam": lam, "mode": args.reg_mode}
    if args.target_macs is not None or args.target_params is not None:
        settings["steer"] = {"target_macs": args.target_macs, "target_params": args.target_params,
                             "keep_residual": bool(args.keep_residual)}
    if args.reg == "dwgl":
        settings.update(schedule=args.reg_schedule, alpha=float(args.alpha))
    return settings


def check_run_settings(out: Path, settings: dict[str, Any], resume: bool) -> None:
    """Write ``out/regularizer.json`` for a new run; a resumed run must use the same settings.

    Raises:
        CheckpointError: ``--resume`` with different regulariser settings.
    """
    path = out / SETTINGS_NAME
    if (out / CHECKPOINT_NAME).exists():
        if not resume:
            return  # fit() refuses to overwrite the run with its own message
        saved = _read_settings(path)
        if saved is not None and saved != settings:
            raise CheckpointError(
                f"cannot resume {out}: the regulariser settings changed ({saved} -> {settings}); "
                "resume with the original settings, or start a new --out directory"
            )
        if saved is not None:
            return
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, settings)


def _read_settings(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise LassopruneError(f"{path} is damaged ({exc}); delete it or start a new --out directory") from exc


def sparsity_summary(reg: Regularizer) -> dict[str, Any]:
    """Exactly-zero slices after training: totals, and per elementwise group (intersection / union)."""
    report = reg.sparsity()
    total = sum(len(z) for g in report.values() for z in g["zero"].values())
    slices = sum(g["channels"] * len(g["zero"]) for g in report.values())
    eltwise = {gid: {"channels": g["channels"], "intersection": g["intersection"], "union": g["union"],
                     "zero": {name: len(z) for name, z in g["zero"].items()}}
               for gid, g in report.items() if g["eltwise"]}
    return {"zero_slices": total, "slices": slices, "eltwise_groups": eltwise}


def _print_summary(summary: dict[str, Any]) -> None:
    sparsity = summary["sparsity"]
    reg = summary["regularizer"]
    print(f"test top-1 {summary['top1']:.4f}  {reg['reg']} lam {reg['lam']:g}  "
          f"zero slices {sparsity['zero_slices']} / {sparsity['slices']}  -> {summary['out']}/model.pt")
    for gid, g in sparsity["eltwise_groups"].items():
        print(f"  eltwise {gid:<28s} zero in all convs {g['intersection']:>3d}, "
              f"in any {g['union']:>3d} of {g['channels']}")
    if summary.get("steering"):
        last = summary["steering"][-1]
        print(f"  steered: the cut at the target removes {last['removed']} channels, {last['zero']} of them "
              f"zero; lam grew to {last['lam']:g}")
