"""Serve the finished part of a network from memory while later layers are refitted.

Reconstruction (:mod:`lassoprune.pruning.reconstruct`) refits layers one after
another, and before each refit it runs the pruned network on every calibration
batch up to the layer being refitted. Without help, refitting the L layers of a
deep network runs its prefix L times (ResNet-56: 57 prefix passes, most of the
cost). Once every layer inside a module has been refitted, that module can no
longer change, so its output on a batch is a pure function of its input: this
cache keeps that output and returns it whenever the module sees the same input
values again.

Two kinds of entries, both per calibration batch:

- a *finished module* (no pending refit inside it, its parent still pending, and
  not a child of an ``nn.Sequential``) keeps ``(inputs, output)``;
- an ``nn.Sequential`` whose first children are finished keeps the output of the
  last finished child of that prefix, and runs only the children after it.

An entry is used only when the module's inputs equal the stored ones
(``torch.equal``, identity first), so a cached output is exactly what running
the module would give (eval mode, deterministic kernels). Modules without
parameters or buffers are never cached (recomputing them costs nothing). A
module shared by several call sites simply misses its entry when its inputs
differ. Memory: about one activation per finished module on the frontier of
the refits, per batch.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn


@dataclass
class _Entry:
    """What a module (or an ``nn.Sequential``'s finished prefix, up to child ``last``) gave on one batch.

    ``output`` is a private copy and every use gets a clone, so in-place operations of the caller (a
    residual ``out += x``, ``ReLU(inplace=True)``) cannot reach it; ``versions`` are the inputs' in-place
    version counters when stored, so an input the caller changed in place afterwards is never matched.
    """

    inputs: tuple[Tensor, ...]
    versions: tuple[int, ...]
    output: Tensor
    last: int = -1

    @classmethod
    def of(cls, inputs: tuple[Tensor, ...], output: Tensor, last: int = -1) -> _Entry:
        return cls(inputs, tuple(x._version for x in inputs), output.detach().clone(), last)

    def serves(self, inputs: tuple[Any, ...]) -> bool:
        """Whether ``inputs`` are the stored inputs' values (and those were not changed in place since)."""
        return (len(inputs) == len(self.inputs)
                and all(x._version == v for x, v in zip(self.inputs, self.versions))
                and all(_same(a, b) for a, b in zip(self.inputs, inputs)))  # fmt: skip


def _same(a: Tensor, b: Any) -> bool:
    """Whether a call argument has the stored tensor's values (identity first, then exact equality)."""
    return a is b or (isinstance(b, Tensor) and a.dtype == b.dtype and torch.equal(a, b))


def _ancestors(name: str) -> Iterator[str]:
    """``name`` and every enclosing module name, the root ``""`` last (``a.b.c`` -> ``a.b.c, a.b, a, ""``)."""
    parts = name.split(".") if name else []
    for end in range(len(parts), -1, -1):
        yield ".".join(parts[:end])


class FinishedModuleCache:
    """Outputs of the modules of ``model`` that no pending refit can change (module docstring).

    Args:
        model: the network whose forward passes are served (its modules are wrapped only inside
            :meth:`installed`).
        pending: names of the modules the remaining refits will change (a refitted layer and the
            BatchNorm that takes its intercept, for instance).

    Usage: ``with cache.installed(): for b, x in enumerate(batches): cache.batch = b; model(x)``, and
    :meth:`finish` once a module's refit is written.
    """

    def __init__(self, model: nn.Module, pending: Iterable[str]) -> None:
        self.batch = 0
        self._modules = dict(model.named_modules())
        self._parent = {name: name.rpartition(".")[0] for name in self._modules if name}
        self._stateful = {name for name, m in self._modules.items()
                          if next(m.parameters(), None) is not None or next(m.buffers(), None) is not None}
        self._pending_inside: dict[str, int] = dict.fromkeys(self._modules, 0)
        for name in pending:  # with multiplicity: finish() is called once per pending write
            for outer in _ancestors(name):
                self._pending_inside[outer] += 1
        self._whole: dict[str, dict[int, _Entry]] = {}
        self._prefix: dict[str, dict[int, _Entry]] = {}
        self.hits = 0

    def finish(self, name: str) -> None:
        """Record that module ``name`` will not change again (its refit has been written)."""
        for outer in _ancestors(name):
            self._pending_inside[outer] -= 1

    def finished(self, name: str) -> bool:
        return self._pending_inside[name] == 0

    @contextmanager
    def installed(self) -> Iterator[FinishedModuleCache]:
        """Wrap the modules' ``forward`` for the duration of the block; entries are freed afterwards."""
        wrapped = []
        try:
            for name, module in self._modules.items():
                if isinstance(module, nn.Sequential):
                    module.forward = self._sequential_forward(name, module)
                elif name and name in self._stateful and not isinstance(self._modules[self._parent[name]],
                                                                       nn.Sequential):
                    module.forward = self._module_forward(name, module.forward)
                else:
                    continue
                wrapped.append(module)
            yield self
        finally:
            for module in wrapped:
                del module.forward  # back to the class's forward
            self._whole.clear()
            self._prefix.clear()

    # -- the wrappers ---------------------------------------------------------------------------------------

    def _cacheable(self, name: str) -> bool:
        """Finished while its parent is not (the root never is): the outermost finished module on this path."""
        return self.finished(name) and (not name or not self.finished(self._parent[name]))

    def _module_forward(self, name: str, forward: Any) -> Any:
        def cached(*inputs: Any, **kwargs: Any) -> Any:
            if kwargs or not self._cacheable(name) or not all(isinstance(x, Tensor) for x in inputs):
                self._whole.pop(name, None)
                return forward(*inputs, **kwargs)
            entries = self._whole.setdefault(name, {})
            entry = entries.get(self.batch)
            if entry is not None and entry.serves(inputs):
                self.hits += 1
                return entry.output.clone()
            output = forward(*inputs)
            if isinstance(output, Tensor):
                entries[self.batch] = _Entry.of(inputs, output)
                self._drop_within(f"{name}.{child}" for child, _ in self._modules[name].named_children())
            return output

        return cached

    def _sequential_forward(self, name: str, sequential: nn.Sequential) -> Any:
        children = list(sequential.named_children())
        prefix = f"{name}." if name else ""

        def cached(x: Any) -> Any:
            last = -1
            while last + 1 < len(children) and self.finished(prefix + children[last + 1][0]):
                last += 1
            if (last < 0 or (self.finished(name) and not self._cacheable(name))  # nothing finished / parent serves
                    or not isinstance(x, Tensor)):  # fmt: skip
                self._prefix.pop(name, None)
                return nn.Sequential.forward(sequential, x)
            entries = self._prefix.setdefault(name, {})
            entry = entries.get(self.batch)
            start, y = 0, x
            if entry is not None and entry.serves((x,)):
                start, y = entry.last + 1, entry.output.clone()
                self.hits += 1
            for i in range(start, len(children)):
                y = children[i][1](y)
                if i == last and isinstance(y, Tensor):
                    entries[self.batch] = _Entry.of((x,), y, last)
                    self._drop_within(prefix + child for child, _ in children[: last + 1])
            return y

        return cached

    def _drop_within(self, roots: Iterable[str]) -> None:
        """Free this batch's entries of the modules ``roots`` and everything inside them: an outer entry
        now serves them."""
        roots = tuple(roots)
        for table in (self._whole, self._prefix):
            for key in [k for k in table if any(k == r or k.startswith(f"{r}.") for r in roots)]:
                table[key].pop(self.batch, None)
