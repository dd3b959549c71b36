"""Class-wise structured lasso on Gram data (docs/METHODS.md 1.2-1.4).

``StructuredLasso(structure, lambda1, lambda2, nonneg, tol, max_iter).fit_gram(G, R)``
minimises ``1/2 tr(B^T G B) - tr(B^T R) + lambda1 sum|B| + lambda2 Omega(B)`` with
Omega the graph-guided fused penalty (:class:`GraphFused`) or the tree-guided group
penalty (:class:`TreeGroup`); with per-class Grams (``G`` (K, C, C)) the datafit is
``sum_k 1/2 b_k^T G_k b_k - r_k^T b_k`` (:class:`ClassGrams`).
"""

from lassoprune.lasso.datafit import ClassGrams, QuadraticGram, make_datafit, pivoted_cholesky
from lassoprune.lasso.estimator import StructuredLasso, lambda_max, lasso_path, objective
from lassoprune.lasso.penalties import (
    L1,
    GraphFusedPenalty,
    TreeGroupPenalty,
    make_penalty,
    soft_threshold,
)
from lassoprune.lasso.solvers import SolverResult, admm, consensus_admm, fista, spg
from lassoprune.lasso.structures import (
    GraphFused,
    StructureError,
    TreeGroup,
    class_graph,
    class_tree,
    confusable_class_weights,
)

__all__ = [
    "ClassGrams",
    "GraphFused",
    "GraphFusedPenalty",
    "L1",
    "QuadraticGram",
    "SolverResult",
    "StructureError",
    "StructuredLasso",
    "TreeGroup",
    "TreeGroupPenalty",
    "admm",
    "class_graph",
    "class_tree",
    "confusable_class_weights",
    "consensus_admm",
    "fista",
    "lambda_max",
    "lasso_path",
    "make_datafit",
    "pivoted_cholesky",
    "make_penalty",
    "objective",
    "soft_threshold",
    "spg",
]
