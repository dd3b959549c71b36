"""Class-aware sample selection.

Both functions return sorted positions into ``labels`` and are deterministic
given ``seed``. They work in ``O(N log N)`` without a Python loop over
samples: samples are put in a random order, grouped by class with a stable
sort, and the first ``q_k`` of class ``k`` are kept.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from lassoprune.errors import LassopruneError


def _check_labels(labels: Tensor) -> Tensor:
    """``labels`` as a non-negative int64 ``(N,)`` CPU tensor."""
    labels = torch.as_tensor(labels).reshape(-1).to("cpu", torch.int64)
    if labels.numel() and int(labels.min()) < 0:
        raise LassopruneError("labels must be non-negative class indices")
    return labels


def _rank_within_class(labels: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """A random order of the samples and each one's rank among its class.

    Returns:
        ``order`` int64 ``(N,)`` (positions into ``labels``, grouped by class)
        and ``rank`` int64 ``(N,)`` with ``rank[i]`` = how many samples of the
        class of ``order[i]`` come before it.
    """
    n = labels.numel()
    perm = torch.randperm(n, generator=generator)
    grouped = torch.argsort(labels[perm], stable=True)
    order = perm[grouped]
    sorted_labels = labels[order]
    counts = torch.bincount(labels)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(n) - starts[sorted_labels]
    return order, rank


def _take(labels: Tensor, quota: Tensor, seed: int) -> Tensor:
    """Keep ``quota[k]`` random samples of each class ``k``; sorted int64 positions."""
    if labels.numel() == 0:
        return torch.empty(0, dtype=torch.int64)
    order, rank = _rank_within_class(labels, torch.Generator().manual_seed(seed))
    keep = rank < quota[labels[order]]
    return torch.sort(order[keep]).values


def balanced_indices(
    labels: Tensor,
    per_class: int,
    seed: int = 0,
    classes: Sequence[int] | Tensor | None = None,
) -> Tensor:
    """Exactly ``per_class`` random samples of every class in ``classes``.

    Args:
        labels: int64 ``(N,)``.
        per_class: samples to take from each class.
        seed: random seed.
        classes: the classes to sample; default ``0 .. labels.max()``.

    Returns:
        Sorted int64 ``(len(classes) * per_class,)`` positions into ``labels``.

    Raises:
        LassopruneError: a class is missing or has fewer than ``per_class`` samples.
    """
    labels = _check_labels(labels)
    if per_class < 1:
        raise LassopruneError(f"per_class must be >= 1, got {per_class}")
    top = int(labels.max()) + 1 if labels.numel() else 0
    wanted = torch.arange(top) if classes is None else torch.as_tensor(classes, dtype=torch.int64).reshape(-1)
    size = max(top, int(wanted.max()) + 1 if wanted.numel() else 0)
    counts = torch.bincount(labels, minlength=size)
    _check_counts(counts, wanted, per_class)
    quota = torch.zeros(size, dtype=torch.int64)
    quota[wanted] = per_class
    return _take(labels, quota, seed)


def _check_counts(counts: Tensor, wanted: Tensor, per_class: int) -> None:
    """Raise naming the first class of ``wanted`` with fewer than ``per_class`` samples."""
    for k in wanted.tolist():
        have = int(counts[k]) if 0 <= k < counts.numel() else 0
        if have < per_class:
            state = "is missing from the labels" if have == 0 else f"has only {have} samples"
            raise LassopruneError(
                f"class {k} {state}, but {per_class} per class were asked for; "
                "ask for fewer per class or leave that class out"
            )


def stratified_subset(labels: Tensor, n: int, seed: int = 0) -> Tensor:
    """``n`` random samples spread over the classes as evenly as their sizes allow.

    Every class present gets ``floor(n / K)`` or one more (classes too small
    give all they have and the rest is shared among the others); which classes
    get the extra one is random.

    Args:
        labels: int64 ``(N,)``.
        n: total samples, ``1 <= n <= N``.
        seed: random seed.

    Returns:
        Sorted int64 ``(n,)`` positions into ``labels``.
    """
    labels = _check_labels(labels)
    if not 1 <= n <= labels.numel():
        raise LassopruneError(
            f"subset size must be between 1 and {labels.numel()} (the dataset size), got {n}"
        )
    counts = torch.bincount(labels)
    quota = _even_quota(counts, n, torch.Generator().manual_seed(seed + 1))
    return _take(labels, quota, seed)


def _even_quota(counts: Tensor, n: int, generator: torch.Generator) -> Tensor:
    """Split ``n`` over classes with sizes ``counts`` (int64 ``(K,)``) as evenly as possible.

    Returns:
        int64 ``(K,)`` quotas with ``quota <= counts`` and ``quota.sum() == n``.
    """
    quota = torch.zeros_like(counts)
    active = counts > 0
    left = n
    while left > 0:
        share = left // int(active.sum())
        small = active & (counts - quota <= share)
        if share == 0 or not bool(small.any()):
            break
        left -= int((counts - quota)[small].sum())
        quota[small] = counts[small]
        active &= ~small
    share = left // int(active.sum()) if left else 0
    quota[active] += share
    left -= share * int(active.sum())
    if left:
        candidates = torch.nonzero(active).reshape(-1)
        extra = candidates[torch.randperm(candidates.numel(), generator=generator)[:left]]
        quota[extra] += 1
    return quota
