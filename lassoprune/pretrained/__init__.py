"""Model files shipped with the package, addressed as ``pretrained:NAME``.

- ``resnet20-fashion-mnist``: ResNet-20 trained to convergence (30 epochs; full
  test split top-1 0.9431), the benchmark protocol's baseline.
- ``resnet56-fashion-mnist``: ResNet-56 trained to convergence (30 epochs; full
  test split top-1 0.9452), the benchmark protocol's baseline.
- ``resnet56-fashion-mnist-2ep``: ResNet-56 trained for 2 epochs (top-1 0.8929),
  the demo's model (under-trained on purpose: quick to prune and fine-tune).
- ``vgg16-fashion-mnist``: VGG-16 with BatchNorm trained to convergence (8 epochs;
  full test split top-1 0.9387), the headline regime's baseline; weights stored
  in float16 (half the file), loaded into float32.

The ResNets are CIFAR-variant ResNets (1x1-conv shortcuts, 1 input channel, 32x32
input = Fashion-MNIST padded), the VGG the zoo's ``vgg16`` (same input); all were
trained by this library's engine; how each was made is in ``README.md`` beside the files.
"""

from __future__ import annotations

from pathlib import Path

from lassoprune.errors import CheckpointError, UnknownNameError

__all__ = ["PRETRAINED", "PREFIX", "pretrained_path", "resolve_model_path"]

PREFIX = "pretrained:"
PRETRAINED: dict[str, str] = {
    "resnet20-fashion-mnist": "resnet20_fashion_mnist.pt",
    "resnet56-fashion-mnist": "resnet56_fashion_mnist.pt",
    "resnet56-fashion-mnist-2ep": "resnet56_fashion_mnist_2ep.pt",
    "vgg16-fashion-mnist": "vgg16_fashion_mnist.pt",
}


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
