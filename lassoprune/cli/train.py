"""``lassoprune train``: train a zoo model on a dataset, with checkpoints and resume."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from lassoprune.cli._common import (
    add_data_args,
    add_model_args,
    add_run_args,
    device_from,
    model_image_size,
    positive,
    print_json,
)
from lassoprune.data import BatchLoader
from lassoprune.errors import LassopruneError
from lassoprune.io import load
from lassoprune.models import create_model
from lassoprune.training import SCHEDULES, FitResult, TrainConfig, fit
from lassoprune.training.engine import SparseTerm
from lassoprune.training.data_setup import Loaders, make_loaders
from lassoprune.training.distributed import DistContext, distributed_session, torchrun_env
from lassoprune.training.metrics import headline
from lassoprune.utils import get_logger, seed_everything

HELP = "train a model (checkpoint every epoch; --resume continues)"
EPILOG = """\
examples:
  lassoprune train --model resnet20 --data fashion-mnist --epochs 2 --train-subset 10000 --out runs/r20
  lassoprune train --model vgg16 --data cifar10 --data-root ~/data/cifar --epochs 160 --out runs/vgg16
  lassoprune train --model resnet56 --data cifar10 --epochs 160 --out runs/r56 --resume   # after a crash

The run directory gets last.pt (resumable state), metrics.jsonl (one line per
epoch: train loss / top1, test top1 / top5 / loss / worst_class), metrics.json
(final test metrics: top1, top5, loss, worst_class, per_class, confusion,
num_samples) and model.pt (the trained model). --json prints out, top1, top5,
worst_class and epochs.

Data-parallel on several processes (gloo on CPU, nccl on GPUs; --batch-size is per process):
  torchrun --nproc_per_node 2 -m lassoprune train --model resnet20 --data fashion-mnist --epochs 2 --out runs/r20
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train", help=HELP, description=HELP, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_training_args(parser)
    parser.set_defaults(func=run)


def add_training_args(parser: argparse.ArgumentParser, lr: float = 0.1) -> None:
    """The options of ``train`` (shared with ``sparse-train``); ``lr`` is the default peak learning rate."""
    add_model_args(parser)
    parser.add_argument("--checkpoint", metavar="FILE", help="start from this model file instead of --model (fine-tuning)")
    add_run_options(parser, lr=lr)


def add_run_options(parser: argparse.ArgumentParser, lr: float = 0.1, epochs: int = 30) -> None:
    """Data, optimisation, run directory and run options (everything of ``train`` but the model source)."""
    add_data_args(parser, batch_size=64)
    group = parser.add_argument_group("training")
    group.add_argument("--epochs", type=int, default=epochs, help=f"epochs (default: {epochs})")
    group.add_argument("--lr", type=float, default=lr, help=f"peak learning rate (default: {lr})")
    group.add_argument("--momentum", type=float, default=0.9)
    group.add_argument("--no-nesterov", action="store_true", help="plain momentum instead of Nesterov")
    group.add_argument("--weight-decay", type=float, default=5e-4)
    group.add_argument("--schedule", choices=SCHEDULES, default="cosine")
    group.add_argument("--milestones", type=float, nargs="+", default=[0.5, 0.75], help="multistep: fractions of the epochs")
    group.add_argument("--warmup-epochs", type=float, default=0.0)
    group.add_argument("--label-smoothing", type=float, default=0.0)
    group.add_argument("--train-subset", type=int, help="train on a class-stratified subset of N images")
    group.add_argument("--no-augment", action="store_true", help="no random crop / flip")
    parser.add_argument("--out", required=True, metavar="DIR", help="run directory")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    add_run_args(parser)


def run(args: argparse.Namespace) -> int:
    return run_training(args)


def run_training(args: argparse.Namespace) -> int:
    """Train as ``train``'s options say, data-parallel when launched by ``torchrun``; rank 0 reports."""
    with distributed_session(device_from(args)) as dist:
        result = train_from_args(args, dist=dist)
        if dist.is_main:
            report_training(args, result)
    return 0


def report_training(args: argparse.Namespace, result: FitResult) -> None:
    """Print the result of a run: JSON with --json, else one line."""
    if args.json:
        print_json(training_summary(args, result))
    else:
        print(f"test top-1 {result.final.top1:.4f}  top-5 {result.final.top5:.4f}  "
              f"worst class {result.final.worst_class:.4f}  -> {args.out}/model.pt")


def train_from_args(
    args: argparse.Namespace,
    regularizer_for: Callable[[nn.Module, torch.Tensor, int], SparseTerm] | None = None,
    regularizer_mode: str = "prox",
    extra: dict[str, Any] | None = None,
    dist: DistContext | None = None,
) -> FitResult:
    """Build the model, data and config from ``train``'s options and run :func:`lassoprune.fit`.

    Args:
        regularizer_for: builds a sparse-training regulariser from the model, an example input
            ``(1, C, S, S)`` and the run's optimiser steps (``sparse-train``); None = plain training.
        regularizer_mode: ``prox`` or ``penalty`` (see :func:`lassoprune.fit`).
        extra: more entries for the model file's extra (e.g. the regulariser's settings).
        dist: the process group context under ``torchrun`` (see
            :mod:`lassoprune.training.distributed`); None = one process, and a
            ``torchrun`` launch is refused.
    """
    if dist is None:
        refuse_torchrun(args)
    check_counts(args)
    if bool(args.model) == bool(args.checkpoint):
        raise LassopruneError("give exactly one of --model NAME (new model) or --checkpoint FILE (start from a model file)")
    cfg = TrainConfig(epochs=args.epochs, lr=args.lr, seed=args.seed, **train_options(args))
    seed_everything(args.seed)
    model, image_size = _build_model(args)
    loaders = training_loaders(args, image_size, dist)
    check_fits(model, loaders.info.num_classes, args)
    regularizer = None
    if regularizer_for is not None:
        in_channels = model.lp_spec.kwargs.get("in_channels", loaders.info.in_channels)
        steps = args.epochs * len(loaders.train)
        regularizer = regularizer_for(model, torch.zeros(1, in_channels, image_size, image_size), steps)
    if dist is None or dist.is_main:
        log_start(args, model, loaders, cfg.epochs, dist)
    return fit(
        model, loaders.train, loaders.test, cfg,
        num_classes=loaders.info.num_classes, class_names=loaders.info.class_names,
        out_dir=args.out, resume=args.resume, device=device_from(args) if dist is None else dist.device,
        progress=not args.no_progress, dist=dist,
        regularizer=regularizer, regularizer_mode=regularizer_mode,
        bn_batches=_bn_batches(loaders.train) if regularizer is not None else None,
        model_extra={"dataset": args.data, "image_size": image_size, "train_subset": args.train_subset,
                     **(extra or {})},
    )


def refuse_torchrun(args: argparse.Namespace) -> None:
    """A command without distributed support must not run once per torchrun process."""
    launch = torchrun_env()
    if launch is not None:
        command = getattr(args, "command", None) or "this command"
        raise LassopruneError(
            f"`lassoprune {command}` does not support torchrun (WORLD_SIZE={launch.world_size}); "
            "run it as one process, or use `train` / `finetune` for data-parallel training"
        )


def check_counts(args: argparse.Namespace) -> None:
    """The counts among the options (epochs, batch size, subset, classes, channels, image size) are positive."""
    for name in ("epochs", "batch_size", "train_subset", "num_classes", "in_channels", "image_size"):
        positive(f"--{name.replace('_', '-')}", getattr(args, name))


def train_options(args: argparse.Namespace) -> dict[str, Any]:
    """The :class:`~lassoprune.training.TrainConfig` fields the options set, but ``epochs``, ``lr`` and ``seed``."""
    return {
        "momentum": args.momentum, "nesterov": not args.no_nesterov, "weight_decay": args.weight_decay,
        "schedule": args.schedule, "milestones": tuple(args.milestones), "warmup_epochs": args.warmup_epochs,
        "label_smoothing": args.label_smoothing,
    }


def training_loaders(args: argparse.Namespace, image_size: int, dist: DistContext | None) -> Loaders:
    """The training and test batches the options describe (this process's share under ``torchrun``)."""
    return make_loaders(
        args.data, image_size=image_size, root=args.data_root, batch_size=args.batch_size,
        train_subset=args.train_subset, seed=args.seed, augment=not args.no_augment, download=not args.no_download,
        distributed=dist.shard if dist is not None else None,
    )


def log_start(
    args: argparse.Namespace, model: nn.Module, loaders: Loaders, epochs: int, dist: DistContext | None
) -> None:
    """One log line describing the run about to start."""
    ranks = dist.world_size if dist is not None else 1
    where = f" on {ranks} processes ({dist.backend})" if ranks > 1 else ""
    get_logger().info(
        "training %s on %s (%d images, %d classes) for %d epochs%s -> %s",
        model.lp_spec.name, args.data, loaders.train.num_samples * ranks, loaders.info.num_classes, epochs,
        where, args.out,
    )


def _bn_batches(train: BatchLoader, images: int = 1024) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Fixed, un-augmented training batches for re-estimating BatchNorm statistics."""
    plain = BatchLoader(train.dataset, batch_size=train.batch_size, image_size=train.image_size,
                        indices=train.indices[:images])
    return list(plain)


def training_summary(args: argparse.Namespace, result: FitResult) -> dict[str, Any]:
    """The JSON summary of a training run: ``out``, the test metrics ``top1``, ``top5``, ``worst_class``, ``epochs``."""
    return {"out": args.out, **headline(result.final), "epochs": len(result.history)}


def _build_model(args: argparse.Namespace):
    """The model to train and the image side it expects."""
    from lassoprune.data import dataset_info

    if args.checkpoint:
        model = load(args.checkpoint)
        image_size = model_image_size(model, args.image_size)
        return model, image_size
    info = dataset_info(args.data, root=args.data_root)
    model = create_model(
        args.model,
        num_classes=args.num_classes or info.num_classes,
        in_channels=args.in_channels or info.in_channels,
    )
    return model, model_image_size(model, args.image_size)


def check_fits(model: nn.Module, num_classes: int, args: argparse.Namespace) -> None:
    """The model has at least one output per class of ``--data``."""
    outputs = model.lp_spec.kwargs.get("num_classes")
    if outputs is not None and outputs < num_classes:
        raise LassopruneError(
            f"the model has {outputs} outputs but {args.data} has {num_classes} classes; "
            f"use --num-classes {num_classes}"
        )
