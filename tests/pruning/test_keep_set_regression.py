"""Refactors keep behaviour: the zoo's keep sets (four methods; allocation, rounding, fix-up paths) stay put.

The reference holds the current defaults' keep sets (``python tests/pruning/keep_sets.py --write``).
They are compared by overlap within a stated tolerance, never by bits, so a
legitimate floating-point difference (another CPU, another thread count) that
moves a channel at a near-tie passes, while a change of behaviour fails and the
message lists the groups and channels that moved (:mod:`keep_sets`).
"""

from __future__ import annotations

import json

import pytest

from tests.pruning import keep_sets

REFERENCE = json.loads(keep_sets.REFERENCE.read_text())
CASES = [
    pytest.param(name, case, id=f"{name}-{case}", marks=[pytest.mark.slow] if keep_sets.is_slow(name, case) else [])
    for name in sorted(REFERENCE) for case in sorted(REFERENCE[name])
]


def test_reference_covers_every_zoo_model_and_case() -> None:
    import lassoprune as lp

    assert sorted(REFERENCE) == sorted(lp.list_models())
    for name in REFERENCE:
        assert sorted(REFERENCE[name]) == sorted(keep_sets.cases(name))


@pytest.mark.parametrize(("model_name", "case"), CASES)
def test_keep_sets_match_reference(model_name: str, case: str) -> None:
    kwargs = keep_sets.cases(model_name)[case]
    diff = keep_sets.compare(keep_sets.record(model_name, kwargs), REFERENCE[model_name][case], kwargs)
    assert diff.within(), f"{model_name} {case}: " + diff.report()


def test_comparison_catches_a_change_of_behaviour() -> None:
    """A different criterion (l1 -> random, same widths machinery) is far outside the tolerance."""
    reference = REFERENCE["resnet20"]
    diff = keep_sets.compare(reference["random"], reference["l1"], {"method": "l1"})
    assert not diff.within()
    assert diff.fraction > 2 * keep_sets.DECISION_TOLERANCE["lasso"]  # outside even the lasso methods' band
    assert "now kept" in diff.report()


def test_comparison_tolerates_a_near_tie() -> None:
    """Swapping one kept channel for a removed one in one group moves two decisions: within the tolerance."""
    reference = REFERENCE["vgg16"]["l1"]
    gid = next(iter(reference["keep"]))
    size = reference["channels"][gid]
    kept = keep_sets._channels(reference["keep"][gid], size)
    removed = set(range(size)) - kept
    swapped = (kept - {min(kept)}) | {min(removed)}
    got = {**reference, "keep": {**reference["keep"], gid: keep_sets._mask(tuple(swapped), size)}}
    diff = keep_sets.compare(got, reference, {"method": "l1"})
    assert diff.changed == 2 and diff.within()
    assert diff.groups == {gid: ([min(removed)], [min(kept)])}
