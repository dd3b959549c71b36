"""``lassoprune finetune``: continue training a model file (typically a pruned one).

The options and run directory of ``train`` (``last.pt`` resumable with
``--resume``, ``metrics.jsonl``, ``metrics.json``, ``model.pt``), with
``--checkpoint`` required and fine-tuning defaults: one epoch, peak learning
rate :data:`~lassoprune.training.finetune.FINETUNE_LR`, cosine schedule. It runs
:func:`lassoprune.training.finetune.finetune`, the fine-tuning of ``prune
--finetune-epochs`` and of the pipeline. Under ``torchrun`` it trains
data-parallel (see :mod:`lassoprune.training.distributed`).
"""

from __future__ import annotations

import argparse

from lassoprune.cli._common import device_from, model_image_size
from lassoprune.cli.train import (
    add_run_options,
    check_counts,
    check_fits,
    log_start,
    report_training,
    train_options,
    training_loaders,
)
from lassoprune.io import load
from lassoprune.training.distributed import DistContext, distributed_session
from lassoprune.training.finetune import FINETUNE_LR, FinetuneResult, FinetuneSettings, finetune

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
    add_run_options(parser, lr=FINETUNE_LR, epochs=1)
    parser.set_defaults(func=run, model=None, num_classes=None, in_channels=None)


def run(args: argparse.Namespace) -> int:
    """Fine-tune as the options say, data-parallel when launched by ``torchrun``; rank 0 reports."""
    with distributed_session(device_from(args)) as dist:
        result = finetune_from_args(args, dist)
        if dist.is_main:
            report_training(args, result.fit)
    return 0


def finetune_from_args(args: argparse.Namespace, dist: DistContext) -> FinetuneResult:
    """Load ``--checkpoint``, build the batches and run :func:`~lassoprune.training.finetune.finetune`."""
    check_counts(args)
    model = load(args.checkpoint)
    image_size = model_image_size(model, args.image_size)
    loaders = training_loaders(args, image_size, dist)
    check_fits(model, loaders.info.num_classes, args)
    if dist.is_main:
        log_start(args, model, loaders, args.epochs, dist)
    settings = FinetuneSettings(epochs=args.epochs, lr=args.lr, train_subset=args.train_subset)
    return finetune(
        model, loaders, settings, args.out, seed=args.seed, options=train_options(args), resume=args.resume,
        device=dist.device, progress=not args.no_progress, dist=dist,
        model_extra={"dataset": args.data, "image_size": image_size, "train_subset": args.train_subset},
    )
