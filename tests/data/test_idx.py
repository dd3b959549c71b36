"""MNIST / Fashion-MNIST IDX files: parsing, searching, errors, and the real dataset."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from lassoprune.data import dataset_info, load_dataset
from lassoprune.data import idx as idx_module
from lassoprune.data.idx import parse_idx, read_idx
from lassoprune.errors import DataNotFoundError, IntegrityError

FASHION_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture
def no_system_dirs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hide Debian's Fashion-MNIST copy so "not found" paths can be tested."""
    monkeypatch.setitem(idx_module.SYSTEM_DIRS, "fashion-mnist", ())


@pytest.mark.parametrize("gz", [True, False])
def test_load_idx_split(tmp_path: Path, idx_split, gz: bool) -> None:
    images, labels = idx_split(tmp_path, "t10k", 9, gz=gz)
    ds = load_dataset("mnist", root=tmp_path, split="test", download=False)
    assert ds.images.shape == (9, 1, 28, 28) and ds.images.dtype == torch.uint8
    assert torch.equal(ds.images[:, 0], torch.from_numpy(images))
    assert torch.equal(ds.labels, torch.from_numpy(labels).long())
    assert ds.info == dataset_info("mnist")


def test_torchvision_style_subfolder(tmp_path: Path, idx_split, no_system_dirs: None) -> None:
    images, _ = idx_split(tmp_path / "FashionMNIST" / "raw", "train", 4)
    ds = load_dataset("fashion-mnist", root=tmp_path, download=False)
    assert torch.equal(ds.images[:, 0], torch.from_numpy(images))
    assert ds.info.class_names[0] == "T-shirt/top" and ds.info.class_names[9] == "Ankle boot"


def test_parse_idx_header_checks() -> None:
    good = bytes([0, 0, 8, 2, 0, 0, 0, 2, 0, 0, 0, 3]) + bytes(range(6))
    assert parse_idx(good).tolist() == [[0, 1, 2], [3, 4, 5]]
    with pytest.raises(IntegrityError, match="magic"):
        parse_idx(b"\x01" + good[1:])
    with pytest.raises(IntegrityError, match="type code"):
        parse_idx(good[:2] + b"\x0d" + good[3:])
    with pytest.raises(IntegrityError, match="truncated"):
        parse_idx(good[:-1])
    with pytest.raises(IntegrityError, match="truncated"):
        parse_idx(good[:9])
    with pytest.raises(IntegrityError):
        parse_idx(good + b"\x00")  # trailing bytes


def test_truncated_gzip_is_integrity_error(tmp_path: Path, idx_split) -> None:
    idx_split(tmp_path, "train", 50)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(IntegrityError, match="train-images"):
        load_dataset("mnist", root=tmp_path, download=False)


def test_truncated_body_inside_valid_gzip(tmp_path: Path, idx_split) -> None:
    idx_split(tmp_path, "train", 5)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes())[:-100]))
    with pytest.raises(IntegrityError, match="truncated"):
        read_idx(path)


def test_count_mismatch(tmp_path: Path, idx_split) -> None:
    idx_split(tmp_path, "train", 5)
    other = tmp_path / "other"
    idx_split(other, "train", 6)
    (other / "train-labels-idx1-ubyte.gz").replace(tmp_path / "train-labels-idx1-ubyte.gz")
    with pytest.raises(IntegrityError, match="5 images but 6 labels"):
        load_dataset("mnist", root=tmp_path, download=False)


def test_missing_offline_message(tmp_path: Path, isolated_data_env: Path, no_system_dirs: None) -> None:
    with pytest.raises(DataNotFoundError) as err:
        load_dataset("fashion-mnist", root=tmp_path, split="test", download=False)
    msg = str(err.value)
    for place in (tmp_path, tmp_path / "fashion-mnist", tmp_path / "FashionMNIST" / "raw"):
        assert f"  {place}\n" in msg
    assert str(isolated_data_env / "lassoprune" / "fashion-mnist") in msg
    assert "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/t10k-images-idx3-ubyte.gz" in msg
    assert "root=DIR" in msg and "download=False" in msg


def test_unreachable_mirror_is_data_not_found(tmp_path: Path, closed_port_url: str) -> None:
    with pytest.raises(DataNotFoundError) as err:
        load_dataset("mnist", root=tmp_path, download=True, mirror=closed_port_url)
    msg = str(err.value)
    assert str(tmp_path / "mnist") in msg and closed_port_url + "train-images-idx3-ubyte.gz" in msg
    assert "Downloading failed" in msg
    assert not list(tmp_path.rglob("*.part"))


@pytest.mark.skipif(not FASHION_SYSTEM_DIR.is_dir(), reason="Debian's fashion-mnist package is not installed")
def test_real_fashion_mnist() -> None:
    train = load_dataset("fashion-mnist", download=False)
    test = load_dataset("fashion-mnist", split="test", download=False)
    assert train.images.shape == (60000, 1, 28, 28) and test.images.shape == (10000, 1, 28, 28)
    assert train.info.num_classes == 10
    assert torch.equal(torch.bincount(train.labels), torch.full((10,), 6000))
    assert torch.equal(torch.bincount(test.labels), torch.full((10,), 1000))
    mean = train.images.float().mean() / 255
    std = (train.images.float() / 255).std()
    assert abs(mean - 0.2860) < 2e-3 and abs(std - 0.3530) < 2e-3
    assert np.isclose(train.info.mean[0], 0.2860)
