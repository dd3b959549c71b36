"""Model files shipped with the package, addressed as ``pretrained:NAME``.

``resnet56-fashion-mnist``: ResNet-56 (CIFAR variant, 1x1-conv shortcuts,
1 input channel, 32x32 input = Fashion-MNIST padded) trained by this
library's engine; how it was made is in ``README.md`` beside the file.
"""

from __future__ import annotations

from pathlib import Path

from lassoprune.errors import CheckpointError, UnknownNameError

__all__ = ["PRETRAINED", "PREFIX", "pretrained_path", "resolve_model_path"]

PREFIX = "pretrained:"
PRETRAINED: dict[str, str] = {"resnet56-fashion-mnist": "resnet56_fashion_mnist.pt"}


def pretrained_path(name: str) -> Path:
    """The file of the shipped model ``name``.

    Raises:
        UnknownNameError: ``name`` is not shipped.
        CheckpointError: the file is missing from this installation.
    """
    if name not in PRETRAINED:
        raise UnknownNameError("pretrained model", name, PRETRAINED)
    path = Path(__file__).with_name(PRETRAINED[name])
    if not path.is_file():
        raise CheckpointError(f"the shipped model file {path.name} is missing from this installation; reinstall lassoprune")
    return path


def resolve_model_path(spec: str) -> Path:
    """``pretrained:NAME`` -> the shipped file; anything else is a path."""
    return pretrained_path(spec[len(PREFIX):]) if spec.startswith(PREFIX) else Path(spec)
