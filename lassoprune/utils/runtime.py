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


def available_memory(meminfo: Path = Path("/proc/meminfo"), cgroup: Path | None = None) -> int | None:
    """Bytes this process can still allocate, about: ``MemAvailable + SwapFree`` of the kernel's ``meminfo``, or
    less where the process's cgroup (v2: ``memory.max - memory.current``, as in containers and batch jobs) allows
    less (``cgroup``: its directory; None: this process's own). None where ``meminfo`` is missing or unreadable
    (the caller then skips its memory checks)."""
    try:
        fields = dict(line.split(":", 1) for line in meminfo.read_text().splitlines() if ":" in line)
        if "MemAvailable" not in fields:
            return None
        free = sum(int(fields.get(key, "0 kB").split()[0]) * 1024 for key in ("MemAvailable", "SwapFree"))
    except (OSError, ValueError):
        return None
    limit = _cgroup_room(cgroup if cgroup is not None else _own_cgroup())
    return free if limit is None else min(free, limit)


def _own_cgroup(root: Path = Path("/sys/fs/cgroup")) -> Path:
    """This process's cgroup v2 directory (the ``0::`` line of ``/proc/self/cgroup``), else ``root``."""
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            if line.startswith("0::"):
                own = root / line[3:].strip().lstrip("/")
                return own if own.is_dir() else root
    except OSError:
        pass
    return root


def _cgroup_room(cgroup: Path) -> int | None:
    """``memory.max - memory.current`` of a cgroup v2 directory; None without a limit or without the files."""
    try:
        limit = (cgroup / "memory.max").read_text().strip()
        if limit == "max":
            return None
        return max(int(limit) - int((cgroup / "memory.current").read_text().strip()), 0)
    except (OSError, ValueError):
        return None
