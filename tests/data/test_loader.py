"""BatchLoader: coverage, determinism per epoch, normalisation, resizing, sharding."""

from __future__ import annotations

import pytest
import torch

from lassoprune.data import Augment, BatchLoader, DatasetInfo, ImageDataset, load_dataset
from lassoprune.errors import LassopruneError


def _indexed_dataset(n: int = 103, size: int = 8) -> ImageDataset:
    """Labels are the sample positions, so y tells which samples a batch holds."""
    info = DatasetInfo("indexed", n, tuple(map(str, range(n))), 1, size, (0.5,), (0.25,))
    images = (torch.arange(n, dtype=torch.uint8) % 251).view(n, 1, 1, 1).expand(n, 1, size, size).contiguous()
    return ImageDataset(images, torch.arange(n), info)


def _collect(loader: BatchLoader) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    xs, ys = [], []
    for x, y in loader:
        xs.append(x)
        ys.append(y)
    return xs, ys


def test_each_sample_once_per_shuffled_epoch() -> None:
    ds = _indexed_dataset()
    loader = BatchLoader(ds, 10, shuffle=True, seed=3)
    assert len(loader) == 11 and loader.num_samples == 103
    xs, ys = _collect(loader)
    y = torch.cat(ys)
    assert torch.equal(torch.sort(y).values, torch.arange(103)) and not torch.equal(y, torch.arange(103))
    x = torch.cat(xs)
    assert x.dtype == torch.float32 and x.shape == (103, 1, 8, 8) and ys[0].dtype == torch.int64
    expected = ((y.float() / 255) - 0.5) / 0.25
    assert torch.allclose(x[:, 0, 3, 3], expected, atol=1e-5)


def test_set_epoch_is_reproducible_and_epochs_differ() -> None:
    ds = load_dataset("synthetic", n_per_class=7)
    aug = Augment(crop_padding=4, flip=True)

    def run(epoch: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        loader = BatchLoader(ds, 16, shuffle=True, augment=aug, seed=11)
        loader.set_epoch(epoch)
        return _collect(loader)

    (xa, ya), (xb, yb), (_, yc) = run(2), run(2), run(3)
    assert all(torch.equal(a, b) for a, b in zip(xa, xb)) and all(torch.equal(a, b) for a, b in zip(ya, yb))
    assert not torch.equal(torch.cat(ya), torch.cat(yc))


def test_resume_mid_epoch() -> None:
    ds = load_dataset("synthetic", n_per_class=5)
    loader = BatchLoader(ds, 8, shuffle=True, augment=Augment(), seed=1)
    loader.set_epoch(4)
    full = _collect(loader)[0]
    tail = [x for x, _ in loader.batches(start=3)]
    assert len(tail) == len(full) - 3 and all(torch.equal(a, b) for a, b in zip(tail, full[3:]))


def test_normalisation_of_constant_and_random_images() -> None:
    info = DatasetInfo("const", 2, ("a", "b"), 3, 4, (0.2, 0.4, 0.6), (0.1, 0.2, 0.3))
    pixel = torch.tensor([0.2, 0.4, 0.6]) * 255
    images = pixel.round().to(torch.uint8).view(1, 3, 1, 1).expand(6, 3, 4, 4).contiguous()
    x, _ = next(iter(BatchLoader(ImageDataset(images, torch.zeros(6, dtype=torch.long), info), 6)))
    assert x.abs().max() < 0.02

    ds = load_dataset("synthetic", n_per_class=50)
    x = torch.cat(_collect(BatchLoader(ds, 128))[0])
    assert abs(float(x.mean())) < 0.05 and abs(float(x.std()) - 1) < 0.05


def test_pad_28_to_32_and_resize() -> None:
    info = DatasetInfo("grey", 1, ("a",), 1, 28, (0.0,), (1.0,))
    images = torch.full((3, 1, 28, 28), 255, dtype=torch.uint8)
    ds = ImageDataset(images, torch.zeros(3, dtype=torch.long), info)
    x, _ = next(iter(BatchLoader(ds, 3, image_size=32)))
    assert x.shape == (3, 1, 32, 32)
    assert bool((x[:, :, 2:30, 2:30] == 1).all()) and float(x.sum()) == 3 * 28 * 28
    x, _ = next(iter(BatchLoader(ds, 3, image_size=64)))
    assert x.shape == (3, 1, 64, 64) and torch.allclose(x, torch.ones_like(x))


def test_indices_drop_last_and_validation() -> None:
    ds = _indexed_dataset(50)
    loader = BatchLoader(ds, 4, indices=torch.arange(10, 20), drop_last=True)
    ys = torch.cat(_collect(loader)[1])
    assert torch.equal(ys, torch.arange(10, 18)) and len(loader) == 2 and loader.num_samples == 8
    with pytest.raises(LassopruneError):
        BatchLoader(ds, 0)


def test_distributed_shards_cover_everything() -> None:
    ds = _indexed_dataset(23)
    shards = [BatchLoader(ds, 5, shuffle=True, seed=2, distributed=(r, 3)) for r in range(3)]
    for s in shards:
        s.set_epoch(1)
    parts = [torch.cat(_collect(s)[1]) for s in shards]
    assert [p.numel() for p in parts] == [8, 8, 8] and all(s.num_samples == 8 for s in shards)
    joined = torch.cat(parts)
    assert set(joined.tolist()) == set(range(23)) and joined.numel() == 24
    whole = BatchLoader(ds, 5, shuffle=True, seed=2)
    whole.set_epoch(1)
    assert set(whole.epoch_order()[:3].tolist()) == {int(p[0]) for p in parts}
    with pytest.raises(LassopruneError):
        BatchLoader(ds, 5, distributed=(3, 3))
