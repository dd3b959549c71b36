"""Datasets, batch loading and augmentation.

Usage::

    from lassoprune.data import load_dataset, BatchLoader, default_augment

    train = load_dataset("cifar10", root="data", split="train")
    loader = BatchLoader(train, 128, shuffle=True, augment=default_augment("cifar10"))
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        for x, y in loader:  # x float32 (B, 3, 32, 32) normalised, y int64 (B,)
            ...

Registered datasets: ``cifar10``, ``cifar100``, ``fashion-mnist``, ``mnist``,
``imagefolder`` and ``synthetic`` (see :func:`list_datasets`).
"""

from lassoprune.data import cifar, idx, imagefolder, synthetic  # noqa: F401  (register the datasets)
from lassoprune.data._download import download
from lassoprune.data._registry import (
    Dataset,
    DatasetInfo,
    ImageDataset,
    dataset_info,
    default_augment,
    list_datasets,
    load_dataset,
)
from lassoprune.data.augment import Augment
from lassoprune.data.imagefolder import ImageFolderDataset
from lassoprune.data.loader import BatchLoader
from lassoprune.data.sampling import balanced_indices, stratified_subset

__all__ = [
    "Augment",
    "BatchLoader",
    "Dataset",
    "DatasetInfo",
    "ImageDataset",
    "ImageFolderDataset",
    "balanced_indices",
    "dataset_info",
    "default_augment",
    "download",
    "list_datasets",
    "load_dataset",
    "stratified_subset",
]
