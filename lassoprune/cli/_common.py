"""Arguments and helpers shared by several sub-commands."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import torch
from torch import nn

from lassoprune.errors import LassopruneError
from lassoprune.models import model_entry


def add_model_args(parser: argparse.ArgumentParser, required: bool = False) -> None:
    """--model, --num-classes, --in-channels, --image-size."""
    group = parser.add_argument_group("model")
    group.add_argument("--model", required=required,
                       help="zoo model name (see `lassoprune info`), or torchvision:NAME / timm:NAME "
                            "(extra: lassoprune[vision])")
    group.add_argument("--num-classes", type=int, help="classifier outputs (default: the dataset's classes, else 10)")
    group.add_argument("--in-channels", type=int, help="input channels (default: the dataset's, else 3)")
    group.add_argument("--image-size", type=int, help="input side in pixels (default: the model's, 32 or 224)")


def add_data_args(parser: argparse.ArgumentParser, required: bool = True, batch_size: int = 128) -> None:
    """--data, --data-root, --batch-size."""
    group = parser.add_argument_group("data")
    group.add_argument("--data", required=required, metavar="NAME", help="dataset name: cifar10, cifar100, fashion-mnist, mnist, imagefolder, synthetic")
    group.add_argument("--data-root", metavar="DIR", help="where the dataset's files are, in their official layout (default: standard places, then download)")
    group.add_argument("--batch-size", type=int, default=batch_size, help=f"batch size (default: {batch_size})")
    group.add_argument("--no-download", action="store_true", help="never download; fail if the files are not found")


def add_run_args(parser: argparse.ArgumentParser) -> None:
    """--seed, --device, --json, --no-progress."""
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON on stdout")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def device_from(args: argparse.Namespace) -> torch.device:
    """The device named by --device, checked to exist."""
    if not args.device:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(args.device)
    except RuntimeError as exc:
        raise LassopruneError(f"invalid --device {args.device!r}: {exc}") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise LassopruneError(f"--device {args.device} asked for CUDA, but no CUDA device is available; use --device cpu")
    return device


def print_json(obj: Any) -> None:
    """Write ``obj`` as JSON to stdout."""
    json.dump(obj, sys.stdout, indent=2)
    sys.stdout.write("\n")


def positive(name: str, value: int | None) -> None:
    """Raise a clear error unless ``value`` is None or > 0."""
    if value is not None and value <= 0:
        raise LassopruneError(f"{name} must be a positive integer, got {value}")


def model_image_size(model: nn.Module, image_size: int | None = None) -> int:
    """``image_size`` if given, else the model file's ``image_size``, else the zoo default of its architecture."""
    if image_size:
        return image_size
    stored = getattr(model, "lp_extra", {}).get("image_size")
    if stored:
        return int(stored)
    spec = getattr(model, "lp_spec", None)
    if spec is None:
        raise LassopruneError("the model file records no image size; give --image-size S")
    return model_entry(spec.name).default_image_size
