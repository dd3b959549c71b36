"""Class structures as drawable geometry: a class tree as a scipy linkage, a class graph on a circle.

sTLP-IB stores its class tree as a list of groups (one per tree node, the
root holding every class) with weights ``w_v``; a dendrogram needs a binary
linkage matrix instead. :func:`tree_linkage` rebuilds one from the groups:
a node's height is one more than its highest child (leaves at 0), and a node
with more than two children (child nodes and uncovered single classes) merges
them one after another at the node's height, so every tree node stays one
contiguous run of leaves in the dendrogram.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from lassoprune.errors import LassopruneError


def tree_linkage(groups: Sequence[Sequence[Any]], num_classes: int) -> np.ndarray:
    """A scipy linkage matrix ``(K-1, 4)`` of ``[a, b, height, count]`` rows for a class tree.

    Args:
        groups: ``[[class indices], w_v]`` per tree node (weights are ignored;
            single-class groups are the leaves and may be omitted). A root
            holding every class is added when absent.
        num_classes: K.

    Raises:
        LassopruneError: two groups overlap without one containing the other.
    """
    nodes = _laminar_nodes(groups, num_classes)
    cluster: dict[frozenset[int], int] = {}
    height: dict[frozenset[int], float] = {}
    rows: list[list[float]] = []
    parents = {node: _parent(node, nodes) for node in nodes}
    for node in nodes:  # increasing size: children come before their parents
        children = [child for child in nodes if parents[child] == node]
        covered = frozenset().union(*children)
        members = [(min(child), cluster[child], len(child)) for child in children]
        members += [(k, k, 1) for k in sorted(node - covered)]
        members.sort()
        height[node] = 1.0 + max((height[child] for child in children), default=0.0)
        current, count = members[0][1], members[0][2]
        for _, index, size in members[1:]:
            count += size
            rows.append([float(current), float(index), height[node], float(count)])
            current = num_classes + len(rows) - 1
        cluster[node] = current
    return np.asarray(rows, dtype=float).reshape(-1, 4)


def _laminar_nodes(groups: Sequence[Sequence[Any]], num_classes: int) -> list[frozenset[int]]:
    """The distinct multi-class groups plus the root, smallest first; checked to nest."""
    nodes = {frozenset(int(k) for k in members) for members, _ in groups}
    nodes = {node for node in nodes if len(node) > 1}
    nodes.add(frozenset(range(num_classes)))
    ordered = sorted(nodes, key=lambda node: (len(node), sorted(node)))
    for i, a in enumerate(ordered):
        for b in ordered[i + 1:]:
            if a & b and not a <= b:
                raise LassopruneError(
                    f"class tree groups {sorted(a)} and {sorted(b)} overlap without nesting: not a tree"
                )
    return ordered if num_classes > 1 else []


def _parent(node: frozenset[int], nodes: Sequence[frozenset[int]]) -> frozenset[int] | None:
    """The smallest node strictly containing ``node`` (``nodes`` sorted by size)."""
    return next((other for other in nodes if node < other), None)


def class_linkage(summary: Mapping[str, Any]) -> tuple[np.ndarray, str] | None:
    """The dendrogram linkage of a tree-structured run and where it came from.

    The tree rebuilt from ``class_structure.groups``; ``None`` when the run has no
    class tree (or one tree per group, ``"from": "layer"``, which has no groups to draw).
    """
    structure = summary.get("class_structure") or {}
    if structure.get("kind") != "tree" or "groups" not in structure:
        return None
    return tree_linkage(structure["groups"], len(summary["class_names"])), "tree groups"


def dendrogram_layout(linkage: np.ndarray, num_classes: int) -> dict[str, Any]:
    """Leaf order and link coordinates of a dendrogram, computed without drawing (no pyplot).

    Returns scipy's ``dendrogram(..., no_plot=True)`` dict: ``leaves`` (class
    indices top to bottom), ``icoord`` / ``dcoord`` (one 4-point link per row;
    leaf ``i`` of the order sits at ``5 + 10 i``).
    """
    if num_classes < 2:
        return {"leaves": list(range(num_classes)), "icoord": [], "dcoord": []}
    from scipy.cluster.hierarchy import dendrogram

    return dendrogram(linkage, no_plot=True)


def circle_positions(num_classes: int) -> np.ndarray:
    """``(K, 2)`` points on the unit circle, class 0 at the top, going clockwise."""
    angles = np.pi / 2 - 2 * np.pi * np.arange(num_classes) / max(num_classes, 1)
    return np.stack([np.cos(angles), np.sin(angles)], axis=1)
