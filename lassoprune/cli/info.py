"""``lassoprune info``: MACs, parameters and layers of a zoo model or a model file."""

from __future__ import annotations

import argparse
from typing import Any

from lassoprune.analysis import count
from lassoprune.cli._common import add_model_args, model_image_size, positive, print_json
from lassoprune.errors import LassopruneError
from lassoprune.io import load, read_model_file
from lassoprune.models import create_model, list_models

HELP = "show MACs and parameters of a model (no argument: list models and datasets)"
EPILOG = """\
examples:
  lassoprune info                                        # what is available
  lassoprune info --model resnet56 --num-classes 10 --json
  lassoprune info --model resnet50 --image-size 224 --layers
  lassoprune info --checkpoint runs/r20/model.pt --json
MACs are multiply-accumulates of conv and linear layers for one image.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "info", help=HELP, description=HELP, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_model_args(parser)
    parser.add_argument("--checkpoint", metavar="FILE", help="a model file instead of --model")
    parser.add_argument("--layers", action="store_true", help="also list every conv / linear layer")
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON on stdout")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.model and args.checkpoint:
        raise LassopruneError("give either --model or --checkpoint, not both")
    if not args.model and not args.checkpoint:
        return _list_available(args.json)
    for name in ("num_classes", "in_channels", "image_size"):
        positive(f"--{name.replace('_', '-')}", getattr(args, name))
    report = _describe_file(args) if args.checkpoint else _describe_zoo(args)
    if args.json:
        print_json(report if args.layers else {k: v for k, v in report.items() if k != "layers"})
    else:
        _print_report(report, args.layers)
    return 0


def _describe_zoo(args: argparse.Namespace) -> dict[str, Any]:
    model = create_model(args.model, num_classes=args.num_classes or 10, in_channels=args.in_channels or 3)
    size = model_image_size(model, args.image_size)
    return _report(model, args.model, size, source=None)


def _describe_file(args: argparse.Namespace) -> dict[str, Any]:
    read_model_file(args.checkpoint)  # clear error before any work
    model = load(args.checkpoint)
    size = model_image_size(model, args.image_size)
    report = _report(model, model.lp_spec.name, size, source=args.checkpoint)
    report["extra"] = model.lp_extra
    return report


def _report(model, name: str, image_size: int, source: str | None) -> dict[str, Any]:
    in_channels = model.lp_spec.kwargs.get("in_channels", 3)
    shape = (1, in_channels, image_size, image_size)
    counted = count(model, shape)
    return {
        "model": name,
        "checkpoint": source,
        "num_classes": model.lp_spec.kwargs.get("num_classes"),
        "input_shape": list(shape),
        "macs": int(counted.macs),
        "params": int(counted.params),
        "layers": [
            {"name": layer.name, "kind": layer.kind, "macs": int(layer.macs), "params": int(layer.params),
             "out_shape": list(layer.out_shape)}
            for layer in counted.layers
        ],
    }


def _print_report(report: dict[str, Any], layers: bool) -> None:
    shape = "x".join(map(str, report["input_shape"]))
    print(f"{report['model']}  input {shape}")
    print(f"  MACs   {report['macs']:>15,d}  ({report['macs'] / 1e6:.2f} M)")
    print(f"  params {report['params']:>15,d}  ({report['params'] / 1e6:.3f} M)")
    if layers:
        for layer in report["layers"]:
            print(f"  {layer['name']:<40s} {layer['kind']:<8s} {layer['macs']:>14,d} MACs {layer['params']:>10,d} params")


def _list_available(as_json: bool) -> int:
    from lassoprune.data import list_datasets

    from lassoprune.pretrained import PRETRAINED
    from lassoprune.pruning import list_methods
    from lassoprune.regularizers import REGULARIZERS

    available = {"models": list_models(), "datasets": list_datasets(), "methods": list_methods(),
                 "regularizers": list(REGULARIZERS), "pretrained": [f"pretrained:{n}" for n in PRETRAINED]}
    if as_json:
        print_json(available)
    else:
        print("models:   " + ", ".join(available["models"]))
        print("datasets: " + ", ".join(available["datasets"]))
        print("methods:  " + ", ".join(available["methods"]))
        print("regularizers (sparse training): " + ", ".join(available["regularizers"]))
        print("shipped model files: " + ", ".join(available["pretrained"]))
        print("`lassoprune info --model NAME` shows MACs and parameters.")
    return 0
