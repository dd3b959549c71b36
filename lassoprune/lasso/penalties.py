"""Penalties of the structured lasso: L1 (+ B >= 0), graph-guided fused, tree-guided group.

Every penalty has the composite form (docs/METHODS.md 1.2-1.4)

    P(B) = lambda1 ||B||_1 + [B >= 0] + lambda2 sum_c N((B A^T)_c,:)

with A a (P, K) linear operator over classes (weights included) and N a norm with
an easy prox and an easy dual ball: the l1 norm for the graph (dual ball l_inf,
Chen et al. 2012) and a sum of l2 norms over disjoint blocks for the tree (dual ball
a product of l2 balls). Solvers use only these pieces:

- ``value(B)``                 the exact penalty (inf outside B >= 0 when nonneg);
- ``prox(B, step)``            exact prox of ``step * P`` when ``has_exact_prox``;
- ``prox_separable(B, step)``  prox of ``step * (lambda1 ||.||_1 + [. >= 0])``;
- ``operator``, ``prox_norm``  A and the prox of ``step * lambda2 * N`` (ADMM);
- ``smooth(B, mu)``            Nesterov smoothing of the structured part (SPG).
"""

from __future__ import annotations

import numpy as np

from lassoprune.lasso.structures import GraphFused, StructureError, TreeGroup

__all__ = [
    "L1",
    "GraphFusedPenalty",
    "TreeGroupPenalty",
    "make_penalty",
    "soft_threshold",
]


def soft_threshold(x: np.ndarray, t: float | np.ndarray) -> np.ndarray:
    """Elementwise ``sign(x) max(|x| - t, 0)``, the prox of ``t |.|``."""
    return np.sign(x) * np.maximum(np.abs(x) - t, 0.0)


class _L1Norm:
    """N(z) = sum |z_p|; prox = soft-threshold; dual ball = unit l_inf ball."""

    def value(self, Z: np.ndarray) -> float:
        return float(np.abs(Z).sum())

    def prox(self, Z: np.ndarray, t: float) -> np.ndarray:
        return soft_threshold(Z, t)

    def project_dual(self, Z: np.ndarray) -> np.ndarray:
        return np.clip(Z, -1.0, 1.0)


class _BlockL2Norm:
    """N(z) = sum_b ||z_b||_2 over disjoint column blocks; dual ball = product of l2 balls.

    Vectorised with the (P, n_blocks) block indicator S: block norms are
    ``sqrt(Z**2 @ S)``, and a per-block factor spreads back by ``@ S.T``.
    """

    def __init__(self, blocks: list[slice]) -> None:
        self.blocks = blocks
        P = blocks[-1].stop if blocks else 0
        self.S = np.zeros((P, len(blocks)))
        for j, b in enumerate(blocks):
            self.S[b, j] = 1.0

    def _norms(self, Z: np.ndarray) -> np.ndarray:
        return np.sqrt((Z * Z) @ self.S)

    def value(self, Z: np.ndarray) -> float:
        return float(self._norms(Z).sum())

    def prox(self, Z: np.ndarray, t: float) -> np.ndarray:
        n = self._norms(Z)
        factor = np.maximum(n - t, 0.0) / np.where(n > 0, n, 1.0)
        return Z * (factor @ self.S.T)

    def project_dual(self, Z: np.ndarray) -> np.ndarray:
        return Z / (np.maximum(self._norms(Z), 1.0) @ self.S.T)


class L1:
    """``lambda1 ||B||_1`` (+ the constraint B >= 0 when ``nonneg``): the plain lasso.

    Its prox is ``max(B - step lambda1, 0)`` (nonneg) or the soft-threshold.
    """

    has_exact_prox = True

    def __init__(self, lambda1: float, n_classes: int, nonneg: bool = False) -> None:
        if not np.isfinite(lambda1) or lambda1 < 0:
            raise ValueError(f"lambda1 must be finite and >= 0, got {lambda1}")
        self.lambda1 = float(lambda1)
        self.nonneg = bool(nonneg)
        self.n_classes = int(n_classes)
        self.lambda2 = 0.0
        self.operator = np.zeros((0, self.n_classes))
        self.norm: _L1Norm | _BlockL2Norm = _L1Norm()

    # --- pieces every solver may use -------------------------------------------------
    def structured_value(self, B: np.ndarray) -> float:
        """``lambda2 * Omega(B)`` alone."""
        if self.lambda2 == 0.0 or self.operator.shape[0] == 0:
            return 0.0
        return self.lambda2 * self.norm.value(B @ self.operator.T)

    def value(self, B: np.ndarray) -> float:
        """Exact ``P(B)``; ``inf`` if nonneg and some entry of B is negative."""
        if self.nonneg and np.any(B < 0):
            return float("inf")
        return self.lambda1 * float(np.abs(B).sum()) + self.structured_value(B)

    def prox_separable(self, B: np.ndarray, step: float) -> np.ndarray:
        """Prox of ``step * (lambda1 ||.||_1 + [. >= 0])``."""
        if self.nonneg:
            return np.maximum(B - step * self.lambda1, 0.0)
        return soft_threshold(B, step * self.lambda1)

    def prox(self, B: np.ndarray, step: float) -> np.ndarray:
        """Exact prox of ``step * P``."""
        return self.prox_separable(B, step)

    def prox_norm(self, Z: np.ndarray, step: float) -> np.ndarray:
        """Prox of ``step * lambda2 * N`` on the (C, P) image ``Z = B A^T``."""
        return self.norm.prox(Z, step * self.lambda2)

    def snap(self, X: np.ndarray, Z: np.ndarray) -> np.ndarray:
        """A point with the structure that Z, the split image of B A^T, holds exactly.

        Splitting solvers (ADMM) end with X ~ B and Z ~ B A^T where Z has the exact
        zeros of the structured norm (fused pairs, zero groups) and X only nearly.
        This returns X with that structure imposed; the solver keeps it if its
        objective is lower. Plain L1: nothing to impose.
        """
        return X

    def smooth(self, B: np.ndarray, mu: float) -> tuple[float, np.ndarray]:
        """Smoothed structured part and its gradient (Chen et al. 2012).

        With ``Omega(B) = max_{alpha in Q} <alpha, lambda2 B A^T>``:
        ``alpha* = proj_Q(lambda2 B A^T / mu)``, value ``<alpha*, lambda2 B A^T> - mu/2 ||alpha*||^2``,
        gradient ``lambda2 alpha* A``.
        """
        if self.lambda2 == 0.0 or self.operator.shape[0] == 0:
            return 0.0, np.zeros_like(B)
        Z = self.lambda2 * (B @ self.operator.T)
        alpha = self.norm.project_dual(Z / mu)
        val = float(np.vdot(alpha, Z) - 0.5 * mu * np.vdot(alpha, alpha))
        return val, self.lambda2 * (alpha @ self.operator)

    def smooth_lipschitz(self, mu: float) -> float:
        """``lambda2^2 ||A||_2^2 / mu``, the Lipschitz constant of the smoothed gradient."""
        if self.lambda2 == 0.0 or self.operator.shape[0] == 0:
            return 0.0
        return self.lambda2**2 * float(np.linalg.norm(self.operator, 2)) ** 2 / mu


class GraphFusedPenalty(L1):
    """``lambda1 ||B||_1 + lambda2 sum_(m,l,w) |w| sum_c |B_cm - sign(w) B_cl|`` (Kim & Xing 2009).

    No closed-form prox: solved by ADMM (exact splitting) or SPG (smoothing).
    """

    has_exact_prox = False

    def __init__(
        self, lambda1: float, lambda2: float, graph: GraphFused, n_classes: int, nonneg: bool = False
    ) -> None:
        super().__init__(lambda1, n_classes, nonneg)
        if not np.isfinite(lambda2) or lambda2 < 0:
            raise ValueError(f"lambda2 must be finite and >= 0, got {lambda2}")
        self.lambda2 = float(lambda2)
        self.operator = graph.operator(self.n_classes)
        self.norm = _L1Norm()
        self._edges = graph.edges[graph.weights != 0]
        self._signs = np.sign(graph.weights[graph.weights != 0])
        self._live = np.flatnonzero(graph.weights != 0)

    def prox(self, B: np.ndarray, step: float) -> np.ndarray:
        raise NotImplementedError("the graph-fused penalty has no closed-form prox; use admm or spg")

    def snap(self, X: np.ndarray, Z: np.ndarray) -> np.ndarray:
        """Fuse the pairs with ``Z_ce == 0``: each fused component of a row gets one value.

        Signs are tracked on the signed double cover (node (c, k, +/-)): an edge with
        w > 0 joins (m, +)-(l, +) and (m, -)-(l, -), one with w < 0 joins (m, +)-(l, -)
        and (m, -)-(l, +). The component mean of the signed values is then the common
        value (0 for a sign-inconsistent component). A component holding an exact zero
        of X stays zero; with B >= 0 so does a component that mixes signs.
        """
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components

        C, K = X.shape
        if self._edges.shape[0] == 0:
            return X
        cc, ee = np.nonzero(Z[:, self._live] == 0)
        if cc.size == 0:
            return X
        n = C * K
        a = cc * K + self._edges[ee, 0]
        b = cc * K + self._edges[ee, 1]
        neg = (self._signs[ee] < 0).astype(np.int64) * n
        rows = np.concatenate([a, a + n])
        cols = np.concatenate([b + neg, b + n - neg])
        graph = coo_matrix((np.ones(rows.size), (rows, cols)), shape=(2 * n, 2 * n))
        _, label = connected_components(graph, directed=False)
        x = X.ravel()
        vals = np.concatenate([x, -x])
        count = np.bincount(label)
        mean = np.bincount(label, vals) / count
        plus = np.bincount(label, np.r_[np.ones(n), np.zeros(n)], minlength=count.size)
        zero = np.bincount(label, np.r_[x == 0, x == 0].astype(float), minlength=count.size) > 0
        mean[zero] = 0.0
        if self.nonneg:
            mean[(plus > 0) & (plus < count)] = 0.0
        return mean[label[:n]].reshape(C, K)


class TreeGroupPenalty(L1):
    """``lambda1 ||B||_1 + lambda2 sum_v w_v sum_c ||B_{c, G_v}||_2`` over nested groups (Kim & Xing 2010).

    Exact prox (Jenatton, Mairal, Obozinski & Bach 2011): for a tree of nested
    groups the prox is the composition of the group soft-thresholdings from the
    leaves to the root; the L1 term (singletons, the deepest groups) goes first,
    and B >= 0 is handled by clipping at 0 before (valid because the penalty is
    sign-invariant and monotone in |B|).
    """

    has_exact_prox = True

    def __init__(
        self, lambda1: float, lambda2: float, tree: TreeGroup, n_classes: int, nonneg: bool = False
    ) -> None:
        super().__init__(lambda1, n_classes, nonneg)
        if not np.isfinite(lambda2) or lambda2 < 0:
            raise ValueError(f"lambda2 must be finite and >= 0, got {lambda2}")
        self.lambda2 = float(lambda2)
        self.tree = tree
        self.operator, blocks = tree.operator(self.n_classes)
        self.norm = _BlockL2Norm(blocks)
        self._leaf_w, self._level_cache = self._levels()

    def snap(self, X: np.ndarray, Z: np.ndarray) -> np.ndarray:
        """Zero ``X[c, G_v]`` where the block of group v in Z is exactly zero (w_v > 0)."""
        X = X.copy()
        for v, b in enumerate(self.norm.blocks):
            if self.tree.weights[v] > 0:
                dead = ~np.any(Z[:, b] != 0, axis=1)
                X[np.ix_(dead, self.tree.groups[v])] = 0.0
        return X

    def _levels(self) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray, np.ndarray]]]:
        """Singleton weights per class, and the larger groups by height in the tree.

        Singleton groups ``{k}`` act like an L1 term on column k: their weights are
        summed per class and applied with lambda1 in one soft-threshold. The other
        groups come level by level from the leaves (height 1) to the root; groups of
        one level are disjoint, so a level is one vectorised group soft-threshold:
        (S, w, keep) with S the (K, n) class-by-group indicator, w the n weights and
        keep = 1 for the classes outside the level's groups.
        """
        order = self.tree.leaves_to_root
        sets = [set(self.tree.groups[v].tolist()) for v in range(self.tree.n_groups)]
        leaf_w = np.zeros(self.n_classes)
        height: dict[int, int] = {}
        for i, v in enumerate(order):
            below = [height[u] for u in order[:i] if sets[u] <= sets[v]]
            height[v] = 1 + max(below, default=-1)
        levels = []
        for h in range(max(height.values(), default=-1) + 1):
            vs = [v for v in order if height[v] == h and self.tree.weights[v] > 0]
            if h == 0:  # minimal groups: singletons fold into the L1 thresholds
                singles = [v for v in vs if self.tree.groups[v].size == 1]
                for v in singles:
                    leaf_w[self.tree.groups[v][0]] += self.tree.weights[v]
                vs = [v for v in vs if v not in singles]
            if not vs:
                continue
            S = np.zeros((self.n_classes, len(vs)))
            for j, v in enumerate(vs):
                S[self.tree.groups[v], j] = 1.0
            levels.append((S, self.tree.weights[vs], (S.sum(axis=1) == 0).astype(float)))
        return leaf_w, levels

    def prox(self, B: np.ndarray, step: float) -> np.ndarray:
        thr = step * (self.lambda1 + self.lambda2 * self._leaf_w)  # (K,) per-class L1 thresholds
        X = np.maximum(B - thr, 0.0) if self.nonneg else soft_threshold(B, thr)
        if self.lambda2 == 0.0:
            return X
        for S, w, keep in self._level_cache:
            n = np.sqrt((X * X) @ S)  # (C, n) group norms
            factor = np.maximum(n - step * self.lambda2 * w, 0.0) / np.where(n > 0, n, 1.0)
            X *= factor @ S.T + keep
        return X


def make_penalty(
    structure: GraphFused | TreeGroup | None,
    lambda1: float,
    lambda2: float,
    n_classes: int,
    nonneg: bool = False,
) -> L1:
    """The penalty object for a structure (None: plain L1)."""
    if structure is None:
        return L1(lambda1, n_classes, nonneg)
    if isinstance(structure, GraphFused):
        return GraphFusedPenalty(lambda1, lambda2, structure, n_classes, nonneg)
    if isinstance(structure, TreeGroup):
        return TreeGroupPenalty(lambda1, lambda2, structure, n_classes, nonneg)
    raise StructureError(
        f"structure must be None, GraphFused or TreeGroup, got {type(structure).__name__}"
    )
