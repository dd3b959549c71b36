"""One settings object for a prune: what ``lp.prune``, ``lassoprune prune``, the run config and the benchmarks build.

Every route to a prune reads the same fields with the same defaults, so the
same settings give the same model whichever route asked
(:func:`lassoprune.pruning.api.prune_with`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lassoprune.errors import LassopruneError

__all__ = ["AUTO_ROUND_TO", "PruneSettings"]

#: The widths ``round_to: auto`` tries, widest first (None: free widths, the last resort).
AUTO_ROUND_TO: tuple[int | None, ...] = (16, 8, 4, None)


@dataclass(frozen=True)
class PruneSettings:
    """What to prune and how; everything else (model, data, seed) is given by the caller.

    Attributes:
        method: a registered method (``lassoprune prune --list-methods``), or in Python a callable
            criterion ``score(group, ctx) -> Tensor[C]``.
        target_macs / target_params: the fraction of the original to keep (at least one, unless the
            method takes a threshold in ``options``), met within 1% of the original; both: two limits,
            the binding one met within 1%, the other kept at most.
        options: the method's options (e.g. ``pool`` for the lasso methods).
        allocation: ``global`` or ``uniform`` (for importance criteria).
        min_channels: every group keeps at least this many channels.
        round_to: kept widths are multiples of this (None or 1: free widths); ``"auto"`` takes the widest
            of :data:`AUTO_ROUND_TO` whose floors still reach the target (16 measured fastest on a CPU,
            but it can cost accuracy on narrow networks: docs/BENCHMARKS.md, "Deployed latency").
        ignore: qualified names of modules whose output channels are never removed.
        prune_residual: whether residual (eltwise) groups may be cut (None: the method's default).
        reconstruct: refit the layers that lost input channels by least squares on the calibration
            images (:mod:`lassoprune.pruning.reconstruct`). None (default): on whenever calibration data
            is given: measured no worse one-shot and after fine-tuning for every method
            (docs/BENCHMARKS.md, "Defaults of the post-training path").
        calib_size: calibration images drawn by the routes that draw them (CLI, run config).
        steps: cut in this many steps on a geometric schedule, each of the already pruned model, with
            fine-tuning between them (:func:`lassoprune.pruning.iterative.prune_iteratively`, which reads it,
            as does the run config); 1 (default): one cut. :func:`~lassoprune.pruning.api.prune_with` always
            makes one cut.
        step_epochs: fine-tuning epochs after every cut but the last, read by the routes that fine-tune
            (run config; ``prune_iteratively`` takes a fine-tuning callback instead); 0: none.
    """

    method: str | Callable[..., Any] = "sglp-ib"
    target_macs: float | None = None
    target_params: float | None = None
    options: dict[str, Any] = field(default_factory=dict)
    allocation: str = "global"
    min_channels: int = 1
    round_to: int | str | None = None
    ignore: tuple[str, ...] = ()
    prune_residual: bool | None = None
    reconstruct: bool | None = None
    calib_size: int = 500
    steps: int = 1
    step_epochs: int = 1

    def round_steps(self) -> tuple[int | None, ...]:
        """The ``round_to`` values to try in order (one, or :data:`AUTO_ROUND_TO` for ``auto``)."""
        if self.round_to == "auto":
            return AUTO_ROUND_TO
        if isinstance(self.round_to, str):
            raise LassopruneError(f"round_to must be a width step (e.g. 8), None (free widths) or 'auto', "
                                  f"got {self.round_to!r}")
        if self.round_to is not None and self.round_to < 1:
            raise LassopruneError(f"round_to must be >= 1 (1 or None: free widths), got {self.round_to}")
        return (self.round_to,)

    def reconstructs(self, has_data: bool) -> bool:
        """Whether the cut is followed by least-squares reconstruction (``reconstruct`` None: with data)."""
        return has_data if self.reconstruct is None else self.reconstruct
