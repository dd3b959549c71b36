"""Run a network only as far as the next layer to refit, from the stored activations that can no longer change.

Reconstruction (:mod:`lassoprune.pruning.reconstruct`) refits layers one after
another in execution order; before each refit it needs the refitted layer's
input on every calibration batch, computed by the pruned network *after* the
earlier refits. Running the whole prefix again for every layer costs L forward
passes. This module traces the network once (``torch.fx``) and keeps, per
calibration batch, only the *frontier*: the smallest set of known values of
*frozen* graph nodes (neither the node nor any node it depends on calls a
module that a pending refit will still change, so its value on a batch is
final) from which the inputs of every later refitted layer can be computed.

A pass for layer ``k`` computes only the nodes between the frontier and the
layer's input, each node at most once per batch, and then replaces the
frontier by the new one (found by walking back from the later layers' inputs
and stopping at frozen nodes whose value is known). Nothing upstream of the
frontier is run again, and nothing but the frontier is held between passes,
so the memory is the width
of the network at its narrowest cut between finished and pending layers
(about one activation map per batch), not one copy per finished module.

The values are those the network's own forward computes, op by op, in the
same order and precision. Nodes that modify their first argument in place
(``ReLU(inplace=True)``, ``out += identity``, methods ending in ``_``) are
given a private copy of it, so a stored value is never changed afterwards.
Networks that ``torch.fx`` cannot trace (data-dependent control flow) raise
:class:`UntraceableNetwork`; callers then fall back to
:class:`~lassoprune.pruning.prefix_cache.FinishedModuleCache`.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, fx, nn

_IN_PLACE_OPERATORS = frozenset({
    operator.iadd, operator.isub, operator.imul, operator.itruediv, operator.ifloordiv, operator.imod,
    operator.ipow, operator.iand, operator.ior, operator.ixor, operator.ilshift, operator.irshift,
    operator.imatmul, operator.setitem,
})


class UntraceableNetwork(Exception):
    """``torch.fx`` could not trace the network (or a refitted layer is not called as a graph node)."""


def _modules_of(node: fx.Node) -> set[str]:
    """Module names whose state the node reads directly (call_module target, the owner of a get_attr)."""
    if node.op == "call_module":
        return {str(node.target)}
    if node.op == "get_attr":
        owner = str(node.target).rpartition(".")[0]
        return {owner} if owner else set()
    return set()


def _mutates_first_argument(node: fx.Node, modules: Mapping[str, nn.Module]) -> bool:
    """Whether the node changes its first argument in place."""
    if node.op == "call_module":
        return bool(getattr(modules[str(node.target)], "inplace", False))
    if node.op == "call_method":
        name = str(node.target)
        return name.endswith("_") and not name.endswith("__") or name.startswith("__i")
    if node.op == "call_function":
        name = getattr(node.target, "__name__", "")
        return (node.target in _IN_PLACE_OPERATORS or bool(node.kwargs.get("inplace", False))
                or name.endswith("_") and not name.endswith("__"))
    return False


_VIEW_NAMES = frozenset({
    "view", "view_as", "reshape", "reshape_as", "flatten", "unflatten", "transpose", "permute", "t", "expand",
    "expand_as", "narrow", "select", "squeeze", "unsqueeze", "contiguous", "chunk", "split", "unbind",
    "getitem", "__getitem__", "detach", "as_strided", "movedim", "swapaxes", "diagonal", "unfold", "type_as",
    "to", "float", "dropout", "alpha_dropout", "feature_alpha_dropout",
})
_ALIASING_MODULES = (nn.Identity, nn.Flatten, nn.Unflatten, nn.Dropout, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)


def _may_alias_its_input(node: fx.Node, modules: Mapping[str, nn.Module]) -> bool:
    """Whether the node's value may share memory with its first argument (a view, an identity)."""
    if node.op == "call_module":
        return isinstance(modules[str(node.target)], _ALIASING_MODULES)
    if node.op in ("call_method", "call_function"):
        name = str(node.target) if node.op == "call_method" else getattr(node.target, "__name__", "")
        return name in _VIEW_NAMES
    return False


def check_mutations(nodes: Sequence[fx.Node], modules: Mapping[str, nn.Module]) -> None:
    """Refuse graphs where giving an in-place node a private copy could change what another node reads.

    Safe: every other reader of the mutated value (and of every value it may alias) runs before the
    mutation, so it reads the unchanged value in the network's forward too.
    """
    position = {node: i for i, node in enumerate(nodes)}
    for node in nodes:
        if not _mutates_first_argument(node, modules) or not node.args or not isinstance(node.args[0], fx.Node):
            continue
        aliases = [node.args[0]]
        while _may_alias_its_input(aliases[-1], modules) and isinstance(aliases[-1].args[0], fx.Node):
            aliases.append(aliases[-1].args[0])
        chain = set(aliases) | {node}
        for alias in aliases:
            if any(position[user] > position[node] for user in alias.users if user not in chain):
                raise UntraceableNetwork(f"{node.name} changes a value that is read again after it")


class FrozenPrefix:
    """The frontier of frozen activations of ``model`` over a fixed list of batches (module docstring).

    Args:
        model: the network (eval mode); its modules are used as they are at each call, so refits
            written in place are seen by the next pass.
        layers: names of the layers whose inputs will be asked for, in the order they will be asked.
        pending: names of the modules that the refits will still change (each refitted layer and the
            BatchNorm that takes its intercept, for instance); :meth:`finish` removes them.

    Raises:
        UntraceableNetwork: when ``torch.fx`` cannot trace ``model`` or a layer is not a call in the graph.

    Usage: ``for b, x in enumerate(batches): rows = prefix.layer_input(name, b, x)`` for one layer,
    then ``prefix.finish(name)`` once its refit is written, then the next layer.
    """

    def __init__(self, model: nn.Module, layers: Sequence[str], pending: Iterable[str]) -> None:
        try:
            self._graph = fx.Tracer().trace(model)
        except Exception as error:  # fx raises many kinds (TraceError, TypeError, RuntimeError...)
            raise UntraceableNetwork(f"torch.fx cannot trace {type(model).__name__}: {error}") from error
        self._model = model
        self._modules = dict(model.named_modules())
        self._nodes = list(self._graph.nodes)
        check_mutations(self._nodes, self._modules)
        placeholders = [node for node in self._nodes if node.op == "placeholder"]
        if not placeholders or any(not node.args for node in placeholders[1:]):
            raise UntraceableNetwork("forward() must take the images and nothing else without a default")
        self._input = placeholders[0]
        self._index = {node: i for i, node in enumerate(self._nodes)}
        self._reads: list[frozenset[str]] = []
        for node in self._nodes:  # in execution order: a node's inputs are done before it
            self._reads.append(self._reads_of(node))
        self._pending = list(pending)
        self._frozen = self._frozen_nodes()
        self._mutating = {node for node in self._nodes if _mutates_first_argument(node, self._modules)}
        self._layers = list(layers)
        self._inputs = {name: self._input_node(name) for name in layers}
        self._store: dict[int, dict[fx.Node, Tensor]] = {}
        self.computed = 0  # node evaluations so far (each frontier hit saves the evaluation of its ancestors)

    # -- static facts of the graph -------------------------------------------------------------------------

    def _reads_of(self, node: fx.Node) -> frozenset[str]:
        """Every module the node's value depends on (its own and its ancestors')."""
        reads = set(_modules_of(node))
        for arg in node.all_input_nodes:
            reads |= self._reads[self._index[arg]]
        return frozenset(reads)

    def _input_node(self, name: str) -> fx.Node:
        for node in self._nodes:
            if node.op == "call_module" and node.target == name:
                first = node.args[0] if node.args else None
                if isinstance(first, fx.Node):
                    return first
                break
        raise UntraceableNetwork(f"layer {name!r} is not called on a traced value")

    def _later_inputs(self, name: str) -> list[fx.Node]:
        """The input nodes of the layers asked for after layer ``name``."""
        return [self._inputs[later] for later in self._layers[self._layers.index(name) + 1:]]

    def _frozen_nodes(self) -> set[fx.Node]:
        pending = set(self._pending)
        return {node for node, reads in zip(self._nodes, self._reads)
                if node.op not in ("placeholder", "output") and not reads & pending}

    # -- the passes ------------------------------------------------------------------------------------------

    def finish(self, name: str) -> None:
        """Record that module ``name`` will not change again (one call per pending entry)."""
        self._pending.remove(name)
        self._frozen = self._frozen_nodes()

    @torch.no_grad()
    def layer_input(self, name: str, batch: int, x: Tensor) -> Tensor:
        """The first input of layer ``name`` on batch ``x`` (number ``batch``), then the new frontier kept."""
        store = self._store.get(batch, {})
        values: dict[fx.Node, Any] = dict(store)
        target = self._inputs[name]
        for node in self._to_compute(target, store):
            values[node] = self._run(node, values, x)
            self.computed += 1
        self._store[batch] = self._frontier(values, self._later_inputs(name))
        return values[target]

    def _to_compute(self, target: fx.Node, store: Mapping[fx.Node, Tensor]) -> list[fx.Node]:
        """The nodes between the stored frontier and ``target``, in execution order."""
        wanted: set[fx.Node] = set()
        stack = [target]
        while stack:
            node = stack.pop()
            if node in wanted or node in store:
                continue
            wanted.add(node)
            stack.extend(node.all_input_nodes)
        return sorted(wanted, key=self._index.__getitem__)

    def _frontier(self, values: Mapping[fx.Node, Any], targets: Sequence[fx.Node]) -> dict[fx.Node, Tensor]:
        """The smallest set of frozen, known values from which every later target can be computed.

        Walks back from the later targets; a frozen node whose value is known ends its path (it is kept),
        any other node is passed through (it will be computed again from its inputs).
        """
        kept: dict[fx.Node, Tensor] = {}
        seen: set[fx.Node] = set()
        stack = list(targets)
        while stack:
            node = stack.pop()
            if node in seen:
                continue
            seen.add(node)
            value = values.get(node)
            if node in self._frozen and isinstance(value, Tensor):
                kept[node] = value
            else:
                stack.extend(node.all_input_nodes)
        return kept

    def _run(self, node: fx.Node, values: Mapping[fx.Node, Any], x: Tensor) -> Any:
        """Evaluate one node as the network's forward would."""
        if node.op == "placeholder":
            if node is self._input:
                return x
            return node.args[0]  # a later argument of forward(), with its default (checked in __init__)
        if node.op == "get_attr":
            value: Any = self._model
            for part in str(node.target).split("."):
                value = getattr(value, part)
            return value
        args = fx.node.map_arg(node.args, values.__getitem__)
        kwargs = fx.node.map_arg(node.kwargs, values.__getitem__)
        if node in self._mutating and args and isinstance(args[0], Tensor):
            args = (args[0].clone(), *args[1:])  # the stored / shared value stays as it was
        if node.op == "call_module":
            return self._modules[str(node.target)](*args, **kwargs)
        if node.op == "call_method":
            return getattr(args[0], str(node.target))(*args[1:], **kwargs)
        return node.target(*args, **kwargs)  # call_function

    def stored_bytes(self) -> int:
        """Bytes held by the frontier, all batches."""
        return sum(v.numel() * v.element_size() for store in self._store.values() for v in store.values())

    def clear(self) -> None:
        self._store.clear()

