"""CIFAR-10/100 from real-format pickles and archives."""

from __future__ import annotations

import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from lassoprune.data import load_dataset
from lassoprune.data.cifar import CIFAR10_CLASSES, CIFAR100_CLASSES, load_pickle
from lassoprune.errors import DataNotFoundError, IntegrityError


def _expected(dicts: dict, files: list[str], key: bytes | str) -> tuple[np.ndarray, np.ndarray]:
    data = np.concatenate([dicts[f]["data"] for f in files])
    labels = np.concatenate([np.asarray(dicts[f][key]) for f in files])
    return data, labels


def test_cifar10_folder_pixel_layout(tmp_path: Path, cifar_folder) -> None:
    dicts = cifar_folder(tmp_path, "cifar10")
    train = load_dataset("cifar10", root=tmp_path, download=False)
    data, labels = _expected(dicts, [f"data_batch_{i}" for i in range(1, 6)], "labels")
    assert train.images.shape == (len(data), 3, 32, 32) and train.images.dtype == torch.uint8
    # row layout: 1024 red, 1024 green, 1024 blue, each row-major 32x32
    i, y, x = 5, 3, 17
    for c in range(3):
        assert int(train.images[i, c, y, x]) == int(data[i, c * 1024 + y * 32 + x])
    assert torch.equal(train.images.reshape(len(data), -1), torch.from_numpy(data))
    assert torch.equal(train.labels, torch.from_numpy(labels).long())
    assert train.info.class_names == CIFAR10_CLASSES and train.info.num_classes == 10

    test = load_dataset("cifar10", root=tmp_path, split="test", download=False)
    assert len(test) == 7
    assert torch.equal(test.images.reshape(7, -1), torch.from_numpy(dicts["test_batch"]["data"]))


def test_cifar10_archive_is_extracted(tmp_path: Path, cifar_archive) -> None:
    dicts = cifar_archive(tmp_path, "cifar10")
    test = load_dataset("cifar10", root=tmp_path, split="test", download=False)
    assert torch.equal(test.labels, torch.tensor(dicts["test_batch"]["labels"]))
    assert (tmp_path / "cifar-10-batches-py" / "data_batch_5").is_file()
    assert not list(tmp_path.rglob("*.part"))
    train = load_dataset("cifar10", root=tmp_path, split="train", download=False)
    assert len(train) == sum(3 + i for i in range(1, 6))


def test_cifar100_fine_labels_and_meta_names(tmp_path: Path, cifar_archive) -> None:
    dicts = cifar_archive(tmp_path, "cifar100")
    train = load_dataset("cifar100", root=tmp_path, download=False)
    assert train.info.num_classes == 100
    assert train.info.class_names == tuple(f"fine{i}" for i in range(100))
    assert torch.equal(train.labels, torch.tensor(dicts["train"]["fine_labels"]))
    assert torch.equal(train.images.reshape(11, -1), torch.from_numpy(dicts["train"]["data"]))


def test_cifar100_builtin_names() -> None:
    assert len(CIFAR100_CLASSES) == 100 == len(set(CIFAR100_CLASSES))
    assert CIFAR100_CLASSES[:2] == ("apple", "aquarium_fish") and CIFAR100_CLASSES[-1] == "worm"


def test_modern_pickles_are_read(tmp_path: Path) -> None:
    """Python 3 pickles (protocol 2 uses _codecs.encode for bytes; 5 uses _frombuffer)."""
    arr = np.arange(3072 * 2, dtype=np.uint8).reshape(2, 3072)
    for protocol in (2, 5):
        path = tmp_path / f"p{protocol}"
        path.write_bytes(pickle.dumps({b"data": arr, b"labels": [1, 2], b"name": b"x"}, protocol=protocol))
        d = load_pickle(path)
        assert np.array_equal(d[b"data"], arr) and d[b"name"] == b"x"


class _Evil:
    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, ("touch pwned-marker",))


def test_hostile_pickle_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    payload = pickle.dumps({b"data": _Evil()}, protocol=2)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (folder / name).write_bytes(payload)
    with pytest.raises(IntegrityError, match="posix.system|os.system|refusing"):
        load_dataset("cifar10", root=tmp_path, download=False)
    assert not (tmp_path / "pwned-marker").exists()


def test_truncated_archive(tmp_path: Path, cifar_archive) -> None:
    cifar_archive(tmp_path, "cifar10")
    archive = tmp_path / "cifar-10-python.tar.gz"
    archive.write_bytes(archive.read_bytes()[:200])
    with pytest.raises(IntegrityError, match="delete it"):
        load_dataset("cifar10", root=tmp_path, download=False)


def test_archive_with_path_traversal_member_writes_nothing_outside(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    with tarfile.open(root / "cifar-10-python.tar.gz", "w:gz") as tar:
        info = tarfile.TarInfo("../escaped")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"bad"))
    with pytest.raises(IntegrityError, match="lacks"):
        load_dataset("cifar10", root=root, download=False)
    assert not (tmp_path / "escaped").exists()


def test_missing_offline_lists_places(tmp_path: Path, isolated_data_env: Path) -> None:
    with pytest.raises(DataNotFoundError) as err:
        load_dataset("cifar10", root=tmp_path / "nothing", download=False)
    msg = str(err.value)
    assert str(tmp_path / "nothing") in msg
    assert str(isolated_data_env / "lassoprune" / "cifar10") in msg
    assert "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz" in msg
    assert "root=DIR" in msg


def test_env_data_dir_is_searched(tmp_path: Path, cifar_folder, monkeypatch: pytest.MonkeyPatch) -> None:
    cifar_folder(tmp_path / "shared" / "cifar10", "cifar10")
    monkeypatch.setenv("LASSOPRUNE_DATA", str(tmp_path / "shared"))
    assert len(load_dataset("cifar10", split="test", download=False)) == 7
