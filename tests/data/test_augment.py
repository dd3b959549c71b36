"""Batched augmentation: exact crops, flips, padding, resizing, determinism."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lassoprune.data import Augment, default_augment
from lassoprune.data.augment import pad_to, random_crop, random_flip, resize
from lassoprune.errors import UnknownNameError


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _batch(b: int = 16, c: int = 3, s: int = 8, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    x = torch.rand(b, c, s, s, generator=_gen(123)) * 200 + 10  # no zeros: padding is recognisable
    return x.to(dtype)


def test_crop_without_padding_is_identity() -> None:
    x = _batch()
    assert torch.equal(random_crop(x, 0, _gen(0)), x)


@pytest.mark.parametrize("dtype", [torch.float32, torch.uint8])
def test_crops_are_windows_of_the_padded_image(dtype: torch.dtype) -> None:
    x, p = _batch(32, dtype=dtype), 2
    out = random_crop(x, p, _gen(1))
    assert out.shape == x.shape and out.dtype == dtype
    padded = F.pad(x, (p, p, p, p))
    offsets = []
    for i in range(x.shape[0]):
        matches = [
            (t, l)
            for t in range(2 * p + 1)
            for l in range(2 * p + 1)
            if torch.equal(out[i], padded[i, :, t : t + 8, l : l + 8])
        ]
        assert len(matches) == 1, f"sample {i} is not a unique window"
        offsets.append(matches[0])
    assert len(set(offsets)) > 5  # offsets differ per sample


def test_crop_is_deterministic_in_the_generator() -> None:
    x = _batch()
    assert torch.equal(random_crop(x, 4, _gen(7)), random_crop(x, 4, _gen(7)))
    assert not torch.equal(random_crop(x, 4, _gen(7)), random_crop(x, 4, _gen(8)))


def test_flip_picks_per_sample_and_twice_is_identity() -> None:
    x = _batch(64)
    once = random_flip(x, _gen(3))
    flipped = [torch.equal(once[i], x[i].flip(-1)) for i in range(64)]
    kept = [torch.equal(once[i], x[i]) for i in range(64)]
    assert all(f or k for f, k in zip(flipped, kept)) and 10 < sum(flipped) < 54
    assert torch.equal(random_flip(once, _gen(3)), x)


def test_pad_to_centres() -> None:
    x = torch.full((2, 1, 28, 28), 7, dtype=torch.uint8)
    y = pad_to(x, 32)
    assert y.shape == (2, 1, 32, 32) and y.dtype == torch.uint8
    assert torch.equal(y[:, :, 2:30, 2:30], x) and int(y.sum()) == 2 * 28 * 28 * 7
    with pytest.raises(ValueError):
        pad_to(x, 20)


def test_resize_keeps_dtype_and_constant_images() -> None:
    x = torch.full((3, 3, 32, 32), 99, dtype=torch.uint8)
    for size in (16, 64):
        y = resize(x, size)
        assert y.shape == (3, 3, size, size) and y.dtype == torch.uint8 and bool((y == 99).all())
    assert resize(x.float(), 20).dtype == torch.float32


def test_augment_config_and_defaults() -> None:
    x = _batch()
    assert torch.equal(Augment(crop_padding=3)(x, _gen(5)), Augment(crop_padding=3)(x, _gen(5)))
    assert torch.equal(Augment(crop_padding=0, flip=False)(x, _gen(5)), x)
    assert default_augment("cifar10") == Augment(crop_padding=4, flip=True)
    fashion, mnist = default_augment("fashion-mnist"), default_augment("mnist")
    assert fashion is not None and fashion.flip and 2 <= fashion.crop_padding <= 4
    assert mnist is not None and not mnist.flip and 2 <= mnist.crop_padding <= 4
    assert default_augment("synthetic") is None
    with pytest.raises(UnknownNameError, match="valid datasets"):
        default_augment("svhn")
    with pytest.raises(ValueError):
        Augment(crop_padding=-1)
