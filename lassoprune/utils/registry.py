"""One registry type for every extension point (models, datasets, methods, regularizers, allocations).

A :class:`Registry` maps a name to an entry (any object carrying the entry's
metadata, typically a frozen dataclass). Looking up a name that is not there
raises :class:`~lassoprune.errors.UnknownNameError`, whose message lists the
valid names; registering a name twice is an error too, so two plug-ins cannot
silently shadow each other.

Example::

    ALLOCATIONS: Registry[AllocationEntry] = Registry("allocation")
    ALLOCATIONS.add("global", AllocationEntry(...))
    ALLOCATIONS.get("globl")   # UnknownNameError: unknown allocation 'globl'; valid allocations: global, ...
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from lassoprune.errors import DuplicateNameError, LassopruneError, UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    """Name -> entry, with clear errors for unknown and duplicate names.

    Args:
        kind: what the entries are, in words (``"pruning method"``); used in error messages.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def add(self, name: str, entry: T) -> T:
        """Register ``entry`` under ``name`` and return it.

        Raises:
            LassopruneError: ``name`` is empty.
            DuplicateNameError: ``name`` is already registered.
        """
        if not isinstance(name, str) or not name:
            raise LassopruneError(f"a {self.kind} needs a non-empty name, got {name!r}")
        if name in self._entries:
            raise DuplicateNameError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = entry
        return entry

    def decorator(self, name: str, make_entry: Callable[[T], T] | None = None) -> Callable[[T], T]:
        """``@registry.decorator(name)``: register the decorated object (or ``make_entry(obj)``); returns the object."""

        def decorate(obj: T) -> T:
            self.add(name, make_entry(obj) if make_entry is not None else obj)
            return obj

        return decorate

    def remove(self, name: str) -> T:
        """Unregister ``name`` (plug-ins registered by tests clean up with this)."""
        return self._entries.pop(self._check(name))

    def get(self, name: str) -> T:
        """The entry of ``name``.

        Raises:
            UnknownNameError: ``name`` is not registered; the message lists the valid names.
        """
        return self._entries[self._check(name)]

    def names(self) -> list[str]:
        """Every registered name, sorted."""
        return sorted(self._entries)

    def items(self) -> list[tuple[str, T]]:
        """(name, entry) pairs, sorted by name."""
        return sorted(self._entries.items())

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __delitem__(self, name: str) -> None:
        self.remove(name)

    def __len__(self) -> int:
        return len(self._entries)

    def _check(self, name: str) -> str:
        if name not in self._entries:
            raise UnknownNameError(self.kind, str(name), self._entries)
        return name
