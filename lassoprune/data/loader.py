"""Mini-batches of normalised float tensors from a dataset.

:class:`BatchLoader` works on whole batches (no per-sample Python), in the
caller's process. Every random choice is a function of ``(seed, epoch)`` (and
the batch number and rank for augmentation), so :meth:`BatchLoader.set_epoch`
followed by iteration gives the very same batches in a resumed run, and
:meth:`BatchLoader.batches` can start in the middle of an epoch.

Per batch: uint8 images are fetched, moved to ``device``, brought to
``image_size`` (zero-padded when they are smaller by at most 8 pixels, e.g.
MNIST 28 -> 32; bilinearly resized otherwise), augmented, converted to float
in ``[0, 1]`` and normalised with the dataset's mean/std.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from lassoprune.data._registry import Dataset, as_index_tensor
from lassoprune.data.augment import Augment, pad_to, resize
from lassoprune.errors import LassopruneError

MAX_PAD = 8
_MIX = 1_000_003
_SHUFFLE, _AUGMENT = 0, 1


def mix_seed(*parts: int) -> int:
    """Fold integers into one 63-bit seed (``((a * P + b) * P + c) ...`` mod ``2**63``)."""
    value = 0
    for part in parts:
        value = (value * _MIX + int(part)) % (2**63)
    return value


def _generator(*parts: int) -> torch.Generator:
    """A CPU generator seeded with :func:`mix_seed` of ``parts``."""
    return torch.Generator().manual_seed(mix_seed(*parts))


@dataclass(frozen=True)
class Shard:
    """One process's share of the data in distributed training.

    Attributes:
        rank: this process, ``0 <= rank < world_size``.
        world_size: number of processes.
    """

    rank: int
    world_size: int

    def __post_init__(self) -> None:
        if self.world_size < 1 or not 0 <= self.rank < self.world_size:
            raise LassopruneError(f"bad shard rank={self.rank}, world_size={self.world_size}")

    def take(self, order: Tensor) -> Tensor:
        """This rank's positions of ``order`` (int64 ``(M,)``), padded by wrapping to equal length.

        Returns:
            int64 ``(ceil(M / world_size),)``.
        """
        per_rank = math.ceil(order.numel() / self.world_size)
        total = per_rank * self.world_size
        if order.numel() and total > order.numel():
            order = order.repeat(math.ceil(total / order.numel()))[:total]
        return order[self.rank : total : self.world_size]


def fit_size(x: Tensor, size: int) -> Tensor:
    """Bring ``(B, C, H, H)`` images to ``(B, C, size, size)``.

    Zero-pads centrally when ``0 < size - H <= MAX_PAD``; otherwise bilinear resize.
    """
    native = x.shape[-1]
    if native == size:
        return x
    if 0 < size - native <= MAX_PAD:
        return pad_to(x, size)
    return resize(x, size)


class BatchLoader:
    """Iterate ``(x, y)`` batches: x float32 ``(B, C, S, S)`` normalised, y int64 ``(B,)``.

    Args:
        dataset: any :class:`~lassoprune.data._registry.Dataset`.
        batch_size: samples per batch.
        shuffle: new random order every epoch.
        augment: applied to each batch (after resizing), or ``None``.
        image_size: side ``S`` of the output; default the dataset's native size.
        seed: seed of shuffling and augmentation.
        drop_last: drop the last, smaller batch.
        indices: int64 ``(M,)`` positions of the samples to use; default all.
        device: where the batches are built and returned.
        distributed: ``(rank, world_size)`` to iterate only this rank's share
            of each epoch's order (padded by wrapping so all ranks get the
            same number of samples).
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        shuffle: bool = False,
        augment: Augment | None = None,
        image_size: int | None = None,
        seed: int = 0,
        drop_last: bool = False,
        indices: Tensor | None = None,
        device: str | torch.device = "cpu",
        distributed: tuple[int, int] | None = None,
    ) -> None:
        if batch_size < 1:
            raise LassopruneError(f"batch_size must be >= 1, got {batch_size}")
        info = dataset.info
        self.dataset = dataset
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.augment = augment
        self.image_size = info.image_size if image_size is None else image_size
        self.seed = seed
        self.drop_last = drop_last
        self.device = torch.device(device)
        self.shard = Shard(*distributed) if distributed is not None else None
        n = len(dataset)
        self.indices = torch.arange(n) if indices is None else as_index_tensor(indices, n)
        self.epoch = 0
        self._mean = torch.tensor(info.mean, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        self._std = torch.tensor(info.std, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order and augmentation the next iteration uses."""
        self.epoch = epoch

    @property
    def num_samples(self) -> int:
        """Samples yielded per epoch (this rank's share, after ``drop_last``)."""
        n = self._epoch_length()
        return (n // self.batch_size) * self.batch_size if self.drop_last else n

    def __len__(self) -> int:
        """Batches per epoch."""
        n = self._epoch_length()
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def _epoch_length(self) -> int:
        """Samples in this rank's share of an epoch, before batching."""
        n = self.indices.numel()
        return math.ceil(n / self.shard.world_size) if self.shard else n

    def epoch_order(self) -> Tensor:
        """Dataset positions of this epoch in iteration order, int64 ``(num_samples,)``."""
        order = self.indices
        if self.shuffle:
            perm = torch.randperm(order.numel(), generator=_generator(self.seed, self.epoch, _SHUFFLE))
            order = order[perm]
        if self.shard:
            order = self.shard.take(order)
        return order[: self.num_samples]

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        return self.batches()

    def batches(self, start: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
        """Iterate the epoch's batches from batch number ``start`` on."""
        order = self.epoch_order()
        for b in range(start, len(self)):
            yield self.make_batch(order[b * self.batch_size : (b + 1) * self.batch_size], b)

    def make_batch(self, idx: Tensor, batch_number: int = 0) -> tuple[Tensor, Tensor]:
        """Build the batch of dataset positions ``idx`` (int64 ``(B,)``).

        Returns:
            x float32 ``(B, C, S, S)`` normalised and y int64 ``(B,)``, on ``device``.
        """
        x = self.dataset.get_batch(idx).to(self.device, non_blocking=True)
        x = fit_size(x, self.image_size)
        if self.augment is not None:
            rank = self.shard.rank if self.shard else 0
            x = self.augment(x, _generator(self.seed, self.epoch, _AUGMENT, batch_number, rank))
        x = x.to(torch.float32).div_(255.0).sub_(self._mean).div_(self._std)
        y = self.dataset.labels[idx].to(self.device, non_blocking=True)
        return x, y
