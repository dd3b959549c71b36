"""Models of torchvision and timm by name: ``torchvision:resnet50``, ``timm:efficientnet_b0``.

Wherever lassoprune takes a model name (``lp.create_model``, the CLI's
``--model``, ``model:`` of a run config) a name ``PREFIX:ARCH`` builds
``ARCH`` of that library with random weights and the given head::

    model = lp.create_model("torchvision:resnet50", num_classes=10)
    model.lp_spec.to_dict()  # {"name": "torchvision:resnet50", "kwargs": {"num_classes": 10, ...}}

The record is stored in the model file like a zoo model's, so ``lp.load``
rebuilds the architecture (torchvision / timm must be installed where it is
loaded). Both libraries come with the optional extra: ``pip install lassoprune[vision]``.
Extra keyword arguments go to the library's constructor (JSON-safe values only,
e.g. ``drop_rate=0.1`` for timm).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from types import ModuleType
from typing import Any

from torch import nn

from lassoprune.errors import LassopruneError, ModelConfigError, UnknownNameError
from lassoprune.models._registry import ModelEntry

__all__ = ["EXTERNAL_PREFIXES", "external_entry", "vision_library"]

EXTERNAL_PREFIXES = ("torchvision", "timm")
_IMAGE_SIZE = 224


def vision_library(prefix: str) -> ModuleType:
    """Import ``torchvision`` or ``timm``; a clear error naming the extra when it is missing.

    Raises:
        LassopruneError: the library is not installed.
    """
    try:
        return importlib.import_module(prefix)
    except ImportError as exc:
        raise LassopruneError(
            f"{prefix} models need {prefix}, which is not installed ({exc}): pip install lassoprune[vision]"
        ) from exc


def external_entry(name: str) -> ModelEntry:
    """The :class:`ModelEntry` of ``torchvision:ARCH`` or ``timm:ARCH`` (built when called).

    Raises:
        UnknownNameError: an unknown prefix or architecture.
        LassopruneError: the library is not installed.
    """
    prefix, _, arch = name.partition(":")
    if prefix not in EXTERNAL_PREFIXES or not arch:
        raise UnknownNameError("model source", prefix, EXTERNAL_PREFIXES)
    library = vision_library(prefix)
    build = _torchvision_builder(library, arch) if prefix == "torchvision" else _timm_builder(library, arch)
    return ModelEntry(name=name, family=prefix, default_image_size=_IMAGE_SIZE, fn=build)


def _torchvision_builder(library: ModuleType, arch: str) -> Callable[..., nn.Module]:
    classifiers = library.models.list_models(module=library.models)
    if arch not in classifiers:
        raise UnknownNameError("torchvision classification model", arch, classifiers)

    def build(num_classes: int = 1000, in_channels: int = 3, **kwargs: Any) -> nn.Module:
        if in_channels != 3:
            raise ModelConfigError(f"torchvision:{arch} takes RGB images: in_channels must be 3, got {in_channels}")
        return library.models.get_model(arch, num_classes=num_classes, **kwargs)

    return build


def _timm_builder(library: ModuleType, arch: str) -> Callable[..., nn.Module]:
    if not library.is_model(arch):
        raise LassopruneError(f"unknown timm model {arch!r}; timm.list_models() lists the valid names")

    def build(num_classes: int = 1000, in_channels: int = 3, **kwargs: Any) -> nn.Module:
        return library.create_model(arch, pretrained=False, num_classes=num_classes, in_chans=in_channels, **kwargs)

    return build
