"""Model registry (timm style): named entry functions, specs to rebuild a model.

Every architecture family registers small entry functions with
:func:`register_model`; :func:`create_model` builds a model by name and attaches
a :class:`ModelSpec` (``model.lp_spec``) that records the name and the keyword
arguments, so that a fresh process can rebuild the same architecture with
:func:`build_from_spec` (for example before loading a ``state_dict``).

Example::

    model = create_model("resnet56", num_classes=10)
    spec = model.lp_spec.to_dict()  # {"name": "resnet56", "kwargs": {...}}, JSON-safe
    twin = build_from_spec(spec)
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from torch import nn

from lassoprune.errors import ModelConfigError, UnknownNameError
from lassoprune.utils.registry import Registry

__all__ = [
    "ModelConfigError",
    "ModelEntry",
    "ModelSpec",
    "build_from_spec",
    "check_choice",
    "check_head_options",
    "check_probability",
    "create_model",
    "list_models",
    "model_entry",
    "register_model",
]

EntryFn = Callable[..., nn.Module]
F = TypeVar("F", bound=EntryFn)


@dataclass(frozen=True)
class ModelEntry:
    """One registered model.

    Attributes:
        name: Registry name, e.g. ``"resnet56"``.
        family: Architecture family, the module that defines it, e.g. ``"resnet_cifar"``.
        default_image_size: Side of the square input the published layout expects
            (32 for CIFAR-style models, 224 for ImageNet-style models).
        fn: Entry function ``fn(num_classes=..., in_channels=..., **kwargs) -> nn.Module``.
    """

    name: str
    family: str
    default_image_size: int
    fn: EntryFn


@dataclass(frozen=True)
class ModelSpec:
    """How a model was built: registry name plus the keyword arguments of the entry.

    ``kwargs`` always holds ``num_classes`` and ``in_channels`` and must be
    JSON-safe (checked at construction), so that :meth:`to_dict` can be stored in
    a checkpoint or a JSON file. The dict is copied on construction and by
    :meth:`to_dict`; do not mutate ``spec.kwargs`` in place.
    """

    name: str
    kwargs: dict[str, Any]

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ModelConfigError(f"model spec name must be a non-empty string, got {self.name!r}")
        if not isinstance(self.kwargs, Mapping) or not all(isinstance(k, str) for k in self.kwargs):
            raise ModelConfigError(
                f"model spec kwargs must be a mapping with string keys, got {self.kwargs!r}"
            )
        _check_json_safe(self.kwargs)
        object.__setattr__(self, "kwargs", copy.deepcopy(dict(self.kwargs)))

    def __hash__(self) -> int:
        return hash((self.name, json.dumps(self.kwargs, sort_keys=True)))

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form: ``{"name": str, "kwargs": dict}`` (a deep copy)."""
        return {"name": self.name, "kwargs": copy.deepcopy(self.kwargs)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelSpec:
        """Inverse of :meth:`to_dict`; raises :class:`ModelConfigError` if malformed."""
        if not isinstance(data, Mapping) or set(data) != {"name", "kwargs"}:
            keys = sorted(data) if isinstance(data, Mapping) else type(data).__name__
            raise ModelConfigError(
                f"a model spec must be a mapping with exactly the keys 'name' and 'kwargs'; got {keys}"
            )
        return cls(name=data["name"], kwargs=data["kwargs"])


def _check_json_safe(kwargs: Mapping[str, Any]) -> None:
    """Raise :class:`ModelConfigError` unless ``kwargs`` survives a strict JSON round trip."""
    try:
        json.dumps(kwargs, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ModelConfigError(
            f"model options must be JSON-safe (str, int, float, bool, None, lists, dicts): {exc}"
        ) from exc


_REGISTRY: Registry[ModelEntry] = Registry("model")
#: Fragments of the TypeError raised when a call gets keyword arguments it does not take.
_BAD_KWARG_MESSAGES: tuple[str, ...] = ("unexpected keyword argument", "multiple values for argument")


def register_model(name: str, *, family: str, default_image_size: int) -> Callable[[F], F]:
    """Decorator that registers an entry function under ``name``.

    Args:
        name: Unique registry name.
        family: Architecture family (used by :func:`list_models` to filter).
        default_image_size: Side of the square input of the published layout.

    Returns:
        The decorator; it returns the function unchanged.
    """
    if not isinstance(name, str) or not name:
        raise ModelConfigError(f"model name must be a non-empty string, got {name!r}")
    if not isinstance(family, str) or not family:
        raise ModelConfigError(f"model family must be a non-empty string, got {family!r}")
    if not _is_int(default_image_size) or default_image_size < 1:
        raise ModelConfigError(f"default_image_size must be a positive int, got {default_image_size!r}")

    def decorator(fn: F) -> F:
        if name in _REGISTRY:
            raise ModelConfigError(f"model {name!r} is already registered")
        _REGISTRY.add(name, ModelEntry(name, family, int(default_image_size), fn))
        return fn

    return decorator


def list_models(family: str | None = None) -> list[str]:
    """Sorted names of the registered models, optionally of one ``family`` only."""
    if family is None:
        return _REGISTRY.names()
    families = sorted({entry.family for _, entry in _REGISTRY.items()})
    if family not in families:
        raise UnknownNameError("family name", family, families)
    return [n for n, entry in _REGISTRY.items() if entry.family == family]


def model_entry(name: str) -> ModelEntry:
    """The :class:`ModelEntry` of ``name``; raises :class:`UnknownNameError` if not registered.

    ``torchvision:ARCH`` and ``timm:ARCH`` name models of those libraries
    (:mod:`lassoprune.models.external`, the ``vision`` extra).
    """
    key = name if isinstance(name, str) else str(name)
    if ":" in key:
        from lassoprune.models.external import external_entry

        return external_entry(key)
    return _REGISTRY.get(key)


def create_model(name: str, num_classes: int = 10, in_channels: int = 3, **kwargs: Any) -> nn.Module:
    """Build the registered model ``name`` and attach ``model.lp_spec``.

    Args:
        name: Registry name (see :func:`list_models`).
        num_classes: Number of output logits, >= 2.
        in_channels: Channels of the input images (3 for RGB, 1 for grey), >= 1.
        **kwargs: Family-specific options (e.g. ``shortcut="pad"`` for CIFAR ResNets);
            they must be JSON-safe.

    Returns:
        The model, in training mode, with ``lp_spec`` set to a :class:`ModelSpec`.
    """
    entry = model_entry(name)
    check_head_options(num_classes, in_channels)
    spec = ModelSpec(name=name, kwargs={"num_classes": num_classes, "in_channels": in_channels, **kwargs})
    try:
        model = entry.fn(num_classes=num_classes, in_channels=in_channels, **kwargs)
    except TypeError as exc:
        if not any(text in str(exc) for text in _BAD_KWARG_MESSAGES):
            raise
        raise ModelConfigError(f"model {name!r} does not accept the options {sorted(kwargs)}: {exc}") from exc
    model.lp_spec = spec
    return model


def build_from_spec(spec: ModelSpec | Mapping[str, Any]) -> nn.Module:
    """Rebuild a model (fresh weights) from a :class:`ModelSpec` or its :meth:`~ModelSpec.to_dict`."""
    if not isinstance(spec, ModelSpec):
        spec = ModelSpec.from_dict(spec)
    return create_model(spec.name, **spec.kwargs)


def _is_int(value: object) -> bool:
    """True for ints (not bools)."""
    return isinstance(value, int) and not isinstance(value, bool)


def check_head_options(num_classes: int, in_channels: int) -> None:
    """Raise :class:`ModelConfigError` unless ``num_classes >= 2`` and ``in_channels >= 1`` (ints)."""
    if not _is_int(num_classes) or num_classes < 2:
        raise ModelConfigError(f"num_classes must be an int >= 2, got {num_classes!r}")
    if not _is_int(in_channels) or in_channels < 1:
        raise ModelConfigError(f"in_channels must be an int >= 1, got {in_channels!r}")


def check_choice(kind: str, value: object, valid: Iterable[str]) -> None:
    """Raise :class:`UnknownNameError` listing ``valid`` unless ``value`` is one of them."""
    choices = list(valid)
    if value not in choices:
        raise UnknownNameError(kind, str(value), choices)


def check_probability(name: str, value: float) -> None:
    """Raise :class:`ModelConfigError` unless ``0 <= value < 1`` (e.g. a dropout rate)."""
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not is_number or math.isnan(value) or not 0.0 <= value < 1.0:
        raise ModelConfigError(f"{name} must be a number in [0, 1), got {value!r}")
