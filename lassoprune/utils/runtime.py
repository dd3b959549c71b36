"""Seeding, device choice, memory and logging shared by the engine and the CLI."""

from __future__ import annotations

import logging
import random
from pathlib import Path

import numpy as np
import torch


def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Seed Python, NumPy and torch; on CPU also ask torch for deterministic kernels.

    With the same seed, thread count and inputs, CPU training is then bit-for-bit
    repeatable, which is what makes a resumed run equal an uninterrupted one.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of one epoch: a pure function of (seed, epoch), so resuming needs no RNG state."""
    return (seed * 1_000_003 + epoch * 7_919 + 17) % 2**63


def default_device() -> torch.device:
    """CUDA when available, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def get_logger() -> logging.Logger:
    """The package logger (``lassoprune``); the CLI routes it to stderr."""
    return logging.getLogger("lassoprune")


def available_memory(meminfo: Path = Path("/proc/meminfo")) -> int | None:
    """Bytes this process can still allocate without being killed: ``MemAvailable + SwapFree`` of the kernel's
    ``meminfo``; None where that file is missing or unreadable (the caller then skips its memory checks)."""
    try:
        fields = dict(line.split(":", 1) for line in meminfo.read_text().splitlines() if ":" in line)
        if "MemAvailable" not in fields:
            return None
        return sum(int(fields.get(key, "0 kB").split()[0]) * 1024 for key in ("MemAvailable", "SwapFree"))
    except (OSError, ValueError):
        return None
