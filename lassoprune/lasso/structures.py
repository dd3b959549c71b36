"""Class structures for the structured lasso: a class graph and a class tree.

Both are plain data (frozen dataclasses) so that penalties, solvers and reports
read the same objects:

- :class:`GraphFused` -- graph-guided fused lasso (Kim & Xing 2009),
  ``Omega_G(B) = sum_{(m, l, w)} |w| sum_c |B_cm - sign(w) B_cl|``.
- :class:`TreeGroup` -- tree-guided group lasso (Kim & Xing 2010),
  ``Omega_T(B) = sum_v w_v sum_c ||B_{c, G_v}||_2`` over a tree of nested groups.

Builders from class means (docs/METHODS.md 1.3): :func:`class_graph`, :func:`class_tree`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.cluster.hierarchy import linkage
from scipy.spatial.distance import squareform

from lassoprune.errors import LassopruneError

__all__ = ["StructureError", "GraphFused", "TreeGroup", "class_graph", "class_tree", "confusable_class_weights"]


class StructureError(LassopruneError, ValueError):
    """A class graph or class tree that is malformed (bad shape, index, weight)."""


def _finite_1d(x: object, name: str, n: int) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise StructureError(f"{name} must be a 1-D array of length {n}, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise StructureError(f"{name} must be finite, got {arr}")
    return arr


@dataclass(frozen=True, eq=False)
class GraphFused:
    """A weighted class graph for the graph-guided fused lasso.

    Args:
        edges: (E, 2) int array; edge e joins classes ``edges[e, 0]`` and ``edges[e, 1]``
            (distinct, non-negative). E may be 0.
        weights: (E,) signed weights r_ml; the edge pulls B_cm towards
            ``sign(r_ml) B_cl`` with strength ``|r_ml|``.
    """

    edges: np.ndarray
    weights: np.ndarray

    def __post_init__(self) -> None:
        edges = np.asarray(self.edges)
        if edges.size == 0:
            edges = edges.reshape(0, 2)
        if edges.ndim != 2 or edges.shape[1] != 2:
            raise StructureError(f"edges must have shape (E, 2), got {edges.shape}")
        if edges.size and not np.issubdtype(edges.dtype, np.integer):
            if not np.all(np.equal(np.mod(edges, 1), 0)):
                raise StructureError("edges must hold integer class indices")
        edges = edges.astype(np.int64)
        if np.any(edges < 0):
            raise StructureError("edges must hold non-negative class indices")
        if np.any(edges[:, 0] == edges[:, 1]):
            raise StructureError("an edge must join two different classes (self-loop found)")
        weights = _finite_1d(self.weights, "weights", edges.shape[0])
        edges.setflags(write=False)
        weights.setflags(write=False)
        object.__setattr__(self, "edges", edges)
        object.__setattr__(self, "weights", weights)

    @property
    def n_edges(self) -> int:
        return int(self.edges.shape[0])

    def check_classes(self, n_classes: int) -> None:
        """Raise :class:`StructureError` if an edge names a class >= n_classes."""
        if self.n_edges and int(self.edges.max()) >= n_classes:
            raise StructureError(
                f"edge class index {int(self.edges.max())} out of range for {n_classes} classes"
            )

    def operator(self, n_classes: int) -> np.ndarray:
        """The (E, K) weighted incidence matrix A: ``(B A^T)_ce = |w_e| (B_cm - sign(w_e) B_cl)``."""
        self.check_classes(n_classes)
        A = np.zeros((self.n_edges, n_classes))
        rows = np.arange(self.n_edges)
        A[rows, self.edges[:, 0]] = np.abs(self.weights)
        np.add.at(A, (rows, self.edges[:, 1]), -np.abs(self.weights) * np.sign(self.weights))
        return A


@dataclass(frozen=True, eq=False)
class TreeGroup:
    """A tree of nested class groups for the tree-guided group lasso.

    Args:
        groups: one int array of class indices per tree node (leaves are singletons,
            the root holds every class). Any two groups must be disjoint or nested
            (a tree), which is what makes the exact prox a composition of group
            soft-thresholdings (Jenatton et al. 2011).
        weights: (V,) non-negative node weights w_v.
    """

    groups: tuple[np.ndarray, ...]
    weights: np.ndarray
    _order: tuple[int, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        groups = []
        for v, g in enumerate(list(self.groups)):
            arr = np.asarray(g)
            if arr.ndim != 1 or arr.size == 0:
                raise StructureError(f"group {v} must be a non-empty 1-D array of class indices")
            if not np.issubdtype(arr.dtype, np.integer):
                if not np.all(np.equal(np.mod(arr, 1), 0)):
                    raise StructureError(f"group {v} must hold integer class indices")
            arr = np.sort(arr.astype(np.int64))
            if arr[0] < 0:
                raise StructureError(f"group {v} holds a negative class index")
            if np.any(np.diff(arr) == 0):
                raise StructureError(f"group {v} repeats a class index")
            arr.setflags(write=False)
            groups.append(arr)
        weights = _finite_1d(self.weights, "weights", len(groups))
        if np.any(weights < 0):
            raise StructureError("tree group weights must be non-negative")
        sets = [set(g.tolist()) for g in groups]
        for i in range(len(sets)):
            for j in range(i + 1, len(sets)):
                a, b = sets[i], sets[j]
                if a & b and not (a <= b or b <= a):
                    raise StructureError(
                        f"groups {i} and {j} overlap without one containing the other: "
                        "tree groups must be nested or disjoint"
                    )
        weights.setflags(write=False)
        object.__setattr__(self, "groups", tuple(groups))
        object.__setattr__(self, "weights", weights)
        # leaves-to-root order: in a nested family a group comes after all its subsets
        order = sorted(range(len(groups)), key=lambda v: (groups[v].size, v))
        object.__setattr__(self, "_order", tuple(order))

    @property
    def n_groups(self) -> int:
        return len(self.groups)

    @property
    def leaves_to_root(self) -> tuple[int, ...]:
        """Group indices ordered so that every group comes after the groups it contains."""
        return self._order

    def check_classes(self, n_classes: int) -> None:
        """Raise :class:`StructureError` if a group names a class >= n_classes."""
        for v, g in enumerate(self.groups):
            if int(g[-1]) >= n_classes:
                raise StructureError(
                    f"group {v} class index {int(g[-1])} out of range for {n_classes} classes"
                )

    def operator(self, n_classes: int) -> tuple[np.ndarray, list[slice]]:
        """Stacked weighted selectors: A (sum_v |G_v|, K) and the block of each group.

        ``(B A^T)[:, block_v] = w_v B[:, G_v]`` so ``Omega_T(B) = sum_c sum_v ||(B A^T)[c, block_v]||_2``.
        """
        self.check_classes(n_classes)
        sizes = [g.size for g in self.groups]
        A = np.zeros((sum(sizes), n_classes))
        blocks, start = [], 0
        for g, w, n in zip(self.groups, self.weights, sizes):
            A[start + np.arange(n), g] = w
            blocks.append(slice(start, start + n))
            start += n
        return A, blocks


def _class_correlation(class_means: np.ndarray) -> np.ndarray:
    X = np.asarray(class_means, dtype=np.float64)
    if X.ndim != 2 or X.shape[0] < 2 or X.shape[1] < 2:
        raise StructureError(
            f"class_means must be (K, D) with K >= 2 classes and D >= 2 features, got {X.shape}"
        )
    if not np.all(np.isfinite(X)):
        raise StructureError("class_means must be finite")
    if np.any(np.std(X, axis=1) == 0):
        raise StructureError("a class mean is constant: its Pearson correlation is undefined")
    return np.clip(np.corrcoef(X), -1.0, 1.0)


def class_graph(class_means: np.ndarray, tau: float | None = None) -> GraphFused:
    """Class graph from the Pearson correlations r_ml of the class means (docs/METHODS.md 1.3).

    Args:
        class_means: (K, D) one mean feature vector per class.
        tau: keep the edges with ``|r_ml| >= tau``. Default: the largest tau for which
            every class keeps at least one edge, i.e. ``min_m max_{l != m} |r_ml|``.

    Returns:
        :class:`GraphFused` with edges ``(m, l), m < l`` and weights r_ml (signed).
    """
    r = _class_correlation(class_means)
    r = (r + r.T) / 2  # exactly symmetric: tau is read off whole rows, the edges off the upper triangle
    K = r.shape[0]
    a = np.abs(r)
    if tau is None:
        off = a.copy()
        np.fill_diagonal(off, -np.inf)
        tau = float(off.max(axis=1).min())
    m, l = np.triu_indices(K, k=1)
    keep = a[m, l] >= tau
    return GraphFused(np.stack([m[keep], l[keep]], axis=1), r[m[keep], l[keep]])


def confusable_class_weights(class_means: np.ndarray) -> np.ndarray:
    """Per-class weights that grow with how much a class looks like the others (our choice).

    ``w_k = 1 + sum_{l != k} max(r_kl, 0)`` over the Pearson correlations of the class
    means, divided by their mean (so ``mean_k w_k = 1``): a class whose mean resembles
    several others' weighs more than one that resembles none (on the penultimate
    features of the shipped ResNet-20, Fashion-MNIST: shirt 1.37, trouser and bag 0.68).

    Args:
        class_means: (K, D) one mean feature vector per class.

    Returns:
        (K,) positive weights with mean 1.
    """
    r = _class_correlation(class_means)
    np.fill_diagonal(r, 0.0)
    w = 1.0 + np.maximum(r, 0.0).sum(axis=1)
    return w / w.mean()


def class_tree(class_means: np.ndarray, root_weight: float | None = None) -> TreeGroup:
    """Class tree by average-linkage clustering on ``1 - r`` (Kim & Xing 2010 weights).

    Node heights h_v are normalised by the root's height; ``s_v = h_v``, ``g_v = 1 - h_v``;
    internal node weight ``w_v = g_v prod_{ancestors m} s_m``, leaf weight
    ``w_v = prod_{ancestors m} s_m``. Note that the formula gives the root
    (h = 1) the weight g_root = 0; pass ``root_weight`` to give the root group
    (all classes, which zeroes whole rows) a weight of its own.

    Args:
        class_means: (K, D) one mean feature vector per class.
        root_weight: optional override of the root group's weight.

    Returns:
        :class:`TreeGroup` with K singleton leaves first, then the K - 1 internal
        nodes in merge order (the last group is the root, all classes).
    """
    r = _class_correlation(class_means)
    K = r.shape[0]
    D = np.clip(1.0 - r, 0.0, 2.0)
    np.fill_diagonal(D, 0.0)
    Z = linkage(squareform(D, checks=False), method="average")
    n_nodes = 2 * K - 1
    height = np.zeros(n_nodes)
    height[K:] = Z[:, 2]
    root_h = height[-1]
    h = height / root_h if root_h > 0 else np.zeros(n_nodes)
    h = np.clip(h, 0.0, 1.0)
    parent = np.full(n_nodes, -1)
    members: list[np.ndarray] = [np.array([k]) for k in range(K)]
    for i, (a, b) in enumerate(Z[:, :2].astype(int)):
        parent[a] = parent[b] = K + i
        members.append(np.concatenate([members[a], members[b]]))
    weights = np.empty(n_nodes)
    for v in range(n_nodes):
        prod, p = 1.0, parent[v]
        while p >= 0:
            prod *= h[p]  # s_p = h_p
            p = parent[p]
        weights[v] = prod if v < K else (1.0 - h[v]) * prod
    if root_weight is not None:
        if not np.isfinite(root_weight) or root_weight < 0:
            raise StructureError(f"root_weight must be finite and >= 0, got {root_weight}")
        weights[-1] = root_weight
    return TreeGroup(tuple(np.sort(g) for g in members), weights)
