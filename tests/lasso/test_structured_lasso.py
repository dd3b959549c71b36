"""The structured lasso: agreement with cvxpy, optimality, special cases, proxes."""

from __future__ import annotations

import numpy as np
import pytest

from lassoprune.errors import UnknownNameError
from lassoprune.lasso import (
    GraphFused,
    QuadraticGram,
    StructuredLasso,
    TreeGroup,
    admm,
    class_graph,
    class_tree,
    fista,
    lambda_max,
    lasso_path,
    make_penalty,
    objective,
)

C, K = 30, 5


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(0)
    M = rng.standard_normal((C, 60))
    T = rng.standard_normal((K, 60))
    means = rng.standard_normal((K, 12))
    return M @ M.T, M @ T.T, means


def _structures(means):
    return {
        "none": None,
        "graph": class_graph(means),
        "tree": class_tree(means, root_weight=0.5),
    }


def _cvxpy_solve(G, R, lambda1, lambda2, structure, nonneg):
    cp = pytest.importorskip("cvxpy")
    lam, U = np.linalg.eigh(G)
    F = (U * np.sqrt(np.maximum(lam, 0.0))).T
    B = cp.Variable(R.shape, nonneg=nonneg)
    obj = 0.5 * cp.sum_squares(F @ B) - cp.sum(cp.multiply(R, B)) + lambda1 * cp.sum(cp.abs(B))
    if isinstance(structure, GraphFused) and structure.n_edges:
        obj = obj + lambda2 * cp.sum(cp.abs(B @ structure.operator(R.shape[1]).T))
    if isinstance(structure, TreeGroup):
        for g, w in zip(structure.groups, structure.weights):
            if w > 0:
                obj = obj + lambda2 * w * cp.sum(cp.norm(B[:, g], 2, axis=1))
    prob = cp.Problem(cp.Minimize(obj))
    prob.solve()
    return prob.value, B.value


def _naive_objective(B, G, R, lambda1, lambda2, structure):
    val = 0.5 * np.trace(B.T @ G @ B) - np.trace(B.T @ R) + lambda1 * np.abs(B).sum()
    if isinstance(structure, GraphFused):
        for (m, l), w in zip(structure.edges, structure.weights):
            val += lambda2 * abs(w) * np.abs(B[:, m] - np.sign(w) * B[:, l]).sum()
    if isinstance(structure, TreeGroup):
        for g, w in zip(structure.groups, structure.weights):
            val += lambda2 * w * np.linalg.norm(B[:, g], axis=1).sum()
    return val


# --- objective -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["none", "graph", "tree"])
def test_objective_is_the_formula(problem, kind):
    G, R, means = problem
    st = _structures(means)[kind]
    B = np.abs(np.random.default_rng(1).standard_normal((C, K)))
    assert objective(B, G, R, 0.3, 0.7, st) == pytest.approx(
        _naive_objective(B, G, R, 0.3, 0.7, st), rel=1e-12
    )
    assert objective(-B, G, R, 0.3, 0.7, st, nonneg=True) == np.inf
    assert np.isfinite(objective(-B, G, R, 0.3, 0.7, st, nonneg=False))


# --- agreement with a generic convex solver ---------------------------------------------


@pytest.mark.parametrize("nonneg", [True, False])
@pytest.mark.parametrize("kind", ["none", "graph", "tree"])
def test_agrees_with_cvxpy(problem, kind, nonneg):
    G, R, means = problem
    st = _structures(means)[kind]
    lm = lambda_max(G, R, nonneg)
    l1, l2 = 0.2 * lm, 0.3 * lm
    est = StructuredLasso(st, l1, l2, nonneg=nonneg).fit_gram(G, R)
    ref, B_ref = _cvxpy_solve(G, R, l1, l2, st, nonneg)
    assert est.converged_
    assert abs(est.objective_ - ref) <= 1e-4 * abs(ref)
    assert est.objective_ <= ref + 1e-5 * abs(ref)  # not worse than the generic solver (tol 1e-5)
    assert est.objective_ == pytest.approx(objective(est.coef_, G, R, l1, l2, st, nonneg), rel=1e-12)
    np.testing.assert_allclose(est.coef_, B_ref, atol=2e-3 * np.abs(B_ref).max())
    if nonneg:
        assert np.all(est.coef_ >= 0)
    assert est.objective_history_[-1] == pytest.approx(est.objective_)


# --- optimality --------------------------------------------------------------------------


@pytest.mark.parametrize("nonneg", [True, False])
def test_lasso_kkt(problem, nonneg):
    G, R, _ = problem
    lam1 = 0.1 * lambda_max(G, R, nonneg)
    est = StructuredLasso(None, lam1, nonneg=nonneg, tol=1e-10).fit_gram(G, R)
    B = est.coef_
    grad = G @ B - R
    nz = B != 0
    assert nz.any() and (~nz).any()
    atol = 1e-6 * lam1
    if nonneg:
        np.testing.assert_allclose(grad[nz], -lam1, atol=atol)
        assert np.all(grad[~nz] >= -lam1 - atol)
    else:
        np.testing.assert_allclose(grad[nz], -lam1 * np.sign(B[nz]), atol=atol)
        assert np.all(np.abs(grad[~nz]) <= lam1 + atol)


def _graph_prox(V, step, lambda1, lambda2, graph, nonneg):
    """Prox of step * P_graph at V: the structured lasso with G = I, R = V."""
    datafit = QuadraticGram(np.eye(V.shape[0]), V)
    pen = make_penalty(graph, step * lambda1, step * lambda2, V.shape[1], nonneg)
    res = admm(datafit, pen, tol=1e-12, max_iter=50000)
    assert res.converged
    return res.coef


@pytest.mark.parametrize("nonneg", [True, False])
@pytest.mark.parametrize("kind", ["graph", "tree"])
def test_structured_prox_gradient_fixed_point(problem, kind, nonneg):
    """At the optimum B = prox_{tP}(B - t grad f(B)), the fixed point of proximal gradient."""
    G, R, means = problem
    st = _structures(means)[kind]
    lm = lambda_max(G, R, nonneg)
    l1, l2 = 0.1 * lm, 0.3 * lm
    est = StructuredLasso(st, l1, l2, nonneg=nonneg, tol=1e-10, max_iter=100000).fit_gram(G, R)
    B = est.coef_
    t = 1.0 / np.linalg.eigvalsh(G)[-1]
    V = B - t * (G @ B - R)
    if kind == "tree":
        P = make_penalty(st, l1, l2, K, nonneg).prox(V, t)
    else:
        P = _graph_prox(V, t, l1, l2, st, nonneg)
    assert np.linalg.norm(B - P) <= 1e-5 * np.linalg.norm(B)
    # and a smaller objective is not found nearby
    rng = np.random.default_rng(3)
    for _ in range(50):
        D = rng.standard_normal(B.shape) * 1e-4 * np.abs(B).max()
        Bp = np.maximum(B + D, 0) if nonneg else B + D
        assert objective(Bp, G, R, l1, l2, st, nonneg) >= est.objective_ - 1e-9 * abs(est.objective_)


# --- the proxes really minimise their prox problems --------------------------------------


@pytest.mark.parametrize("nonneg", [True, False])
@pytest.mark.parametrize("kind", ["none", "graph", "tree"])
def test_prox_minimises(problem, kind, nonneg):
    _, _, means = problem
    st = _structures(means)[kind]
    rng = np.random.default_rng(4)
    V = rng.standard_normal((8, K))
    step, l1, l2 = 0.7, 0.3, 0.8
    pen = make_penalty(st, l1, l2, K, nonneg)
    X = _graph_prox(V, step, l1, l2, st, nonneg) if kind == "graph" else pen.prox(V, step)

    def h(Y):
        return 0.5 * np.sum((Y - V) ** 2) + step * pen.value(Y)

    ref = h(X)
    assert np.isfinite(ref)
    for scale in (1e-1, 1e-3, 1e-6):
        for _ in range(100):
            Y = X + scale * rng.standard_normal(X.shape)
            if nonneg:
                Y = np.maximum(Y, 0)
            assert h(Y) >= ref - 1e-12
    # against cvxpy: the prox problem is the structured lasso with G = I/step... scaled
    cval, _ = _cvxpy_solve(np.eye(8), V, step * l1, step * l2, st, nonneg)
    assert ref - 0.5 * np.sum(V**2) == pytest.approx(cval, rel=1e-5, abs=1e-7)


def test_prox_closed_forms():
    rng = np.random.default_rng(5)
    V = rng.standard_normal((6, 4))
    pen = make_penalty(None, 0.5, 0.0, 4, nonneg=True)
    np.testing.assert_array_equal(pen.prox(V, 0.4), np.maximum(V - 0.2, 0))
    pen = make_penalty(None, 0.5, 0.0, 4, nonneg=False)
    np.testing.assert_allclose(pen.prox(V, 0.4), np.sign(V) * np.maximum(np.abs(V) - 0.2, 0))
    # a single root group: the group soft-threshold of each row
    root = TreeGroup([np.arange(4)], [2.0])
    pen = make_penalty(root, 0.0, 0.5, 4, nonneg=False)
    n = np.linalg.norm(V, axis=1, keepdims=True)
    np.testing.assert_allclose(pen.prox(V, 0.4), V * np.maximum(1 - 0.4 * 0.5 * 2.0 / n, 0))


# --- special cases reduce ----------------------------------------------------------------


@pytest.mark.parametrize("nonneg", [True, False])
def test_graph_without_edges_is_the_lasso(problem, nonneg):
    G, R, _ = problem
    lam1 = 0.2 * lambda_max(G, R, nonneg)
    empty = GraphFused(np.zeros((0, 2), dtype=int), np.zeros(0))
    a = StructuredLasso(empty, lam1, 5.0, nonneg=nonneg, tol=1e-10).fit_gram(G, R)
    b = StructuredLasso(None, lam1, nonneg=nonneg, tol=1e-10).fit_gram(G, R)
    assert a.solver_ == "admm" and b.solver_ == "fista"
    assert a.objective_ == pytest.approx(b.objective_, rel=1e-7)
    np.testing.assert_allclose(a.coef_, b.coef_, atol=1e-5 * np.abs(b.coef_).max())


def test_tree_of_singletons_is_a_weighted_lasso(problem):
    G, R, _ = problem
    w = np.linspace(0.5, 1.5, K)
    leaves = TreeGroup([np.array([k]) for k in range(K)], w)
    lam1, lam2 = 0.1 * lambda_max(G, R), 0.2 * lambda_max(G, R)
    a = StructuredLasso(leaves, lam1, lam2, tol=1e-10).fit_gram(G, R)
    # per-class L1 weights lam1 + lam2 w_k: solve each column as its own lasso
    for k in range(K):
        col = StructuredLasso(None, lam1 + lam2 * w[k], tol=1e-10).fit_gram(G, R[:, [k]])
        np.testing.assert_allclose(a.coef_[:, k], col.coef_[:, 0], atol=1e-6)


def test_root_only_tree_is_the_group_lasso(problem):
    G, R, _ = problem
    cp = pytest.importorskip("cvxpy")
    lam2 = 0.3 * np.linalg.norm(R, axis=1).max()
    root = TreeGroup([np.arange(K)], [1.0])
    est = StructuredLasso(root, 0.0, lam2, nonneg=False, tol=1e-10).fit_gram(G, R)
    # independent formulation: the row-wise group lasso written directly
    lam, U = np.linalg.eigh(G)
    F = (U * np.sqrt(np.maximum(lam, 0))).T
    B = cp.Variable((C, K))
    prob = cp.Problem(
        cp.Minimize(0.5 * cp.sum_squares(F @ B) - cp.sum(cp.multiply(R, B)) + lam2 * cp.sum(cp.norm(B, 2, axis=1)))
    )
    prob.solve()
    assert est.objective_ == pytest.approx(prob.value, rel=1e-4)
    zero_rows = np.linalg.norm(est.coef_, axis=1) == 0
    assert zero_rows.any() and (~zero_rows).any()  # whole rows exactly zero
    # group-lasso KKT: zero rows have ||grad_c|| <= lam2, others grad_c = -lam2 B_c / ||B_c||
    grad = G @ est.coef_ - R
    assert np.all(np.linalg.norm(grad[zero_rows], axis=1) <= lam2 * (1 + 1e-6))
    Bn = est.coef_[~zero_rows]
    np.testing.assert_allclose(
        grad[~zero_rows], -lam2 * Bn / np.linalg.norm(Bn, axis=1, keepdims=True), atol=1e-6 * lam2
    )


def test_group_lasso_orthogonal_design_closed_form():
    rng = np.random.default_rng(6)
    R = rng.standard_normal((12, 4))
    lam2 = 1.0
    root = TreeGroup([np.arange(4)], [1.0])
    est = StructuredLasso(root, 0.0, lam2, nonneg=False, tol=1e-12).fit_gram(np.eye(12), R)
    n = np.linalg.norm(R, axis=1, keepdims=True)
    np.testing.assert_allclose(est.coef_, R * np.maximum(1 - lam2 / n, 0), atol=1e-10)


@pytest.mark.parametrize("nonneg", [True, False])
@pytest.mark.parametrize("kind", ["none", "graph", "tree"])
def test_lambda_max_gives_exact_zero(problem, kind, nonneg):
    G, R, means = problem
    st = _structures(means)[kind]
    lm = lambda_max(G, R, nonneg)
    est = StructuredLasso(st, lm, 0.5 * lm, nonneg=nonneg).fit_gram(G, R)
    assert np.all(est.coef_ == 0)
    below = StructuredLasso(st, 0.9 * lm, 0.0, nonneg=nonneg).fit_gram(G, R)
    assert np.any(below.coef_ != 0)
    # the iterative solvers reach the exact zero on their own, too
    pen = make_penalty(st, lm, 0.5 * lm, K, nonneg)
    res = (fista if pen.has_exact_prox else admm)(QuadraticGram(G, R), pen)
    assert np.all(res.coef == 0)


def test_lambda_max_formula():
    R = np.array([[-3.0, 1.0], [0.5, -0.2]])
    assert lambda_max(np.eye(2), R, nonneg=True) == 1.0
    assert lambda_max(np.eye(2), R, nonneg=False) == 3.0
    assert lambda_max(np.eye(2), -np.abs(R), nonneg=True) == 0.0


# --- solvers agree; warm starts --------------------------------------------------------


def test_solvers_agree(problem):
    G, R, means = problem
    sts = _structures(means)
    lm = lambda_max(G, R)
    for kind, solvers in (("none", ("fista", "admm", "spg")), ("tree", ("fista", "admm", "spg")), ("graph", ("admm", "spg"))):
        vals = [
            StructuredLasso(sts[kind], 0.2 * lm, 0.3 * lm, solver=s, tol=1e-8, max_iter=50000).fit_gram(G, R).objective_
            for s in solvers
        ]
        np.testing.assert_allclose(vals, vals[0], rtol=1e-4)


def test_spg_smoothing_gradient_matches_finite_differences(problem):
    _, _, means = problem
    pen = make_penalty(_structures(means)["graph"], 0.1, 0.7, K, nonneg=False)
    rng = np.random.default_rng(7)
    B, D = rng.standard_normal((4, K)), rng.standard_normal((4, K))
    mu, eps = 0.05, 1e-6
    v0, g = pen.smooth(B, mu)
    vp, _ = pen.smooth(B + eps * D, mu)
    vm, _ = pen.smooth(B - eps * D, mu)
    assert (vp - vm) / (2 * eps) == pytest.approx(np.vdot(g, D), rel=1e-5)
    assert v0 <= pen.structured_value(B) + 1e-12  # the smoothing lower-bounds Omega


def test_lasso_path_warm_starts(problem):
    G, R, means = problem
    graph = _structures(means)["graph"]
    lm = lambda_max(G, R)
    lams = lm * np.array([0.05, 0.5, 0.2, 1.0])
    path = lasso_path(G, R, lams, structure=graph, lambda2=0.1 * lm, tol=1e-8)
    assert path.shape == (4, C, K)
    assert np.all(path[3] == 0)
    for i, l1 in enumerate(lams):
        cold = StructuredLasso(graph, l1, 0.1 * lm, tol=1e-8).fit_gram(G, R)
        assert objective(path[i], G, R, l1, 0.1 * lm, graph) == pytest.approx(cold.objective_, rel=1e-6)
    # a warm start from the solution converges at once
    est = StructuredLasso(None, 0.3 * lm, tol=1e-8).fit_gram(G, R)
    n_cold = est.n_iter_
    est.fit_gram(G, R)
    assert est.n_iter_ < n_cold


# --- input validation -----------------------------------------------------------------


def test_rejects_bad_arguments(problem):
    G, R, means = problem
    with pytest.raises(UnknownNameError, match="fista"):
        StructuredLasso(solver="newton")
    with pytest.raises(ValueError, match="lambda1"):
        StructuredLasso(lambda1=-1.0)
    with pytest.raises(TypeError, match="GraphFused or TreeGroup"):
        StructuredLasso(structure="graph")
    with pytest.raises(ValueError, match="R must be"):
        StructuredLasso(None, 0.1).fit_gram(G, R[:-1])
    with pytest.raises(ValueError, match="symmetric"):
        StructuredLasso(None, 0.1).fit_gram(G + np.triu(np.ones_like(G)), R)
    big = GraphFused(np.array([[0, K]]), np.array([1.0]))
    with pytest.raises(ValueError, match="out of range"):
        StructuredLasso(big, 0.1, 0.1).fit_gram(G, R)


def test_graph_snap_fuses_the_pairs_that_z_marks():
    # chain 0 -(+)- 1 -(-)- 2, and 3 alone
    g = GraphFused(np.array([[0, 1], [1, 2]]), np.array([0.5, -0.5]))
    X = np.array([[1.0, 1.1, -0.9, 0.3], [0.0, 0.01, 0.2, 0.3]])
    Z = np.array([[0.0, 0.0], [0.0, 0.2]])  # row 0: all fused; row 1: only 0-1 fused
    snapped = make_penalty(g, 0.1, 1.0, 4, nonneg=False).snap(X, Z)
    np.testing.assert_allclose(snapped[0], [1.0, 1.0, -1.0, 0.3])  # mean of (1, 1.1, 0.9), signed
    np.testing.assert_allclose(snapped[1], [0.0, 0.0, 0.2, 0.3])  # a fused exact zero stays zero
    assert np.all(snapped @ g.operator(4).T * (Z == 0) == 0)
    # with B >= 0, a component joined by a negative edge can only be zero
    Xp = np.abs(X)
    nn = make_penalty(g, 0.1, 1.0, 4, nonneg=True).snap(Xp, Z)
    np.testing.assert_allclose(nn[0], [0.0, 0.0, 0.0, 0.3])
