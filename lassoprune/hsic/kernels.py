"""Per-channel kernels and the Gram form of the HSIC lasso (docs/METHODS.md 1.1-1.2).

For one channel group with features ``A`` of shape ``(N, C, H, W)`` (what the
consuming layers read), each channel c gives a vector per image,
``a_i^c = vec(pool(A)[i, c])`` of length D (adaptive average pooling to at most
P x P), and a kernel of one of three families (:class:`KernelKind`):

- ``median``: ``K_ij = exp(-||a_i - a_j||^2 / (2 sigma_c^2))``, ``sigma_c`` by the
  median heuristic (sigma_c^2 = median over i < j of the squared distances):
  every channel's kernel has the same spread, whatever its activation scale;
- ``gaussian``: ``K_ij = exp(-||a_i - a_j||^2 / D)``, a fixed bandwidth (APIB's
  earlier setting): a weak channel has small distances, a kernel near all-ones
  and a centred kernel near 0;
- ``laplace``: ``K_ij = exp(-sqrt(0.5 / D) ||a_i - a_j||)`` (APIB's final setting).

Kernels are centred, ``H K H`` with ``H = I - 11^T / N``, and (``normalise``,
the first version of this spec) divided by ``||H K H||_F``; APIB leaves them
unnormalised, so a channel's kernel energy carries its strength. A constant
channel (a dead ReLU) has ``H K H = 0`` and keeps the zero kernel (score 0,
never NaN). The output kernel of the ``output`` / ``class-output`` responses uses the
same family, with D the length of the consumer's pooled output.

The regression ``min_B 1/2 sum_k ||vec(Lbar^(k)) - sum_c B_ck vec(Kbar^(c))||^2``
sees the data only through

    G = M M^T  (C x C),   R = M T^T  (C x K),   R_ck = <Kbar^(c), Lbar^(k)>,

with ``M`` the rows ``vec(Kbar^(c))`` (Yamada et al. 2014, HSIC lasso). Only
the upper triangle of each symmetric kernel is stored (off-diagonal entries
scaled by sqrt(2), so inner products are unchanged), one group at a time, and
kernels are built a chunk of channels at a time, so memory stays bounded.
For N >= 256 kernels are held in float32 (distances and bandwidths in
float64); G and R are returned in float64.

Responses (one per column of ``R``, :class:`ResponseKind`):

- ``class``: ``Lbar^(k) = ebar_k ebar_k^T``, ``ebar_k = H e_k / ||H e_k||``, so
  ``R_ck = ebar_k^T Kbar^(c) ebar_k``;
- ``output``: one response, the centred normalised kernel of the
  group's consumer output in the unpruned network (APIB, Guo et al. 2023);
- ``class-output``: ``L^(k) = L_out * (e_k e_k^T)``, the class-k block of the
  (uncentred) output kernel, centred and normalised; since ``Kbar`` is already
  centred, ``R_ck = sum_{i, j in class k} Kbar^(c)_ij L_out,ij / ||H L^(k) H||_F``.

Block HSIC (Climente-Gonzalez et al. 2019): with ``block`` set, the images are
split into blocks of that size (``permutations`` random splits) and ``G``, ``R``
are sums of the per-block Grams, so the cost is linear in N.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from lassoprune.errors import LassopruneError
from lassoprune.utils.enums import NamedEnum

__all__ = [
    "ClassFit",
    "HsicGram",
    "KernelKind",
    "ResponseKind",
    "centre_normalise",
    "channel_kernels",
    "class_response_kernels",
    "class_fit_gram",
    "class_output_response_kernels",
    "gaussian_kernels",
    "hsic_gram",
    "kernel_matrices",
    "output_kernel",
    "pool_features",
]

#: Elements of a float64 working buffer per channel chunk (about 64 MB).
_CHUNK_ELEMENTS = 8_000_000


class ResponseKind(NamedEnum):
    """What the channel kernels are regressed on: the response of the HSIC lasso (docs/METHODS.md 1.1).

    ("Response", not "target": in this library a target is always a cost target.)
    """

    CLASS = "class"
    OUTPUT = "output"
    CLASS_OUTPUT = "class-output"

    @property
    def needs_output(self) -> bool:
        return self is not ResponseKind.CLASS


class KernelKind(NamedEnum):
    """The kernel family of the channel (and output) kernels (module docstring)."""

    MEDIAN = "median"
    GAUSSIAN = "gaussian"
    LAPLACE = "laplace"


@dataclass(frozen=True)
class HsicGram:
    """The data of one group's HSIC lasso in Gram form.

    Attributes:
        G: ``(C, C)`` float64, ``G_cd = <Kbar^(c), Kbar^(d)>``; ``(K, C, C)`` for the per-class
            fits of :func:`class_fit_gram`.
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


@functools.lru_cache(maxsize=4)
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


def gaussian_kernels(x: Tensor, dtype: torch.dtype = torch.float64) -> Tensor:
    """``(B, N, D)`` -> ``(B, N, N)`` Gaussian kernels, median-heuristic bandwidth each.

    Distances and bandwidths are computed in float64, the kernels returned in
    ``dtype``. A constant input gives the all-ones kernel (its centred kernel is 0).
    """
    d2 = _squared_distances(x)
    width = _median_bandwidth(d2, x)
    inv = torch.where(width > 0, -1.0 / torch.where(width > 0, width, 1.0), 0.0)  # constant: exp(0) = 1
    k = d2 if dtype == torch.float64 else d2.to(dtype)
    return k.mul_(inv.view(-1, 1, 1).to(dtype)).exp_()


def fixed_bandwidth_kernels(x: Tensor, kind: KernelKind, dtype: torch.dtype = torch.float64) -> Tensor:
    """``(B, N, D)`` -> ``(B, N, N)`` kernels with APIB's fixed bandwidths (module docstring).

    ``gaussian``: ``exp(-d^2 / D)``; ``laplace``: ``exp(-sqrt(0.5 / D) d)``, ``d`` the
    Euclidean distance. Computed in float64, returned in ``dtype``.
    """
    d2 = _squared_distances(x)
    length = max(1, x.shape[-1])
    if kind is KernelKind.GAUSSIAN:
        d2.mul_(-1.0 / length)
    elif kind is KernelKind.LAPLACE:
        d2.sqrt_().mul_(-math.sqrt(0.5 / length))
    else:
        raise LassopruneError(f"{kind.value!r} is not a fixed-bandwidth kernel")
    k = d2 if dtype == torch.float64 else d2.to(dtype)
    return k.exp_()


def kernel_matrices(
    x: Tensor, kind: str | KernelKind = KernelKind.LAPLACE, dtype: torch.dtype = torch.float64
) -> Tensor:
    """``(B, N, D)`` -> ``(B, N, N)`` uncentred kernels of family ``kind`` (:class:`KernelKind`)."""
    kind = KernelKind.parse(kind, "kernel")
    if kind is KernelKind.MEDIAN:
        return gaussian_kernels(x, dtype)
    return fixed_bandwidth_kernels(x, kind, dtype)


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


def centre(k: Tensor) -> Tensor:
    """``H K H`` over the last two dims (``(..., N, N)``), float64, a new tensor."""
    k = k.double().clone()
    k.sub_(k.mean(dim=-1, keepdim=True))
    return k.sub_(k.mean(dim=-2, keepdim=True))


def channel_kernels(
    features: Tensor, kernel: str | KernelKind = KernelKind.LAPLACE, normalise: bool = False
) -> Tensor:
    """``(N, C, D)`` -> ``(C, N, N)`` centred (and, with ``normalise``, unit-norm) channel kernels (float64).

    Builds all C kernels at once: meant for tests and small N; :func:`hsic_gram`
    never holds more than a chunk of them.
    """
    k = kernel_matrices(features.transpose(0, 1), kernel)
    return centre_normalise(k, inplace=True) if normalise else centre(k)


def output_kernel(outputs: Tensor, kernel: str | KernelKind = KernelKind.LAPLACE) -> Tensor:
    """``(N, D)`` consumer outputs -> ``(N, N)`` uncentred kernel ``L_out`` of family ``kernel``."""
    return kernel_matrices(outputs.reshape(outputs.shape[0], -1).unsqueeze(0), kernel)[0]


def _one_hot(labels: Tensor, num_classes: int) -> Tensor:
    return F.one_hot(labels.long(), num_classes).double()  # (N, K)


def class_response_kernels(labels: Tensor, num_classes: int) -> Tensor:
    """``(K, N, N)`` explicit ``Lbar^(k) = H e_k e_k^T H`` normalised (for tests; N^2 K memory)."""
    e = _one_hot(labels, num_classes).T  # (K, N)
    return centre_normalise(e.unsqueeze(2) * e.unsqueeze(1))


def class_output_response_kernels(l_out: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """``(K, N, N)`` explicit ``L^(k) = L_out * (e_k e_k^T)``, centred and normalised (for tests)."""
    e = _one_hot(labels, num_classes).T
    return centre_normalise(l_out.unsqueeze(0) * e.unsqueeze(2) * e.unsqueeze(1))


def _centre(k: Tensor, eps: float = 1e-12) -> Tensor:
    """Centre symmetric kernels ``(c, N, N)`` in place (``H K H``); return ``1 / ||H K H||_F`` per kernel (0 for 0)."""
    m = k.mean(dim=-1)  # row means = column means (symmetric)
    k.sub_(m.unsqueeze(-1)).sub_((m - m.mean(-1, keepdim=True)).unsqueeze(-2))
    norm = torch.linalg.vector_norm(k, dim=(-2, -1)).double()
    tiny = norm <= eps * k.shape[-1]
    return torch.where(tiny, 0.0, 1.0 / torch.where(tiny, 1.0, norm))


class _Responses:
    """Computes one chunk's ``R`` rows from centred kernels, without forming ``N^2 x K`` response kernels.

    The images must be sorted by class, so that class k is the contiguous block
    ``bounds[k]:bounds[k+1]`` and its responses meet only that block of each kernel.
    """

    def __init__(
        self, kind: ResponseKind, labels: Tensor, num_classes: int, outputs: Tensor | None, dtype: torch.dtype,
        kernel: KernelKind,
    ) -> None:
        self.kind = kind
        n = labels.numel()
        if kind.needs_output and outputs is None:
            raise LassopruneError(f"the {kind.value!r} response needs the consumers' outputs")
        counts = torch.bincount(labels, minlength=num_classes)
        self.bounds = [0] + torch.cumsum(counts, 0).tolist()
        self.num_classes = num_classes
        if kind is ResponseKind.CLASS:
            # ebar_k^T Kbar ebar_k = e_k^T Kbar e_k / ||H e_k||^2 (Kbar is centred), ||H e_k||^2 = n_k (1 - n_k / N)
            spread = counts.double() * (1.0 - counts.double() / n)
            self.scale = torch.where(spread > 1e-12, 1.0 / torch.where(spread > 1e-12, spread, 1.0), 0.0)
            self.onehot = _one_hot(labels, num_classes).to(dtype)  # (N, K)
        elif kind is ResponseKind.OUTPUT:
            self.lbar = centre_normalise(output_kernel(outputs, kernel)).to(dtype)  # (N, N)
        else:
            l_out = output_kernel(outputs, kernel)
            self.blocks = []
            norms = torch.zeros(num_classes, dtype=torch.float64)
            for k in range(num_classes):
                lo, hi = self.bounds[k], self.bounds[k + 1]
                block = l_out[lo:hi, lo:hi]
                self.blocks.append(block.to(dtype))
                if hi > lo:  # ||H L^(k) H||_F with L^(k) zero outside the block, in closed form
                    row = block.sum(1)
                    total = row.sum()
                    sq = block.square().sum() - 2.0 * row.square().sum() / n + total**2 / n**2
                    norms[k] = sq.clamp(min=0.0).sqrt()
            self.scale = torch.where(norms > 1e-12 * n, 1.0 / torch.where(norms > 0, norms, 1.0), 0.0)

    @property
    def width(self) -> int:
        return 1 if self.kind is ResponseKind.OUTPUT else self.num_classes

    def rows(self, kc: Tensor) -> Tensor:
        """``(c, N, N)`` centred (not yet normalised) kernels -> ``(c, K)`` float64 rows of ``<HKH, Lbar^(k)>``."""
        c, n = kc.shape[0], kc.shape[1]
        if self.kind is ResponseKind.OUTPUT:
            return (kc.reshape(c, n * n) @ self.lbar.reshape(n * n, 1)).double()
        if self.kind is ResponseKind.CLASS:  # e_k^T K e_k for every k: one product with the class indicators
            per_class = torch.matmul(kc, self.onehot)  # (c, N, K): row sums within each class
            return (per_class * self.onehot).sum(1).double() * self.scale
        r = torch.zeros(c, self.num_classes, dtype=torch.float64)
        for k in range(self.num_classes):
            lo, hi = self.bounds[k], self.bounds[k + 1]
            if hi > lo:  # only the class-k block meets L^(k): copy it (1/K of the kernel) and take one dot
                block = kc[:, lo:hi, lo:hi].reshape(c, -1)
                r[:, k] = (block @ self.blocks[k].reshape(-1)).double()
        return r * self.scale


def _sorted_by_class(
    features: Tensor, labels: Tensor, outputs: Tensor | None
) -> tuple[Tensor, Tensor, Tensor | None]:
    """The images in class order (G and R do not depend on the order; class k becomes one contiguous block)."""
    order = torch.argsort(labels, stable=True)
    return features[order], labels[order], outputs[order] if outputs is not None else None


def _triangle_rows(
    features: Tensor, dtype: torch.dtype, kernel: KernelKind, normalise: bool,
    on_chunk: Callable[[slice, Tensor, Tensor], None] | None = None,
) -> tuple[Tensor, Tensor]:
    """``(N, C, D)`` -> ``M`` ``(C, T)``: each row the upper triangle of one centred channel kernel.

    Off-diagonal entries are scaled by sqrt(2), so ``<M_c, M_d> = <Kbar^(c), Kbar^(d)>``;
    kernels are built a chunk of channels at a time. ``on_chunk(channels, k, inv_norm)``
    sees each chunk's centred (not yet normalised) kernels ``(c, N, N)`` and the factors
    that normalise them (ones without ``normalise``). Returns ``(M, pairs)``, pairs
    ``(2, T)`` the (i, j) of each column.
    """
    n, c = features.shape[0], features.shape[1]
    pairs = torch.triu_indices(n, n)
    flat = pairs[0] * n + pairs[1]
    weight = torch.where(pairs[0] == pairs[1], 1.0, math.sqrt(2.0)).to(dtype)
    m = torch.empty(c, flat.numel(), dtype=dtype)
    chunk = max(1, _CHUNK_ELEMENTS // max(1, 2 * n * n))
    per_channel = features.transpose(0, 1)  # (C, N, D)
    for start in range(0, c, chunk):
        stop = min(c, start + chunk)
        k = kernel_matrices(per_channel[start:stop], kernel, dtype)
        inv_norm = _centre(k)
        if not normalise:  # centred only: a dead channel is still exactly 0, a weak one small
            inv_norm = torch.ones_like(inv_norm)
        if on_chunk is not None:
            on_chunk(slice(start, stop), k, inv_norm)
        torch.mul(k.reshape(stop - start, n * n)[:, flat], weight, out=m[start:stop])
        m[start:stop].mul_(inv_norm.to(dtype).unsqueeze(1))
        del k
    return m, pairs


def _working_dtype(n: int, dtype: torch.dtype | None) -> torch.dtype:
    return dtype if dtype is not None else (torch.float64 if n < 256 else torch.float32)


def _gram_dense(
    features: Tensor, kind: ResponseKind, labels: Tensor, num_classes: int, outputs: Tensor | None,
    dtype: torch.dtype | None, kernel: KernelKind, normalise: bool,
) -> tuple[Tensor, Tensor, float, float]:
    """``G``, ``R`` over all N images (one block), kernels built a chunk of channels at a time.

    ``dtype`` is the working precision of the kernels (None: float64 for N < 256, else float32).
    """
    started = time.perf_counter()
    features, labels, outputs = _sorted_by_class(features, labels, outputs)
    dtype = _working_dtype(features.shape[0], dtype)
    responses = _Responses(kind, labels, num_classes, outputs, dtype, kernel)
    r = torch.empty(features.shape[1], responses.width, dtype=torch.float64)

    def response_rows(channels: slice, k: Tensor, inv_norm: Tensor) -> None:
        r[channels] = responses.rows(k) * inv_norm.unsqueeze(1)

    m, _ = _triangle_rows(features, dtype, kernel, normalise, response_rows)
    kernel_seconds = time.perf_counter() - started
    started = time.perf_counter()
    g = (m @ m.T).double()
    g = 0.5 * (g + g.T)
    return g, r, kernel_seconds, time.perf_counter() - started


class ClassFit(NamedEnum):
    """How the class-wise coefficients ``b_k`` are fitted (docs/METHODS.md 1.3).

    - ``block``: the class-k block of the output kernel, fitted by full kernels (``class-output`` response);
    - ``conditional``: per class, kernels and output kernel of the class-k images only, centred within it;
    - ``cross``: per class, the output kernel on every pair that involves a class-k image;
    - ``label``: the centred one-vs-rest indicator kernel of class k (``class`` response), by full kernels.
    """

    BLOCK = "block"
    CONDITIONAL = "conditional"
    CROSS = "cross"
    LABEL = "label"

    @property
    def per_class(self) -> bool:
        """Whether the fit has one Gram per class (``G`` (K, C, C)) rather than one Gram for every class."""
        return self in (ClassFit.CONDITIONAL, ClassFit.CROSS)

    @property
    def response(self) -> ResponseKind:
        """The response of the one-Gram fits; the per-class fits regress on the ``output`` kernel."""
        one_gram = {ClassFit.BLOCK: ResponseKind.CLASS_OUTPUT, ClassFit.LABEL: ResponseKind.CLASS}
        return one_gram.get(self, ResponseKind.OUTPUT)


def _gram_conditional(
    features: Tensor, labels: Tensor, num_classes: int, outputs: Tensor, dtype: torch.dtype | None,
    kernel: KernelKind, normalise: bool,
) -> tuple[Tensor, Tensor, float, float]:
    """``G_k``, ``r_k`` of the ``output`` fit on the class-k images alone (centred within the class)."""
    c = features.shape[1]
    g = torch.zeros(num_classes, c, c, dtype=torch.float64)
    r = torch.zeros(c, num_classes, dtype=torch.float64)
    seconds_k = seconds_g = 0.0
    for k in range(num_classes):
        idx = torch.nonzero(labels == k).flatten()
        if idx.numel() < 2:  # a centred kernel of one image is 0: nothing to fit
            continue
        gk, rk, tk, tg = _gram_dense(features[idx], ResponseKind.OUTPUT, labels[idx], num_classes, outputs[idx],
                                     dtype, kernel, normalise)
        g[k], r[:, k] = gk, rk[:, 0]
        seconds_k += tk
        seconds_g += tg
    return g, r, seconds_k, seconds_g


def _gram_cross(
    features: Tensor, labels: Tensor, num_classes: int, outputs: Tensor, dtype: torch.dtype | None,
    kernel: KernelKind, normalise: bool,
) -> tuple[Tensor, Tensor, float, float]:
    """``G_k = <W^(k) o Kbar^(c), Kbar^(d)>``, ``r_k = <W^(k) o Kbar^(c), Lbar>``, ``W^(k)_ij = [i or j in class k]``.

    Over the stored upper triangles, ``W^(k)`` selects the columns (i, j) with i or
    j in class k: with the images sorted by class they are the pairs that touch
    one contiguous block, so all K Grams together read about two triangles.
    """
    started = time.perf_counter()
    features, labels, outputs = _sorted_by_class(features, labels, outputs)
    dtype = _working_dtype(features.shape[0], dtype)
    m, pairs = _triangle_rows(features, dtype, kernel, normalise)
    lbar = centre_normalise(output_kernel(outputs, kernel))
    n = lbar.shape[0]
    t = (lbar.reshape(-1)[pairs[0] * n + pairs[1]] * torch.where(pairs[0] == pairs[1], 1.0, math.sqrt(2.0))).to(dtype)
    seconds_k = time.perf_counter() - started
    started = time.perf_counter()
    c = features.shape[1]
    g = torch.zeros(num_classes, c, c, dtype=torch.float64)
    r = torch.zeros(c, num_classes, dtype=torch.float64)
    bounds = [0] + torch.cumsum(torch.bincount(labels, minlength=num_classes), 0).tolist()
    for k in range(num_classes):
        lo, hi = bounds[k], bounds[k + 1]
        if hi == lo:
            continue
        touches = ((pairs[0] >= lo) & (pairs[0] < hi)) | ((pairs[1] >= lo) & (pairs[1] < hi))
        cols = torch.nonzero(touches).flatten()
        mk = m[:, cols]
        gk = (mk @ mk.T).double()
        g[k] = 0.5 * (gk + gk.T)
        r[:, k] = (mk @ t[cols]).double()
    return g, r, seconds_k, time.perf_counter() - started


def class_fit_gram(
    features: Tensor,
    labels: Tensor,
    num_classes: int,
    fit: str | ClassFit,
    outputs: Tensor | None = None,
    dtype: torch.dtype | None = None,
    kernel: str | KernelKind = KernelKind.LAPLACE,
    normalise: bool = False,
    block: int | None = None,
    permutations: int = 1,
    seed: int = 0,
) -> HsicGram:
    """The Gram data of one group's class-wise fit (:class:`ClassFit`, docs/METHODS.md 1.3).

    ``block`` and ``label`` are :func:`hsic_gram` with ``class-output`` / ``class``
    responses (``G`` (C, C)); ``conditional`` and ``cross`` give one Gram per class,
    ``G`` (K, C, C), and ``R`` (C, K), and need the consumers' ``outputs``
    ``(N, D_out)``. Other arguments as :func:`hsic_gram` (block HSIC only for the one-Gram fits).
    """
    fit = ClassFit.parse(fit, "class fit")
    family = KernelKind.parse(kernel, "kernel")
    if not fit.per_class:
        return hsic_gram(features, labels, num_classes, fit.response, outputs, block, permutations, seed, dtype,
                         family, normalise)
    if outputs is None:
        raise LassopruneError(f"the {fit.value!r} class fit needs the consumers' outputs")
    if block is not None and block < features.shape[0]:
        raise LassopruneError(f"block HSIC is not available for the {fit.value!r} class fit (one Gram per class); "
                              "use block or label, or leave block unset")
    labels = torch.as_tensor(labels).reshape(-1).long()
    if labels.numel() != features.shape[0]:
        raise LassopruneError(f"{labels.numel()} labels for {features.shape[0]} feature rows")
    outputs = outputs.reshape(features.shape[0], -1)
    build = _gram_conditional if fit is ClassFit.CONDITIONAL else _gram_cross
    g, r, tk, tg = build(features, labels, num_classes, outputs, dtype, family, normalise)
    return HsicGram(g, r, tk, tg)


def hsic_gram(
    features: Tensor,
    labels: Tensor,
    num_classes: int,
    response: str | ResponseKind = ResponseKind.OUTPUT,
    outputs: Tensor | None = None,
    block: int | None = None,
    permutations: int = 1,
    seed: int = 0,
    dtype: torch.dtype | None = None,
    kernel: str | KernelKind = KernelKind.LAPLACE,
    normalise: bool = False,
) -> HsicGram:
    """``G`` and ``R`` of one group's HSIC lasso (module docstring).

    Args:
        features: ``(N, C, D)`` pooled channel features (:func:`pool_features`).
        labels: ``(N,)`` class indices in ``[0, num_classes)``.
        num_classes: K.
        response: ``output`` (default, APIB's), ``class`` or ``class-output`` (:class:`ResponseKind`).
        outputs: ``(N, D_out)`` pooled consumer outputs of the unpruned network
            (needed by ``output`` and ``class-output``).
        block: block HSIC with blocks of this many images (None: all N at once).
        permutations: random splits into blocks (block HSIC only).
        seed: of the block permutations.
        dtype: working precision of the kernels (None: float64 for N < 256, else float32).
        kernel: the kernel family (:class:`KernelKind`) of the channels and of the output kernel
            (default ``laplace``, APIB's final setting and the lasso methods').
        normalise: divide every centred channel kernel by its Frobenius norm
            (default False: centred only, as APIB and the lasso methods).

    Returns:
        :class:`HsicGram` with ``G`` ``(C, C)`` and ``R`` ``(C, K)`` (K = 1 for ``output``).
    """
    kind = ResponseKind.parse(response)
    family = KernelKind.parse(kernel, "kernel")
    labels = torch.as_tensor(labels).reshape(-1).long()
    n = features.shape[0]
    if labels.numel() != n:
        raise LassopruneError(f"{labels.numel()} labels for {n} feature rows")
    if outputs is not None:
        outputs = outputs.reshape(n, -1)
    if block is None or block >= n:
        g, r, tk, tg = _gram_dense(features, kind, labels, num_classes, outputs, dtype, family, normalise)
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
            g, r, tk, tg = _gram_dense(features[idx], kind, labels[idx], num_classes, out, dtype, family, normalise)
            g_sum = g if g_sum is None else g_sum + g
            r_sum = r if r_sum is None else r_sum + r
            seconds_k += tk
            seconds_g += tg
    assert g_sum is not None and r_sum is not None
    return HsicGram(g_sum, r_sum, seconds_k, seconds_g)
