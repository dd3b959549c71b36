"""Class graph and class tree: validation and the builders of docs/METHODS.md 1.3."""

from __future__ import annotations

import numpy as np
import pytest

from lassoprune.lasso import (
    GraphFused,
    StructureError,
    TreeGroup,
    class_graph,
    class_tree,
    confusable_class_weights,
)


def _planted_means(seed: int = 0) -> np.ndarray:
    """6 classes in 2 clusters of 3: {0, 1, 2} and {3, 4, 5}."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((2, 40))
    members = np.repeat([0, 1], 3)
    return centres[members] + 0.25 * rng.standard_normal((6, 40))


# --- GraphFused -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "edges, weights, match",
    [
        (np.array([0, 1]), [0.5], r"shape \(E, 2\)"),
        (np.array([[0, 0]]), [0.5], "self-loop"),
        (np.array([[0, -1]]), [0.5], "non-negative"),
        (np.array([[0, 1.5]]), [0.5], "integer"),
        (np.array([[0, 1]]), [0.5, 0.1], "length 1"),
        (np.array([[0, 1]]), [np.nan], "finite"),
    ],
)
def test_graph_rejects_malformed(edges, weights, match):
    with pytest.raises(StructureError, match=match):
        GraphFused(edges, weights)


def test_graph_operator_is_the_fused_penalty():
    g = GraphFused(np.array([[0, 1], [1, 2], [0, 2]]), np.array([0.5, -0.3, 0.0]))
    B = np.random.default_rng(0).standard_normal((4, 3))
    direct = sum(
        abs(w) * np.abs(B[:, m] - np.sign(w) * B[:, l]).sum() for (m, l), w in zip(g.edges, g.weights)
    )
    assert np.abs(B @ g.operator(3).T).sum() == pytest.approx(direct, rel=1e-12)
    with pytest.raises(StructureError, match="out of range"):
        g.operator(2)


def test_empty_graph_is_allowed():
    g = GraphFused(np.zeros((0, 2), dtype=int), np.zeros(0))
    assert g.n_edges == 0 and g.operator(4).shape == (0, 4)


def test_class_graph_connects_every_class_with_the_largest_tau():
    means = np.random.default_rng(1).standard_normal((8, 20))
    g = class_graph(means)
    r = np.corrcoef(means)
    assert set(g.edges.ravel().tolist()) == set(range(8))
    np.testing.assert_allclose(g.weights, r[g.edges[:, 0], g.edges[:, 1]])
    # the default tau is the largest one that keeps every class connected
    tau = np.abs(g.weights).min()
    strict = class_graph(means, tau=tau + 1e-9)
    assert set(strict.edges.ravel().tolist()) != set(range(8))
    # a fixed tau keeps exactly the pairs with |r| >= tau
    full = class_graph(means, tau=0.0)
    assert full.n_edges == 8 * 7 // 2


def test_class_graph_planted_clusters_are_linked_positively():
    g = class_graph(_planted_means(), tau=0.5)
    for m, l in g.edges:
        assert (m < 3) == (l < 3)
    assert np.all(g.weights > 0)


@pytest.mark.parametrize(
    "means, match",
    [
        (np.ones((1, 5)), "K >= 2"),
        (np.array([[1.0, 1.0, 1.0], [0.0, 1.0, 2.0]]), "constant"),
        (np.array([[np.inf, 1.0, 0.0], [0.0, 1.0, 2.0]]), "finite"),
    ],
)
def test_builders_reject_bad_class_means(means, match):
    for builder in (class_graph, class_tree):
        with pytest.raises(StructureError, match=match):
            builder(means)


# --- TreeGroup ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "groups, weights, match",
    [
        ([np.array([], dtype=int)], [1.0], "non-empty"),
        ([np.array([0, 0])], [1.0], "repeats"),
        ([np.array([-1, 0])], [1.0], "negative class"),
        ([np.array([0, 1]), np.array([1, 2])], [1.0, 1.0], "nested or disjoint"),
        ([np.array([0, 1])], [-1.0], "non-negative"),
        ([np.array([0, 1])], [1.0, 2.0], "length 1"),
        ([np.array([0.5, 1])], [1.0], "integer"),
    ],
)
def test_tree_rejects_malformed(groups, weights, match):
    with pytest.raises(StructureError, match=match):
        TreeGroup(groups, weights)


def test_tree_order_is_leaves_to_root():
    t = TreeGroup([np.arange(4), np.array([2, 3]), np.array([0]), np.array([1])], [1, 1, 1, 1])
    order = t.leaves_to_root
    pos = {v: i for i, v in enumerate(order)}
    assert pos[1] < pos[0] and pos[2] < pos[0] and pos[3] < pos[0]
    with pytest.raises(StructureError, match="out of range"):
        t.check_classes(3)


def test_class_tree_recovers_planted_hierarchy_and_weights():
    t = class_tree(_planted_means())
    groups = [frozenset(g.tolist()) for g in t.groups]
    assert t.n_groups == 2 * 6 - 1
    assert frozenset({0, 1, 2}) in groups and frozenset({3, 4, 5}) in groups
    assert groups[-1] == frozenset(range(6))
    assert all(frozenset({k}) in groups for k in range(6))
    # weights: Kim & Xing 2010 with heights normalised by the root's
    assert t.weights[-1] == pytest.approx(0.0)  # g_root = 1 - h_root = 0
    assert np.all(t.weights >= 0) and np.all(t.weights <= 1)
    # a cluster node: w = (1 - h_v) * s_root = 1 - h_v (its only ancestor is the root, h = 1);
    # its leaves: w = h_v * 1, so leaf + cluster weights of one cluster sum to 1
    v = groups.index(frozenset({0, 1, 2}))
    leaf_w = [t.weights[groups.index(frozenset({k}))] for k in range(3)]
    inner = [i for i, g in enumerate(groups) if len(g) == 2 and g <= {0, 1, 2}]
    assert len(inner) == 1
    h_inner = 1 - t.weights[inner[0]] / (1 - t.weights[v])  # w_inner = (1 - h_inner) * h_v
    h_v = 1 - t.weights[v]
    pair = sorted(groups[inner[0]])
    for k in pair:
        assert leaf_w[k] == pytest.approx(h_inner * h_v)
    (single,) = set(range(3)) - set(pair)
    assert leaf_w[single] == pytest.approx(h_v)


def test_class_tree_root_weight_override():
    t = class_tree(_planted_means(), root_weight=0.7)
    assert t.weights[-1] == 0.7
    with pytest.raises(StructureError, match="root_weight"):
        class_tree(_planted_means(), root_weight=-1.0)


def test_confusable_weights_are_one_plus_the_positive_correlations_normalised_to_mean_one():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(2, 50))
    # classes 0, 1, 2 share a pattern; class 3 has its own; class 4 is its negative (r = -1 adds nothing)
    means = np.stack([base[0] + 0.3 * rng.normal(size=50) for _ in range(3)] + [base[1], -base[1]])
    w = confusable_class_weights(means)
    r = np.corrcoef(means)
    np.fill_diagonal(r, 0.0)
    raw = 1.0 + np.clip(r, 0.0, None).sum(axis=1)
    assert np.allclose(w, raw / raw.mean())
    assert w.mean() == pytest.approx(1.0)
    assert min(w[:3]) > max(w[3:])  # the look-alike classes weigh more


def test_confusable_weights_reject_bad_class_means():
    with pytest.raises(StructureError, match="constant"):
        confusable_class_weights(np.ones((3, 4)))


def test_default_class_graph_gives_every_class_an_edge_whatever_the_rounding() -> None:
    """The default threshold min_m max_l |r_ml| leaves every class an edge, for many random class means.

    np.corrcoef is symmetric only up to rounding; read the threshold off one triangle and the edges
    off the other and a class can lose its only edge by one unit in the last place.
    """
    from lassoprune.lasso import class_graph

    for seed in range(200):
        rng = np.random.default_rng(seed)
        means = rng.normal(size=(10, 64)) + rng.normal(size=(1, 64))
        graph = class_graph(means)
        assert {int(c) for edge in graph.edges for c in edge} == set(range(10)), seed
