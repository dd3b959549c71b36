"""Training checkpoints: the full state needed to resume a run.

A checkpoint is a dict of tensors and plain Python values (numbers, strings,
lists, dicts), saved with :func:`torch.save` through an atomic rename and
loaded with ``torch.load(weights_only=True)``: loading never unpickles code.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from lassoprune.errors import CheckpointError
from lassoprune.io.atomic import atomic_path


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Atomically write ``state`` to ``path``; the previous file survives any failure."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: str | os.PathLike[str], required: tuple[str, ...] = ()) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint`.

    Args:
        path: the checkpoint file.
        required: keys that must be present.

    Raises:
        CheckpointError: the file is missing, truncated, corrupted, holds
            something other than a dict, or lacks a required key.
    """
    file = Path(path)
    if not file.is_file():
        raise CheckpointError(f"checkpoint {file} does not exist")
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises RuntimeError, pickle errors, EOFError...
        raise CheckpointError(
            f"checkpoint {file} cannot be read ({type(exc).__name__}: {_first_line(exc)}); "
            "it is truncated, corrupted or not a lassoprune checkpoint. "
            "Delete it to start over, or point to an older copy."
        ) from exc
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {file} holds a {type(state).__name__}, expected a dict")
    missing = [key for key in required if key not in state]
    if missing:
        raise CheckpointError(f"checkpoint {file} lacks {', '.join(missing)}; was it written by lassoprune?")
    return state


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else "no details"
