"""The per-class lasso on low-rank Grams: column space vs full eigenbasis (docs/METHODS.md 1.4).

With N calibration images each class's Gram ``G_k`` (C x C) has a rank of about N
while C is the layer's width; wide layers (MobileNet's 960-wide expansions, AlexNet /
VGG classifiers of 4096) with few images are the case. Per-class Grams
``G_k = M_k M_k^T`` with ``M_k`` (C, r) Gaussian, K = 10 classes, a class graph:

1. the consensus-ADMM solve (sGLP-IB's solver) at one strength, with the prox in
   the Grams' column space (the library's path) and in the full eigenbasis
   (the column space switched off), best of ``--repeats``; the objectives must agree;
2. the set-up: the column space from a pivoted Cholesky factor vs the full
   eigen-decomposition of the K Grams.

    OMP_NUM_THREADS=1 python benchmarks/lasso_low_rank.py
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import numpy as np

from lassoprune.lasso import ClassGrams, StructuredLasso, class_graph, lambda_max


class FullBasis(ClassGrams):
    """The same datafit with the column space switched off (every prox in the full eigenbasis)."""

    @property
    def column_space(self) -> None:  # type: ignore[override]
        return None


def low_rank_problem(C: int, K: int, rank: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(G (K, C, C), R (C, K), class means (K, 8)) with ``G_k = M_k M_k^T`` of rank ``rank``."""
    rng = np.random.default_rng(seed)
    factors = [rng.standard_normal((C, rank)) / np.sqrt(rank) for _ in range(K)]
    G = np.stack([M @ M.T for M in factors])
    R = np.stack([M @ rng.standard_normal(rank) for M in factors], axis=1)
    return G, R, rng.standard_normal((K, 8))


def best_of(repeats: int, run: Callable[[], float]) -> tuple[float, float]:
    """(fastest seconds, the value ``run`` returned)."""
    times, value = [], 0.0
    for _ in range(repeats):
        started = time.perf_counter()
        value = run()
        times.append(time.perf_counter() - started)
    return min(times), value


def solve_seconds(datafit_class: type, G: np.ndarray, R: np.ndarray, means: np.ndarray,
                  repeats: int) -> tuple[float, float]:
    """(seconds, objective) of one consensus-ADMM fit from a fresh datafit (its set-up included)."""
    structure = class_graph(means)
    top = lambda_max(None, R, False)

    def run() -> float:
        est = StructuredLasso(structure, 0.1 * top, 0.1 * top, nonneg=False, tol=1e-5, max_iter=20000)
        return float(est.fit_gram(datafit_class(G, R), None).objective_)

    return best_of(repeats, run)


def setup_seconds(G: np.ndarray, R: np.ndarray, repeats: int) -> tuple[float, float]:
    """(seconds of the column space by pivoted Cholesky, seconds of the full eigen-decomposition)."""
    factored, _ = best_of(repeats, lambda: float(ClassGrams(G, R).column_space[0].max()))
    full, _ = best_of(repeats, lambda: float(np.linalg.eigh(G)[0].max()))
    return factored, full


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--widths", type=int, nargs="+", default=[960, 2048])
    p.add_argument("--rank", type=int, default=95, help="rank of each Gram (about N for N calibration images)")
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args()
    rows = []
    for C in args.widths:
        G, R, means = low_rank_problem(C, args.classes, args.rank)
        low_s, low_obj = solve_seconds(ClassGrams, G, R, means, args.repeats)
        full_s, full_obj = solve_seconds(FullBasis, G, R, means, args.repeats)
        factor_s, eigh_s = setup_seconds(G, R, args.repeats)
        rows.append({"C": C, "rank": args.rank, "solve_column_space_s": round(low_s, 3),
                     "solve_full_basis_s": round(full_s, 3), "speedup": round(full_s / low_s, 1),
                     "objective_gap": abs(low_obj - full_obj) / abs(full_obj),
                     "setup_factor_s": round(factor_s, 3), "setup_eigh_s": round(eigh_s, 3)})
        print(json.dumps(rows[-1]), flush=True)
    print("| C | rank | solve, column space (s) | solve, full basis (s) | speed-up | objective gap | "
          "set-up, pivoted Cholesky (s) | set-up, eigh (s) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['C']} | {r['rank']} | {r['solve_column_space_s']} | {r['solve_full_basis_s']} | "
              f"{r['speedup']}x | {r['objective_gap']:.1e} | {r['setup_factor_s']} | {r['setup_eigh_s']} |")


if __name__ == "__main__":
    main()
