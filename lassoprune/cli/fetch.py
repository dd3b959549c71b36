"""``lassoprune fetch``: find or download a dataset and say where it is."""

from __future__ import annotations

import argparse

from lassoprune.data import load_dataset

HELP = "find or download a dataset's files (both splits) and report them"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("fetch", help=HELP, description=HELP)
    parser.add_argument("data", metavar="NAME", help="dataset name, e.g. fashion-mnist or cifar10")
    parser.add_argument("--data-root", metavar="DIR", help="look here first (official layout), download here if missing")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    for split in ("train", "test"):
        dataset = load_dataset(args.data, root=args.data_root, split=split)
        print(f"{args.data} {split}: {len(dataset)} images, {dataset.info.num_classes} classes")
    return 0
