"""ImageFolder datasets from tiny PNG files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lassoprune.data import BatchLoader, ImageFolderDataset, dataset_info, load_dataset
from lassoprune.errors import DataNotFoundError, IntegrityError

COLOURS = {"cat": (200, 10, 10), "dog": (10, 200, 10), "emu": (10, 10, 200)}


def _png(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (30, 20)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "imgs"
    for split, n in (("train", 3), ("val", 2)):
        for name, colour in COLOURS.items():
            for i in range(n):
                _png(root / split / name / f"{i}.png", colour, size=(30 + 7 * i, 20 + 3 * i))
    (root / "train" / "cat" / "notes.txt").write_text("not an image")
    return root


def test_load_splits_labels_and_pixels(folder: Path) -> None:
    train = load_dataset("imagefolder", root=folder, image_size=16, resize=20, num_workers=2)
    assert isinstance(train, ImageFolderDataset) and len(train) == 9
    assert train.info.class_names == ("cat", "dog", "emu") and train.info.in_channels == 3
    assert train.info.mean == (0.485, 0.456, 0.406) and train.info.image_size == 16
    assert train.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    batch = train.get_batch(torch.tensor([0, 4, 8]))
    assert batch.shape == (3, 3, 16, 16) and batch.dtype == torch.uint8
    for row, name in zip(batch, ("cat", "dog", "emu")):
        assert torch.equal(row[:, 8, 8], torch.tensor(COLOURS[name], dtype=torch.uint8))
    test = load_dataset("imagefolder", root=folder, split="test", image_size=16, resize=20)
    assert len(test) == 6 and test.labels.tolist() == [0, 0, 1, 1, 2, 2]
    x, y = next(iter(BatchLoader(train.subset(torch.tensor([1, 5])), 2)))
    assert x.shape == (2, 3, 16, 16) and y.tolist() == [0, 1]


def test_resize_then_centre_crop_is_exact(tmp_path: Path) -> None:
    pixels = np.zeros((20, 40, 3), dtype=np.uint8)  # h=20, w=40
    pixels[:, :, 0] = np.arange(40, dtype=np.uint8)[None, :]  # red = column
    pixels[:, :, 1] = np.arange(20, dtype=np.uint8)[:, None]  # green = row
    path = tmp_path / "flat" / "a" / "img.png"
    path.parent.mkdir(parents=True)
    Image.fromarray(pixels).save(path)
    ds = load_dataset("imagefolder", root=tmp_path / "flat", image_size=20, resize=20, num_workers=0)
    img = ds.get_batch(torch.tensor([0]))[0]
    assert torch.equal(img[0, 0], torch.arange(10, 30, dtype=torch.uint8))  # centre 20 columns
    assert torch.equal(img[1, :, 0], torch.arange(20, dtype=torch.uint8))


def test_threaded_equals_sequential(folder: Path) -> None:
    seq = load_dataset("imagefolder", root=folder, image_size=16, resize=18, num_workers=0)
    par = load_dataset("imagefolder", root=folder, image_size=16, resize=18, num_workers=4)
    idx = torch.arange(9)
    assert torch.equal(seq.get_batch(idx), par.get_batch(idx))


def test_info_from_directory_and_errors(folder: Path, tmp_path: Path) -> None:
    info = dataset_info("imagefolder", root=folder)
    assert info.num_classes == 3 and info.image_size == 224 and info.std == (0.229, 0.224, 0.225)
    with pytest.raises(DataNotFoundError, match="root=DIR"):
        dataset_info("imagefolder")
    (folder / "val").rename(folder / "holdout")
    with pytest.raises(DataNotFoundError, match="no test split"):
        load_dataset("imagefolder", root=folder, split="test")
    broken = tmp_path / "broken"
    (broken / "x").mkdir(parents=True)
    (broken / "x" / "bad.png").write_bytes(b"definitely not a png")
    ds = load_dataset("imagefolder", root=broken)
    with pytest.raises(IntegrityError, match="bad.png"):
        ds.get_batch(torch.tensor([0]))
