"""Sparse-training regularisers: DWGL, filter group lasso and BN-L1.

Every regulariser has one interface, usable in any training loop and in
:func:`lassoprune.fit` (``regularizer=``, ``regularizer_mode="prox"|"penalty"``):

- ``penalty()``: a differentiable scalar to add to the loss;
- ``prox_(lr)``: the exact proximal (group soft-threshold) step after the
  optimiser step, which gives exact zeros;
- ``config()``: its settings; ``sparsity()``: exact zeros per channel group.

=================  =====================================================  ==========================
name               penalty                                                reference
=================  =====================================================  ==========================
``dwgl``           ``lam sum_l sum_i c_i ||W^l_i||_2``, increasing ``c_i``  Zhan et al., BMVC 2019
                   shared by the convs of an elementwise group
``group-lasso``    ``lam sum_l sum_i ||W^l_i||_2``                         Wen et al., NeurIPS 2016
``bn-l1``          ``lam sum_l sum_i |gamma^l_i|``                          Liu et al., ICCV 2017
=================  =====================================================  ==========================
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from lassoprune.errors import UnknownNameError
from lassoprune.pruning.groups import ChannelGroup
from lassoprune.regularizers.base import LayerTerm, Regularizer, group_soft_threshold_
from lassoprune.regularizers.bn_l1 import BNL1
from lassoprune.regularizers.coefficients import SCHEDULES, check_schedule, coefficients
from lassoprune.regularizers.group_lasso import DWGL, GroupLasso

REGULARIZERS: tuple[str, ...] = ("dwgl", "group-lasso", "bn-l1")
"""The names accepted by :func:`create_regularizer` (and ``lassoprune sparse-train --reg``)."""


def create_regularizer(
    name: str,
    model: nn.Module,
    example_inputs: Tensor | tuple[Tensor, ...] | None,
    lam: float,
    schedule: str = "linear",
    alpha: float = 1.0,
    *,
    groups: Sequence[ChannelGroup] | None = None,
) -> Regularizer:
    """The regulariser called ``name`` (``schedule`` and ``alpha`` only matter for ``dwgl``).

    Raises:
        UnknownNameError: ``name`` is not one of :data:`REGULARIZERS`.
    """
    check_schedule(schedule, alpha)
    if name == "dwgl":
        return DWGL(model, example_inputs, lam, schedule, alpha, groups=groups)
    if name == "group-lasso":
        return GroupLasso(model, example_inputs, lam, groups=groups)
    if name == "bn-l1":
        return BNL1(model, example_inputs, lam, groups=groups)
    raise UnknownNameError("regularizer", name, REGULARIZERS)


__all__ = [
    "BNL1",
    "DWGL",
    "REGULARIZERS",
    "SCHEDULES",
    "GroupLasso",
    "LayerTerm",
    "Regularizer",
    "coefficients",
    "create_regularizer",
    "group_soft_threshold_",
]
