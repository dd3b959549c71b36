"""``lassoprune run``: the whole pipeline from a YAML config (or flags), resumable stage by stage."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import yaml

from lassoprune.cli._common import print_json
from lassoprune.cli.train import refuse_torchrun
from lassoprune.errors import LassopruneError
from lassoprune.pipeline import apply_overrides, parse_config, read_config_document, run_pipeline

HELP = "pretrain -> [sparse] -> prune -> fine-tune -> evaluate -> report, resumable"
EPILOG = """\
examples:
  lassoprune run configs/demo.yaml --out runs/demo
  lassoprune run configs/demo.yaml --out runs/r56-stlp --set prune.method=stlp-ib --set prune.target_macs=0.4
  lassoprune run --model resnet20 --data fashion-mnist --method sglp-ib --target-macs 0.5 --out runs/r20

Rerunning the same command after a crash (or Ctrl-C) resumes at the first
unfinished stage; training stages resume from their last finished epoch.
The run directory gets config.yaml, state.json, one folder per stage
(pretrain/, [sparse/], prune/, finetune/, evaluate/), summary.json and the
report (report.md, report.json, PNG plots).

Config sections and keys (defaults in lassoprune/pipeline/config.py):
  model, num_classes, in_channels, seed, device
  data:     name, root, batch_size, image_size, download
  pretrain: checkpoint (a model file, or pretrained:resnet56-fashion-mnist), epochs, lr, train_subset
  sparse:   regularizer (dwgl | group-lasso | bn-l1), lam, alpha, schedule, mode, epochs, lr, train_subset
  prune:    method, target_macs | target_params, calib_size, allocation, min_channels, round_to, ignore, options,
            steps, step_epochs (prune in steps, fine-tuning between cuts)
  finetune: epochs, lr, train_subset
  evaluate: latency, latency_batch, latency_threads
"""

FLAG_KEYS = {
    "model": "model", "data": "data.name", "data_root": "data.root", "checkpoint": "pretrain.checkpoint",
    "method": "prune.method", "target_macs": "prune.target_macs", "target_params": "prune.target_params",
    "calib_size": "prune.calib_size", "finetune_epochs": "finetune.epochs", "device": "device", "seed": "seed",
}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "run", help=HELP, description=HELP, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("config", nargs="?", metavar="CONFIG.yaml", help="run configuration (YAML)")
    parser.add_argument("--out", metavar="DIR", help="run directory (default: runs/CONFIG-NAME)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set finetune.epochs=2 (repeatable)")
    flags = parser.add_argument_group("shortcuts for common keys")
    flags.add_argument("--model")
    flags.add_argument("--data", metavar="NAME")
    flags.add_argument("--data-root", metavar="DIR")
    flags.add_argument("--checkpoint", metavar="FILE", help="start from this model file (pretrain.checkpoint)")
    flags.add_argument("--method")
    flags.add_argument("--target-macs", type=float)
    flags.add_argument("--target-params", type=float)
    flags.add_argument("--calib-size", type=int)
    flags.add_argument("--finetune-epochs", type=int)
    flags.add_argument("--device")
    flags.add_argument("--seed", type=int)
    parser.add_argument("--json", action="store_true", help="print the run's summary as JSON")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    refuse_torchrun(args)
    document = _document(args)
    config = parse_config(document, source=args.config or "the command line")
    out = args.out or (f"runs/{Path(args.config).stem}" if args.config else None)
    if out is None:
        raise LassopruneError("give --out DIR (the run directory) when no config file is given")
    outcome = run_pipeline(config, out, progress=not args.no_progress)
    if args.json:
        print_json(outcome.summary)
    else:
        _print_outcome(outcome.summary, outcome.root, outcome.report_files)
    return 0


def _document(args: argparse.Namespace) -> dict[str, Any]:
    document = read_config_document(args.config) if args.config else {}
    assignments = [f"{key}={yaml.safe_dump(getattr(args, flag)).strip().removesuffix('...').strip()}"
                   for flag, key in FLAG_KEYS.items() if getattr(args, flag) is not None]
    return apply_overrides(document, assignments + list(args.set))


def _print_outcome(summary: dict[str, Any], root: Path, files: tuple[Path, ...]) -> None:
    m = summary["metrics"]
    print(f"{summary['model']} on {summary['dataset']}, {summary['method']} -> {root}")
    print(f"  MACs   {summary['macs_before']:>14,d} -> {summary['macs_after']:>14,d}  "
          f"({summary['macs_after'] / summary['macs_before']:.3f})")
    print(f"  params {summary['params_before']:>14,d} -> {summary['params_after']:>14,d}  "
          f"({summary['params_after'] / summary['params_before']:.3f})")
    rows = [("dense", "baseline"), ("cut (BN re-estimated)", "unreconstructed"),
            ("pruned (one-shot)", "pruned")]
    if m.get("final") != m.get("pruned"):  # no fine-tuning: the final model is the pruned one
        rows.append(("fine-tuned", "final"))
    for label, key in rows:
        if m.get(key):
            print(f"  {label:<26s} top-1 {m[key]['top1']:.4f}  worst class {m[key]['worst_class']:.4f}")
    if summary.get("latency"):
        lat = summary["latency"]
        print(f"  latency (batch {lat['batch_size']}, {lat['threads']} threads) {lat['before_ms']:.1f} ms -> "
              f"{lat['after_ms']:.1f} ms  ({lat['speedup']:.2f}x)")
    for path in files:
        print(f"  wrote {path}")
