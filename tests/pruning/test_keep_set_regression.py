"""Refactors keep behaviour: the zoo's keep sets (four methods; allocation, rounding, fix-up paths) are unchanged.

The reference was recorded with ``python tests/pruning/keep_sets.py --write``
before the methods moved to plug-ins over one target search.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import keep_sets  # noqa: E402

REFERENCE = json.loads(keep_sets.REFERENCE.read_text())


@pytest.mark.parametrize("method", keep_sets.METHODS)
@pytest.mark.parametrize("model_name", sorted(REFERENCE))
def test_keep_sets_match_reference(model_name: str, method: str) -> None:
    assert keep_sets.keep_digest(model_name, method) == REFERENCE[model_name][method]


EXTRA = json.loads(keep_sets.EXTRA_REFERENCE.read_text())


@pytest.mark.parametrize("case", sorted(keep_sets.EXTRA_CASES))
@pytest.mark.parametrize("model_name", sorted(EXTRA))
def test_allocation_rounding_and_fix_up_paths_match_reference(model_name: str, case: str) -> None:
    assert keep_sets.case_digest(model_name, keep_sets.EXTRA_CASES[case]) == EXTRA[model_name][case]
