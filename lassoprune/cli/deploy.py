"""``lassoprune deploy``: fold BatchNorm, freeze TorchScript, export ONNX, check outputs, time in a warm process."""

from __future__ import annotations

import argparse
from typing import Any

from torch import nn

from lassoprune.cli._common import model_image_size, positive, print_json
from lassoprune.cli.export import model_in_channels
from lassoprune.deployment import RUNTIMES, deploy
from lassoprune.errors import LassopruneError
from lassoprune.io import load, read_model_file
from lassoprune.models import create_model

HELP = "make a (pruned) model file ready for a runtime: folded, frozen, exported, checked, timed"
EPILOG = """\
examples:
  lassoprune deploy --checkpoint runs/demo/prune/model.pt --out deployed/
  lassoprune deploy --checkpoint P.pt --out D --runtime onnx --batch-sizes 1 64 --threads 1
  lassoprune deploy --checkpoint P.pt --out D --runtime torchscript onnx aoti
Writes DIR/model.torchscript.pt (frozen; load with lassoprune.deployment.load_torchscript),
DIR/model.onnx, with --runtime aoti DIR/model.pt2 (torch.export compiled ahead of time by
Inductor: needs a C++ compiler, about a minute per model; load with
lassoprune.deployment.load_aoti), and DIR/deploy.json (output check, latency, the fastest
runtime per batch size). Outputs must match the
pruned model to 1e-4 x max(1, largest |output|), or the command fails and writes no model file.
Latency is measured the way a long-running process sees it: --warmup passes of every
model first, then dense and deployed interleaved. The dense model is the checkpoint's
architecture at full width (latency does not depend on the weights), or --dense FILE,
deployed the same way in memory, so the speed-up is the pruning's alone.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "deploy", help=HELP, description=HELP, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", required=True, metavar="FILE", help="the model file to deploy")
    parser.add_argument("--out", required=True, metavar="DIR", help="output directory")
    parser.add_argument("--runtime", nargs="+", choices=RUNTIMES, default=["torchscript", "onnx"],
                        help="runtimes to deploy for (default: torchscript onnx)")
    parser.add_argument("--dense", metavar="FILE", help="the unpruned model to time against (default: the "
                                                        "checkpoint's architecture at full width)")
    parser.add_argument("--image-size", type=int, help="input side in pixels (default: the file's, else the model's)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 64], help="batch sizes timed")
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads while timing (default: 2)")
    parser.add_argument("--warmup", type=int, default=200, help="untimed passes of every model first (default: 200)")
    parser.add_argument("--repeats", type=int, default=30, help="timed rounds (default: 30)")
    parser.add_argument("--no-latency", action="store_true", help="only fold, export and check")
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON on stdout")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    for flag, value in (("--image-size", args.image_size), ("--threads", args.threads),
                        ("--repeats", args.repeats), *(("--batch-sizes", b) for b in args.batch_sizes)):
        positive(flag, value)
    if args.warmup < 0:
        raise LassopruneError(f"--warmup must be >= 0, got {args.warmup}")
    read_model_file(args.checkpoint)  # clear error before any work
    model = load(args.checkpoint)
    shape = (1, model_in_channels(model), *[model_image_size(model, args.image_size)] * 2)
    dense = _dense_model(model, args.dense) if not args.no_latency else None
    result = deploy(model, args.out, shape, dense=dense, runtimes=args.runtime, batch_sizes=args.batch_sizes,
                    threads=args.threads, warmup=args.warmup, repeats=args.repeats, latency=not args.no_latency)
    report = result.to_dict()
    if args.json:
        print_json(report)
    else:
        _print_report(report)
    return 0


def _dense_model(model: nn.Module, dense_file: str | None) -> nn.Module | None:
    if dense_file:
        read_model_file(dense_file)
        return load(dense_file)
    spec = getattr(model, "lp_spec", None)
    return create_model(spec.name, **spec.kwargs) if spec is not None else None


def _print_report(report: dict[str, Any]) -> None:
    for runtime, path in report["files"].items():
        print(f"wrote {path}  ({runtime}; max |diff| vs the pruned model {report['max_abs_diff'][runtime]:.2e})")
    print(f"  BatchNorm folded: {len(report['folded_batchnorm'])}, left in place: {len(report['kept_batchnorm'])}")
    for rec in report["latency"]:
        dense = f"dense {rec['dense_ms']:.2f} ms -> " if "dense_ms" in rec else ""
        speed = f"  ({rec['speedup']:.2f}x)" if "speedup" in rec else ""
        print(f"  {rec['runtime']:<11s} batch {rec['batch_size']:<3d} {dense}deployed {rec['deployed_ms']:.2f} ms{speed}")
    for batch, runtime in report["fastest"].items():
        print(f"  fastest at batch {batch}: {runtime}")
