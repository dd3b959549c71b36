"""``NamedEnum``: enum members that are their own names in text, JSON and comparisons."""

from __future__ import annotations

import re
from enum import Enum
from typing import TypeVar

from lassoprune.errors import UnknownNameError

E = TypeVar("E", bound="NamedEnum")


class NamedEnum(str, Enum):
    """A ``str`` enum whose members print, format and serialise as their value.

    ``LayerKind.CONV == "conv"``, ``f"{LayerKind.CONV}" == "conv"`` and
    ``json.dumps(LayerKind.CONV) == '"conv"'``, on every supported Python.
    """

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)

    @classmethod
    def parse(cls: type[E], value: object, what: str | None = None) -> E:
        """The member whose value is ``value``; an unknown one lists the valid values.

        Args:
            value: a member or its value.
            what: the option's name in words for the error (default: the class name in
                words, ``ResponseKind`` -> ``response kind``).
        """
        try:
            return cls(value)
        except ValueError:
            words = what or re.sub(r"(?<!^)(?=[A-Z])", " ", cls.__name__).lower()
            raise UnknownNameError(words, str(value), [m.value for m in cls]) from None
