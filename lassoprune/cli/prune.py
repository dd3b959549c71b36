"""``lassoprune prune``: structured pruning of a model file or a zoo model to a MACs / params target."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

from lassoprune.cli._common import add_data_args, add_model_args, add_run_args, device_from, positive, print_json
from lassoprune.errors import LassopruneError
from lassoprune.io import load, save
from lassoprune.models import create_model, model_entry
from lassoprune.pruning import ALLOCATIONS, PruneResult, list_methods, prune
from lassoprune.pruning.api import modules_named
from lassoprune.pruning.criteria import get_criterion
from lassoprune.pruning.voting import VOTE_METHOD, VOTE_RULES, VOTE_SOURCES, VoteOptions
from lassoprune.training import TrainConfig, fit
from lassoprune.training.data_setup import calibration_batches, make_loaders
from lassoprune.utils import get_logger, seed_everything

HELP = "prune a model structurally to a MACs or parameter target"
EPILOG = """\
examples:
  lassoprune prune --checkpoint runs/r56/model.pt --data fashion-mnist --method l1 --target-macs 0.5 --out p.pt
  lassoprune prune --model resnet56 --num-classes 10 --method l1 --target-macs 0.5 --out p.pt --json
  lassoprune prune --checkpoint runs/r56/model.pt --data fashion-mnist --method taylor --target-params 0.4 \\
      --allocation uniform --round-to 8 --finetune-epochs 5 --out p.pt
  lassoprune prune --checkpoint S/model.pt --data fashion-mnist --method dwgl-vote --threshold 0.05 --out p.pt

--target-macs R keeps the fraction R of the original MACs (0 < R < 1), met within 1%.
Methods that need data (taylor, the lasso methods) draw a class-balanced calibration
set of --calib-size training images. Without --checkpoint a freshly initialised
--model is pruned (useful for checking sizes and speed).

dwgl-vote (after `lassoprune sparse-train`) needs no data: it removes the channels whose
filter norm is below TAU times the conv's largest in every conv of the group (--vote),
with --threshold TAU and no target, or with TAU searched for --target-macs.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "prune", help=HELP, description=HELP, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_model_args(parser)
    parser.add_argument("--checkpoint", metavar="FILE", help="model file to prune (else a fresh --model)")
    add_data_args(parser, required=False, batch_size=64)
    group = parser.add_argument_group("pruning")
    group.add_argument("--method", default="l1", help="pruning method (see `lassoprune prune --list-methods`)")
    target = group.add_mutually_exclusive_group()
    target.add_argument("--target-macs", type=float, metavar="R", help="keep this fraction of the MACs")
    target.add_argument("--target-params", type=float, metavar="R", help="keep this fraction of the parameters")
    group.add_argument("--allocation", choices=ALLOCATIONS, default="global", help="how criteria scores become widths")
    group.add_argument("--min-channels", type=int, default=1, help="fewest channels a group keeps (default: 1)")
    group.add_argument("--round-to", type=int, help="kept widths are multiples of this, e.g. 8")
    group.add_argument("--calib-size", type=int, default=500, help="calibration images (default: 500)")
    group.add_argument("--ignore", nargs="+", default=[], metavar="LAYER", help="module names never pruned")
    group.add_argument("--list-methods", action="store_true", help="print the available methods and exit")
    group.add_argument("--method-option", action="append", default=[], metavar="KEY=VALUE",
                       help="an option of the method, repeatable, e.g. target_kind=class pool=8 (lasso methods)")
    vote = parser.add_argument_group("dwgl-vote")
    vote.add_argument("--threshold", type=float, metavar="TAU", help="vote out filters with norm < TAU x the largest")
    vote.add_argument("--vote", choices=VOTE_RULES, default="intersection", help="how a group's votes combine")
    vote.add_argument("--vote-k", type=int, metavar="K", help="k-of-n: voters that must agree")
    vote.add_argument("--vote-on", choices=VOTE_SOURCES, default="filters",
                      help="filters (conv filter norms, default) or bn (BatchNorm |gamma|)")
    tune = parser.add_argument_group("fine-tuning")
    tune.add_argument("--finetune-epochs", type=int, default=0, help="fine-tune after pruning (needs --data)")
    tune.add_argument("--lr", type=float, default=0.01, help="fine-tuning learning rate (default: 0.01)")
    tune.add_argument("--train-subset", type=int, help="fine-tune on a class-stratified subset of N images")
    parser.add_argument("--out", metavar="FILE", help="where to write the pruned model file")
    add_run_args(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.list_methods:
        print("\n".join(list_methods()))
        return 0
    _validate(args)
    seed_everything(args.seed)
    model, image_size = _source_model(args)
    in_channels = model.lp_spec.kwargs.get("in_channels", 3)
    example = torch.randn(1, in_channels, image_size, image_size)
    batches = _calibration(args, image_size)
    ignored = modules_named(model, args.ignore, "--ignore")
    result = prune(
        model, example, method=args.method, target_macs=args.target_macs, target_params=args.target_params,
        data=batches, allocation=args.allocation, ignored_layers=ignored, min_channels=args.min_channels,
        round_to=args.round_to, inplace=True, seed=args.seed, **_vote_options(args), **_method_options(args),
    )
    report = result.to_dict()
    if args.finetune_epochs:
        report["finetune"] = _finetune(result, args, image_size)
    extra = {k: v for k, v in getattr(model, "lp_extra", {}).items() if k != "metrics"}  # stale after pruning
    extra.update(image_size=image_size, pruning=_pruning_record(report))
    if "finetune" in report:
        extra["metrics"] = report["finetune"]
    save(result.model, args.out, extra=extra)
    report["out"] = args.out
    if args.json:
        print_json(report)
    else:
        _print_summary(result, report, args.out)
    return 0


def _method_options(args: argparse.Namespace) -> dict[str, Any]:
    """``--method-option KEY=VALUE`` pairs; values are read as JSON when they parse (numbers, true), else text."""
    options: dict[str, Any] = {}
    for item in args.method_option:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise LassopruneError(f"--method-option takes KEY=VALUE, got {item!r}")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


def _vote_options(args: argparse.Namespace) -> dict[str, Any]:
    """The dwgl-vote options of ``prune`` (none for other methods)."""
    if args.method != VOTE_METHOD:
        return {}
    options: dict[str, Any] = {"vote": args.vote, "vote_k": args.vote_k, "vote_on": args.vote_on}
    if args.threshold is not None:
        options["threshold"] = args.threshold
    return options


def _validate(args: argparse.Namespace) -> None:
    if args.method != VOTE_METHOD and args.threshold is not None:
        raise LassopruneError(f"--threshold is an option of --method {VOTE_METHOD}")
    if args.threshold is not None and (args.target_macs is not None or args.target_params is not None):
        raise LassopruneError("give either --threshold TAU or a target (--target-macs / --target-params), not both")
    if args.threshold is None and args.target_macs is None and args.target_params is None:
        raise LassopruneError(
            "give a target: --target-macs R or --target-params R (fraction of the original to keep)"
            + (" or --threshold TAU" if args.method == VOTE_METHOD else "")
        )
    if args.method == VOTE_METHOD:
        VoteOptions.from_options(_vote_options(args))  # clear errors before any work
    if not args.out:
        raise LassopruneError("give --out FILE for the pruned model")
    if bool(args.model) == bool(args.checkpoint):
        raise LassopruneError("give exactly one of --checkpoint FILE or --model NAME")
    for name in ("calib_size", "num_classes", "in_channels", "image_size", "round_to", "train_subset"):
        positive(f"--{name.replace('_', '-')}", getattr(args, name))
    if args.method not in list_methods():
        from lassoprune.errors import UnknownNameError

        raise UnknownNameError("pruning method", args.method, list_methods())
    if args.finetune_epochs and not args.data:
        raise LassopruneError("--finetune-epochs needs --data NAME (the dataset to fine-tune on)")
    if _needs_data(args.method) and not args.data:
        raise LassopruneError(f"method {args.method} scores channels on data; give --data NAME (and --data-root DIR)")


def _needs_data(method: str) -> bool:
    if method == VOTE_METHOD:
        return False  # votes on weight norms only
    try:
        return bool(getattr(get_criterion(method), "needs_data", False))
    except LassopruneError:
        return True  # keep-set selectors (lasso methods) always read calibration data


def _source_model(args: argparse.Namespace) -> tuple[torch.nn.Module, int]:
    if args.checkpoint:
        model = load(args.checkpoint)
        size = args.image_size or model.lp_extra.get("image_size") or model_entry(model.lp_spec.name).default_image_size
        return model, size
    num_classes, in_channels = args.num_classes, args.in_channels
    if args.data and (num_classes is None or in_channels is None):
        from lassoprune.data import dataset_info

        info = dataset_info(args.data, root=args.data_root)
        num_classes, in_channels = num_classes or info.num_classes, in_channels or info.in_channels
    model = create_model(args.model, num_classes=num_classes or 10, in_channels=in_channels or 3)
    return model, args.image_size or model_entry(args.model).default_image_size


def _calibration(args: argparse.Namespace, image_size: int) -> list | None:
    if not args.data:
        return None
    return calibration_batches(
        args.data, image_size=image_size, size=args.calib_size, root=args.data_root, seed=args.seed,
        download=not args.no_download,
    )


def _finetune(result: PruneResult, args: argparse.Namespace, image_size: int) -> dict[str, Any]:
    loaders = make_loaders(
        args.data, image_size=image_size, root=args.data_root, batch_size=args.batch_size,
        train_subset=args.train_subset, seed=args.seed, download=not args.no_download,
    )
    run_dir = Path(args.out).with_suffix("").as_posix() + "_finetune"
    get_logger().info("fine-tuning the pruned model for %d epochs (run directory %s)", args.finetune_epochs, run_dir)
    cfg = TrainConfig(epochs=args.finetune_epochs, lr=args.lr, seed=args.seed)
    fitted = fit(
        result.model, loaders.train, loaders.test, cfg, num_classes=loaders.info.num_classes,
        class_names=loaders.info.class_names, out_dir=run_dir, resume=True, device=device_from(args),
        progress=not args.no_progress, model_extra={"dataset": args.data, "image_size": image_size},
    )
    result.model.to("cpu")
    return {"test_top1": fitted.final.top1, "test_top5": fitted.final.top5,
            "test_worst_class": fitted.final.worst_class, "epochs": len(fitted.history), "run_dir": run_dir}


def _pruning_record(report: dict[str, Any]) -> dict[str, Any]:
    keys = ("method", "allocation", "target", "macs_before", "macs_after", "params_before", "params_after")
    record = {key: report[key] for key in keys}
    record.update({key: report["details"][key] for key in ("tau", "vote", "vote_on") if key in report["details"]})
    return record


def _print_summary(result: PruneResult, report: dict[str, Any], out: str) -> None:
    print(f"{result.method} ({result.allocation}) -> {out}")
    print(f"  MACs   {result.macs_before:>14,d} -> {result.macs_after:>14,d}  ({report['macs_ratio']:.4f})")
    print(f"  params {result.params_before:>14,d} -> {result.params_after:>14,d}  ({report['params_ratio']:.4f})")
    per_group = result.details.get("per_group", {})
    for gid, (kept, total) in result.widths.items():
        votes = per_group.get(gid)
        extra = f"  votes: all {votes['intersection']}, any {votes['union']}" if votes else ""
        print(f"  {gid:<40s} {kept:>5d} / {total:<5d}{extra}")
    if "finetune" in report:
        print(f"  fine-tuned top-1 {report['finetune']['test_top1']:.4f}")
