"""The quadratic datafit of the structured HSIC lasso in Gram form (METHODS.md 1.2).

``f(B) = 1/2 tr(B^T G B) - tr(B^T R)``, G (C, C) = M M^T, R (C, K) = M T^T. The data
enter only through G and R (the Gram trick): the solver never sees N.
"""

from __future__ import annotations

from functools import cached_property

import numpy as np

__all__ = ["QuadraticGram"]


class QuadraticGram:
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
        if not (np.all(np.isfinite(G)) and np.all(np.isfinite(R))):
            raise ValueError("G and R must be finite")
        scale = max(float(np.abs(G).max()), 1e-300)
        if not np.allclose(G, G.T, rtol=0.0, atol=1e-5 * scale):  # float32-built Grams pass
            raise ValueError("G must be symmetric (to 1e-5 of its largest entry)")
        self.G = 0.5 * (G + G.T)
        self.R = R

    @property
    def shape(self) -> tuple[int, int]:
        return self.R.shape

    def matmul(self, B: np.ndarray) -> np.ndarray:
        """G B, (C, K)."""
        return self.G @ B

    def value(self, B: np.ndarray, GB: np.ndarray | None = None) -> float:
        """f(B); pass ``GB = G @ B`` to save the product."""
        if GB is None:
            GB = self.G @ B
        return float(0.5 * np.vdot(B, GB) - np.vdot(B, self.R))

    def gradient(self, B: np.ndarray, GB: np.ndarray | None = None) -> np.ndarray:
        """G B - R, (C, K)."""
        return (self.G @ B if GB is None else GB) - self.R

    @cached_property
    def eigh(self) -> tuple[np.ndarray, np.ndarray]:
        """Eigen-decomposition ``G = U diag(lam) U^T`` (lam clipped at 0), computed once."""
        lam, U = np.linalg.eigh(self.G)
        return np.maximum(lam, 0.0), U

    @cached_property
    def lipschitz(self) -> float:
        """lambda_max(G), the Lipschitz constant of the gradient."""
        return float(max(self.eigh[0][-1], 1e-300))
