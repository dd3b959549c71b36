"""Registry, DatasetInfo / ImageDataset protocol, and the synthetic dataset."""

from __future__ import annotations

import pytest
import torch

from lassoprune.data import DatasetInfo, ImageDataset, dataset_info, list_datasets, load_dataset
from lassoprune.errors import LassopruneError, UnknownNameError


def test_registry_names_and_errors() -> None:
    names = list_datasets()
    assert names == sorted(names)
    assert {"cifar10", "cifar100", "fashion-mnist", "imagefolder", "mnist", "synthetic"} <= set(names)
    with pytest.raises(UnknownNameError, match="valid datasets: cifar10, cifar100"):
        load_dataset("imagenette")
    with pytest.raises(UnknownNameError, match="unknown split 'val'; valid splits: test, train"):
        load_dataset("synthetic", split="val")
    with pytest.raises(LassopruneError, match="valid options: image_size, in_channels, n_per_class"):
        load_dataset("synthetic", n_per_klass=3)


def test_dataset_info_values() -> None:
    c10 = dataset_info("cifar10")
    assert (c10.num_classes, c10.in_channels, c10.image_size) == (10, 3, 32)
    assert c10.mean == (0.4914, 0.4822, 0.4465) and c10.std == (0.2470, 0.2435, 0.2616)
    c100 = dataset_info("cifar100")
    assert c100.num_classes == 100 and c100.mean == (0.5071, 0.4865, 0.4409)
    fm = dataset_info("fashion-mnist", mirror="http://unused/")
    assert fm.class_names[6] == "Shirt" and fm.mean == (0.2860,) and fm.std == (0.3530,)
    assert dataset_info("mnist").mean == (0.1307,) and dataset_info("mnist").std == (0.3081,)
    syn = dataset_info("synthetic", num_classes=4, in_channels=1, image_size=12, seed=5)
    assert (syn.num_classes, syn.in_channels, syn.image_size) == (4, 1, 12)
    with pytest.raises(Exception):
        c10.num_classes = 3  # type: ignore[misc]


def test_image_dataset_protocol() -> None:
    info = DatasetInfo("toy", 3, ("a", "b", "c"), 2, 4, (0.5, 0.5), (0.2, 0.2))
    images = torch.arange(5 * 2 * 4 * 4).remainder(256).to(torch.uint8).view(5, 2, 4, 4)
    ds = ImageDataset(images, torch.tensor([0, 1, 2, 1, 0]), info)
    assert len(ds) == 5 and ds.labels.dtype == torch.int64
    assert torch.equal(ds.get_batch(torch.tensor([4, 1])), images[[4, 1]])
    sub = ds.subset(torch.tensor([1, 3]))
    assert isinstance(sub, ImageDataset) and sub.labels.tolist() == [1, 1] and sub.info is info
    with pytest.raises(ValueError):
        ImageDataset(images.float(), ds.labels, info)
    with pytest.raises(ValueError):
        ImageDataset(images, torch.tensor([0, 1, 2, 3, 0]), info)
    with pytest.raises(IndexError):
        ds.get_batch(torch.tensor([5]))


def test_synthetic_is_deterministic_and_class_conditional() -> None:
    a = load_dataset("synthetic", n_per_class=20, seed=1)
    b = load_dataset("synthetic", n_per_class=20, seed=1)
    test = load_dataset("synthetic", split="test", n_per_class=20, seed=1)
    other = load_dataset("synthetic", n_per_class=20, seed=2)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.images, test.images) and not torch.equal(a.images, other.images)
    assert a.images.shape == (200, 3, 32, 32) and torch.equal(torch.bincount(a.labels), torch.full((10,), 20))
    assert len(load_dataset("synthetic", split="test")) == 200  # default 20 per class
    # nearest class mean on train classifies test well: the classes are separable
    means = torch.stack([a.images[a.labels == k].float().mean(0) for k in range(10)]).flatten(1)
    dist = torch.cdist(test.images.float().flatten(1), means)
    assert (dist.argmin(1) == test.labels).float().mean() > 0.9
    small = load_dataset("synthetic", num_classes=3, in_channels=1, image_size=9, n_per_class=2)
    assert small.images.shape == (6, 1, 9, 9)
    with pytest.raises(LassopruneError, match="n_per_class"):
        load_dataset("synthetic", n_per_class=0)
