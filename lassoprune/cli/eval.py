"""``lassoprune eval``: evaluate a model file on a dataset split.

``--json`` prints ``checkpoint``, ``data``, ``split`` (``test``) and the metrics on that split in the names of
:mod:`lassoprune.training.metrics`: ``top1``, ``top5``, ``loss``, ``worst_class``, ``per_class`` (by class
name), ``confusion``, ``num_samples``.
"""

from __future__ import annotations

import argparse

from lassoprune.cli._common import add_data_args, add_run_args, device_from, model_image_size, print_json
from lassoprune.errors import LassopruneError
from lassoprune.io import load
from lassoprune.training import evaluate
from lassoprune.training.data_setup import make_loaders

HELP = "evaluate a model file: top-1, top-5, per-class accuracy, confusion matrix"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("eval", help=HELP, description=HELP)
    parser.add_argument("--checkpoint", required=True, metavar="FILE", help="model file (e.g. RUN/model.pt)")
    add_data_args(parser, batch_size=256)
    parser.add_argument("--image-size", type=int, help="input side (default: the size the model was trained at)")
    add_run_args(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    model = load(args.checkpoint)
    image_size = model_image_size(model, args.image_size)
    loaders = make_loaders(
        args.data, image_size=image_size, root=args.data_root, eval_batch_size=args.batch_size,
        download=not args.no_download, with_train=False,
    )
    outputs = model.lp_spec.kwargs.get("num_classes")
    if outputs is not None and outputs != loaders.info.num_classes:
        raise LassopruneError(
            f"{args.checkpoint} predicts {outputs} classes but {args.data} has {loaders.info.num_classes}"
        )
    result = evaluate(model, loaders.test, loaders.info.num_classes, device_from(args))
    report = {"checkpoint": args.checkpoint, "data": args.data, "split": "test",
              **result.to_dict(loaders.info.class_names)}
    if args.json:
        print_json(report)
        return 0
    print(f"{args.checkpoint} on {args.data} test ({result.num_samples} images)")
    print(f"  top-1 {result.top1:.4f}   top-5 {result.top5:.4f}   loss {result.loss:.4f}")
    for name, acc in report["per_class"].items():
        print(f"  {name:>16s}  {acc:.4f}")
    return 0
