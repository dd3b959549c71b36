"""Index-wise coefficients ``c_1 <= ... <= c_n`` of directed-weighting group lasso.

DWGL (Zhan et al., "Directed-Weighting Group Lasso for Eltwise Blocked CNN
Pruning", BMVC 2019, arXiv:1910.09318) penalises filter ``i`` of every conv
feeding one elementwise add with the *same* coefficient ``c_i``, increasing
with the index, so that all those convs are pushed to zero the same (high)
indices and their filters can be removed together.

Schedules (``n`` filters, ``i = 1..n``; every schedule starts at ``c_1 = 1``
and ends at ``c_n = 1 + alpha``):

===========  ===============================================================
``linear``   ``c_i = 1 + alpha (i - 1) / (n - 1)``  (the default)
``exp``      ``c_i = beta^((i - 1) / (n - 1))`` with ``beta = 1 + alpha``
``step``     ``c_i = 1`` for ``i <= floor(n / 2)``, ``1 + alpha`` above
===========  ===============================================================

A lone filter (``n = 1``) has no direction: ``c_1 = 1``. ``alpha = 0``
gives plain group lasso (Wen et al., "Learning Structured Sparsity in Deep
Neural Networks", NeurIPS 2016) in every schedule.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lassoprune.errors import LassopruneError
from lassoprune.utils.enums import NamedEnum


class Schedule(NamedEnum):
    """How the DWGL coefficient grows along a residual group's convs (module docstring)."""

    LINEAR = "linear"
    EXP = "exp"
    STEP = "step"


SCHEDULES: tuple[str, ...] = tuple(s.value for s in Schedule)
"""The coefficient schedules of :func:`coefficients`."""


def check_schedule(schedule: str, alpha: float) -> None:
    """Raise a clear error for an unknown schedule or a negative / non-finite ``alpha``."""
    Schedule.parse(schedule, "coefficient schedule")
    if not (alpha >= 0 and alpha != float("inf")):
        raise LassopruneError(f"alpha must be a finite number >= 0 (c_n = 1 + alpha), got {alpha}")


def coefficients(n: int, schedule: str = "linear", alpha: float = 1.0) -> Tensor:
    """The DWGL coefficients of ``n`` filters (see the module docstring).

    Args:
        n: number of filters (group channels), ``n >= 1``.
        schedule: ``linear``, ``exp`` or ``step``.
        alpha: ``c_n - 1``, ``alpha >= 0``.

    Returns:
        float64 ``(n,)``, non-decreasing, ``c[0] = 1`` and ``c[n-1] = 1 + alpha`` (``n > 1``).
    """
    check_schedule(schedule, alpha)
    if n < 1:
        raise LassopruneError(f"the number of filters must be >= 1, got {n}")
    if n == 1:
        return torch.ones(1, dtype=torch.float64)
    position = torch.arange(n, dtype=torch.float64) / (n - 1)  # (i - 1) / (n - 1)
    if schedule == "linear":
        return 1.0 + alpha * position
    if schedule == "exp":
        return torch.pow(torch.tensor(1.0 + alpha, dtype=torch.float64), position)
    upper = torch.arange(n) >= n // 2
    return torch.where(upper, 1.0 + alpha, 1.0).to(torch.float64)
