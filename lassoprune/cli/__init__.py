"""The ``lassoprune`` command line: one sub-command per module of this package.

Every sub-command module exposes ``register(subparsers)``, which adds its
parser and sets ``func`` to a ``run(args) -> int`` callable. User errors
(:class:`lassoprune.errors.LassopruneError`) are printed without a traceback
and exit with status 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from lassoprune._version import __version__
from lassoprune.cli import eval as eval_cmd
from lassoprune.cli import bench, deploy, export, fetch, info, prune, sparse_train, train
from lassoprune.cli import report
from lassoprune.cli import finetune
from lassoprune.cli import run as run_cmd
from lassoprune.errors import LassopruneError

COMMANDS = (train, finetune, sparse_train, eval_cmd, info, fetch, prune, export, deploy, bench, run_cmd, report)

DESCRIPTION = """\
lassoprune: make convolutional networks smaller and faster by structured
pruning, led by the class structure of the training data.

Typical session:
  lassoprune info  --model resnet56 --num-classes 10            # MACs, params
  lassoprune train --model resnet20 --data fashion-mnist --epochs 2 --out runs/r20
  lassoprune eval  --checkpoint runs/r20/model.pt --data fashion-mnist

Run `lassoprune COMMAND --help` for the options of a command.
"""


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every sub-command."""
    parser = argparse.ArgumentParser(
        prog="lassoprune", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"lassoprune {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="only print results and errors")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        command.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``lassoprune`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s", stream=sys.stderr
    )
    try:
        return int(args.func(args) or 0)
    except LassopruneError as exc:
        print(f"lassoprune {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"lassoprune {args.command}: interrupted; finished epochs are checkpointed, use --resume", file=sys.stderr)
        return 130
