"""Solvers for ``min_B f(B) + P(B)`` with f a datafit (:mod:`lassoprune.lasso.datafit`) and P a penalty.

Each solver returns a :class:`SolverResult`: the solution, the exact (unsmoothed)
objective history, the final value of its stopping criterion, and a state for warm
starts. Each stops on an optimality measure, not an iteration count:

- :func:`fista`: accelerated proximal gradient with adaptive restart (O'Donoghue &
  Candes 2015). Needs the exact prox (plain L1, tree). Optimality measure: the
  norm of the gradient mapping ``L (B - prox_{1/L}(B - grad f(B) / L))``, relative
  to ``||R||_F``.
- :func:`admm`: ADMM on the splitting ``X = B`` (L1, B >= 0) and ``Z = B A^T``
  (structured norm). The B-step is the Sylvester equation
  ``G B + rho B (I + A^T A) = Q``, solved exactly with eigen-decompositions of G and
  of ``I + A^T A`` computed once, so changing rho (residual balancing) is free.
  Optimality measure: the larger of the relative primal and dual residuals
  (Boyd et al. 2011, section 3.3).
- :func:`consensus_admm`: ADMM on the splitting ``W = B`` (the datafit),
  ``X = B`` (L1, B >= 0) and ``Z = B A^T`` (structured norm). It needs only the
  datafit's prox (one eigen-decomposition per class Gram, computed once), so it
  runs on per-class Grams (:class:`~lassoprune.lasso.ClassGrams`), where the
  Sylvester step of :func:`admm` (one G for every column) does not apply.
- :func:`spg`: smoothing proximal gradient (Chen et al. 2012) with FISTA momentum,
  adaptive restart and continuation on mu. Kept as the reference method of
  docs/METHODS.md 1.4; slower to high accuracy (see docs/BENCHMARKS.md).

Choice by measurement (C = 256, K = 10, cond(G) ~ 1e6, ``benchmarks/lasso_solver.py``):
for the graph, SPG after 5000 iterations (~1.2 s) is still 2e-4 above the optimum,
while ADMM (+ snap of the fused pairs) reaches it to 1e-8 in ~420 iterations
(~0.1 s); for the tree, FISTA with the exact prox needs ~600 iterations (~0.1 s).
:class:`~lassoprune.lasso.StructuredLasso` therefore uses FISTA when the penalty has
an exact prox (plain L1, tree) and ADMM otherwise (graph): :func:`admm` on one
Gram, :func:`consensus_admm` on per-class Grams.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from lassoprune.lasso.datafit import ClassGrams, Datafit
from lassoprune.lasso.penalties import L1

__all__ = ["SolverResult", "fista", "admm", "consensus_admm", "spg", "SOLVERS"]


@dataclass
class SolverResult:
    """What a solver returns.

    Attributes:
        coef: (C, K) solution.
        objective: exact objective F after each iteration.
        stop_crit: final value of the solver's optimality measure.
        n_iter: iterations run.
        converged: whether ``stop_crit <= tol``.
        state: solver state for a warm start (ADMM: duals and rho).
    """

    coef: np.ndarray
    objective: np.ndarray
    stop_crit: float
    n_iter: int
    converged: bool
    state: dict = field(default_factory=dict)


def _scale(datafit: Datafit) -> float:
    return max(float(np.linalg.norm(datafit.R)), 1e-300)


def fista(
    datafit: Datafit,
    penalty: L1,
    B0: np.ndarray | None = None,
    tol: float = 1e-5,
    max_iter: int = 20000,
    record_every: int = 10,
) -> SolverResult:
    """FISTA with gradient-based adaptive restart; needs ``penalty.prox``.

    The exact objective is recorded every ``record_every`` iterations and at the last.
    """
    C, K = datafit.shape
    L = datafit.lipschitz
    x = np.zeros((C, K)) if B0 is None else np.array(B0, dtype=np.float64)
    x = penalty.prox(x, 0.0) if penalty.nonneg else x  # feasible start
    Gx = datafit.matmul(x)
    y, Gy, t = x, Gx, 1.0
    scale, hist, crit, it = _scale(datafit), [], np.inf, 0
    for it in range(1, max_iter + 1):
        x_new = penalty.prox(y - (Gy - datafit.R) / L, 1.0 / L)
        crit = L * float(np.linalg.norm(x_new - y)) / scale
        Gx_new = datafit.matmul(x_new)
        if crit <= tol or it % record_every == 0 or it == max_iter:
            hist.append(datafit.value(x_new, Gx_new) + penalty.value(x_new))
        if crit <= tol:
            x, Gx = x_new, Gx_new
            break
        if np.vdot(y - x_new, x_new - x) > 0:  # momentum points uphill: restart
            t = 1.0
        t_new = 0.5 * (1.0 + np.sqrt(1.0 + 4.0 * t * t))
        beta = (t - 1.0) / t_new
        y = x_new + beta * (x_new - x)
        Gy = Gx_new + beta * (Gx_new - Gx)
        x, Gx, t = x_new, Gx_new, t_new
    return SolverResult(x, np.asarray(hist), crit, it, crit <= tol)


# Long on purpose: one ADMM iteration (x, z, u updates, residuals, step adaptation, stop) kept in one loop.
def admm(
    datafit: Datafit,
    penalty: L1,
    B0: np.ndarray | None = None,
    tol: float = 1e-5,
    max_iter: int = 20000,
    rho: float | None = None,
    state: dict | None = None,
    relax: float = 1.6,
    balance_every: int = 10,
    record_every: int = 10,
    check_every: int = 5,
) -> SolverResult:
    """ADMM with an exact Sylvester B-step, over-relaxation and residual balancing of rho.

    Splitting: ``min f(B) + h(X) + lambda2 N(Z)`` s.t. ``X = B``, ``Z = B A^T`` with
    h = lambda1 ||.||_1 + [. >= 0]. Returns X, the output of the separable prox, so
    zeros (and B >= 0) are exact; at the end ``penalty.snap`` imposes the structure
    that Z holds exactly (fused pairs, zero groups) and the snapped point is kept
    when its exact objective is lower. The objective is recorded every ``record_every``
    iterations and at the last one (it costs one more product with G); the residuals
    are checked every ``check_every`` iterations (``record_every`` and ``balance_every``
    should be multiples of it).
    """
    if isinstance(datafit, ClassGrams):
        raise ValueError("admm's Sylvester step needs one Gram for every class; use consensus_admm "
                         "for per-class Grams")
    C, K = datafit.shape
    A = penalty.operator
    P = A.shape[0]
    lam, U = datafit.eigh
    sig, V = np.linalg.eigh(np.eye(K) + A.T @ A)
    R = datafit.R
    X = np.zeros((C, K)) if B0 is None else np.array(B0, dtype=np.float64)
    if penalty.nonneg:
        X = np.maximum(X, 0.0)
    Z = X @ A.T
    state = dict(state or {})
    if state.get("U1") is not None and state["U1"].shape == (C, K) and state["U2"].shape == (C, P):
        U1, U2 = state["U1"].copy(), state["U2"].copy()
        rho = state["rho"] if rho is None else rho
    else:
        U1, U2 = np.zeros((C, K)), np.zeros((C, P))
    rho_ref = _middle_rho(lam)
    if rho is None:
        rho = rho_ref
    tiny = 1e-300
    denom = lam[:, None] + rho * sig[None, :]
    hist, crit, it = [], np.inf, 0
    for it in range(1, max_iter + 1):
        Q = R + rho * (X - U1) + rho * ((Z - U2) @ A)
        B = U @ ((((U.T @ Q) @ V) / denom) @ V.T)
        BA = B @ A.T
        Bh = relax * B + (1.0 - relax) * X
        BAh = relax * BA + (1.0 - relax) * Z
        X_old, Z_old = X, Z
        X = penalty.prox_separable(Bh + U1, 1.0 / rho)
        Z = penalty.prox_norm(BAh + U2, 1.0 / rho)
        U1 += Bh - X
        U2 += BAh - Z
        if it % check_every and it != max_iter:
            continue
        r1, r2 = B - X, BA - Z
        r = np.sqrt(np.vdot(r1, r1) + np.vdot(r2, r2))
        dZ = (Z - Z_old) @ A
        s = rho * np.sqrt(np.vdot(X - X_old, X - X_old) + np.vdot(dZ, dZ))
        pri = max(np.sqrt(np.vdot(B, B) + np.vdot(BA, BA)), np.sqrt(np.vdot(X, X) + np.vdot(Z, Z)))
        U2A = U2 @ A
        dual = rho * np.sqrt(np.vdot(U1, U1) + np.vdot(U2A, U2A))
        rel_r, rel_s = r / (pri + tiny), s / (dual + tiny)
        crit = float(max(rel_r, rel_s))
        done = crit <= tol
        if done or it % record_every == 0 or it == max_iter:
            hist.append(datafit.value(X) + penalty.value(X))
        if done:
            break
        f = _balance_factor(rho, rho_ref, rel_r, rel_s) if it % balance_every == 0 else 1.0
        if f != 1.0:
            rho *= f
            U1 /= f
            U2 /= f
            denom = lam[:, None] + rho * sig[None, :]
    X = _snapped(datafit, penalty, X, Z, hist)
    return SolverResult(
        X, np.asarray(hist), crit, it, crit <= tol, {"U1": U1, "U2": U2, "rho": rho}
    )


def _snapped(datafit: Datafit, penalty: L1, X: np.ndarray, Z: np.ndarray, hist: list[float]) -> np.ndarray:
    """X with the structure Z holds exactly imposed (``penalty.snap``), when that lowers the exact objective."""
    snapped = penalty.snap(X, Z)
    if snapped is X:
        return X
    f_snap = datafit.value(snapped) + penalty.value(snapped)
    if f_snap < hist[-1]:
        hist.append(f_snap)
        return snapped
    return X


def _middle_rho(lam: np.ndarray) -> float:
    """The geometric middle of the positive spectrum ``lam`` (any shape): a starting ADMM penalty."""
    lam = np.asarray(lam).ravel()
    top = lam.max(initial=0.0)
    pos = lam[lam > 1e-12 * top] if top > 0 else np.ones(1)
    return float(np.sqrt(pos.min() * pos.max()))


#: How far residual balancing may move the ADMM penalty from the spectrum's middle, either way.
RHO_RANGE = 1e8


def _balance_factor(rho: float, rho_ref: float, rel_r: float, rel_s: float) -> float:
    """Residual balancing (Boyd et al. 2011, 3.4.1): double rho when the primal residual leads tenfold, halve it
    when the dual one does, 1.0 otherwise or when rho would leave ``rho_ref`` x [1/RHO_RANGE, RHO_RANGE].

    The bound matters when the solution is B = 0 (strong lambda): the duals vanish, the relative dual residual
    stays large, and unbounded halving would drive rho, and the prox's ``1/rho`` terms, to under- and overflow.
    """
    if rel_r > 10.0 * rel_s and rho * 2.0 <= rho_ref * RHO_RANGE:
        return 2.0
    if rel_s > 10.0 * rel_r and rho * 0.5 >= rho_ref / RHO_RANGE:
        return 0.5
    return 1.0


# Long on purpose: one consensus-ADMM iteration (per-class solves, consensus, duals, stop) kept in one loop.
def consensus_admm(
    datafit: Datafit,
    penalty: L1,
    B0: np.ndarray | None = None,
    tol: float = 1e-5,
    max_iter: int = 20000,
    rho: float | None = None,
    state: dict | None = None,
    relax: float = 1.6,
    balance_every: int = 10,
    record_every: int = 50,
    check_every: int = 5,
) -> SolverResult:
    """ADMM with the datafit split off: ``min f(W) + h(X) + lambda2 N(Z)`` s.t. ``W = B, X = B, Z = B A^T``.

    B-step: ``B (2 I + A^T A) = (W - U_0) + (X - U_1) + (Z - U_2) A`` (eigen-decomposition
    of the K x K matrix, once); then, from the over-relaxed B, the separable
    steps ``W = datafit.prox(., rho)`` (per class: ``(G_k + rho I)^{-1} (r_k + rho v_k)``),
    ``X = prox(h / rho)`` and ``Z = prox(lambda2 N / rho)``; residual balancing of rho
    (Boyd et al. 2011, 3.4.1) is free because every factorisation is an eigen-decomposition.
    Returns X (exact zeros and B >= 0), snapped to the structure Z holds as in :func:`admm`.
    Optimality measure: the larger of the relative primal and dual residuals, the
    dual one relative to the size of the three blocks' duals (B has no objective of
    its own, so the sum of their images, Boyd's scale, is 0 at the optimum).
    """
    C, K = datafit.shape
    A = penalty.operator
    P = A.shape[0]
    sig, V = np.linalg.eigh(2.0 * np.eye(K) + A.T @ A)
    X = np.zeros((C, K)) if B0 is None else np.array(B0, dtype=np.float64)
    if penalty.nonneg:
        X = np.maximum(X, 0.0)
    W, Z = X.copy(), X @ A.T
    state = dict(state or {})
    if state.get("U0") is not None and state["U0"].shape == (C, K) and state["U2"].shape == (C, P):
        U0, U1, U2 = state["U0"].copy(), state["U1"].copy(), state["U2"].copy()
        rho = state["rho"] if rho is None else rho
    else:
        U0, U1, U2 = np.zeros((C, K)), np.zeros((C, K)), np.zeros((C, P))
    rho_ref = _middle_rho(datafit.spectrum)
    if rho is None:
        rho = rho_ref
    tiny = 1e-300
    hist, crit, it = [], np.inf, 0
    for it in range(1, max_iter + 1):
        B = ((((W - U0) + (X - U1) + (Z - U2) @ A) @ V) / sig) @ V.T
        BA = B @ A.T
        Bw = relax * B + (1.0 - relax) * W  # over-relaxation, one copy per constraint
        Bx = relax * B + (1.0 - relax) * X
        BAh = relax * BA + (1.0 - relax) * Z
        W_old, X_old, Z_old = W, X, Z
        W = datafit.prox(Bw + U0, rho)
        X = penalty.prox_separable(Bx + U1, 1.0 / rho)
        Z = penalty.prox_norm(BAh + U2, 1.0 / rho)
        U0 += Bw - W
        U1 += Bx - X
        U2 += BAh - Z
        if it % check_every and it != max_iter:
            continue
        r0, r1, r2 = B - W, B - X, BA - Z
        r = np.sqrt(np.vdot(r0, r0) + np.vdot(r1, r1) + np.vdot(r2, r2))
        dual_step = (W - W_old) + (X - X_old) + (Z - Z_old) @ A
        s = rho * np.sqrt(np.vdot(dual_step, dual_step))
        pri = max(np.sqrt(2.0 * np.vdot(B, B) + np.vdot(BA, BA)),
                  np.sqrt(np.vdot(W, W) + np.vdot(X, X) + np.vdot(Z, Z)))
        U2A = U2 @ A  # B-space images of the duals; their sum vanishes at the optimum, so each sets the scale
        dual = rho * np.sqrt(np.vdot(U0, U0) + np.vdot(U1, U1) + np.vdot(U2A, U2A))
        rel_r, rel_s = r / (pri + tiny), s / (dual + tiny)
        crit = float(max(rel_r, rel_s))
        done = crit <= tol
        if done or it % record_every == 0 or it == max_iter:
            hist.append(datafit.value(X) + penalty.value(X))
        if done:
            break
        f = _balance_factor(rho, rho_ref, rel_r, rel_s) if it % balance_every == 0 else 1.0
        if f != 1.0:
            rho *= f
            U0 /= f
            U1 /= f
            U2 /= f
    X = _snapped(datafit, penalty, X, Z, hist)
    return SolverResult(
        X, np.asarray(hist), crit, it, crit <= tol, {"U0": U0, "U1": U1, "U2": U2, "rho": rho}
    )


def spg(
    datafit: Datafit,
    penalty: L1,
    B0: np.ndarray | None = None,
    tol: float = 1e-5,
    max_iter: int = 20000,
    mu0: float | None = None,
    mu_factor: float = 0.1,
    mu_min: float = 1e-8,
) -> SolverResult:
    """Smoothing proximal gradient with FISTA momentum, restart and continuation on mu.

    Each stage minimises ``f + smooth_mu(Omega) + lambda1 ||.||_1 (+ B >= 0)`` with step
    ``1/L_mu``, ``L_mu = lambda_max(G) + lambda2^2 ||A||^2 / mu``, until its gradient
    mapping falls below ``tol``; then mu shrinks. It stops at ``mu_min`` or when the
    exact objective changes by less than ``tol`` (relative) over a whole stage.
    """
    C, K = datafit.shape
    x = np.zeros((C, K)) if B0 is None else np.array(B0, dtype=np.float64)
    if penalty.nonneg:
        x = np.maximum(x, 0.0)
    scale = _scale(datafit)
    if mu0 is None:
        mu0 = 1e-2 * max(scale / np.sqrt(x.size), 1e-12)
    mu, hist, crit, it, prev_stage = mu0, [], np.inf, 0, np.inf
    while it < max_iter:
        L = datafit.lipschitz + penalty.smooth_lipschitz(mu)
        y, t, x_old = x, 1.0, x
        while it < max_iter:
            it += 1
            _, gs = penalty.smooth(y, mu)
            x_new = penalty.prox_separable(y - (datafit.gradient(y) + gs) / L, 1.0 / L)
            crit = L * float(np.linalg.norm(x_new - y)) / scale
            hist.append(datafit.value(x_new) + penalty.value(x_new))
            if np.vdot(y - x_new, x_new - x_old) > 0:
                t = 1.0
            t_new = 0.5 * (1.0 + np.sqrt(1.0 + 4.0 * t * t))
            y = x_new + ((t - 1.0) / t_new) * (x_new - x_old)
            x_old, t = x_new, t_new
            if crit <= tol:
                break
        x = x_old
        f = hist[-1] if hist else np.inf
        done = mu <= mu_min or abs(prev_stage - f) <= tol * max(abs(f), 1e-300)
        prev_stage = f
        if done:
            break
        mu *= mu_factor
    return SolverResult(x, np.asarray(hist), crit, it, crit <= tol)


SOLVERS = {"fista": fista, "admm": admm, "consensus": consensus_admm, "spg": spg}
