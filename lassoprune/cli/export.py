"""``lassoprune export``: write a model file (pruned or not) as ONNX, checked with onnxruntime."""

from __future__ import annotations

import argparse
from typing import Any

from torch import nn

from lassoprune.cli._common import model_image_size, positive, print_json
from lassoprune.errors import LassopruneError
from lassoprune.io import load, read_model_file
from lassoprune.io.onnx_export import DEFAULT_OPSET, INPUT_NAME, OUTPUT_NAME, check_onnx, export_onnx

HELP = "export a model file to ONNX (dynamic batch) and check it against PyTorch"
EPILOG = """\
examples:
  lassoprune export --checkpoint runs/p56/model.pt --onnx p56.onnx
  lassoprune export --checkpoint runs/r50/model.pt --onnx r50.onnx --image-size 224 --json
The ONNX graph takes "input" (batch, C, H, W) and returns "logits" (batch, classes);
the batch axis is dynamic. After writing, onnxruntime is run on random inputs at
batch 1 and 3 and compared with PyTorch (skip with --no-check).
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export", help=HELP, description=HELP, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", required=True, metavar="FILE", help="model file to export")
    parser.add_argument("--onnx", required=True, metavar="OUT", help="where to write the .onnx file")
    parser.add_argument("--image-size", type=int, help="input side in pixels (default: the file's, else the model's)")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default: {DEFAULT_OPSET})")
    parser.add_argument("--no-check", action="store_true", help="do not compare onnxruntime with PyTorch")
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON on stdout")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    positive("--image-size", args.image_size)
    positive("--opset", args.opset)
    read_model_file(args.checkpoint)  # clear error before any work
    model = load(args.checkpoint)
    shape = (1, model_in_channels(model), *[model_image_size(model, args.image_size)] * 2)
    export_onnx(model, args.onnx, shape, opset=args.opset)
    report: dict[str, Any] = {
        "checkpoint": args.checkpoint, "onnx": args.onnx, "opset": args.opset,
        "input": {"name": INPUT_NAME, "shape": ["batch", *shape[1:]]}, "output": OUTPUT_NAME, "check": None,
    }  # fmt: skip
    if not args.no_check:
        check = check_onnx(model, args.onnx, shape)
        report["check"] = check.to_dict()
        if not check.ok:
            raise LassopruneError(
                f"{args.onnx} was written, but onnxruntime differs from PyTorch by {check.max_abs_diff:.3g} "
                f"(allowed {check.tolerance:.3g}); try another --opset, and do not deploy this file unchecked"
            )
    if args.json:
        print_json(report)
    else:
        _print_report(report)
    return 0


def model_in_channels(model: nn.Module) -> int:
    """Input channels recorded in the model's architecture record (3 if absent)."""
    spec = getattr(model, "lp_spec", None)
    return int(spec.kwargs.get("in_channels", 3)) if spec is not None else 3


def _print_report(report: dict[str, Any]) -> None:
    dims = "x".join(map(str, report["input"]["shape"]))
    print(f"wrote {report['onnx']}  (opset {report['opset']}, {INPUT_NAME} {dims} -> {OUTPUT_NAME})")
    check = report["check"]
    if check:
        sizes = ", ".join(map(str, check["batch_sizes"]))
        print(f"  onnxruntime matches PyTorch at batch {sizes}: max |diff| {check['max_abs_diff']:.2e}")
