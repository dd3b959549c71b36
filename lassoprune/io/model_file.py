"""The lassoprune model file: safetensors weights + the architecture as JSON.

Layout: one ``.safetensors`` file (any extension is accepted) whose tensors are
the model's ``state_dict`` and whose string metadata holds, under the key
``"lassoprune"``, a JSON document::

    {"format_version": 1,
     "spec": {"name": "resnet56", "kwargs": {"num_classes": 10, ...}},
     "extra": {...}}            # free-form: image size, dataset, metrics ...

Loading rebuilds the model from ``spec`` with the model registry and loads the
weights; nothing is unpickled, so a model file from an untrusted source cannot
run code.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file
from torch import nn

from lassoprune.errors import CheckpointError
from lassoprune.io.atomic import atomic_path

FORMAT_VERSION = 1
METADATA_KEY = "lassoprune"


@dataclass(frozen=True)
class ModelFile:
    """The decoded content of a model file."""

    path: Path
    spec: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)


def save(model: nn.Module, path: str | os.PathLike[str], extra: dict[str, Any] | None = None) -> None:
    """Atomically write ``model`` (weights + architecture) to ``path``.

    Args:
        model: a model built by :func:`lassoprune.create_model` (it carries
            ``model.lp_spec``).
        path: destination file.
        extra: JSON-serialisable information stored beside the architecture.
    """
    spec = getattr(model, "lp_spec", None)
    if spec is None:
        raise CheckpointError(
            "this model has no architecture record (model.lp_spec); build it with "
            "lassoprune.create_model(...) so the file can be loaded without code"
        )
    document = {"format_version": FORMAT_VERSION, "spec": spec.to_dict(), "extra": extra or {}}
    tensors = {name: t.detach().to("cpu").contiguous().clone() for name, t in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={METADATA_KEY: json.dumps(document)})


def read_model_file(path: str | os.PathLike[str]) -> ModelFile:
    """Read and validate the metadata of a model file (weights are not loaded)."""
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
    version = document.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{file} has model-file format {version}; this lassoprune reads format {FORMAT_VERSION}. "
            "Upgrade lassoprune or re-export the model."
        )
    return ModelFile(path=file, spec=document["spec"], extra=document.get("extra", {}))


def load(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the model stored in ``path`` and load its weights (eval mode).

    The file's ``extra`` dict is attached to the model as ``model.lp_extra``.
    """
    from lassoprune.models import build_from_spec

    info = read_model_file(path)
    try:
        tensors = load_file(str(info.path), device=str(map_location))
    except (SafetensorError, OSError, ValueError) as exc:
        raise _unreadable(info.path, exc) from exc
    model = build_from_spec(info.spec)
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{info.path}: weights do not fit the stored architecture: {exc}") from exc
    model.lp_extra = info.extra
    return model.eval()


def _existing(path: str | os.PathLike[str]) -> Path:
    file = Path(path)
    if not file.is_file():
        raise CheckpointError(f"model file {file} does not exist")
    return file


def _unreadable(file: Path, exc: BaseException) -> CheckpointError:
    return CheckpointError(
        f"{file} cannot be read as a lassoprune model file ({type(exc).__name__}: {exc}); "
        "it is truncated or corrupted. Re-create it, or use the run's last good checkpoint."
    )
