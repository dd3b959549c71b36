"""Class-balanced and stratified sample selection."""

from __future__ import annotations

import pytest
import torch

from lassoprune.data import balanced_indices, stratified_subset
from lassoprune.errors import LassopruneError


def _labels() -> torch.Tensor:
    """Imbalanced labels: class k has 5 + 3k samples, shuffled."""
    labels = torch.cat([torch.full((5 + 3 * k,), k) for k in range(6)])
    return labels[torch.randperm(labels.numel(), generator=torch.Generator().manual_seed(0))]


def test_balanced_counts_sorted_unique_deterministic() -> None:
    labels = _labels()
    idx = balanced_indices(labels, 4, seed=1)
    assert idx.dtype == torch.int64 and idx.numel() == 24
    assert torch.equal(idx, torch.sort(idx).values) and idx.unique().numel() == 24
    assert torch.equal(torch.bincount(labels[idx]), torch.full((6,), 4))
    assert torch.equal(idx, balanced_indices(labels, 4, seed=1))
    assert not torch.equal(idx, balanced_indices(labels, 4, seed=2))


def test_balanced_with_chosen_classes() -> None:
    labels = _labels()
    idx = balanced_indices(labels, 5, classes=[1, 4])
    assert sorted(labels[idx].tolist()) == [1] * 5 + [4] * 5


def test_balanced_errors_name_the_class() -> None:
    labels = _labels()
    with pytest.raises(LassopruneError, match="class 0 has only 5 samples"):
        balanced_indices(labels, 6)
    with pytest.raises(LassopruneError, match="class 9 is missing"):
        balanced_indices(labels, 2, classes=[0, 9])
    gap = labels[labels != 2]
    with pytest.raises(LassopruneError, match="class 2 is missing"):
        balanced_indices(gap, 1)


def test_stratified_is_as_even_as_possible() -> None:
    labels = _labels()  # class sizes 5, 8, 11, 14, 17, 20
    idx = stratified_subset(labels, 40, seed=3)
    assert idx.numel() == 40 and idx.unique().numel() == 40
    counts = torch.bincount(labels[idx], minlength=6).tolist()
    # 40 over 6 classes: class 0 gives all 5, the other five share 35 -> 7 each
    assert counts == [5, 7, 7, 7, 7, 7]
    counts = torch.bincount(labels[stratified_subset(labels, 13, seed=4)], minlength=6)
    assert int(counts.sum()) == 13 and int(counts.max() - counts.min()) == 1
    assert torch.equal(stratified_subset(labels, 13, seed=4), stratified_subset(labels, 13, seed=4))
    assert stratified_subset(labels, labels.numel()).numel() == labels.numel()


def test_stratified_rejects_bad_sizes() -> None:
    with pytest.raises(LassopruneError, match="between 1 and 75"):
        stratified_subset(_labels(), 76)
    with pytest.raises(LassopruneError):
        stratified_subset(_labels(), 0)
