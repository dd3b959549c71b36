"""The quadratic datafits of the structured HSIC lasso in Gram form (docs/METHODS.md 1.2-1.3).

- :class:`QuadraticGram`: ``f(B) = 1/2 tr(B^T G B) - tr(B^T R)``, one Gram
  ``G`` (C, C) = M M^T for every class, R (C, K) = M T^T (the ``block`` and
  ``label`` class fits and the single ``output`` target);
- :class:`ClassGrams`: ``f(B) = sum_k 1/2 b_k^T G_k b_k - r_k^T b_k``, one Gram
  per class (``G`` (K, C, C)), for the ``conditional`` and ``cross`` class fits.

The data enter only through the Grams and R (the Gram trick): the solver never
sees N. Both expose the same pieces (``matmul``, ``value``, ``gradient``,
``lipschitz``, ``prox``), so FISTA and the consensus ADMM run on either.
"""

from __future__ import annotations

from functools import cached_property

import numpy as np

__all__ = ["ClassGrams", "QuadraticGram", "RANK_TOLERANCE", "make_datafit", "pivoted_cholesky"]

#: Eigenvalues at most this fraction of the largest count as zero (:attr:`_GramDatafit.column_space`): dropping
#: them changes a prox by at most ``lam / rho`` relative, round-off for the gap a rank-deficient Gram shows.
RANK_TOLERANCE = 1e-12
#: Grams at least this wide are first tried as low-rank factors (:func:`pivoted_cholesky`); narrower ones are
#: eigen-decomposed at once (cheap).
LOW_RANK_WIDTH = 256
#: The factor's residual diagonal, relative to the largest diagonal entry: its spectral norm is at most C times
#: this (4e-11 of the largest eigenvalue for C = 4096), below :data:`RANK_TOLERANCE`'s cut.
FACTOR_TOLERANCE = 1e-14


class _GramDatafit:
    """What both datafits share: shape, value, gradient and eigen-decomposition (of one Gram or a stack)."""

    G: np.ndarray
    R: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        return self.R.shape

    def matmul(self, B: np.ndarray) -> np.ndarray:  # pragma: no cover - every datafit defines it
        raise NotImplementedError

    def _exact_products(self, B: np.ndarray) -> np.ndarray:
        return self.matmul(B)

    def value(self, B: np.ndarray, GB: np.ndarray | None = None) -> float:
        """f(B); pass ``GB = self.matmul(B)`` to save the products (else they are computed in float64)."""
        if GB is None:
            GB = self._exact_products(B)
        return float(0.5 * np.vdot(B, GB) - np.vdot(B, self.R))

    def gradient(self, B: np.ndarray, GB: np.ndarray | None = None) -> np.ndarray:
        """The products minus R, (C, K)."""
        return (self.matmul(B) if GB is None else GB) - self.R

    @cached_property
    def eigh(self) -> tuple[np.ndarray, np.ndarray]:
        """Eigen-decomposition(s) ``G = U diag(lam) U^T`` (lam clipped at 0), computed once."""
        lam, U = np.linalg.eigh(self.G)
        return np.maximum(lam, 0.0), U

    @cached_property
    def column_space(self) -> tuple[np.ndarray, np.ndarray] | None:
        """``(lam_r, U_r)``: the top ``r`` eigenpairs of the Gram(s), ``(..., r)`` and ``(..., C, r)``, or None.

        ``r`` is the largest rank (eigenvalues above ``RANK_TOLERANCE`` of the largest); a Gram of a lower
        rank has its extra eigenvalues set to 0 (they then drop out of :meth:`prox`). None when ``r > C / 2``,
        where the full basis costs about as much. Calibration features of few images give Grams of low rank
        (N images: about N per class), so wide layers (C of 1,000 and more) gain a factor ``C / r``. Wide
        Grams (``C >= LOW_RANK_WIDTH``) are first factored by :func:`pivoted_cholesky`, which finds a low rank
        in ``O(C r^2)`` without the ``O(C^3)`` eigen-decomposition.
        """
        C = self.G.shape[-1]
        if C >= LOW_RANK_WIDTH and "eigh" not in self.__dict__:
            factors = []
            for gram in self.G.reshape(-1, C, C):  # stop at the first Gram of a high rank: the full basis it is
                factor = pivoted_cholesky(gram, C // 2, FACTOR_TOLERANCE)
                if factor is None:
                    break
                factors.append(factor)
            else:
                return _eigenpairs_of_factors(factors, self.G.shape[:-2])
        had_basis = "eigh" in self.__dict__
        lam, U = self.eigh
        positive = lam > RANK_TOLERANCE * max(float(lam.max(initial=0.0)), 1e-300)
        r = int(positive.sum(axis=-1).max(initial=0))
        if 2 * r > C:
            return None
        lam_r = np.where(positive[..., C - r:], lam[..., C - r:], 0.0)
        if not had_basis:  # the solvers read the column space from now on: the full basis is not held
            del self.__dict__["eigh"]
        return lam_r, U[..., C - r:].copy()  # a copy, never a view that would keep the whole basis alive

    @property
    def spectrum(self) -> np.ndarray:
        """The eigenvalues that can be non-zero: ``column_space``'s when the Grams have a low rank, else all."""
        low = self.column_space
        return low[0] if low is not None else self.eigh[0]


def pivoted_cholesky(G: np.ndarray, max_rank: int, tolerance: float) -> np.ndarray | None:
    """``L`` (C, r) with ``G = L L^T`` up to a residual whose diagonal is at most ``tolerance`` x ``max(diag G)``.

    Greedy diagonal pivoting (the largest remaining diagonal entry each step) on a symmetric positive
    semi-definite ``G`` (C, C): ``O(C r^2)``. None when more than ``max_rank`` columns would be needed.
    """
    residual = np.diag(G).astype(np.float64, copy=True)
    stop = tolerance * max(float(residual.max(initial=0.0)), 1e-300)
    L = np.zeros((G.shape[0], max_rank))
    for j in range(max_rank + 1):
        pivot = int(np.argmax(residual))
        if residual[pivot] <= stop:
            return L[:, :j]
        if j == max_rank:
            return None
        column = (G[:, pivot] - L[:, :j] @ L[pivot, :j]) / np.sqrt(residual[pivot])
        L[:, j] = column
        residual -= column**2
        residual[pivot] = 0.0
    raise AssertionError("the loop returns by its last step")


def _eigenpairs_of_factors(factors: list[np.ndarray], batch: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """``(lam_r, U_r)`` of the Grams ``L_k L_k^T``, padded to the largest rank: from ``eig(L_k^T L_k)`` (r x r),
    ``U = L V diag(lam)^-1/2``. ``batch``: the Grams' leading shape (``()`` for one Gram, ``(K,)``)."""
    C, r = factors[0].shape[0], max(f.shape[1] for f in factors)
    lam_r, U_r = np.zeros((len(factors), r)), np.zeros((len(factors), C, r))
    for k, L in enumerate(factors):
        lam, V = np.linalg.eigh(L.T @ L)
        lam = np.maximum(lam, 0.0)
        keep = lam > 0
        width = int(keep.sum())
        lam_r[k, r - width:] = lam[keep]
        U_r[k, :, r - width:] = (L @ V[:, keep]) / np.sqrt(lam[keep])
    top = max(float(lam_r.max(initial=0.0)), 1e-300)
    lam_r = np.where(lam_r > RANK_TOLERANCE * top, lam_r, 0.0)
    return lam_r.reshape(*batch, r), U_r.reshape(*batch, C, r)


class QuadraticGram(_GramDatafit):
    """``f(B) = 1/2 tr(B^T G B) - tr(B^T R)`` with gradient ``G B - R``.

    Args:
        G: (C, C) symmetric positive semi-definite Gram matrix.
        R: (C, K) cross term.
    """

    def __init__(self, G: np.ndarray, R: np.ndarray) -> None:
        G = np.asarray(G, dtype=np.float64)
        R = np.asarray(R, dtype=np.float64)
        if R.ndim == 1:
            R = R[:, None]
        if G.ndim != 2 or G.shape[0] != G.shape[1]:
            raise ValueError(f"G must be a square (C, C) matrix, got shape {G.shape}")
        if R.ndim != 2 or R.shape[0] != G.shape[0]:
            raise ValueError(f"R must be (C, K) with C = {G.shape[0]}, got shape {R.shape}")
        _check_finite(G, R)
        self.G = _check_symmetric(G, "G")
        self.R = R

    def matmul(self, B: np.ndarray) -> np.ndarray:
        """G B, (C, K)."""
        return self.G @ B

    @cached_property
    def lipschitz(self) -> float:
        """lambda_max(G), the Lipschitz constant of the gradient."""
        return float(max(self.spectrum.max(initial=0.0), 1e-300))

    def prox(self, V: np.ndarray, rho: float) -> np.ndarray:
        """``argmin_W f(W) + rho/2 ||W - V||_F^2 = (G + rho I)^{-1} (R + rho V)``, (C, K).

        With a low-rank Gram (:attr:`column_space`): ``Q / rho - U_r diag(lam_r / (rho (lam_r + rho))) U_r^T Q``
        for ``Q = R + rho V``, the same inverse restricted to where ``G`` acts.
        """
        rhs = self.R + rho * V
        low = self.column_space
        if low is None:
            lam, U = self.eigh
            return U @ ((U.T @ rhs) / (lam + rho)[:, None])
        lam_r, U_r = low
        shrink = lam_r / (rho * (lam_r + rho))
        return rhs / rho - U_r @ ((U_r.T @ rhs) * shrink[:, None])


def _check_finite(G: np.ndarray, R: np.ndarray) -> None:
    if not (np.all(np.isfinite(G)) and np.all(np.isfinite(R))):
        raise ValueError("G and R must be finite")


def _check_symmetric(G: np.ndarray, what: str) -> np.ndarray:
    """``(G + G^T) / 2`` (a new array; ``G`` untouched), after checking that ``|G - G^T| <= 1e-5 max |G|``.

    One Gram at a time, so that the temporaries stay ``(C, C)`` for a ``(K, C, C)`` stack.
    """
    out = np.empty_like(G)
    scale = asymmetry = 0.0
    for g, sym in zip(G.reshape(-1, *G.shape[-2:]), out.reshape(-1, *G.shape[-2:])):
        np.add(g, g.T, out=sym)
        sym *= 0.5
        asymmetry = max(asymmetry, float(np.abs(g - sym).max(initial=0.0)))  # half of max |G - G^T|
        scale = max(scale, float(np.abs(g).max(initial=0.0)))
    if 2.0 * asymmetry > 1e-5 * max(scale, 1e-300):
        raise ValueError(f"{what} must be symmetric (to 1e-5 of its largest entry)")
    return out


class ClassGrams(_GramDatafit):
    """``f(B) = sum_k (1/2 b_k^T G_k b_k - r_k^T b_k)``: one Gram per class (docs/METHODS.md 1.3 b, c).

    Column k of B (``b_k``) is fitted by its own Gram ``G_k``: the gradient is
    ``[G_1 b_1, ..., G_K b_K] - R`` and its Lipschitz constant ``max_k lambda_max(G_k)``.

    Args:
        G: (K, C, C) symmetric positive semi-definite Grams, one per class.
        R: (C, K) cross terms, column k for class k.
        product_dtype: precision of the solvers' products ``G_k b_k`` (:meth:`matmul`).
            ``np.float32`` reads half the memory and runs about 4x faster on a CPU
            (K products of C x C are memory-bound); right for Grams accumulated in
            float32 anyway (:func:`lassoprune.hsic.hsic_gram` for N >= 256), not for
            solver tolerances below about 1e-6. :meth:`value` without ``GB`` is always float64.
    """

    def __init__(self, G: np.ndarray, R: np.ndarray, product_dtype: type = np.float64) -> None:
        G = np.asarray(G, dtype=np.float64)
        R = np.asarray(R, dtype=np.float64)
        if G.ndim != 3 or G.shape[1] != G.shape[2]:
            raise ValueError(f"per-class Grams must be (K, C, C), got shape {G.shape}")
        if R.ndim != 2 or R.shape != (G.shape[1], G.shape[0]):
            raise ValueError(f"R must be (C, K) = {(G.shape[1], G.shape[0])} for these Grams, got shape {R.shape}")
        _check_finite(G, R)
        self.G = _check_symmetric(G, "every per-class Gram")
        self.R = R
        self.product_dtype = np.dtype(product_dtype)

    @cached_property
    def _G_products(self) -> np.ndarray:
        """The Grams in ``product_dtype``: made on the first :meth:`matmul` (the consensus ADMM never asks, so a
        float32 copy costs sGLP-IB no memory)."""
        return self.G if self.product_dtype == np.float64 else self.G.astype(self.product_dtype)

    def matmul(self, B: np.ndarray) -> np.ndarray:
        """``[G_1 b_1, ..., G_K b_K]``, (C, K) float64, computed in ``product_dtype`` (one stacked matmul)."""
        products = self._G_products
        return np.matmul(products, B.T.astype(products.dtype, copy=False)[:, :, None])[:, :, 0].T.astype(np.float64)

    def _exact_products(self, B: np.ndarray) -> np.ndarray:
        """``[G_1 b_1, ..., G_K b_K]`` in float64, through the column spaces when a solver that uses them (the
        consensus ADMM's prox) found a low rank; never computes them itself (FISTA needs no eigenvectors)."""
        low = self.__dict__.get("column_space")
        if low is None:
            return np.matmul(self.G, B.T[:, :, None])[:, :, 0].T
        lam_r, U_r = low
        q = np.matmul(np.swapaxes(U_r, 1, 2), B.T[:, :, None])[:, :, 0] * lam_r  # (K, r)
        return np.matmul(U_r, q[:, :, None])[:, :, 0].T

    @cached_property
    def lipschitz(self) -> float:
        """``max_k lambda_max(G_k)``, the Lipschitz constant of the gradient (eigenvalues only, unless cached)."""
        known = "eigh" in self.__dict__ or "column_space" in self.__dict__
        top = self.spectrum.max(initial=0.0) if known else np.linalg.eigvalsh(self.G)[:, -1].max(initial=0.0)
        return float(max(top, 1e-300))

    def prox(self, V: np.ndarray, rho: float) -> np.ndarray:
        """``argmin_W f(W) + rho/2 ||W - V||_F^2``: column k is ``(G_k + rho I)^{-1} (r_k + rho v_k)``.

        With low-rank Grams (:attr:`column_space`) each column is computed in its Gram's top-``r`` basis as in
        :meth:`QuadraticGram.prox`: ``K r C`` products instead of ``K C^2``.
        """
        rhs = (self.R + rho * V).T[:, :, None]  # (K, C, 1)
        low = self.column_space
        if low is None:
            lam, U = self.eigh
            q = np.matmul(np.swapaxes(U, 1, 2), rhs)[:, :, 0] / (lam + rho)  # (K, C) in each class's eigenbasis
            return np.matmul(U, q[:, :, None])[:, :, 0].T
        lam_r, U_r = low
        q = np.matmul(np.swapaxes(U_r, 1, 2), rhs)[:, :, 0] * (lam_r / (rho * (lam_r + rho)))  # (K, r)
        return (rhs[:, :, 0] / rho - np.matmul(U_r, q[:, :, None])[:, :, 0]).T


Datafit = QuadraticGram | ClassGrams


def make_datafit(G: np.ndarray | Datafit, R: np.ndarray | None = None) -> Datafit:
    """The datafit of ``G``: :class:`QuadraticGram` for one (C, C) Gram, :class:`ClassGrams` for (K, C, C)."""
    if isinstance(G, QuadraticGram | ClassGrams):
        if R is not None and not np.array_equal(np.asarray(R, dtype=np.float64).reshape(G.R.shape), G.R):
            raise ValueError("a datafit carries its own R: pass R=None with it (or build a new datafit)")
        return G
    G = np.asarray(G, dtype=np.float64)
    return ClassGrams(G, R) if G.ndim == 3 else QuadraticGram(G, R)
