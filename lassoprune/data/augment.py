"""Batched image augmentation on tensors.

Every function takes a whole batch ``(B, C, H, W)`` (uint8 or float, on any
device) and draws its random numbers from an explicit ``torch.Generator``, so a
run is reproducible from its seeds. Nothing loops over samples in Python.
Random numbers are drawn on the generator's device and moved to the batch's
device, so a CPU generator works for a GPU batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


def _check_batch(x: Tensor) -> None:
    """Raise ``ValueError`` unless ``x`` is a 4-D ``(B, C, H, W)`` batch."""
    if x.dim() != 4:
        raise ValueError(f"expected a batch (B, C, H, W), got shape {tuple(x.shape)}")


def _generator_device(generator: torch.Generator | None) -> torch.device:
    """The device random numbers are drawn on for ``generator`` (CPU when ``None``)."""
    return generator.device if generator is not None else torch.device("cpu")


def random_crop(x: Tensor, padding: int, generator: torch.Generator | None = None) -> Tensor:
    """Zero-pad by ``padding`` on every side, then crop back to ``H x W`` at a random offset.

    Each sample gets its own offset in ``[0, 2 * padding]`` along each axis.

    Args:
        x: ``(B, C, H, W)`` uint8 or float.
        padding: pixels of zero padding per side; 0 returns ``x`` unchanged.
        generator: source of the offsets.

    Returns:
        ``(B, C, H, W)``, same dtype and device as ``x``.
    """
    _check_batch(x)
    if padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding}")
    if padding == 0 or x.shape[0] == 0:
        return x
    b, _, h, w = x.shape
    padded = F.pad(x, (padding, padding, padding, padding))
    dev = _generator_device(generator)
    top = torch.randint(0, 2 * padding + 1, (b,), generator=generator, device=dev).to(x.device)
    left = torch.randint(0, 2 * padding + 1, (b,), generator=generator, device=dev).to(x.device)
    return _gather_windows(padded, top, left, h, w)


def _gather_windows(padded: Tensor, top: Tensor, left: Tensor, h: int, w: int) -> Tensor:
    """Cut one ``h x w`` window per sample by advanced indexing.

    Args:
        padded: ``(B, C, H', W')``.
        top, left: int64 ``(B,)`` window corners.

    Returns:
        ``(B, C, h, w)`` with ``out[i] = padded[i, :, top[i]:top[i]+h, left[i]:left[i]+w]``.
    """
    b, c = padded.shape[:2]
    dev = padded.device
    rows = top[:, None] + torch.arange(h, device=dev)  # (B, h)
    cols = left[:, None] + torch.arange(w, device=dev)  # (B, w)
    bi = torch.arange(b, device=dev)[:, None, None, None]
    ci = torch.arange(c, device=dev)[None, :, None, None]
    return padded[bi, ci, rows[:, None, :, None], cols[:, None, None, :]]


def random_flip(x: Tensor, generator: torch.Generator | None = None, p: float = 0.5) -> Tensor:
    """Mirror each sample left-right with probability ``p``.

    Args:
        x: ``(B, C, H, W)``.

    Returns:
        ``(B, C, H, W)``, same dtype and device.
    """
    _check_batch(x)
    dev = _generator_device(generator)
    flip = (torch.rand(x.shape[0], generator=generator, device=dev) < p).to(x.device)
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def pad_to(x: Tensor, size: int) -> Tensor:
    """Zero-pad ``x`` symmetrically to ``size x size`` (e.g. 28 -> 32).

    An odd difference puts the extra pixel at the bottom/right.

    Args:
        x: ``(B, C, H, W)`` with ``H, W <= size``.

    Returns:
        ``(B, C, size, size)``.
    """
    _check_batch(x)
    h, w = x.shape[-2:]
    if h > size or w > size:
        raise ValueError(f"cannot pad {h}x{w} images to the smaller size {size}")
    top, left = (size - h) // 2, (size - w) // 2
    return F.pad(x, (left, size - w - left, top, size - h - top))


def resize(x: Tensor, size: int) -> Tensor:
    """Bilinear resize to ``size x size`` (antialiased when shrinking).

    Args:
        x: ``(B, C, H, W)`` uint8 or float.

    Returns:
        ``(B, C, size, size)``; uint8 input is rounded and clamped back to uint8.
    """
    _check_batch(x)
    if tuple(x.shape[-2:]) == (size, size):
        return x
    shrink = size < min(x.shape[-2:])
    y = F.interpolate(x.float(), size=(size, size), mode="bilinear", align_corners=False, antialias=shrink)
    if x.dtype == torch.uint8:
        return y.round_().clamp_(0, 255).to(torch.uint8)
    return y.to(x.dtype)


@dataclass(frozen=True)
class Augment:
    """Training augmentation: random crop with zero padding, then random left-right flip.

    Attributes:
        crop_padding: padding of :func:`random_crop`; 0 disables cropping.
        flip: whether to apply :func:`random_flip`.
    """

    crop_padding: int = 4
    flip: bool = True

    def __post_init__(self) -> None:
        if self.crop_padding < 0:
            raise ValueError(f"crop_padding must be >= 0, got {self.crop_padding}")

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Augment the batch ``x`` ``(B, C, H, W)``; returns the same shape and dtype."""
        x = random_crop(x, self.crop_padding, generator)
        if self.flip:
            x = random_flip(x, generator)
        return x
