"""What a pruning run aims at: a fraction of the original MACs or parameters."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lassoprune.channels.cost import CostModel
from lassoprune.errors import LassopruneError
from lassoprune.utils.enums import NamedEnum


def target_from(target_macs: float | None, target_params: float | None) -> Target | None:
    """The :class:`Target` of the two options (None when neither is given; an error when both are)."""
    if target_macs is not None and target_params is not None:
        raise LassopruneError("give exactly one of target_macs or target_params (a fraction of the original to keep)")
    if target_macs is not None:
        return Target("macs", target_macs)
    return Target("params", target_params) if target_params is not None else None


class CostKind(NamedEnum):
    """The cost a :class:`Target` is about (compares equal to its value, ``"macs"`` / ``"params"``)."""

    MACS = "macs"
    PARAMS = "params"


@dataclass(frozen=True)
class Target:
    """Keep ``ratio`` (0 < ratio < 1) of the original ``kind`` (``macs`` or ``params``).

    ``kind`` may be given as a string; it is stored as a :class:`CostKind`.
    """

    kind: CostKind
    ratio: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", CostKind.parse(self.kind))
        if not 0.0 < self.ratio < 1.0:
            raise LassopruneError(
                f"target_{self.kind.value} must be a fraction of the original in (0, 1), got {self.ratio}"
            )

    def cost(self, cost_model: CostModel, keep: np.ndarray) -> int:
        """The cost this target is about, for kept counts ``keep`` (one per group, cost-model order)."""
        return cost_model.macs(keep) if self.kind is CostKind.MACS else cost_model.params(keep)

    def full(self, cost_model: CostModel) -> int:
        """The unpruned network's cost."""
        return cost_model.full_macs if self.kind is CostKind.MACS else cost_model.full_params
