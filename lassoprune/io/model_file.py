"""The lassoprune model file: safetensors weights + the architecture as JSON.

Layout: one ``.safetensors`` file (any extension is accepted) whose tensors are
the model's ``state_dict`` and whose string metadata holds, under the key
``"lassoprune"``, a JSON document::

    {"format_version": 1,
     "spec": {"name": "resnet56", "kwargs": {"num_classes": 10, ...}},   # or null
     "widths": {"conv1": {"type": "conv", "in": 3, "out": 9, "groups": 1},
                "bn1": {"type": "batchnorm", "num_features": 9},
                "fc": {"type": "linear", "in": 38, "out": 10}, ...},
     "extra": {...}}            # free-form: image size, dataset, metrics ...

``widths`` records the current width of every convolution, batch / instance
norm, group norm, layer norm and linear layer. Loading rebuilds the *unpruned*
architecture from ``spec`` with the model registry, narrows every listed layer
whose widths differ (a structurally pruned model: fewer channels, fewer
features, narrower depthwise convs), then loads the weights with
``strict=True``. Files written before ``widths`` existed simply have none and
load as before. Nothing is unpickled, so a model file from an untrusted source
cannot run code.

Models that are not in the zoo (no ``model.lp_spec``) can be stored too::

    lassoprune.save(my_net, "net.safetensors", spec=None)
    net = lassoprune.load("net.safetensors", constructor=lambda: MyNet())

``constructor`` must build the same architecture at its original widths (any
weights); pruned widths are restored from the file as for zoo models.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Union

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file
from torch import nn

from lassoprune.errors import CheckpointError
from lassoprune.io.atomic import atomic_path
from lassoprune.pretrained import resolve_model_path

if TYPE_CHECKING:
    from lassoprune.models import ModelSpec

FORMAT_VERSION = 1
METADATA_KEY = "lassoprune"
#: Width record types and the module classes they describe.
WIDTH_TYPES: dict[str, type[nn.Module]] = {
    "conv": nn.modules.conv._ConvNd,
    "batchnorm": nn.modules.batchnorm._NormBase,
    "groupnorm": nn.GroupNorm,
    "layernorm": nn.LayerNorm,
    "linear": nn.Linear,
}
#: The record keys of each type (all positive ints, except layernorm's list of ints).
WIDTH_KEYS: dict[str, tuple[str, ...]] = {
    "conv": ("in", "out", "groups"),
    "batchnorm": ("num_features",),
    "groupnorm": ("num_groups", "num_channels"),
    "layernorm": ("normalized_shape",),
    "linear": ("in", "out"),
}
#: What :func:`save` accepts as ``spec``: ``"auto"`` (``model.lp_spec``), a spec or its dict, or ``None``.
SpecArg = Union["ModelSpec", Mapping[str, Any], None, Literal["auto"]]
Constructor = Callable[[], nn.Module]


@dataclass(frozen=True)
class ModelFile:
    """The decoded content of a model file.

    Attributes:
        path: the file.
        spec: the zoo architecture record (``{"name", "kwargs"}``), or ``None`` for a
            model saved with ``spec=None`` (load it with ``constructor=``).
        extra: free-form information stored beside the architecture.
        widths: per-layer widths (see :func:`layer_widths`); empty in older files.
    """

    path: Path
    spec: dict[str, Any] | None
    extra: dict[str, Any] = field(default_factory=dict)
    widths: dict[str, dict[str, Any]] = field(default_factory=dict)


def save(
    model: nn.Module,
    path: str | os.PathLike[str],
    extra: dict[str, Any] | None = None,
    *,
    spec: SpecArg = "auto",
) -> None:
    """Atomically write ``model`` (weights + architecture + layer widths) to ``path``.

    Args:
        model: the model; pruned models (fewer channels than their architecture
            record says) are stored with their current widths.
        path: destination file.
        extra: JSON-serialisable information stored beside the architecture.
        spec: ``"auto"`` (default) stores ``model.lp_spec`` (set by
            :func:`lassoprune.create_model`); a :class:`~lassoprune.models.ModelSpec`
            or its dict stores that one; ``None`` stores no architecture record,
            for models outside the zoo: load such a file with
            ``load(path, constructor=lambda: MyNet())``.
    """
    document = {
        "format_version": FORMAT_VERSION,
        "spec": _spec_record(model, spec),
        "widths": layer_widths(model),
        "extra": extra or {},
    }
    try:
        metadata = json.dumps(document)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"extra must be JSON-serialisable (str, numbers, lists, dicts): {exc}") from exc
    tensors = {name: t.detach().to("cpu").contiguous().clone() for name, t in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={METADATA_KEY: metadata})


def _spec_record(model: nn.Module, spec: SpecArg) -> dict[str, Any] | None:
    """The JSON form of the architecture record that :func:`save` writes."""
    from lassoprune.models import ModelSpec

    if spec is None:
        return None
    if isinstance(spec, str) and spec == "auto":
        spec = getattr(model, "lp_spec", None)
        if spec is None:
            raise CheckpointError(
                "this model has no architecture record (model.lp_spec); build it with "
                "lassoprune.create_model(...), or save it with spec=None and load it with "
                "lassoprune.load(path, constructor=lambda: YourModel())"
            )
    if not isinstance(spec, ModelSpec):
        spec = ModelSpec.from_dict(spec)
    return spec.to_dict()


def layer_widths(model: nn.Module) -> dict[str, dict[str, Any]]:
    """Current widths of every conv, norm and linear layer, keyed by module name (JSON-safe).

    Example: ``{"conv1": {"type": "conv", "in": 3, "out": 16, "groups": 1},
    "bn1": {"type": "batchnorm", "num_features": 16}, "fc": {"type": "linear", "in": 64, "out": 10}}``.
    """
    widths = {}
    for name, module in model.named_modules():
        record = _module_widths(module)
        if record is not None:
            widths[name] = record
    return widths


def _module_widths(module: nn.Module) -> dict[str, Any] | None:
    """The width record of one module, or ``None`` for modules without one."""
    kind = _width_type(module)
    if kind == "conv":
        return {"type": kind, "in": module.in_channels, "out": module.out_channels, "groups": module.groups}
    if kind == "batchnorm":
        return {"type": kind, "num_features": module.num_features}
    if kind == "groupnorm":
        return {"type": kind, "num_groups": module.num_groups, "num_channels": module.num_channels}
    if kind == "layernorm":
        return {"type": kind, "normalized_shape": list(module.normalized_shape)}
    if kind == "linear":
        return {"type": kind, "in": module.in_features, "out": module.out_features}
    return None


def _width_type(module: nn.Module) -> str | None:
    """The width record type of ``module`` (``"conv"``, ``"batchnorm"`` ...) or ``None``."""
    for kind, cls in WIDTH_TYPES.items():
        if isinstance(module, cls):
            return kind
    return None


def read_model_file(path: str | os.PathLike[str]) -> ModelFile:
    """Read and validate the metadata of a model file (weights are not loaded).

    ``path`` may name a shipped model as ``"pretrained:NAME"`` (see :func:`load`).
    """
    file = _existing(path)
    try:
        with safe_open(str(file), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise _unreadable(file, exc) from exc
    if METADATA_KEY not in metadata:
        raise CheckpointError(f"{file} is a safetensors file but not a lassoprune model file (no architecture record)")
    try:
        document = json.loads(metadata[METADATA_KEY])
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{file}: the architecture record is not valid JSON ({exc})") from exc
    if not isinstance(document, dict):
        raise CheckpointError(f"{file}: the architecture record is not a JSON object; re-save the model")
    version = document.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{file} has model-file format {version}; this lassoprune reads format {FORMAT_VERSION}. "
            "Upgrade lassoprune or re-export the model."
        )
    return ModelFile(
        path=file,
        spec=_checked_spec(file, document),
        extra=_checked_dict(file, document, "extra"),
        widths=_checked_widths(file, _checked_dict(file, document, "widths")),
    )


def _checked_spec(file: Path, document: dict[str, Any]) -> dict[str, Any] | None:
    """The document's ``spec``: a dict or ``None`` (models saved with ``spec=None``)."""
    if "spec" not in document:
        raise CheckpointError(f"{file}: the architecture record has no 'spec' entry; re-save the model")
    spec = document["spec"]
    if spec is not None and not isinstance(spec, dict):
        raise CheckpointError(f"{file}: the architecture record's 'spec' is not a JSON object; re-save the model")
    return spec


def _checked_dict(file: Path, document: dict[str, Any], key: str) -> dict[str, Any]:
    """``document[key]`` if it is a JSON object, ``{}`` if absent."""
    value = document.get(key, {})
    if not isinstance(value, dict):
        raise CheckpointError(f"{file}: the entry {key!r} of the architecture record is not a JSON object")
    return value


def _checked_widths(file: Path, widths: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Validate every width record: a known type and positive integer widths."""
    for name, record in widths.items():
        problem = _width_record_problem(record)
        if problem:
            raise CheckpointError(
                f"{file}: the widths record of layer {name!r} is malformed ({problem}); "
                "the file was edited or written by another tool. Re-save the model with lassoprune.save."
            )
    return widths


def _width_record_problem(record: Any) -> str | None:
    """What is wrong with one width record, or ``None`` if it is well formed."""
    if not isinstance(record, dict) or record.get("type") not in WIDTH_KEYS:
        return f"expected an object whose 'type' is one of {sorted(WIDTH_KEYS)}, got {record!r}"
    for key in WIDTH_KEYS[record["type"]]:
        value = record.get(key)
        values = value if key == "normalized_shape" and isinstance(value, list) else [value]
        if not values or not all(_is_positive_int(v) for v in values):
            return f"{key!r} must be a positive integer, got {value!r}"
    return None


def _is_positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def load(
    path: str | os.PathLike[str],
    map_location: str | torch.device = "cpu",
    *,
    constructor: Constructor | None = None,
) -> nn.Module:
    """Rebuild the model stored in ``path`` (pruned widths included) and load its weights (eval mode).

    Args:
        path: a file written by :func:`save`, or ``"pretrained:NAME"`` for a model
            shipped with lassoprune (e.g. ``lassoprune.load("pretrained:resnet56-fashion-mnist")``;
            the names are in :data:`lassoprune.pretrained.PRETRAINED`). An unknown
            name raises :class:`~lassoprune.errors.UnknownNameError` listing the shipped ones.
        map_location: device the tensors are read to.
        constructor: builds the architecture at its original widths, for models
            that are not in the zoo (saved with ``spec=None``); when given it is
            used instead of the file's zoo record.

    The file's ``extra`` dict is attached to the model as ``model.lp_extra``; the
    zoo record, if any, as ``model.lp_spec``.
    """
    info = read_model_file(path)
    try:
        tensors = load_file(str(info.path), device=str(map_location))
    except (SafetensorError, OSError, ValueError) as exc:
        raise _unreadable(info.path, exc) from exc
    model = _build(info, constructor)
    apply_widths(model, info.widths, source=str(info.path))
    _fit_loose_tensors(model, tensors)
    _check_shapes(model, tensors, info.path)
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{info.path}: weights do not fit the stored architecture: {exc}") from exc
    model.lp_extra = info.extra
    return model.eval()


def _build(info: ModelFile, constructor: Constructor | None) -> nn.Module:
    """The unpruned model: from ``constructor`` if given, else from the zoo record."""
    from lassoprune.models import ModelSpec, build_from_spec

    if constructor is None:
        if info.spec is None:
            raise CheckpointError(
                f"{info.path} holds a model that is not in the lassoprune zoo (saved with spec=None); "
                "load it from Python with lassoprune.load(path, constructor=lambda: YourModel())"
            )
        return build_from_spec(info.spec)
    model = constructor()
    if not isinstance(model, nn.Module):
        raise CheckpointError(f"constructor must return a torch.nn.Module, got {type(model).__name__}")
    if info.spec is not None and getattr(model, "lp_spec", None) is None:
        model.lp_spec = ModelSpec.from_dict(info.spec)
    return model


def apply_widths(model: nn.Module, widths: Mapping[str, Mapping[str, Any]], source: str = "the widths record") -> None:
    """Narrow (or widen) the layers of ``model`` in place to the recorded ``widths``.

    Every listed module whose widths differ gets its size attributes set and its
    weight, bias and running statistics replaced by uninitialised tensors of the
    new shape (to be filled by ``load_state_dict``). Raises
    :class:`CheckpointError` if a listed module is missing or of another type.
    """
    modules = dict(model.named_modules())
    for name, record in widths.items():
        module = modules.get(name)
        if module is None or _width_type(module) != record["type"]:
            found = "no such layer" if module is None else f"a {type(module).__name__}"
            raise CheckpointError(
                f"{source}: the widths record names a {record['type']} layer {name!r}, but the rebuilt model has "
                f"{found}; the file does not belong to this architecture (wrong constructor or edited file)"
            )
        if _module_widths(module) != dict(record):
            _resize(module, record, name, source)


def _resize(module: nn.Module, record: Mapping[str, Any], name: str, source: str) -> None:
    """Set the size attributes of one module and give its tensors the matching shapes."""
    kind = record["type"]
    if kind == "conv":
        if record["in"] % record["groups"] or record["out"] % record["groups"]:
            raise CheckpointError(
                f"{source}: layer {name!r} has in={record['in']}, out={record['out']}, which groups="
                f"{record['groups']} does not divide; the file was edited or is damaged. Re-save the model."
            )
        module.in_channels, module.out_channels, module.groups = record["in"], record["out"], record["groups"]
    elif kind == "batchnorm":
        module.num_features = record["num_features"]
    elif kind == "groupnorm":
        module.num_groups, module.num_channels = record["num_groups"], record["num_channels"]
    elif kind == "layernorm":
        module.normalized_shape = tuple(record["normalized_shape"])
    else:
        module.in_features, module.out_features = record["in"], record["out"]
    for tensor_name, shape in _tensor_shapes(module).items():
        _replace_tensor(module, tensor_name, shape)


def _tensor_shapes(module: nn.Module) -> dict[str, tuple[int, ...]]:
    """Shapes that the weight, bias and running statistics of ``module`` must have, from its attributes."""
    kind = _width_type(module)
    if kind == "conv":
        kernel = tuple(module.kernel_size)
        if module.transposed:
            weight = (module.in_channels, module.out_channels // module.groups, *kernel)
        else:
            weight = (module.out_channels, module.in_channels // module.groups, *kernel)
        return {"weight": weight, "bias": (module.out_channels,)}
    if kind == "linear":
        return {"weight": (module.out_features, module.in_features), "bias": (module.out_features,)}
    if kind == "layernorm":
        return {"weight": module.normalized_shape, "bias": module.normalized_shape}
    channels = (module.num_channels,) if kind == "groupnorm" else (module.num_features,)
    return {name: channels for name in ("weight", "bias", "running_mean", "running_var")}


def _replace_tensor(module: nn.Module, name: str, shape: tuple[int, ...]) -> None:
    """Replace the parameter or buffer ``name`` of ``module`` (if it exists) by one of ``shape``."""
    old = getattr(module, name, None)
    if old is None or tuple(old.shape) == tuple(shape):
        return
    new = torch.empty(shape, dtype=old.dtype, device=old.device)
    if name == "running_var":
        new.fill_(1.0)
    elif name == "running_mean":
        new.zero_()
    if isinstance(old, nn.Parameter):
        setattr(module, name, nn.Parameter(new, requires_grad=old.requires_grad))
    else:
        module.register_buffer(name, new, persistent=name not in module._non_persistent_buffers_set)


def _fit_loose_tensors(model: nn.Module, tensors: Mapping[str, torch.Tensor]) -> None:
    """Give the pruned parameters of modules without a width record the stored shapes.

    A per-channel parameter owned by a block rather than by a layer (the layer
    scale ``gamma`` of ConvNeXt, shaped ``(C,)``) is cut with its channel group
    but has no width record; the stored tensor is its record. Only tensors of
    the same rank are resized, so a file of another architecture still fails
    :func:`_check_shapes`.
    """
    modules = dict(model.named_modules())
    for key, stored in tensors.items():
        owner, _, name = key.rpartition(".")
        module = modules.get(owner)
        if module is None or _width_type(module) is not None or name not in module._parameters:
            continue
        current = module._parameters[name]
        if current is not None and current.dim() == stored.dim() and current.shape != stored.shape:
            _replace_tensor(module, name, tuple(stored.shape))


def _check_shapes(model: nn.Module, tensors: Mapping[str, torch.Tensor], file: Path) -> None:
    """Raise a clear :class:`CheckpointError` if stored tensors do not have the rebuilt model's shapes."""
    expected = model.state_dict()
    wrong = [
        f"{key}: file {tuple(t.shape)}, model {tuple(expected[key].shape)}"
        for key, t in tensors.items()
        if key in expected and tuple(t.shape) != tuple(expected[key].shape)
    ]
    if wrong:
        listed = "; ".join(wrong[:5]) + (f"; and {len(wrong) - 5} more" if len(wrong) > 5 else "")
        raise CheckpointError(
            f"{file}: the stored weights do not match the stored layer widths ({listed}). "
            "The file was edited or written by another tool; re-save the model with lassoprune.save."
        )


def _existing(path: str | os.PathLike[str]) -> Path:
    """The model file ``path`` (a ``"pretrained:NAME"`` string resolved to the shipped file), checked to exist."""
    file = resolve_model_path(path) if isinstance(path, str) else Path(path)
    if not file.is_file():
        raise CheckpointError(f"model file {file} does not exist")
    return file


def _unreadable(file: Path, exc: BaseException) -> CheckpointError:
    return CheckpointError(
        f"{file} cannot be read as a lassoprune model file ({type(exc).__name__}: {exc}); "
        "it is truncated or corrupted. Re-create it, or use the run's last good checkpoint."
    )
