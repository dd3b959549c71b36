"""``lassoprune prune``: structured pruning of a model file or a zoo model to a MACs / params target."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from collections.abc import Callable
from typing import Any

import torch

from lassoprune.cli._common import (
    add_data_args,
    add_model_args,
    add_run_args,
    device_from,
    model_image_size,
    positive,
    print_json,
)
from lassoprune.errors import LassopruneError
from lassoprune.io import load, save
from lassoprune.models import create_model
from lassoprune.pruning import (
    ALLOCATIONS,
    METHODS,
    PruneSettings,
    describe_methods,
    get_method,
    prune_iteratively,
    prune_with,
)
from lassoprune.pruning.api import modules_named
from lassoprune.pruning.iterative import check_steps
from lassoprune.pruning.method import EXPERIMENTAL
from lassoprune.training.data_setup import calibration_batches, check_calibration_size, make_loaders
from lassoprune.training.finetune import FINETUNE_SEED_OFFSET, FinetuneSettings, finetune
from lassoprune.utils import get_logger, seed_everything

HELP = "prune a model structurally to a MACs or parameter target"
EPILOG = """\
examples:
  lassoprune prune --checkpoint runs/r56/model.pt --data fashion-mnist --method l1 --target-macs 0.5 --out p.pt
  lassoprune prune --model resnet56 --num-classes 10 --method l1 --target-macs 0.5 --out p.pt --json
  lassoprune prune --checkpoint runs/r56/model.pt --data fashion-mnist --method taylor --target-params 0.4 \\
      --allocation uniform --round-to 8 --finetune-epochs 5 --out p.pt
  lassoprune prune --checkpoint S/model.pt --data fashion-mnist --method dwgl-vote --threshold 0.05 --out p.pt
  lassoprune prune --checkpoint runs/r56/model.pt --data fashion-mnist --method l1 --target-macs 0.1 \
      --steps 3 --step-epochs 1 --out p.pt

--target-macs R keeps the fraction R of the original MACs (0 < R < 1), met within 1%.
Methods that need data (taylor, the lasso methods) draw a class-balanced calibration
set of --calib-size training images. Without --checkpoint a freshly initialised
--model is pruned (useful for checking sizes and speed).

Every option of a method is a flag (--threshold, --pool, ...; values are read as JSON
when they parse, else as text) or --method-option KEY=VALUE; `--list-methods` shows
each method's options and defaults. dwgl-vote (after `lassoprune sparse-train`) takes
--threshold TAU instead of a target.
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
    group.add_argument("--target-macs", type=float, metavar="R", help="keep this fraction of the MACs")
    group.add_argument("--target-params", type=float, metavar="R", help="keep this fraction of the parameters (with "
                       "--target-macs: two limits, the binding one met within 1%%, the other kept at most)")
    group.add_argument("--allocation", choices=ALLOCATIONS, default="global", help="how criteria scores become widths")
    group.add_argument("--min-channels", type=int, default=1, help="fewest channels a group keeps (default: 1)")
    group.add_argument("--round-to", type=_round_to, metavar="N|auto",
                       help="kept widths are multiples of this, e.g. 8; auto: the widest of 16, 8, 4 that reaches "
                            "the target")
    group.add_argument("--calib-size", type=int, default=500, help="calibration images (default: 500)")
    group.add_argument("--ignore", nargs="+", default=[], metavar="LAYER", help="module names never pruned")
    residual = group.add_mutually_exclusive_group()
    residual.add_argument("--keep-residual", dest="prune_residual", action="store_false", default=None,
                          help="keep every residual (eltwise) group whole: cut only the channels no residual add "
                               "reads (default for the lasso methods)")
    residual.add_argument("--cut-residual", dest="prune_residual", action="store_true",
                          help="let residual (eltwise) groups be cut too (default for the other methods)")
    rebuild = group.add_mutually_exclusive_group()
    rebuild.add_argument("--reconstruct", dest="reconstruct", action="store_true", default=None,
                         help="refit the layers that lost input channels by least squares on the calibration "
                              "images (default whenever --data is given)")
    rebuild.add_argument("--no-reconstruct", dest="reconstruct", action="store_false",
                         help="keep the cut's weights (BatchNorm statistics are still re-estimated on the data)")
    group.add_argument("--steps", type=int, default=1, metavar="K",
                       help="prune in K cuts on a geometric schedule (0.1 in 3: 0.46, 0.22, 0.1), fine-tuning "
                            "--step-epochs between cuts (default: 1, one cut)")
    group.add_argument("--step-epochs", type=int, default=1, metavar="E",
                       help="with --steps: fine-tuning epochs after every cut but the last, on --data (default: 1; "
                            "0: none)")
    group.add_argument("--list-methods", action="store_true", help="print the available methods and exit")
    group.add_argument("--method-option", action="append", default=[], metavar="KEY=VALUE",
                       help="an option of the method, repeatable, e.g. class_fit=label pool=8 (lasso methods)")
    _add_method_option_flags(parser)
    ablation = parser.add_argument_group("experimental (ablation settings that measured worse; --list-methods)")
    ablation.add_argument("--experimental", action="append", default=[], metavar="KEY=VALUE",
                          help="an experimental setting of the method, repeatable, e.g. kernel=median")
    tune = parser.add_argument_group("fine-tuning")
    tune.add_argument("--finetune-epochs", type=int, default=0, help="fine-tune after pruning (needs --data)")
    tune.add_argument("--lr", type=float, help="fine-tuning learning rate (default: 0.001 after reconstruction, "
                                                "else 0.01)")
    tune.add_argument("--train-subset", type=int, help="fine-tune on a class-stratified subset of N images")
    parser.add_argument("--out", metavar="FILE", help="where to write the pruned model file")
    add_run_args(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.list_methods:
        _print_methods(args.json)
        return 0
    _validate(args)
    seed_everything(args.seed)
    model, image_size = _source_model(args)
    in_channels = model.lp_spec.kwargs.get("in_channels", 3)
    example = torch.randn(1, in_channels, image_size, image_size)
    modules_named(model, args.ignore, "--ignore")  # a clear error before any work
    batches = _calibration(args, image_size)
    settings = _settings(args)
    if settings.steps > 1:
        tune = _step_finetune(args, image_size) if args.step_epochs and args.data else None
        if args.step_epochs and not args.data:
            get_logger().warning("no --data: the %d cuts follow each other without fine-tuning", settings.steps)
        result = prune_iteratively(model, example, settings, data=batches, seed=args.seed, inplace=True,
                                   finetune=tune)
    else:
        result = prune_with(model, example, settings, data=batches, seed=args.seed, inplace=True)
    report = result.to_dict()
    if args.finetune_epochs:
        report["finetune"] = _finetune(result.model, bool(report["reconstruction"]), args, image_size,
                                       args.finetune_epochs, "finetune")
    extra = {k: v for k, v in getattr(model, "lp_extra", {}).items() if k != "metrics"}  # stale after pruning
    extra.update(image_size=image_size, pruning=_pruning_record(report))
    if "finetune" in report:
        extra["metrics"] = report["finetune"]
    save(result.model, args.out, extra=extra)
    report["out"] = args.out
    if args.json:
        print_json(report)
    else:
        _print_summary(report, args.out)
    return 0


def _settings(args: argparse.Namespace) -> PruneSettings:
    """The command line's :class:`PruneSettings` (the same object ``lp.prune`` and a run config build)."""
    return PruneSettings(
        method=args.method, target_macs=args.target_macs, target_params=args.target_params,
        options=_method_options(args), allocation=args.allocation, min_channels=args.min_channels,
        round_to=args.round_to, ignore=tuple(args.ignore), prune_residual=args.prune_residual,
        reconstruct=args.reconstruct, calib_size=args.calib_size, steps=args.steps, step_epochs=args.step_epochs,
    )


def _round_to(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a width step such as 8, or auto; got {text!r}") from None


def _method_option_names() -> dict[str, list[str]]:
    """option name -> the methods that have it, over every registered method (``experimental`` aside)."""
    owners: dict[str, list[str]] = {}
    for name, spec in METHODS.items():
        for option in spec.options.names():
            if option != EXPERIMENTAL:
                owners.setdefault(option, []).append(name)
    return owners


def _add_method_option_flags(parser: argparse.ArgumentParser) -> None:
    """One ``--flag`` per option of any registered method (unless the flag is taken by another setting)."""
    group = parser.add_argument_group("method options (each applies to the methods named; see --list-methods)")
    for option, owners in sorted(_method_option_names().items()):
        flag = "--" + option.replace("_", "-")
        if flag in parser._option_string_actions:
            continue  # reachable through --method-option
        group.add_argument(flag, dest=f"option_{option}", type=_option_value, metavar="V",
                           help=f"option of {', '.join(owners)} (`--list-methods` for its meaning)")


def _option_value(text: str) -> Any:
    """A flag's value: JSON when it parses (numbers, true, null), else the text itself."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _method_options(args: argparse.Namespace) -> dict[str, Any]:
    """The method options given as flags, as ``--method-option KEY=VALUE`` and ``--experimental KEY=VALUE``."""
    options = {key[len("option_"):]: value for key, value in vars(args).items()
               if key.startswith("option_") and value is not None}
    options.update(_pairs("--method-option", args.method_option))
    if args.experimental:
        options[EXPERIMENTAL] = _pairs("--experimental", args.experimental)
    return options


def _pairs(flag: str, items: list[str]) -> dict[str, Any]:
    pairs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise LassopruneError(f"{flag} takes KEY=VALUE, got {item!r}")
        pairs[key] = _option_value(value)
    return pairs


def _print_methods(as_json: bool) -> None:
    records = describe_methods()
    if as_json:
        print_json(records)
        return
    described: dict[tuple[str, ...], str] = {}  # experimental settings -> the first method that listed them
    for record in records:
        data = "needs data" if record["needs_data"] else "no data"
        target = "target or --threshold" if record["target"] == "or-threshold" else "target"
        residual = "" if record["prune_residual"] else "; residual stream kept by default"
        print(f"{record['name']:<12s} {record['summary']} ({data}; {target}{residual})")
        for option, about in record["options"].items():
            default = "" if "default:" in about["help"] else f" (default: {about['default']})"
            print(f"{'':<14s}--{option.replace('_', '-'):<20s} {about['help']}{default}")
        ablations = tuple(record["experimental"])
        if ablations and ablations in described:
            print(f"{'':<14s}--experimental KEY=V    as {described[ablations]}: {', '.join(ablations)}")
        elif ablations:
            described[ablations] = record["name"]
            for option, about in record["experimental"].items():
                print(f"{'':<14s}--experimental {option}=V  {about['help']} (default: {about['default']})")


def _flags(message: str) -> str:
    """A library message followed by the flags of the options it names (target_macs -> --target-macs)."""
    names = sorted({*_method_option_names(), "target_macs", "target_params"})
    named = [n for n in names if re.search(rf"(?<![\w-]){n}(?![\w-])", message)]
    flags = ", ".join("--" + n.replace("_", "-") for n in named)
    return f"{message} (on the command line: {flags})" if named else message


def _validate(args: argparse.Namespace) -> None:
    spec = get_method(args.method)
    options = _method_options(args)
    owners = _method_option_names()
    for option in options:
        if option not in spec.options.names() and option in owners:
            raise LassopruneError(f"--{option.replace('_', '-')} is an option of {', '.join(owners[option])}, "
                                  f"not of --method {spec.name}")
    try:
        opts = spec.parse_options(options)  # clear errors before any work
        spec.check_target(opts, args.target_macs is not None or args.target_params is not None)
    except LassopruneError as exc:
        raise LassopruneError(_flags(str(exc))) from None
    if not args.out:
        raise LassopruneError("give --out FILE for the pruned model")
    if bool(args.model) == bool(args.checkpoint):
        raise LassopruneError("give exactly one of --checkpoint FILE or --model NAME")
    for name in ("calib_size", "num_classes", "in_channels", "image_size", "train_subset"):
        positive(f"--{name.replace('_', '-')}", getattr(args, name))
    if args.round_to != "auto":
        positive("--round-to", args.round_to)

    try:
        check_steps(_settings(args))
    except LassopruneError as exc:
        raise LassopruneError("--" + _flags(str(exc)).replace("step_epochs", "step-epochs")) from None
    if args.finetune_epochs and not args.data:
        raise LassopruneError("--finetune-epochs needs --data NAME (the dataset to fine-tune on)")
    if args.reconstruct is True and not args.data:
        raise LassopruneError("--reconstruct refits layers on calibration images; "
                              "give --data NAME (and --data-root DIR)")
    if spec.needs_data and not args.data:
        raise LassopruneError(f"method {spec.name} scores channels on data; give --data NAME (and --data-root DIR)")
    if spec.needs_data:
        check_calibration_size(args.data, args.calib_size, args.data_root, option="--calib-size")


def _source_model(args: argparse.Namespace) -> tuple[torch.nn.Module, int]:
    if args.checkpoint:
        model = load(args.checkpoint)
        size = model_image_size(model, args.image_size)
        return model, size
    num_classes, in_channels = args.num_classes, args.in_channels
    if args.data and (num_classes is None or in_channels is None):
        from lassoprune.data import dataset_info

        info = dataset_info(args.data, root=args.data_root)
        num_classes, in_channels = num_classes or info.num_classes, in_channels or info.in_channels
    model = create_model(args.model, num_classes=num_classes or 10, in_channels=in_channels or 3)
    return model, model_image_size(model, args.image_size)


def _calibration(args: argparse.Namespace, image_size: int) -> list | None:
    if not args.data:
        return None
    return calibration_batches(
        args.data, image_size=image_size, size=args.calib_size, root=args.data_root, seed=args.seed,
        download=not args.no_download,
    )


def _finetune(model: torch.nn.Module, reconstructed: bool, args: argparse.Namespace, image_size: int, epochs: int,
              name: str) -> dict[str, Any]:
    """Fine-tune ``model`` in place for ``epochs`` in the run directory ``<out>_<name>`` (resumable there)."""
    seed = args.seed + FINETUNE_SEED_OFFSET  # the batches and training of `lassoprune run` with this seed
    loaders = make_loaders(
        args.data, image_size=image_size, root=args.data_root, batch_size=args.batch_size,
        train_subset=args.train_subset, seed=seed, download=not args.no_download,
    )
    run_dir = Path(args.out).with_suffix("").as_posix() + f"_{name}"
    get_logger().info("fine-tuning the pruned model for %d epochs (run directory %s)", epochs, run_dir)
    settings = FinetuneSettings(epochs=epochs, lr=args.lr, train_subset=args.train_subset)
    tuned = finetune(
        model, loaders, settings, run_dir, reconstructed=reconstructed, seed=seed,
        device=device_from(args), progress=not args.no_progress,
        model_extra={"dataset": args.data, "image_size": image_size},
    )
    return {**tuned.summary(), "run_dir": run_dir}  # lr, top1, top5, worst_class, epochs: the model file's metrics


def _step_finetune(args: argparse.Namespace, image_size: int) -> Callable[[torch.nn.Module, int], dict[str, Any]]:
    """``--step-epochs`` of fine-tuning after the cut of a step, in ``<out>_step_<I>`` (the ``--lr``)."""
    reconstructed = args.reconstruct is not False  # the library's default: reconstruct when there is data

    def tune(model: torch.nn.Module, step: int) -> dict[str, Any]:
        return _finetune(model, reconstructed, args, image_size, args.step_epochs, f"step_{step}")

    return tune


def _pruning_record(report: dict[str, Any]) -> dict[str, Any]:
    keys = ("method", "allocation", "target", "macs_before", "macs_after", "params_before", "params_after")
    record = {key: report[key] for key in keys}
    record.update(report["diagnostics"]["record"])  # what the method asks to keep in the model file
    return record


def _print_summary(report: dict[str, Any], out: str) -> None:
    """The report of one cut or of a prune in steps (its last cut's reconstruction and BatchNorm pass)."""
    print(f"{report['method']} ({report['allocation']}) -> {out}")
    for name, key in (("MACs  ", "macs"), ("params", "params")):
        print(f"  {name} {report[f'{key}_before']:>14,d} -> {report[f'{key}_after']:>14,d}  "
              f"({report[f'{key}_ratio']:.4f})")
    for step in report.get("steps", []):
        tuned = step.get("finetuned") or {}
        print(f"  step {step['step']}: {step[step['kind'] + '_ratio']:.4f} of the {step['kind']} kept "
              f"(target {step['target']:.4f})" + (f", fine-tuned top-1 {tuned['top1']:.4f}" if "top1" in tuned else ""))
    for gid, group in report["groups"].items():
        note = group.get("note", "")
        print(f"  {gid:<40s} {group['kept']:>5d} / {group['total']:<5d}" + (f"  {note}" if note else ""))
    refits = report["reconstruction"]
    if refits:
        before = sum(r["error_before"] for r in refits) / len(refits)
        after = sum(r["error_after"] for r in refits) / len(refits)
        print(f"  reconstructed {len(refits)} layers: mean relative output error {before:.3f} -> {after:.3f}")
    if report["recalibrated_images"]:
        print(f"  BatchNorm statistics re-estimated on {report['recalibrated_images']} calibration images")
    else:
        print("  BatchNorm statistics not re-estimated (no --data): evaluate after re-estimating or fine-tuning")
    if "finetune" in report:
        print(f"  fine-tuned top-1 {report['finetune']['top1']:.4f}")
