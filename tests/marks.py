"""Test marks shared by the suite: which parametrised cases run in ``make test`` and which only in
``make test-slow``."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pytest


def fast_only(values: Iterable[Any], fast: Iterable[Any]) -> list[Any]:
    """``values`` as pytest parameters, every one not in ``fast`` marked ``slow`` (a representative few stay in
    ``make test``; ``make test-slow`` runs the rest)."""
    keep = set(fast)
    return [v if v in keep else pytest.param(v, marks=pytest.mark.slow) for v in values]
