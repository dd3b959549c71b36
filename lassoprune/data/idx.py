"""MNIST and Fashion-MNIST, stored in the IDX format.

Each split is two files, ``<prefix>-images-idx3-ubyte`` and
``<prefix>-labels-idx1-ubyte`` (``train`` / ``t10k`` prefixes), gzipped
(``.gz``) or not. An IDX file is: two zero bytes, a type code (``0x08`` =
unsigned byte, the only one used here), the number of dimensions ``d``, ``d``
big-endian uint32 sizes, then the data in row-major order. Files are parsed
strictly: a wrong header, a truncated body or trailing bytes raise
:class:`~lassoprune.errors.IntegrityError`.

Files found on disk are not checked against the official MD5s (re-packed
copies, e.g. Debian's, differ in their gzip headers); downloaded files are.
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from torch import Tensor

from lassoprune.data._download import (
    download_dir,
    download as fetch,
    not_found_message,
    resolve_url,
    search_dirs,
)
from lassoprune.data._registry import DatasetEntry, DatasetInfo, ImageDataset, PathLike, register_dataset
from lassoprune.data.augment import Augment
from lassoprune.errors import DataNotFoundError, IntegrityError

_UBYTE = 0x08
_REFETCH = "delete the file and download it again (load with download=True)"
# System-wide copies searched after root and $LASSOPRUNE_DATA (Debian's fashion-mnist package).
SYSTEM_DIRS: dict[str, tuple[str, ...]] = {"fashion-mnist": ("/usr/share/datasets/fashion-mnist",)}
_SPLIT_STEMS: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


@dataclass(frozen=True)
class IdxSource:
    """Where one IDX dataset lives and what it is.

    Attributes:
        info: the dataset description.
        base_url: the official download folder.
        md5: MD5 of each official ``.gz`` file, keyed by file name.
        subdirs: usual sub-folders of a data root holding the files.
    """

    info: DatasetInfo
    base_url: str
    md5: dict[str, str]
    subdirs: tuple[str, ...]


FASHION_MNIST = IdxSource(
    info=DatasetInfo(
        name="fashion-mnist",
        num_classes=10,
        class_names=(
            "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
            "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
        ),
        in_channels=1,
        image_size=28,
        mean=(0.2860,),
        std=(0.3530,),
    ),
    base_url="http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    md5={
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12e480ee83cd310",
    },
    subdirs=("fashion-mnist", "FashionMNIST/raw", "fashion_mnist"),
)

MNIST = IdxSource(
    info=DatasetInfo(
        name="mnist",
        num_classes=10,
        class_names=tuple(str(d) for d in range(10)),
        in_channels=1,
        image_size=28,
        mean=(0.1307,),
        std=(0.3081,),
    ),
    base_url="https://ossci-datasets.s3.amazonaws.com/mnist/",
    md5={
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    },
    subdirs=("mnist", "MNIST/raw"),
)


# --------------------------------------------------------------------------- parsing


def parse_idx(data: bytes, origin: str = "<bytes>") -> Tensor:
    """Decode the bytes of an unsigned-byte IDX file.

    Args:
        data: the whole (decompressed) file.
        origin: name used in error messages.

    Returns:
        uint8 tensor whose shape is the IDX dimensions, e.g. ``(N, 28, 28)``.

    Raises:
        IntegrityError: bad magic number, type code, or a body whose length
            does not match the header.
    """
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise IntegrityError(f"{origin} is not an IDX file (bad magic number); {_REFETCH}")
    if data[2] != _UBYTE:
        raise IntegrityError(f"{origin}: IDX type code {data[2]:#04x} is not unsigned byte (0x08)")
    ndim = data[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(data) < header:
        raise IntegrityError(f"{origin}: truncated IDX header; {_REFETCH}")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    expected = header + math.prod(dims)
    if len(data) != expected:
        raise IntegrityError(
            f"{origin}: IDX body has {len(data) - header} bytes, header {dims} needs "
            f"{expected - header} (truncated or damaged file); {_REFETCH}"
        )
    if expected == header:
        return torch.empty(dims, dtype=torch.uint8)
    return torch.frombuffer(bytearray(memoryview(data)[header:]), dtype=torch.uint8).reshape(dims)


def read_idx(path: str | Path) -> Tensor:
    """Read an IDX file, gzipped (``.gz``) or not; see :func:`parse_idx`."""
    path = Path(path)
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                data = f.read()
        else:
            data = path.read_bytes()
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise IntegrityError(f"{path} is a damaged gzip file ({exc}); {_REFETCH}") from exc
    return parse_idx(data, str(path))


def images_and_labels(images: Tensor, labels: Tensor, info: DatasetInfo, origin: str) -> ImageDataset:
    """Build a dataset from raw IDX arrays.

    Args:
        images: uint8 ``(N, H, W)``.
        labels: uint8 ``(N,)``.

    Returns:
        :class:`ImageDataset` with images ``(N, 1, H, W)``.
    """
    if images.dim() != 3 or labels.dim() != 1:
        raise IntegrityError(
            f"{origin}: expected images (N, H, W) and labels (N,), "
            f"got {tuple(images.shape)} and {tuple(labels.shape)}"
        )
    side = info.image_size
    if tuple(images.shape[1:]) != (side, side):
        raise IntegrityError(f"{origin}: images are {tuple(images.shape[1:])}, {info.name} has {side}x{side}")
    if images.shape[0] != labels.shape[0]:
        raise IntegrityError(f"{origin}: {images.shape[0]} images but {labels.shape[0]} labels")
    if labels.numel() and int(labels.max()) >= info.num_classes:
        raise IntegrityError(f"{origin}: label {int(labels.max())} outside [0, {info.num_classes})")
    return ImageDataset(images.unsqueeze(1), labels.to(torch.int64), info)


# --------------------------------------------------------------------------- finding files


def _find_file(folder: Path, stem: str) -> Path | None:
    """``folder/stem.gz`` or ``folder/stem``, whichever exists first."""
    for candidate in (folder / f"{stem}.gz", folder / stem):
        if candidate.is_file():
            return candidate
    return None


def _find_split(folders: list[Path], stems: tuple[str, str]) -> tuple[Path, Path] | None:
    """The first folder holding both files of a split, as (images, labels) paths."""
    for folder in folders:
        found = [_find_file(folder, stem) for stem in stems]
        if found[0] is not None and found[1] is not None:
            return found[0], found[1]
    return None


def _fetch_split(
    source: IdxSource, stems: tuple[str, str], dest: Path, mirror: str | None
) -> tuple[Path, Path]:
    """Download the missing ``.gz`` files of a split into ``dest``; returns their paths."""
    paths = []
    for stem in stems:
        existing = _find_file(dest, stem)
        if existing is None:
            name = f"{stem}.gz"
            existing = fetch(resolve_url(name, source.base_url, mirror), dest / name, source.md5[name])
        paths.append(existing)
    return paths[0], paths[1]


def load_idx(
    source: IdxSource,
    *,
    root: PathLike | None,
    split: str,
    download: bool,
    mirror: str | None = None,
) -> ImageDataset:
    """Load one split of an IDX dataset, downloading it if allowed.

    Args:
        source: :data:`FASHION_MNIST` or :data:`MNIST`.
        root: folder searched first (``--data-root``).
        split: ``"train"`` or ``"test"``.
        download: whether missing files may be fetched.
        mirror: base URL replacing the official one.

    Returns:
        :class:`ImageDataset`, images uint8 ``(N, 1, 28, 28)``.
    """
    name = source.info.name
    stems = _SPLIT_STEMS[split]
    folders = search_dirs(name, root, source.subdirs, SYSTEM_DIRS.get(name, ()))
    found = _find_split(folders, stems)
    if found is None:
        found = _download_or_fail(source, stems, folders, root, split, download, mirror)
    images, labels = (read_idx(p) for p in found)
    return images_and_labels(images, labels, source.info, str(found[0].parent))


def _download_or_fail(
    source: IdxSource,
    stems: tuple[str, str],
    folders: list[Path],
    root: PathLike | None,
    split: str,
    download: bool,
    mirror: str | None,
) -> tuple[Path, Path]:
    """Fetch the split, or raise :class:`DataNotFoundError` saying where we looked and what to do."""
    urls = [resolve_url(f"{s}.gz", source.base_url, mirror) for s in stems]
    wanted = [f"{s}[.gz]" for s in stems]
    what = f"{source.info.name} ({split} split)"
    if not download:
        reason = "Downloading is disabled (download=False)."
        raise DataNotFoundError(not_found_message(what, folders, wanted, urls, reason))
    try:
        return _fetch_split(source, stems, download_dir(source.info.name, root), mirror)
    except DataNotFoundError as exc:
        reason = f"Downloading failed: {exc}"
        raise DataNotFoundError(not_found_message(what, folders, wanted, urls, reason)) from exc


def idx_info(source: IdxSource, *, root: PathLike | None = None) -> DatasetInfo:
    """The fixed description of an IDX dataset (``root`` is not needed)."""
    return source.info


register_dataset(
    DatasetEntry(
        name="fashion-mnist",
        load=partial(load_idx, FASHION_MNIST),
        info=partial(idx_info, FASHION_MNIST),
        augment=Augment(crop_padding=2, flip=True),
        summary="Fashion-MNIST, 10 clothing classes, 28x28 grey, 60k/10k",
    )
)
register_dataset(
    DatasetEntry(
        name="mnist",
        load=partial(load_idx, MNIST),
        info=partial(idx_info, MNIST),
        augment=Augment(crop_padding=2, flip=False),
        summary="MNIST handwritten digits, 10 classes, 28x28 grey, 60k/10k",
    )
)
