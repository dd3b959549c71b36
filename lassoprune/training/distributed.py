"""Data-parallel training over several processes (``torchrun`` + DistributedDataParallel).

Usage
-----
Launch any training command with ``torchrun``; every process runs the same
command line and the processes find each other through the environment
that ``torchrun`` sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``, ``MASTER_PORT``)::

    torchrun --nproc_per_node 2 -m lassoprune finetune --checkpoint pruned.pt \\
        --data fashion-mnist --epochs 1 --out runs/ft
    torchrun --nproc_per_node 4 -m lassoprune train --model resnet56 --data cifar10 \\
        --epochs 160 --out runs/r56            # one node, 4 GPUs (nccl)

What happens:

* backend: ``nccl`` when the training device is CUDA (process ``r`` uses
  ``cuda:LOCAL_RANK``), ``gloo`` on CPU;
* each process trains on its own share of every epoch's shuffled order
  (:class:`lassoprune.data.BatchLoader` with ``distributed=(rank, world_size)``),
  so ``--batch-size`` is the batch of *one* process and the global batch is
  ``batch_size * world_size`` (the learning rate is not rescaled);
* DistributedDataParallel averages the gradients, so all replicas keep
  identical weights; BatchNorm uses per-process batch statistics (it is
  *not* synchronised) and the running averages of rank 0 are copied to the
  other ranks after every epoch;
* rank 0 alone evaluates on the whole test set (the result is broadcast),
  writes ``last.pt``, ``metrics.jsonl``, ``metrics.json`` and ``model.pt``,
  prints and shows progress bars; the other ranks wait at a barrier;
* ``--resume`` works as in one process: every rank loads ``last.pt`` (on
  several nodes the run directory must be on a shared file system).

Without ``torchrun`` (no ``WORLD_SIZE``, or ``WORLD_SIZE=1``) nothing here
creates a process group and training runs in one process as before.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as torch_dist
from torch import nn

from lassoprune.errors import LassopruneError

DEFAULT_TIMEOUT = timedelta(minutes=30)
T = TypeVar("T")


@dataclass(frozen=True)
class TorchrunEnv:
    """The process coordinates that ``torchrun`` puts in the environment.

    Attributes:
        rank: global process index, ``0 <= rank < world_size``.
        world_size: number of processes (> 1).
        local_rank: process index on this node (selects the GPU).
        master_addr, master_port: where rank 0's rendezvous store listens.
    """

    rank: int
    world_size: int
    local_rank: int
    master_addr: str
    master_port: int


@dataclass(frozen=True)
class DistContext:
    """This process's place in a (possibly single-process) run.

    Attributes:
        rank, world_size, local_rank: as in :class:`TorchrunEnv`; 0, 1, 0 alone.
        backend: ``"gloo"`` or ``"nccl"``; None when no process group exists.
        device: the device this process trains on.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        """True when there is a process group (more than one process)."""
        return self.backend is not None

    @property
    def is_main(self) -> bool:
        """True on rank 0, the process that writes files and prints."""
        return self.rank == 0

    @property
    def shard(self) -> tuple[int, int] | None:
        """``(rank, world_size)`` for :class:`~lassoprune.data.BatchLoader`, None alone."""
        return (self.rank, self.world_size) if self.enabled else None


SINGLE = DistContext()


def torchrun_env(environ: Mapping[str, str] | None = None) -> TorchrunEnv | None:
    """Read the launch coordinates; None when ``WORLD_SIZE`` is absent or 1.

    Raises:
        LassopruneError: ``WORLD_SIZE > 1`` but a variable is missing or malformed.
    """
    env = os.environ if environ is None else environ
    world_size = _int_var(env, "WORLD_SIZE", default=1)
    if world_size <= 1:
        return None
    missing = [name for name in ("RANK", "MASTER_ADDR", "MASTER_PORT") if not env.get(name)]
    if missing:
        raise LassopruneError(
            f"WORLD_SIZE={world_size} but {', '.join(missing)} is not set; "
            "start distributed runs with torchrun (torchrun --nproc_per_node N -m lassoprune ...)"
        )
    rank = _int_var(env, "RANK")
    if not 0 <= rank < world_size:
        raise LassopruneError(f"RANK={rank} is outside [0, WORLD_SIZE={world_size})")
    local_rank = _int_var(env, "LOCAL_RANK", default=0)
    return TorchrunEnv(rank, world_size, local_rank, env["MASTER_ADDR"], _int_var(env, "MASTER_PORT"))


def _int_var(env: Mapping[str, str], name: str, default: int | None = None) -> int:
    """The integer value of environment variable ``name``."""
    value = env.get(name)
    if value is None or value == "":
        if default is None:
            raise LassopruneError(f"environment variable {name} is not set")
        return default
    try:
        return int(value)
    except ValueError:
        raise LassopruneError(f"environment variable {name} must be an integer, got {value!r}") from None


def init_distributed(device: torch.device | str, timeout: timedelta = DEFAULT_TIMEOUT) -> DistContext:
    """Join the ``torchrun`` process group; without ``torchrun``, a one-process context on ``device``.

    Args:
        device: the requested training device; under ``torchrun`` a CUDA
            device becomes ``cuda:LOCAL_RANK`` (made current) and the backend
            ``nccl``, any other device uses ``gloo``.
        timeout: how long to wait for the other processes, at start-up and
            in every collective.

    Raises:
        LassopruneError: the process group cannot be created (one line saying what to check).
    """
    device = torch.device(device)
    launch = torchrun_env()
    if launch is None:
        return DistContext(device=device)
    if device.type == "cuda":
        device = _local_cuda_device(launch.local_rank)
    backend = "nccl" if device.type == "cuda" else "gloo"
    try:
        torch_dist.init_process_group(
            backend, init_method="env://", rank=launch.rank, world_size=launch.world_size, timeout=timeout
        )
    except Exception as exc:  # store connection errors, backend errors, timeouts...
        raise LassopruneError(_init_failure(launch, backend, exc)) from exc
    return DistContext(launch.rank, launch.world_size, launch.local_rank, backend, device)


def _local_cuda_device(local_rank: int) -> torch.device:
    """``cuda:local_rank``, made the current CUDA device."""
    count = torch.cuda.device_count()
    if local_rank >= count:
        raise LassopruneError(
            f"LOCAL_RANK={local_rank} but only {count} CUDA device(s) are visible; "
            f"use --nproc_per_node {count} or fewer"
        )
    torch.cuda.set_device(local_rank)
    return torch.device("cuda", local_rank)


def _init_failure(launch: TorchrunEnv, backend: str, exc: BaseException) -> str:
    """The one-line message for a process group that could not be created."""
    reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200].rstrip(".")
    return (
        f"cannot create the {backend} process group (rank {launch.rank} of {launch.world_size}, "
        f"MASTER_ADDR={launch.master_addr}, MASTER_PORT={launch.master_port}): {reason}. "
        f"Check that all {launch.world_size} processes were started (torchrun --nproc_per_node), "
        "that MASTER_ADDR is reachable from every node and MASTER_PORT is free"
    )


def teardown(ctx: DistContext) -> None:
    """Destroy the process group created by :func:`init_distributed` (no-op alone)."""
    if ctx.enabled and torch_dist.is_initialized():
        torch_dist.destroy_process_group()


@contextlib.contextmanager
def distributed_session(device: torch.device | str, timeout: timedelta = DEFAULT_TIMEOUT) -> Iterator[DistContext]:
    """``with distributed_session(device) as ctx:`` = :func:`init_distributed` ... :func:`teardown`."""
    ctx = init_distributed(device, timeout)
    try:
        yield ctx
    finally:
        teardown(ctx)


def barrier(ctx: DistContext) -> None:
    """Wait until every rank gets here (no-op alone)."""
    if not ctx.enabled:
        return
    if ctx.backend == "nccl":
        torch_dist.barrier(device_ids=[ctx.device.index])
    else:
        torch_dist.barrier()


def all_reduce_sum(tensor: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Sum ``tensor`` (any shape, on ``ctx.device``) over all ranks, in place; returns it."""
    if ctx.enabled:
        torch_dist.all_reduce(tensor, op=torch_dist.ReduceOp.SUM)
    return tensor


def broadcast_object(obj: T | None, ctx: DistContext, src: int = 0) -> T:
    """Rank ``src``'s ``obj`` (any picklable value) on every rank; ``obj`` is ignored elsewhere."""
    if not ctx.enabled:
        return obj
    holder = [obj]
    torch_dist.broadcast_object_list(holder, src=src, device=_object_device(ctx))
    return holder[0]


def _object_device(ctx: DistContext) -> torch.device | None:
    """Where pickled objects travel: the GPU for nccl, the CPU for gloo."""
    return ctx.device if ctx.backend == "nccl" else None


def broadcast_buffers(model: nn.Module, ctx: DistContext, src: int = 0) -> None:
    """Copy rank ``src``'s buffers (BatchNorm running statistics...) to every rank, in place."""
    if not ctx.enabled:
        return
    for buffer in model.buffers():
        torch_dist.broadcast(buffer, src=src)


def wrap_model(model: nn.Module, ctx: DistContext) -> nn.Module:
    """``model`` in DistributedDataParallel when ``ctx`` is distributed, else ``model`` itself.

    The wrapper shares ``model``'s parameters, so optimisers built on
    ``model`` train it; its construction copies rank 0's weights and buffers
    to every rank.
    """
    if not ctx.enabled:
        return model
    device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel wrapper (``model`` itself otherwise)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def state_fingerprint(model: nn.Module) -> str:
    """SHA-256 (hex) of the names, dtypes, shapes and values of ``model.state_dict()``."""
    digest = hashlib.sha256()
    for name, tensor in unwrap_model(model).state_dict().items():
        flat = tensor.detach().to("cpu").reshape(-1).contiguous()
        digest.update(f"{name}:{flat.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def check_replicas_agree(model: nn.Module, ctx: DistContext) -> str:
    """Check that every rank holds the same weights and buffers; returns their fingerprint.

    Raises:
        RuntimeError: on every rank, naming the ranks whose state differs from rank 0's.
    """
    mine = state_fingerprint(model)
    if not ctx.enabled:
        return mine
    everyone: list[Any] = [None] * ctx.world_size
    torch_dist.all_gather_object(everyone, mine)
    differ = [rank for rank, fingerprint in enumerate(everyone) if fingerprint != everyone[0]]
    if differ:
        raise RuntimeError(f"the model replicas diverged: ranks {differ} differ from rank 0")
    return mine
