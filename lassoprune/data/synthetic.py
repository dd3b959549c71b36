"""A generated, class-conditional image dataset for tests and quick runs.

Class ``k`` is a plane wave ``0.5 + A * c * sin(2 pi f_k (x cos t_k + y sin t_k) + p_kc + j)``
with its own frequency ``f_k`` and orientation ``t_k`` (all pairs distinct),
a per-channel phase ``p_kc`` drawn from ``seed``, and per-sample contrast
``c``, phase jitter ``j`` and Gaussian pixel noise. A small CNN separates the
classes in a few epochs. The class patterns depend only on ``seed``; the
samples on ``seed`` and the split, so train and test share patterns but not
samples. Flipping changes a pattern's orientation, so the default
augmentation is none.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from lassoprune.data._registry import DatasetEntry, DatasetInfo, ImageDataset, PathLike, register_dataset
from lassoprune.errors import LassopruneError

_AMPLITUDE = 0.3
_CONTRAST_JITTER = 0.2
_PHASE_JITTER = 0.5
_NOISE = 0.1
_FREQUENCIES = (1.0, 2.0, 3.0)
_DEFAULT_PER_CLASS = {"train": 100, "test": 20}
_SPLIT_STREAM = {"train": 1, "test": 2}


def _generator(seed: int, stream: int) -> torch.Generator:
    """A CPU generator for one independent random stream of ``seed``."""
    return torch.Generator().manual_seed((seed * 1_000_003 + stream) % (2**63))


def _check_options(num_classes: int, in_channels: int, image_size: int) -> None:
    """Raise a :class:`LassopruneError` for impossible sizes."""
    if num_classes < 1 or in_channels < 1 or image_size < 4:
        raise LassopruneError(
            "synthetic needs num_classes >= 1, in_channels >= 1 and image_size >= 4; got "
            f"num_classes={num_classes}, in_channels={in_channels}, image_size={image_size}"
        )


def class_waves(num_classes: int, image_size: int) -> Tensor:
    """Spatial argument of each class's wave, ``2 pi f_k (x cos t_k + y sin t_k)``.

    Returns:
        float32 ``(K, 1, S, S)``, coordinates ``x, y`` in ``[0, 1)``.
    """
    k = torch.arange(num_classes)
    n_freq = len(_FREQUENCIES)
    n_orient = math.ceil(num_classes / n_freq)
    freq = torch.tensor(_FREQUENCIES)[k % n_freq]
    theta = math.pi * (k // n_freq).float() / n_orient
    coords = torch.arange(image_size, dtype=torch.float32) / image_size
    y, x = torch.meshgrid(coords, coords, indexing="ij")
    proj = x[None] * torch.cos(theta)[:, None, None] + y[None] * torch.sin(theta)[:, None, None]
    return (2 * math.pi * freq[:, None, None] * proj).unsqueeze(1)


def render(labels: Tensor, waves: Tensor, phases: Tensor, generator: torch.Generator) -> Tensor:
    """Draw one noisy image per label.

    Args:
        labels: int64 ``(N,)``.
        waves: float ``(K, 1, S, S)`` from :func:`class_waves`.
        phases: float ``(K, C)`` per-class channel phases.
        generator: source of the per-sample jitter and noise.

    Returns:
        uint8 ``(N, C, S, S)``.
    """
    n, c, s = labels.shape[0], phases.shape[1], waves.shape[-1]
    jitter = (torch.rand(n, generator=generator) * 2 - 1) * _PHASE_JITTER
    contrast = 1 + (torch.rand(n, generator=generator) * 2 - 1) * _CONTRAST_JITTER
    arg = waves[labels] + phases[labels][:, :, None, None] + jitter[:, None, None, None]
    clean = 0.5 + _AMPLITUDE * contrast[:, None, None, None] * torch.sin(arg)
    noisy = clean + _NOISE * torch.randn(n, c, s, s, generator=generator)
    return (noisy * 255).round_().clamp_(0, 255).to(torch.uint8)


def synthetic_info(
    *,
    root: PathLike | None = None,
    num_classes: int = 10,
    in_channels: int = 3,
    image_size: int = 32,
) -> DatasetInfo:
    """Description of the synthetic dataset; mean/std are the model's (exact up to clamping)."""
    _check_options(num_classes, in_channels, image_size)
    contrast_sq = 1 + _CONTRAST_JITTER**2 / 3
    std = math.sqrt(_AMPLITUDE**2 * contrast_sq / 2 + _NOISE**2)
    return DatasetInfo(
        name="synthetic",
        num_classes=num_classes,
        class_names=tuple(f"class{k}" for k in range(num_classes)),
        in_channels=in_channels,
        image_size=image_size,
        mean=(0.5,) * in_channels,
        std=(round(std, 4),) * in_channels,
    )


def load_synthetic(
    *,
    root: PathLike | None,
    split: str,
    download: bool,
    num_classes: int = 10,
    in_channels: int = 3,
    image_size: int = 32,
    n_per_class: int | None = None,
    seed: int = 0,
) -> ImageDataset:
    """Generate ``split`` (``root`` and ``download`` are ignored).

    Args:
        n_per_class: samples per class; default 100 for train, 20 for test.
        seed: fixes the class patterns and, with ``split``, the samples.

    Returns:
        :class:`ImageDataset`, images uint8 ``(K * n_per_class, C, S, S)`` in shuffled order.
    """
    info = synthetic_info(num_classes=num_classes, in_channels=in_channels, image_size=image_size)
    per_class = _DEFAULT_PER_CLASS[split] if n_per_class is None else n_per_class
    if per_class < 1:
        raise LassopruneError(f"synthetic needs n_per_class >= 1, got {per_class}")
    phases = torch.rand(num_classes, in_channels, generator=_generator(seed, 0)) * (2 * math.pi)
    gen = _generator(seed, _SPLIT_STREAM[split])
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    labels = labels[torch.randperm(labels.numel(), generator=gen)]
    images = render(labels, class_waves(num_classes, image_size), phases, gen)
    return ImageDataset(images, labels, info)


register_dataset(
    DatasetEntry(
        name="synthetic",
        load=load_synthetic,
        info=synthetic_info,
        augment=None,
        summary="generated class-conditional waves (tests, smoke runs); options num_classes, "
        "in_channels, image_size, n_per_class, seed",
    )
)
