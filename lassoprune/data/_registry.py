"""Core dataset types and the table of dataset names.

A *dataset* here is anything that follows :class:`Dataset`: it knows its
:class:`DatasetInfo`, its labels, and can return a batch of images as one
``uint8`` tensor. Small datasets are :class:`ImageDataset` (all images in one
tensor); large folder datasets decode files on demand (see ``imagefolder``).

Each dataset module registers a :class:`DatasetEntry` at import time; the
public functions :func:`load_dataset`, :func:`dataset_info`,
:func:`list_datasets` and :func:`default_augment` look names up here.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from lassoprune.data.augment import Augment
from lassoprune.errors import LassopruneError, UnknownNameError
from lassoprune.utils.registry import Registry

SPLITS: tuple[str, ...] = ("train", "test")

PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class DatasetInfo:
    """Static description of a dataset.

    Attributes:
        name: registered dataset name, e.g. ``"cifar10"``.
        num_classes: number of classes ``K``; labels lie in ``[0, K)``.
        class_names: ``K`` human-readable class names, index = label.
        in_channels: image channels ``C`` (1 for grey, 3 for RGB).
        image_size: native side ``S`` of the (square) images, ``H = W = S``.
        mean: per-channel mean of the pixels in ``[0, 1]`` units, length ``C``.
        std: per-channel standard deviation in ``[0, 1]`` units, length ``C``.
    """

    name: str
    num_classes: int
    class_names: tuple[str, ...]
    in_channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.class_names) != self.num_classes:
            raise ValueError(
                f"{self.name}: {len(self.class_names)} class names for {self.num_classes} classes"
            )
        if len(self.mean) != self.in_channels or len(self.std) != self.in_channels:
            raise ValueError(f"{self.name}: mean/std need one value per channel ({self.in_channels})")
        if any(s <= 0 for s in self.std):
            raise ValueError(f"{self.name}: std must be positive, got {self.std}")


@runtime_checkable
class Dataset(Protocol):
    """What the loader and the pruning methods need from a dataset."""

    @property
    def info(self) -> DatasetInfo: ...

    @property
    def labels(self) -> Tensor:
        """Labels, int64 ``(N,)``."""
        ...

    def __len__(self) -> int: ...

    def get_batch(self, indices: Tensor) -> Tensor:
        """Images at ``indices`` (int64 ``(B,)``) as uint8 ``(B, C, S, S)``."""
        ...

    def subset(self, indices: Tensor) -> Dataset:
        """A dataset of the same type holding only ``indices`` (int64 ``(M,)``)."""
        ...


def as_index_tensor(indices: Tensor | list[int] | range, length: int) -> Tensor:
    """Check and convert positions into a dataset of ``length`` samples.

    Returns:
        int64 ``(B,)`` tensor on the CPU.
    """
    idx = torch.as_tensor(indices, dtype=torch.int64).reshape(-1).cpu()
    if idx.numel() and (int(idx.min()) < -length or int(idx.max()) >= length):
        raise IndexError(f"index out of range for a dataset of {length} samples")
    return idx


class ImageDataset:
    """A dataset held in memory as one uint8 tensor.

    Args:
        images: uint8 ``(N, C, S, S)``.
        labels: int64 ``(N,)`` with values in ``[0, info.num_classes)``.
        info: the description; ``info.in_channels`` must equal ``C``.
    """

    def __init__(self, images: Tensor, labels: Tensor, info: DatasetInfo) -> None:
        _check_images(images, info)
        labels = torch.as_tensor(labels, dtype=torch.int64)
        _check_labels(labels, images.shape[0], info)
        self._images = images
        self._labels = labels
        self._info = info

    @property
    def info(self) -> DatasetInfo:
        return self._info

    @property
    def images(self) -> Tensor:
        """All images, uint8 ``(N, C, S, S)``."""
        return self._images

    @property
    def labels(self) -> Tensor:
        """All labels, int64 ``(N,)``."""
        return self._labels

    def __len__(self) -> int:
        return int(self._labels.shape[0])

    def __repr__(self) -> str:
        n, c, h, w = self._images.shape
        classes = self._info.num_classes
        return f"ImageDataset({self._info.name!r}, n={n}, shape=({c}, {h}, {w}), classes={classes})"

    def get_batch(self, indices: Tensor) -> Tensor:
        """Images at ``indices`` (int64 ``(B,)``) as uint8 ``(B, C, S, S)``."""
        return self._images[as_index_tensor(indices, len(self))]

    def subset(self, indices: Tensor) -> ImageDataset:
        """An :class:`ImageDataset` with only the samples at ``indices`` (int64 ``(M,)``)."""
        idx = as_index_tensor(indices, len(self))
        return ImageDataset(self._images[idx], self._labels[idx], self._info)


def _check_images(images: Tensor, info: DatasetInfo) -> None:
    """Raise ``ValueError`` unless ``images`` is uint8 ``(N, C, H, W)`` matching ``info``."""
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise ValueError(f"images must be uint8 (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
    if images.shape[1] != info.in_channels:
        raise ValueError(f"{info.name}: images have {images.shape[1]} channels, info says {info.in_channels}")


def _check_labels(labels: Tensor, n: int, info: DatasetInfo) -> None:
    """Raise ``ValueError`` unless ``labels`` is ``(n,)`` with values in ``[0, K)``."""
    if labels.shape != (n,):
        raise ValueError(f"{info.name}: labels have shape {tuple(labels.shape)}, expected ({n},)")
    if n and (int(labels.min()) < 0 or int(labels.max()) >= info.num_classes):
        raise ValueError(f"{info.name}: labels must lie in [0, {info.num_classes})")


# --------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class DatasetEntry:
    """How to load and describe one named dataset.

    Attributes:
        name: the registered name.
        load: ``load(root, split, download, **options) -> Dataset``.
        info: ``info(root, **options) -> DatasetInfo``; ``root`` may be ``None``.
        augment: the default training augmentation, or ``None`` for none.
        summary: one line shown by the command line's dataset listing.
    """

    name: str
    load: Callable[..., Dataset]
    info: Callable[..., DatasetInfo]
    augment: Augment | None
    summary: str = ""


_REGISTRY: Registry[DatasetEntry] = Registry("dataset")


def register_dataset(entry: DatasetEntry) -> None:
    """Add ``entry`` to the table; a name can be registered once (else a ``ValueError``)."""
    _REGISTRY.add(entry.name, entry)


def get_entry(name: str) -> DatasetEntry:
    """The entry of ``name``; an unknown name lists the registered ones."""
    return _REGISTRY.get(name)


def list_datasets() -> list[str]:
    """Sorted names of all registered datasets."""
    return _REGISTRY.names()


def check_split(split: str) -> str:
    """Return ``split`` if it is one of :data:`SPLITS`, else raise :class:`UnknownNameError`."""
    if split not in SPLITS:
        raise UnknownNameError("split", split, SPLITS)
    return split


def _check_options(entry: DatasetEntry, func: Callable[..., Any], options: dict[str, Any]) -> None:
    """Raise a :class:`LassopruneError` naming the valid options if ``options`` has unknown keys."""
    params = inspect.signature(func).parameters
    fixed = {"root", "split", "download"}
    valid = sorted(p for p in params if p not in fixed and params[p].kind is inspect.Parameter.KEYWORD_ONLY)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        choices = ", ".join(valid) if valid else "(none)"
        raise LassopruneError(
            f"dataset {entry.name!r} has no option(s) {', '.join(unknown)}; valid options: {choices}"
        )


def load_dataset(
    name: str,
    root: PathLike | None = None,
    split: str = "train",
    download: bool = True,
    **options: Any,
) -> Dataset:
    """Load the ``split`` of the dataset registered as ``name``.

    Args:
        name: one of :func:`list_datasets`.
        root: a directory to look in first (the command line's ``--data-root``).
        split: ``"train"`` or ``"test"``.
        download: fetch missing files from the official mirror when allowed.
        **options: dataset-specific keyword options (e.g. ``mirror=`` for the
            downloadable datasets, ``n_per_class=`` for ``synthetic``).

    Returns:
        A :class:`Dataset`; images come back from ``get_batch`` as uint8
        ``(B, C, S, S)``.
    """
    entry = get_entry(name)
    check_split(split)
    _check_options(entry, entry.load, options)
    return entry.load(root=root, split=split, download=download, **options)


def dataset_info(name: str, root: PathLike | None = None, **options: Any) -> DatasetInfo:
    """The :class:`DatasetInfo` of ``name`` without loading images.

    Takes the same ``options`` as :func:`load_dataset` (those that do not
    change the description are ignored). For ``imagefolder`` the classes are
    read from the directory ``root``.
    """
    entry = get_entry(name)
    _check_options(entry, entry.load, options)
    accepted = inspect.signature(entry.info).parameters
    return entry.info(root=root, **{k: v for k, v in options.items() if k in accepted})


def default_augment(name: str) -> Augment | None:
    """The default training augmentation of ``name`` (``None`` means none)."""
    return get_entry(name).augment
