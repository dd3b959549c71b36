"""Structured lasso solver vs cvxpy at C = 256 channels, K = 10 classes (docs/METHODS.md 1.4).

The Gram data come from HSIC-style kernels of synthetic ReLU channels (N = 100
samples, neighbouring channels alike, so G is ill-conditioned as in practice) and
the `class` targets. Structures: a ~40%-dense class graph (sGLP-IB) and the
average-linkage class tree (sTLP-IB). For each: our default solver (ADMM for the
graph, FISTA with the exact tree prox for the tree; best of 5 runs, including the
eigen-decomposition of G), cvxpy's default solver (one run; OSQP for the
graph QP) and cvxpy with CLARABEL (the accurate reference), the smoothing
proximal gradient (SPG) for reference, and the relative objective gap.
Target: same objective to 1e-4 relative, ours >= 50x faster.

    OMP_NUM_THREADS=1 python benchmarks/lasso_solver.py
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from lassoprune import lasso


def hsic_problem(C: int = 256, K: int = 10, N: int = 100, seed: int = 0):
    """(G, R, class_means) from centred, normalised Gaussian kernels of synthetic channels."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, K, N)
    latent = rng.standard_normal((K, 16))[y] + 0.7 * rng.standard_normal((N, 16))
    W = np.cumsum(0.3 * rng.standard_normal((C, 16)), axis=0)  # neighbouring channels alike
    acts = np.maximum(latent @ W.T + 0.3 * rng.standard_normal((N, C)), 0.0)
    H = np.eye(N) - 1.0 / N
    rows = []
    for c in range(C):
        d = (acts[:, c, None] - acts[None, :, c]) ** 2
        med = np.median(d[d > 0]) if np.any(d > 0) else 1.0
        Kc = H @ np.exp(-d / med) @ H
        rows.append((Kc / max(np.linalg.norm(Kc), 1e-300)).ravel())
    M = np.array(rows)
    T = []
    for k in range(K):
        e = (y == k).astype(float)
        Lk = H @ np.outer(e, e) @ H
        T.append((Lk / np.linalg.norm(Lk)).ravel())
    means = np.array([latent[y == k].mean(axis=0) for k in range(K)])
    return M @ M.T, M @ np.array(T).T, means


def cvxpy_solve(G, R, lambda1, lambda2, structure, nonneg=True, solver=None):
    import cvxpy as cp

    lam, U = np.linalg.eigh(G)
    F = (U * np.sqrt(np.maximum(lam, 0.0))).T
    B = cp.Variable(R.shape, nonneg=nonneg)
    obj = 0.5 * cp.sum_squares(F @ B) - cp.sum(cp.multiply(R, B)) + lambda1 * cp.sum(cp.abs(B))
    if isinstance(structure, lasso.GraphFused):
        obj = obj + lambda2 * cp.sum(cp.abs(B @ structure.operator(R.shape[1]).T))
    else:
        for g, w in zip(structure.groups, structure.weights):
            if w > 0:
                obj = obj + lambda2 * w * cp.sum(cp.norm(B[:, g], 2, axis=1))
    prob = cp.Problem(cp.Minimize(obj))
    t0 = time.perf_counter()
    prob.solve(solver=solver)
    return time.perf_counter() - t0, float(prob.value), prob.solver_stats.solver_name


def time_ours(G, R, structure, lambda1, lambda2, repeats: int, solver: str = "auto", max_iter: int = 20000):
    best, est = np.inf, None
    for _ in range(repeats):
        t0 = time.perf_counter()
        est = lasso.StructuredLasso(structure, lambda1, lambda2, solver=solver, max_iter=max_iter).fit_gram(G, R)
        best = min(best, time.perf_counter() - t0)
    return best, est


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--lambdas", type=float, nargs=2, default=(0.05, 0.05), help="lambda1, lambda2 / lambda_max")
    ap.add_argument("--spg-max-iter", type=int, default=5000)
    args = ap.parse_args()
    G, R, means = hsic_problem()
    lm = lasso.lambda_max(G, R)
    l1, l2 = args.lambdas[0] * lm, args.lambdas[1] * lm
    r = np.abs(np.corrcoef(means)[np.triu_indices(10, 1)])
    graph = lasso.class_graph(means, tau=float(np.quantile(r, 0.6)))
    tree = lasso.class_tree(means)
    ev = np.linalg.eigvalsh(G)
    print(f"C={G.shape[0]} K={R.shape[1]} cond(G)={ev[-1] / max(ev[0], 1e-300):.2e} "
          f"graph edges {graph.n_edges}/45 tree groups {tree.n_groups}")
    rows = []
    for name, st in (("graph", graph), ("tree", tree)):
        t_ours, est = time_ours(G, R, st, l1, l2, args.repeats)
        t_cvx, f_cvx, cvx_solver = cvxpy_solve(G, R, l1, l2, st)
        if cvx_solver == "CLARABEL":
            t_cla, f_cla = t_cvx, f_cvx
        else:  # the interior-point solver, for an accurate reference value
            t_cla, f_cla, _ = cvxpy_solve(G, R, l1, l2, st, solver="CLARABEL")
        t_spg, spg = time_ours(G, R, st, l1, l2, 1, solver="spg", max_iter=args.spg_max_iter)
        row = {
            "structure": name,
            "solver": est.solver_,
            "iters": est.n_iter_,
            "ours_s": round(t_ours, 4),
            "cvxpy_s": round(t_cvx, 3),
            "cvxpy_solver": cvx_solver,
            "speedup": round(t_cvx / t_ours, 1),
            "rel_gap_vs_cvxpy": float(f"{(est.objective_ - f_cvx) / abs(f_cvx):.2e}"),
            "clarabel_s": round(t_cla, 3),
            "speedup_vs_clarabel": round(t_cla / t_ours, 1),
            "rel_gap_vs_clarabel": float(f"{(est.objective_ - f_cla) / abs(f_cla):.2e}"),
            "spg_s": round(t_spg, 3),
            "spg_iters": spg.n_iter_,
            "spg_rel_gap": float(f"{(spg.objective_ - est.objective_) / abs(est.objective_):.2e}"),
            "nonzero_rows": int((np.abs(est.coef_).sum(axis=1) > 0).sum()),
        }
        rows.append(row)
        print(json.dumps(row))


if __name__ == "__main__":
    main()
