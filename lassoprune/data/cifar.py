"""CIFAR-10 and CIFAR-100 from the official "python version" archives.

An archive (``cifar-10-python.tar.gz`` / ``cifar-100-python.tar.gz``) holds a
folder of pickled dicts. Each batch dict has ``b"data"``, a uint8 array
``(n, 3072)`` whose rows are one image in CHW order (1024 red, 1024 green,
1024 blue values, each row-major 32x32), and the labels (``b"labels"`` for
CIFAR-10, ``b"fine_labels"`` for CIFAR-100). CIFAR-100's ``meta`` file holds
``b"fine_label_names"``.

The pickles are read with a restricted unpickler that only rebuilds numpy
arrays, so a tampered file cannot run code; anything else raises
:class:`~lassoprune.errors.IntegrityError`.

A data folder may hold the extracted folder (``cifar-10-batches-py/``) or the
archive, which is then extracted next to itself (or into the user cache if
that folder is read-only). Downloaded archives are checked against the
official MD5; archives found on disk are checked only for their structure.
"""

from __future__ import annotations

import codecs
import dataclasses
import functools
import importlib
import os
import pickle
import tarfile
import tempfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lassoprune.data._download import (
    cache_dir,
    download as fetch,
    download_dir,
    not_found_message,
    resolve_url,
    search_dirs,
)
from lassoprune.data._registry import DatasetEntry, DatasetInfo, ImageDataset, PathLike, register_dataset
from lassoprune.data.augment import Augment
from lassoprune.errors import DataNotFoundError, IntegrityError

BASE_URL = "https://www.cs.toronto.edu/~kriz/"
_ROW_BYTES = 3 * 32 * 32
ARCHIVE_MD5: dict[str, str] = {
    "cifar-10-python.tar.gz": "c58f30108f718f92721af3b95e74349a",
    "cifar-100-python.tar.gz": "eb9058c3a382ffc7106e4002c42a8d85",
}

CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)

CIFAR100_CLASSES = tuple(
    """apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus
    butterfly camel can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch
    crab crocodile cup dinosaur dolphin elephant flatfish forest fox girl hamster house kangaroo
    keyboard lamp lawn_mower leopard lion lizard lobster man maple_tree motorcycle mountain mouse
    mushroom oak_tree orange orchid otter palm_tree pear pickup_truck pine_tree plain plate poppy
    porcupine possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk skyscraper
    snail snake spider squirrel streetcar sunflower sweet_pepper table tank telephone television
    tiger tractor train trout tulip turtle wardrobe whale willow_tree wolf woman worm""".split()
)


@dataclass(frozen=True)
class CifarSource:
    """Layout of one CIFAR archive.

    Attributes:
        info: description (class names of CIFAR-100 are re-read from ``meta``).
        archive: archive file name (its official MD5 is in :data:`ARCHIVE_MD5`).
        folder: name of the folder inside the archive.
        split_files: batch file names of each split.
        label_key: dict key of the labels in a batch.
        meta_file: file holding the class names, or ``None`` to keep ``info``'s.
        names_key: dict key of the class names in ``meta_file``.
    """

    info: DatasetInfo
    archive: str
    folder: str
    split_files: dict[str, tuple[str, ...]]
    label_key: bytes
    meta_file: str | None = None
    names_key: bytes = b""

    def needed(self, split: str) -> tuple[str, ...]:
        """Files of the extracted folder needed to load ``split``."""
        return self.split_files[split] + ((self.meta_file,) if self.meta_file else ())

    def all_files(self) -> tuple[str, ...]:
        """Every file extracted from the archive."""
        return tuple(dict.fromkeys(self.needed("train") + self.needed("test")))


CIFAR10 = CifarSource(
    info=DatasetInfo(
        name="cifar10",
        num_classes=10,
        class_names=CIFAR10_CLASSES,
        in_channels=3,
        image_size=32,
        mean=(0.4914, 0.4822, 0.4465),
        std=(0.2470, 0.2435, 0.2616),
    ),
    archive="cifar-10-python.tar.gz",
    folder="cifar-10-batches-py",
    split_files={"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)},
    label_key=b"labels",
)

CIFAR100 = CifarSource(
    info=DatasetInfo(
        name="cifar100",
        num_classes=100,
        class_names=CIFAR100_CLASSES,
        in_channels=3,
        image_size=32,
        mean=(0.5071, 0.4865, 0.4409),
        std=(0.2673, 0.2564, 0.2762),
    ),
    archive="cifar-100-python.tar.gz",
    folder="cifar-100-python",
    split_files={"train": ("train",), "test": ("test",)},
    label_key=b"fine_labels",
    meta_file="meta",
    names_key=b"fine_label_names",
)


# --------------------------------------------------------------------------- safe unpickling


def _numpy_core(module: str) -> Any:
    """``numpy._core.<module>`` (numpy >= 2) or ``numpy.core.<module>`` (numpy 1.x)."""
    try:
        return importlib.import_module(f"numpy._core.{module}")
    except ImportError:
        return importlib.import_module(f"numpy.core.{module}")


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """``_codecs.encode`` as Python 3 protocol-2 pickles use it for bytes, latin-1 only."""
    if codecs.lookup(encoding).name != "iso8859-1":
        raise IntegrityError(f"pickle asks for the codec {encoding!r}; only latin-1 is allowed")
    return text.encode("latin1")


@functools.cache
def _allowed_globals() -> dict[tuple[str, str], Callable[..., Any]]:
    """The only callables a CIFAR pickle may name: numpy array rebuilding helpers."""
    multiarray, numeric = _numpy_core("multiarray"), _numpy_core("numeric")
    allowed: dict[tuple[str, str], Callable[..., Any]] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_encode,
    }
    for prefix in ("numpy.core", "numpy._core"):
        allowed[(f"{prefix}.multiarray", "_reconstruct")] = multiarray._reconstruct
        if hasattr(numeric, "_frombuffer"):
            allowed[(f"{prefix}.numeric", "_frombuffer")] = numeric._frombuffer
    return allowed


class SafeUnpickler(pickle.Unpickler):
    """An unpickler that rebuilds only plain containers and numpy arrays."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _allowed_globals()[(module, name)]
        except KeyError:
            raise IntegrityError(
                f"refusing to unpickle {module}.{name}: CIFAR files hold only numpy arrays, so this "
                "file is not an official CIFAR batch; delete it and download the archive again"
            ) from None


def load_pickle(path: Path) -> dict[bytes, Any]:
    """Unpickle the dict in ``path`` safely (``encoding="bytes"``, so keys are bytes)."""
    try:
        with open(path, "rb") as f:
            obj = SafeUnpickler(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as exc:
        raise IntegrityError(f"{path} is damaged ({exc}); delete it and extract/download again") from exc
    if not isinstance(obj, dict):
        raise IntegrityError(f"{path} does not hold a dict; not a CIFAR batch file")
    return obj


# --------------------------------------------------------------------------- decoding


def decode_batch(batch: dict[bytes, Any], label_key: bytes, origin: str) -> tuple[Tensor, Tensor]:
    """Turn one batch dict into tensors.

    Returns:
        images uint8 ``(n, 3, 32, 32)`` and labels int64 ``(n,)``.
    """
    if b"data" not in batch or label_key not in batch:
        raise IntegrityError(f"{origin} lacks the keys b'data' and {label_key!r}; not a CIFAR batch")
    data = np.asarray(batch[b"data"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != _ROW_BYTES:
        raise IntegrityError(f"{origin}: data is {data.dtype} {data.shape}, expected uint8 (n, {_ROW_BYTES})")
    labels = torch.as_tensor(np.asarray(batch[label_key], dtype=np.int64))
    if labels.shape != (data.shape[0],):
        raise IntegrityError(f"{origin}: {data.shape[0]} images but labels of shape {tuple(labels.shape)}")
    images = torch.from_numpy(np.array(data, dtype=np.uint8, copy=True).reshape(-1, 3, 32, 32))
    return images, labels


def read_class_names(path: Path, key: bytes, count: int) -> tuple[str, ...]:
    """The ``count`` class names stored under ``key`` in the pickle ``path``."""
    names = load_pickle(path).get(key)
    if not isinstance(names, list) or len(names) != count:
        raise IntegrityError(f"{path}: expected {count} names under {key!r}")
    return tuple(n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names)


def read_folder(source: CifarSource, folder: Path, split: str) -> ImageDataset:
    """Load ``split`` from an extracted folder such as ``cifar-10-batches-py/``."""
    files = [folder / f for f in source.split_files[split]]
    parts = [decode_batch(load_pickle(f), source.label_key, str(f)) for f in files]
    images = torch.cat([p[0] for p in parts])
    labels = torch.cat([p[1] for p in parts])
    info = source.info
    if source.meta_file:
        names = read_class_names(folder / source.meta_file, source.names_key, info.num_classes)
        info = dataclasses.replace(info, class_names=names)
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= info.num_classes):
        raise IntegrityError(f"{folder}: labels outside [0, {info.num_classes})")
    return ImageDataset(images, labels, info)


# --------------------------------------------------------------------------- archives


def extract_archive(source: CifarSource, archive: Path, dest: Path) -> Path:
    """Extract the batch files of ``archive`` into ``dest/<source.folder>``.

    Only the expected regular files are written (so hostile member names
    cannot escape ``dest``), each atomically.

    Returns:
        The extracted folder.
    """
    out = dest / source.folder
    wanted = {f"{source.folder}/{name}" for name in source.all_files()}
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                if member.isfile() and str(PurePosixPath(member.name)) in wanted:
                    _extract_member(tar, member, out / PurePosixPath(member.name).name)
    except (tarfile.TarError, EOFError, zlib.error) as exc:
        raise IntegrityError(f"{archive} is damaged ({exc}); delete it and download it again") from exc
    missing = [f for f in source.all_files() if not (out / f).is_file()]
    if missing:
        raise IntegrityError(
            f"{archive} lacks {source.folder}/{', '.join(missing)}; not an official CIFAR archive"
        )
    return out


def _extract_member(tar: tarfile.TarFile, member: tarfile.TarInfo, target: Path) -> None:
    """Copy one archive member to ``target`` via a temporary file and a rename."""
    target.parent.mkdir(parents=True, exist_ok=True)
    src = tar.extractfile(member)
    assert src is not None  # regular files always have a stream
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f, src:
            while chunk := src.read(1 << 20):
                f.write(chunk)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _extract_anywhere(source: CifarSource, archive: Path) -> Path:
    """Extract next to ``archive``, or into the user cache if that folder is read-only."""
    dest = archive.parent if os.access(archive.parent, os.W_OK) else cache_dir(source.info.name)
    return extract_archive(source, archive, dest)


# --------------------------------------------------------------------------- locating


def _has_files(folder: Path, names: tuple[str, ...]) -> bool:
    """Whether every one of ``names`` is a file in ``folder``."""
    return all((folder / n).is_file() for n in names)


def _locate(source: CifarSource, folders: list[Path], split: str) -> Path | None:
    """An extracted folder holding ``split``: found, or made from a found archive."""
    needed = source.needed(split)
    for folder in folders:
        for candidate in (folder / source.folder, folder):
            if _has_files(candidate, needed):
                return candidate
        if (folder / source.archive).is_file():
            return _extract_anywhere(source, folder / source.archive)
    return None


def load_cifar(
    source: CifarSource,
    *,
    root: PathLike | None,
    split: str,
    download: bool,
    mirror: str | None = None,
) -> ImageDataset:
    """Load one split of CIFAR-10 or CIFAR-100, downloading the archive if allowed.

    Args:
        source: :data:`CIFAR10` or :data:`CIFAR100`.
        root: folder searched first (``--data-root``); downloads go there too.
        split: ``"train"`` or ``"test"``.
        download: whether the archive may be fetched.
        mirror: base URL replacing ``https://www.cs.toronto.edu/~kriz/``.

    Returns:
        :class:`ImageDataset`, images uint8 ``(N, 3, 32, 32)``.
    """
    name = source.info.name
    folders = search_dirs(name, root, (name,))
    folder = _locate(source, folders, split)
    if folder is None:
        folder = _download_or_fail(source, folders, root, split, download, mirror)
    return read_folder(source, folder, split)


def _download_or_fail(
    source: CifarSource,
    folders: list[Path],
    root: PathLike | None,
    split: str,
    download: bool,
    mirror: str | None,
) -> Path:
    """Download and extract the archive, or raise :class:`DataNotFoundError` with advice."""
    url = resolve_url(source.archive, BASE_URL, mirror)
    what = f"{source.info.name} ({split} split)"
    wanted = [source.folder + "/", source.archive]
    if not download:
        reason = "Downloading is disabled (download=False)."
        raise DataNotFoundError(not_found_message(what, folders, wanted, [url], reason))
    try:
        dest = download_dir(source.info.name, root) / source.archive
        archive = fetch(url, dest, ARCHIVE_MD5[source.archive])
    except DataNotFoundError as exc:
        reason = f"Downloading failed: {exc}"
        raise DataNotFoundError(not_found_message(what, folders, wanted, [url], reason)) from exc
    return extract_archive(source, archive, archive.parent)


def cifar_info(source: CifarSource, *, root: PathLike | None = None) -> DatasetInfo:
    """The description of a CIFAR dataset (official class names; ``root`` unused)."""
    return source.info


register_dataset(
    DatasetEntry(
        name="cifar10",
        load=functools.partial(load_cifar, CIFAR10),
        info=functools.partial(cifar_info, CIFAR10),
        augment=Augment(crop_padding=4, flip=True),
        summary="CIFAR-10, 10 classes, 32x32 RGB, 50k/10k",
    )
)
register_dataset(
    DatasetEntry(
        name="cifar100",
        load=functools.partial(load_cifar, CIFAR100),
        info=functools.partial(cifar_info, CIFAR100),
        augment=Augment(crop_padding=4, flip=True),
        summary="CIFAR-100 (fine labels), 100 classes, 32x32 RGB, 50k/10k",
    )
)
