"""``lassoprune finetune``: continue training a model file (typically a pruned one).

The options and run directory of ``train`` (``last.pt`` resumable with
``--resume``, ``metrics.jsonl``, ``metrics.json``, ``model.pt``), with
``--checkpoint`` required and fine-tuning defaults: one epoch, peak learning
rate 0.01, cosine schedule. Under ``torchrun`` it trains data-parallel (see
:mod:`lassoprune.training.distributed`).
"""

from __future__ import annotations

import argparse

from lassoprune.cli.train import add_run_options, run_training

HELP = "fine-tune a model file (e.g. after pruning); data-parallel under torchrun"
EPILOG = """\
examples:
  lassoprune finetune --checkpoint pruned.pt --data fashion-mnist --epochs 1 --out runs/ft
  lassoprune finetune --checkpoint pruned.pt --data cifar10 --epochs 20 --lr 0.02 --out runs/ft20
  torchrun --nproc_per_node 2 -m lassoprune finetune --checkpoint pruned.pt --data fashion-mnist \\
      --epochs 1 --out runs/ft          # 2 processes: gloo on CPU, nccl on GPUs

Under torchrun each process trains on its share of every epoch with --batch-size
images per step (global batch = batch size x processes); rank 0 alone evaluates on
the whole test set and writes the run directory. BatchNorm statistics are not
synchronised between processes.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "finetune", help=HELP, description=HELP, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", required=True, metavar="FILE", help="the model file to fine-tune")
    parser.add_argument("--image-size", type=int, help="input side in pixels (default: the one stored in the file)")
    add_run_options(parser, lr=0.01, epochs=1)
    parser.set_defaults(func=run, model=None, num_classes=None, in_channels=None)


def run(args: argparse.Namespace) -> int:
    return run_training(args)
