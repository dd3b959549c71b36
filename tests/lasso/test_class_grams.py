"""The per-class Gram datafit (docs/METHODS.md 1.3 b, c): agreement with cvxpy for every structure, identities."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from lassoprune.lasso import (
    ClassGrams,
    GraphFused,
    QuadraticGram,
    StructuredLasso,
    TreeGroup,
    class_graph,
    class_tree,
    lambda_max,
    make_penalty,
    objective,
    pivoted_cholesky,
)
from lassoprune.lasso.solvers import RHO_RANGE, _middle_rho, consensus_admm

C, K = 24, 4


@pytest.fixture(scope="module")
def problem():
    """Per-class Grams ``G_k = M_k M_k^T`` of different designs, R = [M_k t_k], class means for the structures."""
    rng = np.random.default_rng(3)
    grams, cross = [], []
    for _ in range(K):
        M = rng.standard_normal((C, 40))
        grams.append(M @ M.T)
        cross.append(M @ rng.standard_normal(40))
    return np.stack(grams), np.stack(cross, axis=1), rng.standard_normal((K, 9))


def _structure(kind: str, means: np.ndarray):
    return {"none": None, "graph": class_graph(means), "tree": class_tree(means, root_weight=0.5)}[kind]


def _cvxpy_class_grams(G, R, lambda1, lambda2, structure, nonneg):
    """``sum_k 1/2 ||F_k b_k||^2 - r_k^T b_k + penalties`` with ``F_k^T F_k = G_k``, by cvxpy."""
    cp = pytest.importorskip("cvxpy")
    B = cp.Variable(R.shape, nonneg=nonneg)
    fit = 0
    for k in range(G.shape[0]):
        lam, U = np.linalg.eigh(G[k])
        F = (U * np.sqrt(np.maximum(lam, 0.0))).T
        fit = fit + 0.5 * cp.sum_squares(F @ B[:, k]) - R[:, k] @ B[:, k]
    obj = fit + lambda1 * cp.sum(cp.abs(B))
    if isinstance(structure, GraphFused) and structure.n_edges:
        obj = obj + lambda2 * cp.sum(cp.abs(B @ structure.operator(R.shape[1]).T))
    if isinstance(structure, TreeGroup):
        for g, w in zip(structure.groups, structure.weights):
            if w > 0:
                obj = obj + lambda2 * w * cp.sum(cp.norm(B[:, g], 2, axis=1))
    prob = cp.Problem(cp.Minimize(obj))
    prob.solve()
    return prob.value, B.value


def test_value_and_gradient_are_the_formula(problem):
    G, R, _ = problem
    fit = ClassGrams(G, R)
    B = np.random.default_rng(1).standard_normal((C, K))
    expected = sum(0.5 * B[:, k] @ G[k] @ B[:, k] - R[:, k] @ B[:, k] for k in range(K))
    assert fit.value(B) == pytest.approx(expected, rel=1e-12)
    grad = np.stack([G[k] @ B[:, k] - R[:, k] for k in range(K)], axis=1)
    np.testing.assert_allclose(fit.gradient(B), grad, rtol=1e-12, atol=1e-12)
    assert fit.lipschitz == pytest.approx(max(np.linalg.eigvalsh(g)[-1] for g in G), rel=1e-10)


def test_prox_solves_its_normal_equations(problem):
    G, R, _ = problem
    fit = ClassGrams(G, R)
    V = np.random.default_rng(2).standard_normal((C, K))
    W = fit.prox(V, 0.7)
    for k in range(K):  # (G_k + rho I) w_k = r_k + rho v_k
        np.testing.assert_allclose((G[k] + 0.7 * np.eye(C)) @ W[:, k], R[:, k] + 0.7 * V[:, k], rtol=1e-9, atol=1e-9)
    single = QuadraticGram(G[0], R)
    np.testing.assert_allclose(single.prox(V, 0.7), np.linalg.solve(G[0] + 0.7 * np.eye(C), R + 0.7 * V), atol=1e-9)


@pytest.mark.parametrize("rho", [1e-3, 0.7, 50.0])
def test_low_rank_prox_solves_the_same_equations(rho):
    """Grams of rank 5 < C / 2 (few calibration images): the prox works in their column space and still solves
    ``(G_k + rho I) w_k = r_k + rho v_k`` for every class, whatever rho is against the spectrum."""
    rng = np.random.default_rng(4)
    factors = [rng.standard_normal((C, 5)) * scale for scale in (1.0, 3.0, 0.1, 1.0)]
    G = np.stack([M @ M.T for M in factors])
    R = np.stack([M @ rng.standard_normal(5) for M in factors], axis=1)
    V = rng.standard_normal((C, K))
    fit = ClassGrams(G, R)
    lam_r, U_r = fit.column_space
    assert lam_r.shape == (K, 5) and U_r.shape == (K, C, 5)
    expected_value = sum(0.5 * V[:, k] @ G[k] @ V[:, k] - R[:, k] @ V[:, k] for k in range(K))
    assert fit.value(V) == pytest.approx(expected_value, rel=1e-10)
    W = fit.prox(V, rho)
    for k in range(K):
        lhs = (G[k] + rho * np.eye(C)) @ W[:, k]
        np.testing.assert_allclose(lhs, R[:, k] + rho * V[:, k], rtol=1e-9, atol=1e-9 * np.abs(lhs).max())
    single = QuadraticGram(G[1], R)
    assert single.column_space is not None
    expected = np.linalg.solve(G[1] + rho * np.eye(C), R + rho * V)
    np.testing.assert_allclose(single.prox(V, rho), expected, rtol=1e-9, atol=1e-9 * np.abs(expected).max())
    assert ClassGrams(np.stack([M @ M.T for M in [rng.standard_normal((C, 40))] * K]), R).column_space is None


@pytest.mark.parametrize("nonneg", [True, False])
@pytest.mark.parametrize("kind", ["none", "graph", "tree"])
def test_agrees_with_cvxpy(problem, kind, nonneg):
    G, R, means = problem
    st = _structure(kind, means)
    lm = lambda_max(None, R, nonneg)
    l1, l2 = 0.2 * lm, 0.3 * lm
    est = StructuredLasso(st, l1, l2, nonneg=nonneg, tol=1e-7, max_iter=50000).fit_gram(G, R)
    ref, B_ref = _cvxpy_class_grams(G, R, l1, l2, st, nonneg)
    assert est.converged_
    assert est.solver_ == ("consensus" if kind == "graph" else "fista")
    assert abs(est.objective_ - ref) <= 1e-4 * abs(ref)
    assert est.objective_ == pytest.approx(objective(est.coef_, G, R, l1, l2, st, nonneg), rel=1e-12)
    np.testing.assert_allclose(est.coef_, B_ref, atol=2e-3 * np.abs(B_ref).max())
    if nonneg:
        assert np.all(est.coef_ >= 0)


def test_equal_grams_are_the_single_gram_fit(problem):
    """K copies of one Gram are :class:`QuadraticGram`: same objective, same solution, every solver."""
    G, R, means = problem
    same = np.repeat(G[:1], K, axis=0)
    st = class_graph(means)
    lm = lambda_max(None, R, False)
    ref = StructuredLasso(st, 0.2 * lm, 0.3 * lm, nonneg=False, tol=1e-9, max_iter=50000).fit_gram(G[0], R)
    for solver in ("consensus", "spg"):
        est = StructuredLasso(st, 0.2 * lm, 0.3 * lm, nonneg=False, tol=1e-9, max_iter=50000,
                              solver=solver).fit_gram(same, R)
        assert est.objective_ == pytest.approx(ref.objective_, rel=1e-5)
    consensus_on_one = StructuredLasso(st, 0.2 * lm, 0.3 * lm, nonneg=False, tol=1e-9, max_iter=50000,
                                       solver="consensus").fit_gram(G[0], R)
    assert consensus_on_one.objective_ == pytest.approx(ref.objective_, rel=1e-6)


def test_kkt_of_the_plain_lasso(problem):
    """Signed lasso: ``-grad_ck = lambda1 sign(B_ck)`` on the support, ``|grad_ck| <= lambda1`` off it."""
    G, R, _ = problem
    lm = lambda_max(None, R, False)
    est = StructuredLasso(None, 0.3 * lm, 0.0, nonneg=False, tol=1e-10, max_iter=100000).fit_gram(G, R)
    grad = ClassGrams(G, R).gradient(est.coef_)
    on = est.coef_ != 0
    assert on.any() and (~on).any()
    np.testing.assert_allclose(-grad[on], 0.3 * lm * np.sign(est.coef_[on]), atol=1e-5 * lm)
    assert np.all(np.abs(grad[~on]) <= 0.3 * lm * (1 + 1e-6))


def test_lambda_max_zeroes_per_class_fits(problem):
    G, R, means = problem
    for nonneg in (True, False):
        lm = lambda_max(None, R, nonneg)
        for kind in ("none", "graph", "tree"):
            est = StructuredLasso(_structure(kind, means), lm, 0.5 * lm, nonneg=nonneg).fit_gram(G, R)
            assert not est.coef_.any()
            est = StructuredLasso(_structure(kind, means), 0.9 * lm, 0.0, nonneg=nonneg).fit_gram(G, R)
            assert est.coef_.any()


def test_admm_refuses_per_class_grams(problem):
    G, R, means = problem
    with pytest.raises(ValueError, match="consensus"):
        StructuredLasso(class_graph(means), 0.1, 0.1, solver="admm").fit_gram(G, R)
    penalty = make_penalty(None, 0.1, 0.0, K)
    assert penalty.value(np.zeros((C, K))) == 0.0


def test_rejects_malformed_grams(problem):
    G, R, _ = problem
    with pytest.raises(ValueError, match="R must be"):
        ClassGrams(G, R[:, :2])
    asym = G.copy()
    asym[0, 0, 1] += 1.0
    with pytest.raises(ValueError, match="symmetric"):
        ClassGrams(asym, R)


@pytest.mark.parametrize("kind", ["none", "graph", "tree"])
def test_float32_products_reach_the_float64_optimum(problem, kind):
    """The lasso methods' setting: products in float32, objective in float64, at their solver tolerance."""
    G, R, means = problem
    st = _structure(kind, means)
    lm = lambda_max(None, R, False)
    exact = StructuredLasso(st, 0.2 * lm, 0.3 * lm, nonneg=False, tol=1e-8, max_iter=50000).fit_gram(G, R)
    fast = StructuredLasso(st, 0.2 * lm, 0.3 * lm, nonneg=False, tol=1e-5, max_iter=50000).fit_gram(
        ClassGrams(G, R, product_dtype=np.float32), None)
    assert fast.converged_
    assert abs(fast.objective_ - exact.objective_) <= 1e-4 * abs(exact.objective_)
    # without precomputed products the value is float64 whatever the product precision
    assert ClassGrams(G, R, product_dtype=np.float32).value(exact.coef_) == ClassGrams(G, R).value(exact.coef_)


def test_wide_low_rank_grams_are_factored_without_their_eigen_decomposition():
    """C = 300 >= LOW_RANK_WIDTH, rank 7: the pivoted Cholesky factor reproduces each Gram, the prox solves the
    normal equations and the full eigen-decomposition is never computed; a full-rank wide Gram falls back to it."""
    rng = np.random.default_rng(5)
    wide = 300
    factors = [rng.standard_normal((wide, 7)) * scale for scale in (1.0, 2.0, 0.5)]
    G = np.stack([M @ M.T for M in factors])
    R = np.stack([M @ rng.standard_normal(7) for M in factors], axis=1)
    L = pivoted_cholesky(G[1], wide // 2, 1e-14)
    assert L.shape == (wide, 7)
    np.testing.assert_allclose(L @ L.T, G[1], atol=1e-10 * np.abs(G[1]).max())
    fit = ClassGrams(G, R)
    V = rng.standard_normal((wide, 3))
    W = fit.prox(V, 0.3)
    assert "eigh" not in fit.__dict__
    for k in range(3):
        lhs = (G[k] + 0.3 * np.eye(wide)) @ W[:, k]
        np.testing.assert_allclose(lhs, R[:, k] + 0.3 * V[:, k], rtol=1e-9, atol=1e-9 * np.abs(lhs).max())
    assert fit.lipschitz == pytest.approx(max(np.linalg.eigvalsh(g)[-1] for g in G), rel=1e-10)
    assert pivoted_cholesky(np.eye(wide), wide // 2, 1e-14) is None
    assert ClassGrams(np.stack([np.eye(wide)] * 3), R).column_space is None


@pytest.mark.parametrize("rank", [5, 40])
def test_admm_penalty_stays_bounded_when_the_solution_is_zero(problem, rank):
    """Above lambda_max the duals vanish and the dual residual leads forever: residual balancing must stop at
    its bound instead of halving rho into underflow (the low-rank prox's 1/rho terms then overflowed)."""
    _, _, means = problem
    rng = np.random.default_rng(6)
    factors = [rng.standard_normal((C, rank)) for _ in range(K)]
    G = np.stack([M @ M.T for M in factors])
    R = np.stack([M @ rng.standard_normal(rank) for M in factors], axis=1)
    fit = ClassGrams(G, R)
    lm = lambda_max(None, R, True)
    penalty = make_penalty(class_graph(means), 2.0 * lm, lm, K, nonneg=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        result = consensus_admm(fit, penalty, tol=1e-14, max_iter=6000)
    assert not result.coef.any()
    middle = _middle_rho(fit.spectrum)
    assert middle / RHO_RANGE <= result.state["rho"] <= middle * RHO_RANGE


def _held_bytes(fit: ClassGrams) -> int:
    """Bytes of every distinct array a datafit holds (its Grams, R, cached bases, products copy)."""
    arrays, stack = {}, list(fit.__dict__.values())
    while stack:
        item = stack.pop()
        if isinstance(item, np.ndarray):
            owner = item if item.base is None else item.base  # a view holds its whole base
            arrays[id(owner)] = owner.nbytes
        elif isinstance(item, tuple | list):
            stack.extend(item)
    return sum(arrays.values())


@pytest.mark.parametrize("kind", ["graph", "tree"])
@pytest.mark.parametrize("width, rank", [(24, 5), (24, 40), (300, 12)])
def test_memory_held_after_a_solve_is_within_the_problem_bound(kind, width, rank):
    """What a solved per-class problem keeps stays within ``BYTES_PER_GRAM_ELEMENT`` per Gram element (plus
    O(K C) vectors), the bound the lasso methods check before building Grams: low-rank Grams drop their full
    eigenbasis once the column space is known, and ADMM (graph) never makes a float32 copy of the Grams."""
    from lassoprune.hsic.problem import BYTES_PER_GRAM_ELEMENT

    rng = np.random.default_rng(5)
    factors = [rng.standard_normal((width, rank)) for _ in range(K)]
    G = np.stack([M @ M.T for M in factors])
    R = np.stack([M @ rng.standard_normal(rank) for M in factors], axis=1)
    fit = ClassGrams(G, R, product_dtype=np.float32)
    structure = _structure(kind, rng.standard_normal((K, 9)))
    lam = 0.3 * lambda_max(G, R, False)
    StructuredLasso(structure, lam, 0.1 * lam, max_iter=300).fit_gram(fit, None)
    assert _held_bytes(fit) <= BYTES_PER_GRAM_ELEMENT * K * width**2 + 32 * K * width
    if kind == "graph":
        assert "_G_products" not in fit.__dict__
        assert ("eigh" in fit.__dict__) == (2 * rank > width)  # low rank: the column space alone
