"""Sparse training towards a cost target: penalise only what the vote at the target will remove, harder until it is gone.

A fixed ``lam`` that suits one model, target and schedule does not suit
another: too weak and the vote at the target removes filters that are still
strong; too strong and so many filters reach exactly zero that every vote
removes them all (ResNet-20 asked for 0.5 of its MACs kept 0.084). Steering
replaces the search for ``lam`` by a controller, run every ``interval``
training steps:

1. the *removal set* ``R``: the channels ``dwgl-vote`` would remove at the
   target on the current weights (the smallest vote threshold ``tau`` whose
   cut meets the target, :func:`~lassoprune.pruning.methods.dwgl_vote.search_tau`);
2. the regulariser acts on the slices of ``R`` only (its coefficients
   ``c_i`` multiplied by ``[i in R]``), so channels the target keeps are never
   pushed to zero and the vote cannot overshoot;
3. its strength grows while some channel of ``R`` is not yet exactly zero,
   and holds once all are (growing regularisation, Wang et al., "Neural
   Pruning via Growing Regularization", ICLR 2021): ``lam <- max(growth * lam,
   lam_due)``, where ``lam_due = max_{i in R} ||W_i|| / (c_i * lr * steps
   left until the deadline)`` is the strength at which the proximal steps
   alone (threshold ``lr * lam * c_i`` per step, at the current learning
   rate) would bring every channel of ``R`` to zero by the deadline
   (:data:`DEADLINE` of the run; the growth covers what the gradient puts
   back and a decaying learning rate).

During the first :data:`EXPLORE` of the run the regulariser also acts, at
the starting ``lam``, on the channels outside ``R``, with each step's
threshold capped at ``||W_i|| / (interval + 1)`` so that none of them can reach
zero before the next update: this is where DWGL's directed weights make the
convs of a residual group shrink the same channels together, so that ``R``
comes to include residual channels (with ``R`` alone from the start, the
intersection vote over many convs almost never picks one).

Since a zero channel has the smallest vote statistic, it stays in ``R``
(the set the target removes first), and the zeros never cost more than the
target removes. At the end, ``dwgl-vote`` at the same target removes the
zeros and lands on the target within one channel step. Why not the other
designs: a penalty on every channel with an automatic ``lam`` still zeroes
channels the target keeps once ``lam`` is large enough for the last channel
of ``R``; restricting the penalty makes the result independent of how large
``lam`` grows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from lassoprune.channels import CostModel, GroupAnalysis, Target
from lassoprune.channels.norms import filter_norms
from lassoprune.errors import LassopruneError
from lassoprune.pruning.method import MethodContext
from lassoprune.pruning.methods.dwgl_vote import VoteOptions, collect_votes, keep_all, search_tau
from lassoprune.pruning.search import floors
from lassoprune.regularizers.base import LayerTerm, Regularizer, group_soft_threshold_

DEFAULT_CHECKS = 20
"""Controller updates over a run (``interval = total_steps // checks``)."""

DEFAULT_GROWTH = 2.0
"""Factor by which ``lam`` grows at an update while the removal set is not all zero."""

DEADLINE = 0.8
"""Fraction of the run by which the removal set should be zero (the rest trains the kept channels)."""

EXPLORE = 0.3
"""Fraction of the run during which the regulariser also shrinks the channels outside ``R`` (never to zero)."""


@dataclass(frozen=True)
class SteeringRecord:
    """One controller update: the step, the strength after it, the removal set's size and how much is zero."""

    step: int
    lam: float
    removed: int
    zero: int

    def to_dict(self) -> dict[str, Any]:
        return {"step": self.step, "lam": self.lam, "removed": self.removed, "zero": self.zero}


class TargetSteering:
    """A regulariser steered towards a cost target (module docstring); used like the regulariser itself.

    Args:
        base: the regulariser to steer (``dwgl``, ``group-lasso``, ``bn-l1``); its ``lam`` is the
            starting strength.
        example_inputs: one input ``(1, C, H, W)`` for the cost model.
        target: the cost target the vote will be asked for.
        total_steps: training steps of the run (sets the update interval).
        prune_residual: whether the vote may remove residual (eltwise) channels (as the prune stage).
        min_channels: the fewest channels a group keeps (as the prune stage).
        checks, growth: :data:`DEFAULT_CHECKS`, :data:`DEFAULT_GROWTH`.
    """

    def __init__(self, base: Regularizer, example_inputs: Tensor, target: Target, total_steps: int, *,
                 prune_residual: bool = True, min_channels: int = 1, checks: int = DEFAULT_CHECKS,
                 growth: float = DEFAULT_GROWTH) -> None:  # fmt: skip
        if total_steps < 1 or checks < 1 or growth < 1:
            raise LassopruneError(f"steering needs total_steps >= 1, checks >= 1 and growth >= 1; got "
                                  f"{total_steps}, {checks}, {growth}")
        self.base = base
        self.target = target
        self.lam = base.lam if base.lam > 0 else 1e-4
        self.growth = growth
        self.interval = max(1, total_steps // checks)
        self.deadline = max(1, int(DEADLINE * total_steps))
        self.explore_until = int(EXPLORE * total_steps)
        self.exploring = True
        self.history: list[SteeringRecord] = []
        self._steps = 0
        self._lr: float | None = None
        vote_on = "bn" if base.name == "bn-l1" else "filters"
        self._options = VoteOptions(vote_on=vote_on)
        single = example_inputs[:1]
        self._cost_model = CostModel(base.model, single, base.groups)
        self._floors = floors(base.groups, min_channels, None, prune_residual, whole_blocked=True)  # dwgl-vote
        self._masks: dict[str, Tensor] = {}
        self.update()

    # -- the SparseTerm interface ---------------------------------------------------------------------------

    def penalty(self) -> Tensor:
        """``lam_t * sum c_i [i in R] ||W_i||`` (differentiable)."""
        self._count_step()
        parts = [(self._coefficients(term, weight) * filter_norms(weight, 2, term.dim)).sum()
                 for term, weight in self.base.weighted_terms()]
        return self.lam * torch.stack(parts).sum() if parts else torch.zeros(())

    def prox_(self, lr: float) -> None:
        """The group soft-threshold: ``lr * lam_t * c_i`` on ``R``; while exploring, also on the other
        channels, capped at ``||W_i|| / (interval + 1)`` so that none of them reaches zero before the next update."""
        self._lr = lr
        if lr > 0:
            for term, weight in self.base.weighted_terms():
                thresholds = lr * self.lam * self._coefficients(term, weight)
                if self.exploring:
                    c = self.base.term_coefficients(term, weight)
                    outside = 1 - self._positions[term.module].to(device=c.device, dtype=c.dtype)
                    cap = filter_norms(weight.detach(), 2, term.dim) / (self.interval + 1)
                    thresholds = thresholds + outside * torch.minimum(lr * self.base.lam * c, cap)
                group_soft_threshold_(weight.data, thresholds, term.dim)
        self._count_step()

    def config(self) -> dict[str, Any]:
        return {**self.base.config(), "steered": {"target": self.target.kind.value, "ratio": self.target.ratio,
                                                  "interval": self.interval, "growth": self.growth,
                                                  "final_lam": self.lam}}

    def sparsity(self) -> dict[str, dict[str, Any]]:
        return self.base.sparsity()

    # -- the controller --------------------------------------------------------------------------------------

    def _count_step(self) -> None:
        self._steps += 1
        if self._steps % self.interval == 0:
            self.update()

    @torch.no_grad()
    def update(self) -> SteeringRecord:
        """Recompute the removal set at the target and grow ``lam`` unless it is all zero."""
        ctx = MethodContext(self.base.model, GroupAnalysis(tuple(self.base.groups), None, {}), self._cost_model,
                            self.target, self._floors, None, 0, self._options)
        votes = collect_votes(ctx, self._options)
        keep = keep_all(votes, search_tau(ctx, votes, check=False).value)
        removed = zero = 0
        self._masks = {}
        for v in votes:
            gone = ~keep[v.group.id]
            self._masks[v.group.id] = gone
            removed += int(gone.sum())
            zero += int((gone & (v.statistic == 0)).sum())
        self._positions = _position_masks(self.base, self._masks)
        self.exploring = self._steps < self.explore_until and zero < removed
        if self.history and zero < removed and not self.exploring:
            self.lam = max(self.lam * self.growth, self._due())
        record = SteeringRecord(self._steps, self.lam, removed, zero)
        self.history.append(record)
        return record

    def _due(self) -> float:
        """``lam_due`` of the module docstring (0 before the first proximal step, or in penalty mode)."""
        if not self._lr:
            return 0.0
        left = max(self.interval, self.deadline - self._steps)
        due = 0.0
        for term, weight in self.base.weighted_terms():
            mask = self._positions[term.module].to(weight.device) > 0
            c = self.base.term_coefficients(term, weight)
            if mask.any():
                norms = filter_norms(weight.detach(), 2, term.dim)
                due = max(due, float((norms[mask] / c[mask].clamp_min(1e-12)).max()))
        return due / (self._lr * left)

    def _coefficients(self, term: LayerTerm, weight: Tensor) -> Tensor:
        """The term's coefficients restricted to the removal set: ``c_i [i in R]``."""
        base = self.base.term_coefficients(term, weight)
        return base * self._positions[term.module].to(device=base.device, dtype=base.dtype)


def _position_masks(base: Regularizer, removed: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Per regularised module: float ``(O,)``, 1 at the positions of removed channels of its groups."""
    masks = {t.module: torch.zeros_like(t.coefficients) for t in base.terms}
    for members in base.members:
        gone = removed.get(members.group)
        if gone is None:
            continue
        for layer_slice in members.slices:
            if layer_slice.module not in masks:
                continue
            for index, channel in zip(layer_slice.indices, layer_slice.channels):
                if gone[channel]:
                    masks[layer_slice.module][index] = 1.0
    return masks


def steering_summary(steering: TargetSteering) -> list[dict[str, Any]]:
    """The controller's history, JSON-safe."""
    return [r.to_dict() for r in steering.history]


__all__: Sequence[str] = ("DEFAULT_CHECKS", "DEFAULT_GROWTH", "SteeringRecord", "TargetSteering", "steering_summary")
