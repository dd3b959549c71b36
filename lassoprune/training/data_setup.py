"""From a dataset name to ready batch loaders (shared by the CLI and the pipeline)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from lassoprune.data import (
    BatchLoader,
    Dataset,
    DatasetInfo,
    balanced_indices,
    dataset_info,
    default_augment,
    load_dataset,
    stratified_subset,
)
from lassoprune.errors import DataNotFoundError, LassopruneError

VALIDATION_SEED = 0
"""Seed of the validation holdout: fixed, so runs with different seeds hold out the same images."""


@dataclass(frozen=True)
class Loaders:
    """Training and evaluation batches of one dataset.

    Attributes:
        info: the dataset's description (classes, channels, normalisation).
        train: shuffled, augmented batches of the (optionally subsampled)
            training split; None when not requested.
        test: ordered, un-augmented batches of the test split.
        image_size: the side every batch is padded or resized to.
        validation: ordered, un-augmented batches of the images held out of
            the training split (``validation_size > 0``), else None.
    """

    info: DatasetInfo
    train: BatchLoader | None
    test: BatchLoader
    image_size: int
    validation: BatchLoader | None = None


def split_validation(train_set: Dataset, size: int, name: str = "the dataset") -> tuple[Dataset, Dataset | None]:
    """Hold ``size`` class-stratified images out of a training split, for choosing hyperparameters.

    The holdout is drawn with :data:`VALIDATION_SEED` whatever the run's seed, so
    every run of a study trains on the same images and is judged on the same
    others; the test split is never touched.

    Returns:
        ``(rest, validation)``; ``validation`` is None when ``size == 0``.
    """
    if size == 0:
        return train_set, None
    if not 0 < size < len(train_set):
        raise LassopruneError(
            f"validation_size must be in [0, {len(train_set) - 1}] for {name} ({len(train_set)} training images), "
            f"got {size}"
        )
    held = stratified_subset(train_set.labels, size, seed=VALIDATION_SEED)
    rest = torch.ones(len(train_set), dtype=torch.bool)
    rest[held] = False
    return train_set.subset(rest.nonzero().squeeze(1)), train_set.subset(held)


def make_loaders(
    name: str,
    *,
    image_size: int,
    root: str | Path | None = None,
    batch_size: int = 128,
    eval_batch_size: int = 256,
    train_subset: int | None = None,
    seed: int = 0,
    augment: bool = True,
    download: bool = True,
    with_train: bool = True,
    distributed: tuple[int, int] | None = None,
    validation_size: int = 0,
) -> Loaders:
    """Load ``name`` and wrap its splits in :class:`~lassoprune.data.BatchLoader`.

    Args:
        train_subset: keep a class-stratified random subset of this many
            training images (seeded by ``seed``); None = all.
        augment: the dataset's default augmentation on the training batches.
        with_train: also load the training split.
        distributed: ``(rank, world_size)``: the training batches are this
            rank's share of each epoch (``batch_size`` is per rank); the test
            batches stay the whole test split.
        validation_size: hold this many class-stratified training images out
            (:func:`split_validation`); ``train_subset`` is drawn from the rest.
    """
    test_set = load_dataset(name, root=root, split="test", download=download)
    test = BatchLoader(test_set, batch_size=eval_batch_size, shuffle=False, image_size=image_size)
    train = validation = None
    if with_train or validation_size:
        train_set, held = split_validation(load_dataset(name, root=root, split="train", download=download),
                                           validation_size, name)
        if held is not None:
            validation = BatchLoader(held, batch_size=eval_batch_size, shuffle=False, image_size=image_size)
    if with_train:
        if train_subset is not None:
            if not 0 < train_subset <= len(train_set):
                raise LassopruneError(
                    f"train_subset must be in [1, {len(train_set)}] for {name}, got {train_subset}"
                )
            train_set = train_set.subset(stratified_subset(train_set.labels, train_subset, seed=seed))
        train = BatchLoader(
            train_set,
            batch_size=batch_size,
            shuffle=True,
            augment=default_augment(name) if augment else None,
            image_size=image_size,
            seed=seed,
            drop_last=_share(len(train_set), distributed) > batch_size,
            distributed=distributed,
        )
    return Loaders(info=test_set.info, train=train, test=test, image_size=image_size, validation=validation)


def _share(num_samples: int, distributed: tuple[int, int] | None) -> int:
    """Training samples one rank sees per epoch."""
    return num_samples if distributed is None else math.ceil(num_samples / distributed[1])


def require_every_class(size: int, num_classes: int, dataset: str, option: str = "size") -> None:
    """A class-balanced calibration set of ``size`` images needs at least one image of every class.

    Args:
        option: how the caller names the size in the error (``prune.calib_size``, ``--calib-size``).
    """
    if size < num_classes:
        raise LassopruneError(
            f"{option}={size} is below the {num_classes} classes of {dataset}: the calibration set draws every "
            f"class at least once; use {option} >= {num_classes}"
        )


def check_calibration_size(name: str, size: int, root: str | Path | None = None, option: str = "size") -> None:
    """:func:`require_every_class` from the dataset's description, before any data is loaded.

    A dataset whose files are missing is not checked here: loading it reports that with its own advice.
    """
    try:
        num_classes = dataset_info(name, root=root).num_classes
    except DataNotFoundError:
        return
    require_every_class(size, num_classes, name, option)


def calibration_batches(
    name: str,
    *,
    image_size: int,
    size: int = 500,
    root: str | Path | None = None,
    seed: int = 0,
    batch_size: int = 100,
    download: bool = True,
    validation_size: int = 0,
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """A class-balanced calibration set from the training split, as ready batches.

    ``size // num_classes`` images of every class (no augmentation), e.g. 500
    images = 50 per class on a 10-class dataset; never one of the
    ``validation_size`` held-out images (:func:`split_validation`).
    """
    train_set, _ = split_validation(load_dataset(name, root=root, split="train", download=download),
                                    validation_size, name)
    require_every_class(size, train_set.info.num_classes, name)
    per_class = size // train_set.info.num_classes
    indices = balanced_indices(train_set.labels, per_class, seed=seed)
    loader = BatchLoader(train_set, batch_size=batch_size, image_size=image_size, indices=indices)
    return list(loader)
