"""Downloads from a local HTTP server: checksums, atomic placement, extraction."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from lassoprune.data import cifar, download, idx, load_dataset
from lassoprune.errors import DataNotFoundError, IntegrityError


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_download_verifies_and_places_file(tmp_path: Path, http_root: tuple[Path, str]) -> None:
    served, url = http_root
    (served / "blob.bin").write_bytes(b"x" * 3_000_000)
    dest = tmp_path / "out" / "blob.bin"
    got = download(url + "blob.bin", dest, _md5(served / "blob.bin"), progress=False)
    assert got == dest and dest.read_bytes() == b"x" * 3_000_000
    assert sorted(p.name for p in dest.parent.iterdir()) == ["blob.bin"]


def test_download_checksum_mismatch_leaves_nothing(tmp_path: Path, http_root: tuple[Path, str]) -> None:
    served, url = http_root
    (served / "blob.bin").write_bytes(b"not the real file")
    dest = tmp_path / "out" / "blob.bin"
    expected = "0" * 32
    with pytest.raises(IntegrityError) as err:
        download(url + "blob.bin", dest, expected, progress=False)
    msg = str(err.value)
    assert expected in msg and _md5(served / "blob.bin") in msg and url + "blob.bin" in msg
    assert list(dest.parent.iterdir()) == []


def test_download_http_error(tmp_path: Path, http_root: tuple[Path, str]) -> None:
    _, url = http_root
    with pytest.raises(DataNotFoundError, match="HTTP 404"):
        download(url + "missing.bin", tmp_path / "missing.bin", "0" * 32, progress=False)
    assert list(tmp_path.iterdir()) == [tmp_path / "served"]


def test_cifar_download_via_mirror(
    tmp_path: Path, http_root: tuple[Path, str], cifar_archive, monkeypatch: pytest.MonkeyPatch
) -> None:
    served, url = http_root
    dicts = cifar_archive(served, "cifar10")
    monkeypatch.setitem(cifar.ARCHIVE_MD5, "cifar-10-python.tar.gz", _md5(served / "cifar-10-python.tar.gz"))
    root = tmp_path / "data"
    test = load_dataset("cifar10", root=root, split="test", mirror=url)
    assert torch.equal(test.images.reshape(len(test), -1), torch.from_numpy(dicts["test_batch"]["data"]))
    assert (root / "cifar-10-python.tar.gz").is_file()
    assert (root / "cifar-10-batches-py" / "test_batch").is_file()
    (served / "cifar-10-python.tar.gz").unlink()  # second load is offline
    assert len(load_dataset("cifar10", root=root, split="train", download=False)) == 4 + 5 + 6 + 7 + 8


def test_cifar_download_via_env_mirror_into_cache(
    http_root: tuple[Path, str], cifar_archive, monkeypatch: pytest.MonkeyPatch, isolated_data_env: Path
) -> None:
    served, url = http_root
    cifar_archive(served, "cifar100")
    name = "cifar-100-python.tar.gz"
    monkeypatch.setitem(cifar.ARCHIVE_MD5, name, _md5(served / name))
    monkeypatch.setenv("LASSOPRUNE_MIRROR", url)
    ds = load_dataset("cifar100", split="test")
    assert len(ds) == 5
    assert (isolated_data_env / "lassoprune" / "cifar100" / "cifar-100-python" / "meta").is_file()


def test_cifar_download_with_wrong_content(tmp_path: Path, http_root: tuple[Path, str]) -> None:
    served, url = http_root
    (served / "cifar-10-python.tar.gz").write_bytes(b"<html>an error page</html>")
    root = tmp_path / "data"
    with pytest.raises(IntegrityError, match=cifar.ARCHIVE_MD5["cifar-10-python.tar.gz"]):
        load_dataset("cifar10", root=root, mirror=url)
    assert not (root / "cifar-10-python.tar.gz").exists()
    assert list(root.iterdir()) == []


def test_idx_download_via_mirror(
    tmp_path: Path, http_root: tuple[Path, str], idx_split, monkeypatch: pytest.MonkeyPatch
) -> None:
    served, url = http_root
    images, labels = idx_split(served, "train", 12)
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"):
        monkeypatch.setitem(idx.MNIST.md5, name, _md5(served / name))
    root = tmp_path / "data"
    ds = load_dataset("mnist", root=root, mirror=url)
    assert torch.equal(ds.images[:, 0], torch.from_numpy(images))
    assert torch.equal(ds.labels, torch.from_numpy(labels).long())
    names = sorted(p.name for p in root.iterdir())
    assert names == ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"]


def test_idx_download_wrong_checksum(tmp_path: Path, http_root: tuple[Path, str], idx_split) -> None:
    served, url = http_root
    idx_split(served, "t10k", 3)
    root = tmp_path / "data"
    with pytest.raises(IntegrityError, match="t10k-images-idx3-ubyte.gz"):
        load_dataset("mnist", root=root, split="test", mirror=url)
    assert list(root.iterdir()) == []
