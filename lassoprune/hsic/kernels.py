"""Per-channel Gaussian kernels and the Gram form of the HSIC lasso (METHODS.md 1.1-1.2).

For one channel group with features ``A`` of shape ``(N, C, H, W)`` (what the
consuming layers read), each channel c gives a vector per image,
``a_i^c = vec(pool(A)[i, c])`` (adaptive average pooling to at most P x P), and
a Gaussian kernel

    K^(c)_ij = exp(-||a_i^c - a_j^c||^2 / (2 sigma_c^2)),

``sigma_c`` by the median heuristic (sigma_c^2 = median over i < j of the
squared distances). Kernels are centred and normalised,
``Kbar = H K H / ||H K H||_F`` with ``H = I - 11^T / N``; a constant channel
(a dead ReLU) has ``H K H = 0`` and keeps the zero kernel (score 0, never NaN).

The regression ``min_B 1/2 sum_k ||vec(Lbar^(k)) - sum_c B_ck vec(Kbar^(c))||^2``
sees the data only through

    G = M M^T  (C x C),   R = M T^T  (C x K),   R_ck = <Kbar^(c), Lbar^(k)>,

with ``M`` the rows ``vec(Kbar^(c))`` (Yamada et al. 2014, HSIC lasso). Only
the upper triangle of each symmetric kernel is stored (off-diagonal entries
scaled by sqrt(2), so inner products are unchanged), one group at a time, and
kernels are built a chunk of channels at a time, so memory stays bounded.

Targets (one per column of ``R``):

- ``class``: ``Lbar^(k) = ebar_k ebar_k^T``, ``ebar_k = H e_k / ||H e_k||``, so
  ``R_ck = ebar_k^T Kbar^(c) ebar_k``;
- ``output``: one target, the centred normalised Gaussian kernel of the
  group's consumer output in the unpruned network (APIB, Guo et al. 2023);
- ``class-output``: ``L^(k) = L_out * (e_k e_k^T)``, the class-k block of the
  (uncentred) output kernel, centred and normalised; since ``Kbar`` is already
  centred, ``R_ck = sum_{i, j in class k} Kbar^(c)_ij L_out,ij / ||H L^(k) H||_F``.

Block HSIC (Climente-Gonzalez et al. 2019): with ``block`` set, the images are
split into blocks of that size (``permutations`` random splits) and ``G``, ``R``
are sums of the per-block Grams, so the cost is linear in N.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from enum import Enum

import torch
import torch.nn.functional as F
from torch import Tensor

from lassoprune.errors import LassopruneError, UnknownNameError

__all__ = [
    "HsicGram",
    "TargetKind",
    "centre_normalise",
    "channel_kernels",
    "class_target_kernels",
    "class_output_target_kernels",
    "gaussian_kernels",
    "hsic_gram",
    "output_target_kernel",
    "pool_features",
]

#: Elements of a float64 working buffer per channel chunk (about 64 MB).
_CHUNK_ELEMENTS = 8_000_000
#: Packed kernels of one group above this many bytes in float64 are stored in float32.
_FLOAT64_BYTES = 256 * 2**20


class TargetKind(str, Enum):
    """What the channel kernels are regressed on (METHODS.md 1.1)."""

    CLASS = "class"
    OUTPUT = "output"
    CLASS_OUTPUT = "class-output"

    @classmethod
    def parse(cls, value: str | TargetKind) -> TargetKind:
        """The member named ``value``; a clear error listing the valid names otherwise."""
        try:
            return cls(value)
        except ValueError:
            raise UnknownNameError("target kind", str(value), [k.value for k in cls]) from None

    @property
    def needs_output(self) -> bool:
        return self is not TargetKind.CLASS


@dataclass(frozen=True)
class HsicGram:
    """The data of one group's HSIC lasso in Gram form.

    Attributes:
        G: ``(C, C)`` float64, ``G_cd = <Kbar^(c), Kbar^(d)>``.
        R: ``(C, K)`` float64, ``R_ck = <Kbar^(c), Lbar^(k)>`` (K = 1 for ``output``).
        seconds_kernels: time spent building kernels and ``R``.
        seconds_gram: time spent in ``M M^T``.
    """

    G: Tensor
    R: Tensor
    seconds_kernels: float = 0.0
    seconds_gram: float = 0.0


def pool_features(features: Tensor, pool: int | None = 4) -> Tensor:
    """``(N, C, *spatial)`` -> ``(N, C, D)``: average-pooled to at most ``pool`` x ``pool``, flattened.

    ``(N, C)`` inputs (features of a linear layer) become ``(N, C, 1)``.
    ``pool=None`` keeps the full map.
    """
    if features.dim() == 2:
        return features.unsqueeze(-1)
    if features.dim() == 4 and pool is not None:
        if pool < 1:
            raise LassopruneError(f"pool must be a positive side length, got {pool}")
        h, w = features.shape[-2:]
        if h > pool or w > pool:
            features = F.adaptive_avg_pool2d(features, (min(h, pool), min(w, pool)))
    return features.reshape(features.shape[0], features.shape[1], -1)


def _squared_distances(x: Tensor) -> Tensor:
    """``(B, N, D)`` -> ``(B, N, N)`` squared Euclidean distances (float64, >= 0, zero diagonal)."""
    x = x.double()
    x = x - x.mean(dim=1, keepdim=True)  # translation-invariant; better conditioned
    sq = (x * x).sum(-1)
    d2 = torch.baddbmm(sq.unsqueeze(2), x, x.transpose(1, 2), alpha=-2.0)
    d2.add_(sq.unsqueeze(1)).clamp_(min=0.0)
    d2.diagonal(dim1=1, dim2=2).zero_()
    return d2


#: The median heuristic reads at most this many pairs (a fixed random subset beyond it).
_MEDIAN_PAIRS = 20_000


def _median_pairs(n: int) -> tuple[Tensor, Tensor]:
    """Pairs i < j the median heuristic reads: all of them, or a fixed random subset of ``_MEDIAN_PAIRS``."""
    iu = torch.triu_indices(n, n, offset=1)
    if iu.shape[1] > _MEDIAN_PAIRS:
        pick = torch.randperm(iu.shape[1], generator=torch.Generator().manual_seed(0))[:_MEDIAN_PAIRS]
        iu = iu[:, pick]
    return iu[0], iu[1]


def _median_bandwidth(d2: Tensor, x: Tensor) -> Tensor:
    """``2 sigma^2`` per kernel by the median heuristic; 0 for constant inputs.

    ``d2``: ``(B, N, N)`` squared distances of ``x`` ``(B, N, D)``. sigma^2 is the
    median of the squared distances over pairs i < j (over a fixed random subset
    of 20,000 pairs when there are more). When more than half of the pairs
    coincide (a mostly dead channel) the median is 0; then the mean of the
    positive squared distances is used instead.
    """
    rows, cols = _median_pairs(d2.shape[-1])
    pairs = d2[:, rows, cols]
    if pairs.shape[1] == 0:
        return torch.zeros(d2.shape[0], dtype=d2.dtype)
    sigma2 = pairs.median(dim=1).values
    zero = sigma2 <= 0
    if bool(zero.any()):
        dead = d2[zero]
        sigma2[zero] = dead.sum((1, 2)) / (dead > 0).sum((1, 2)).clamp(min=1)
    xd = x.double()
    spread = (xd - xd.mean(dim=1, keepdim=True)).square().sum((1, 2))
    scale = xd.square().sum((1, 2))
    constant = spread <= 1e-20 * scale + 1e-300
    return torch.where(constant, torch.zeros_like(sigma2), 2.0 * sigma2)


def gaussian_kernels(x: Tensor) -> Tensor:
    """``(B, N, D)`` -> ``(B, N, N)`` float64 Gaussian kernels, median-heuristic bandwidth each.

    A constant input gives the all-ones kernel (its centred kernel is 0).
    """
    k = _squared_distances(x)
    width = _median_bandwidth(k, x)
    inv = torch.where(width > 0, -1.0 / torch.where(width > 0, width, 1.0), 0.0)  # constant: exp(0) = 1
    return k.mul_(inv.view(-1, 1, 1)).exp_()


def centre_normalise(k: Tensor, eps: float = 1e-12, inplace: bool = False) -> Tensor:
    """``H K H / ||H K H||_F`` over the last two dims (``(..., N, N)``, float64); a zero centred kernel stays 0.

    ``inplace=True`` overwrites a float64 ``k`` (saves memory).
    """
    k = k.double() if inplace else k.double().clone()
    k.sub_(k.mean(dim=-1, keepdim=True))
    k.sub_(k.mean(dim=-2, keepdim=True))
    norm = torch.linalg.vector_norm(k, dim=(-2, -1), keepdim=True)
    tiny = norm <= eps * k.shape[-1]  # centred Gaussian kernels have norm O(1): this is round-off
    return k.mul_(torch.where(tiny, 0.0, 1.0 / torch.where(tiny, 1.0, norm)))


def channel_kernels(features: Tensor) -> Tensor:
    """``(N, C, D)`` -> ``(C, N, N)`` centred, normalised channel kernels ``Kbar^(c)`` (float64).

    Builds all C kernels at once: meant for tests and small N; :func:`hsic_gram`
    never holds more than a chunk of them.
    """
    return centre_normalise(gaussian_kernels(features.transpose(0, 1)), inplace=True)


def output_target_kernel(outputs: Tensor) -> Tensor:
    """``(N, D)`` consumer outputs -> ``(N, N)`` uncentred Gaussian kernel ``L_out`` (median heuristic)."""
    return gaussian_kernels(outputs.reshape(outputs.shape[0], -1).unsqueeze(0))[0]


def _one_hot(labels: Tensor, num_classes: int) -> Tensor:
    return F.one_hot(labels.long(), num_classes).double()  # (N, K)


def class_target_kernels(labels: Tensor, num_classes: int) -> Tensor:
    """``(K, N, N)`` explicit ``Lbar^(k) = H e_k e_k^T H`` normalised (for tests; N^2 K memory)."""
    e = _one_hot(labels, num_classes).T  # (K, N)
    return centre_normalise(e.unsqueeze(2) * e.unsqueeze(1))


def class_output_target_kernels(l_out: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """``(K, N, N)`` explicit ``L^(k) = L_out * (e_k e_k^T)``, centred and normalised (for tests)."""
    e = _one_hot(labels, num_classes).T
    return centre_normalise(l_out.unsqueeze(0) * e.unsqueeze(2) * e.unsqueeze(1))


class _Targets:
    """Computes one chunk's ``R`` rows from full kernels, without forming ``N^2 x K`` targets."""

    def __init__(self, kind: TargetKind, labels: Tensor, num_classes: int, outputs: Tensor | None) -> None:
        self.kind = kind
        n = labels.numel()
        if kind.needs_output and outputs is None:
            raise LassopruneError(f"target {kind.value!r} needs the consumers' outputs")
        if kind is TargetKind.CLASS:
            e = _one_hot(labels, num_classes)
            e = e - e.mean(0, keepdim=True)  # H e_k
            norm = e.norm(dim=0)
            self.ebar = torch.where(norm > 0, e / torch.where(norm > 0, norm, torch.ones_like(norm)), 0.0)  # (N, K)
        elif kind is TargetKind.OUTPUT:
            self.lbar = centre_normalise(output_target_kernel(outputs))  # (N, N)
        else:
            l_out = output_target_kernel(outputs)
            same = labels.view(-1, 1) == labels.view(1, -1)
            self.masked = l_out * same  # only class blocks meet the targets
            self.labels = labels.long()
            self.num_classes = num_classes
            # ||H L^(k) H||_F per class, one N x N at a time
            norms = torch.zeros(num_classes, dtype=torch.float64)
            for k in torch.unique(self.labels).tolist():
                member = (self.labels == k).double()
                block = self.masked * member.view(-1, 1) * member.view(1, -1)
                block = block - block.mean(-1, keepdim=True)
                block = block - block.mean(-2, keepdim=True)
                norms[k] = torch.linalg.matrix_norm(block)
            self.inv_norm = torch.where(norms > 1e-12 * n, 1.0 / torch.where(norms > 0, norms, 1.0), 0.0)

    @property
    def width(self) -> int:
        if self.kind is TargetKind.CLASS:
            return self.ebar.shape[1]
        return 1 if self.kind is TargetKind.OUTPUT else self.num_classes

    def rows(self, kbar: Tensor) -> Tensor:
        """``(c, N, N)`` centred normalised kernels -> ``(c, K)`` rows of ``R``."""
        if self.kind is TargetKind.CLASS:
            return (torch.matmul(kbar, self.ebar) * self.ebar.unsqueeze(0)).sum(1)
        if self.kind is TargetKind.OUTPUT:
            return (kbar * self.lbar).sum((1, 2)).unsqueeze(1)
        per_row = (kbar * self.masked).sum(2)  # (c, N): sum_j over the row's own class
        r = torch.zeros(kbar.shape[0], self.num_classes, dtype=torch.float64)
        r.index_add_(1, self.labels, per_row)
        return r * self.inv_norm


def _gram_dense(
    features: Tensor, kind: TargetKind, labels: Tensor, num_classes: int, outputs: Tensor | None,
    dtype: torch.dtype | None,
) -> tuple[Tensor, Tensor, float, float]:
    """``G``, ``R`` over all N images (one block), kernels built a chunk of channels at a time."""
    started = time.perf_counter()
    n, c = features.shape[0], features.shape[1]
    targets = _Targets(kind, labels, num_classes, outputs)
    iu = torch.triu_indices(n, n)
    flat = iu[0] * n + iu[1]
    weight = torch.where(iu[0] == iu[1], 1.0, math.sqrt(2.0)).double()
    packed = flat.numel()
    if dtype is None:
        dtype = torch.float64 if c * packed * 8 <= _FLOAT64_BYTES else torch.float32
    m = torch.empty(c, packed, dtype=dtype)
    r = torch.empty(c, targets.width, dtype=torch.float64)
    chunk = max(1, _CHUNK_ELEMENTS // max(1, 3 * n * n))
    per_channel = features.transpose(0, 1)  # (C, N, D)
    for start in range(0, c, chunk):
        stop = min(c, start + chunk)
        kbar = centre_normalise(gaussian_kernels(per_channel[start:stop]), inplace=True)
        r[start:stop] = targets.rows(kbar)
        m[start:stop] = (kbar.reshape(stop - start, n * n)[:, flat] * weight).to(dtype)
        del kbar
    kernel_seconds = time.perf_counter() - started
    started = time.perf_counter()
    g = (m @ m.T).double()
    g = 0.5 * (g + g.T)
    return g, r, kernel_seconds, time.perf_counter() - started


def hsic_gram(
    features: Tensor,
    labels: Tensor,
    num_classes: int,
    target: str | TargetKind = TargetKind.CLASS_OUTPUT,
    outputs: Tensor | None = None,
    block: int | None = None,
    permutations: int = 1,
    seed: int = 0,
    dtype: torch.dtype | None = None,
) -> HsicGram:
    """``G`` and ``R`` of one group's HSIC lasso (module docstring).

    Args:
        features: ``(N, C, D)`` pooled channel features (:func:`pool_features`).
        labels: ``(N,)`` class indices in ``[0, num_classes)``.
        num_classes: K.
        target: ``class``, ``output`` or ``class-output``.
        outputs: ``(N, D_out)`` pooled consumer outputs of the unpruned network
            (needed by ``output`` and ``class-output``).
        block: block HSIC with blocks of this many images (None: all N at once).
        permutations: random splits into blocks (block HSIC only).
        seed: of the block permutations.
        dtype: storage of the packed kernels (None: float64 when small, else float32).

    Returns:
        :class:`HsicGram` with ``G`` ``(C, C)`` and ``R`` ``(C, K)`` (K = 1 for ``output``).
    """
    kind = TargetKind.parse(target)
    labels = torch.as_tensor(labels).reshape(-1).long()
    n = features.shape[0]
    if labels.numel() != n:
        raise LassopruneError(f"{labels.numel()} labels for {n} feature rows")
    if outputs is not None:
        outputs = outputs.reshape(n, -1)
    if block is None or block >= n:
        g, r, tk, tg = _gram_dense(features, kind, labels, num_classes, outputs, dtype)
        return HsicGram(g, r, tk, tg)
    if block < 2 or permutations < 1:
        raise LassopruneError(f"block HSIC needs block >= 2 and permutations >= 1, got {block}, {permutations}")
    gen = torch.Generator().manual_seed(seed)
    g_sum: Tensor | None = None
    r_sum: Tensor | None = None
    seconds_k = seconds_g = 0.0
    for _ in range(permutations):
        order = torch.randperm(n, generator=gen)
        for start in range(0, n - block + 1, block):  # a short tail is dropped, as in block HSIC
            idx = order[start : start + block]
            out = outputs[idx] if outputs is not None else None
            g, r, tk, tg = _gram_dense(features[idx], kind, labels[idx], num_classes, out, dtype)
            g_sum = g if g_sum is None else g_sum + g
            r_sum = r if r_sum is None else r_sum + r
            seconds_k += tk
            seconds_g += tg
    assert g_sum is not None and r_sum is not None
    return HsicGram(g_sum, r_sum, seconds_k, seconds_g)
