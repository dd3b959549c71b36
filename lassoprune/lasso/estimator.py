"""The structured lasso estimator on Gram data (docs/METHODS.md 1.2-1.4).

Minimises, exactly,

    F(B) = 1/2 tr(B^T G B) - tr(B^T R) + lambda1 sum|B| + lambda2 Omega(B),  B >= 0 if nonneg,

with Omega the graph-guided fused penalty (:class:`GraphFused`), the tree-guided
group penalty (:class:`TreeGroup`) or nothing. With per-class Grams (``G`` of
shape (K, C, C), the ``conditional`` and ``cross`` class fits of docs/METHODS.md 1.3)
the datafit is ``sum_k 1/2 b_k^T G_k b_k - r_k^T b_k`` instead
(:class:`~lassoprune.lasso.ClassGrams`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lassoprune.errors import UnknownNameError
from lassoprune.lasso.datafit import ClassGrams, Datafit, make_datafit
from lassoprune.lasso.penalties import make_penalty
from lassoprune.lasso.solvers import SOLVERS, SolverResult
from lassoprune.lasso.structures import GraphFused, TreeGroup

__all__ = ["StructuredLasso", "objective", "lambda_max", "lasso_path"]

Structure = GraphFused | TreeGroup | None


def objective(
    B: np.ndarray,
    G: np.ndarray,
    R: np.ndarray,
    lambda1: float = 0.0,
    lambda2: float = 0.0,
    structure: Structure = None,
    nonneg: bool = False,
) -> float:
    """Exact (unsmoothed) F(B); ``inf`` when ``nonneg`` and B has a negative entry.

    Args:
        B: (C, K) coefficients. G: (C, C) Gram, or (K, C, C) per-class Grams. R: (C, K) cross term.
    """
    B = np.asarray(B, dtype=np.float64)
    datafit = make_datafit(G, R)
    if B.shape != datafit.shape:
        raise ValueError(f"B must have shape {datafit.shape}, got {B.shape}")
    penalty = make_penalty(structure, lambda1, lambda2, B.shape[1], nonneg)
    return datafit.value(B) + penalty.value(B)


def lambda_max(G: np.ndarray | None, R: np.ndarray, nonneg: bool = False) -> float:
    """Smallest lambda1 for which B = 0 solves the problem (exact for lambda2 = 0).

    KKT at B = 0: ``R in lambda1 d||0||_1 (+ normal cone of B >= 0)``, i.e.
    ``lambda1 >= max(max R, 0)`` (nonneg) or ``lambda1 >= max |R|`` (whatever the
    Gram: one or one per class; ``G`` is not read). The structured
    term has 0 in its subdifferential at 0, so B = 0 stays a solution for every
    lambda2 (the bound is then sufficient, not always the smallest).
    """
    R = np.asarray(R, dtype=np.float64)
    if nonneg:
        return float(max(R.max(initial=0.0), 0.0))
    return float(np.abs(R).max(initial=0.0))


class StructuredLasso:
    """Class-wise structured lasso on Gram data.

    Args:
        structure: None (plain lasso), :class:`GraphFused` or :class:`TreeGroup`.
        lambda1: weight of ``sum |B|`` (>= 0).
        lambda2: weight of ``Omega(B)`` (>= 0; ignored without a structure).
        nonneg: constrain B >= 0.
        tol: tolerance on the solver's optimality measure.
        max_iter: iteration cap.
        solver: ``"auto"`` (FISTA when the penalty has an exact prox -- plain L1 and
            tree --, ADMM for the graph: the Sylvester ADMM on one Gram, the
            consensus ADMM on per-class Grams), ``"fista"``, ``"admm"``, ``"consensus"`` or ``"spg"``.
        warm_start: start from the previous ``coef_`` (and ADMM duals) when refitting.

    Attributes (after :meth:`fit_gram`):
        coef_: (C, K) solution. objective_: F(coef_), exact. n_iter_: iterations.
        stop_crit_: final optimality measure. objective_history_: F per iteration.
        converged_: whether the tolerance was reached.
    """

    def __init__(
        self,
        structure: Structure = None,
        lambda1: float = 0.0,
        lambda2: float = 0.0,
        nonneg: bool = False,
        tol: float = 1e-5,
        max_iter: int = 20000,
        solver: str = "auto",
        warm_start: bool = True,
    ) -> None:
        if solver != "auto" and solver not in SOLVERS:
            raise UnknownNameError("solver", solver, ["auto", *SOLVERS])
        if structure is not None and not isinstance(structure, GraphFused | TreeGroup):
            raise TypeError(
                f"structure must be None, GraphFused or TreeGroup, got {type(structure).__name__}"
            )
        for name, val in (("lambda1", lambda1), ("lambda2", lambda2)):
            if not np.isfinite(val) or val < 0:
                raise ValueError(f"{name} must be finite and >= 0, got {val}")
        if not tol > 0:
            raise ValueError(f"tol must be > 0, got {tol}")
        if int(max_iter) < 1:
            raise ValueError(f"max_iter must be >= 1, got {max_iter}")
        self.structure = structure
        self.lambda1 = float(lambda1)
        self.lambda2 = float(lambda2)
        self.nonneg = bool(nonneg)
        self.tol = float(tol)
        self.max_iter = int(max_iter)
        self.solver = solver
        self.warm_start = bool(warm_start)
        self._state: dict = {}

    def _solver_name(self, penalty, datafit: Datafit) -> str:
        if self.solver != "auto":
            return self.solver
        if penalty.has_exact_prox:
            return "fista"
        return "consensus" if isinstance(datafit, ClassGrams) else "admm"

    def fit_gram(self, G: np.ndarray | Datafit, R: np.ndarray | None) -> StructuredLasso:
        """Fit on the (C, C) Gram G (or (K, C, C) per-class Grams) and the (C, K) cross term R; sets ``coef_``."""
        datafit = make_datafit(G, R)
        C, K = datafit.shape
        penalty = make_penalty(self.structure, self.lambda1, self.lambda2, K, self.nonneg)
        name = self._solver_name(penalty, datafit)
        if self.lambda1 >= lambda_max(None, datafit.R, self.nonneg):
            # B = 0 satisfies the KKT conditions exactly (see lambda_max): no iterations.
            res = SolverResult(np.zeros((C, K)), np.zeros(1), 0.0, 0, True)
        else:
            B0 = None
            coef = getattr(self, "coef_", None)
            if self.warm_start and coef is not None and coef.shape == (C, K):
                B0 = coef
            kwargs = {"state": self._state} if name in ("admm", "consensus") and self.warm_start else {}
            res = SOLVERS[name](datafit, penalty, B0, tol=self.tol, max_iter=self.max_iter, **kwargs)
        self._state = res.state
        self.coef_ = res.coef
        self.objective_ = float(datafit.value(res.coef) + penalty.value(res.coef))
        self.objective_history_ = res.objective
        self.n_iter_ = res.n_iter
        self.stop_crit_ = res.stop_crit
        self.converged_ = res.converged
        self.solver_ = name
        return self


def lasso_path(
    G: np.ndarray,
    R: np.ndarray,
    lambda1s: Sequence[float],
    structure: Structure = None,
    lambda2: float = 0.0,
    nonneg: bool = False,
    tol: float = 1e-5,
    max_iter: int = 20000,
    solver: str = "auto",
) -> np.ndarray:
    """Solutions along a lambda1 path with warm starts, (n_lambdas, C, K).

    The lambdas are solved from the largest to the smallest (sparse solutions first,
    each warm-starting the next) and returned in the order given.
    """
    lambda1s = np.asarray(lambda1s, dtype=np.float64)
    datafit = make_datafit(G, R)
    est = StructuredLasso(structure, 0.0, lambda2, nonneg, tol, max_iter, solver, warm_start=True)
    out = np.empty((lambda1s.size, *datafit.shape))
    for i in np.argsort(-lambda1s, kind="stable"):
        est.lambda1 = float(lambda1s[i])
        out[i] = est.fit_gram(datafit, None).coef_
    return out
