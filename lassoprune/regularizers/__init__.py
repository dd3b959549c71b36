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

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from torch import Tensor, nn

from lassoprune.channels import ChannelGroup
from lassoprune.regularizers.base import LayerTerm, Regularizer, group_soft_threshold_
from lassoprune.regularizers.bn_l1 import BNL1
from lassoprune.regularizers.coefficients import SCHEDULES, check_schedule, coefficients
from lassoprune.regularizers.group_lasso import DWGL, GroupLasso
from lassoprune.utils.registry import Registry


@dataclass(frozen=True)
class RegularizerSpec:
    """One registered regulariser.

    Attributes:
        name: registry name (``lassoprune sparse-train --reg``).
        build: ``build(model, example_inputs, lam, schedule, alpha, groups) -> Regularizer``.
        summary: one line for listings.
    """

    name: str
    build: Callable[..., Regularizer]
    summary: str


REGULARIZERS: Registry[RegularizerSpec] = Registry("regularizer")
"""The names accepted by :func:`create_regularizer` (and ``lassoprune sparse-train --reg``)."""

REGULARIZERS.add("dwgl", RegularizerSpec(
    "dwgl", lambda model, x, lam, schedule, alpha, groups: DWGL(model, x, lam, schedule, alpha, groups=groups),
    "directed-weighting group lasso: every conv of a residual group gives up the same filters (Zhan et al. 2019)"))
REGULARIZERS.add("group-lasso", RegularizerSpec(
    "group-lasso", lambda model, x, lam, schedule, alpha, groups: GroupLasso(model, x, lam, groups=groups),
    "plain group lasso on each conv's filters"))
REGULARIZERS.add("bn-l1", RegularizerSpec(
    "bn-l1", lambda model, x, lam, schedule, alpha, groups: BNL1(model, x, lam, groups=groups),
    "L1 on BatchNorm scales (network slimming, Liu et al. 2017)"))


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
    spec = REGULARIZERS.get(name)
    check_schedule(schedule, alpha)
    return spec.build(model, example_inputs, lam, schedule, alpha, groups)


__all__ = [
    "BNL1",
    "DWGL",
    "REGULARIZERS",
    "RegularizerSpec",
    "SCHEDULES",
    "GroupLasso",
    "LayerTerm",
    "Regularizer",
    "coefficients",
    "create_regularizer",
    "group_soft_threshold_",
]
