"""What follows every cut: least-squares reconstruction, then BatchNorm re-estimation, then the one-shot metrics.

This is the only place in the package, the pipeline and the benchmarks that
calls :func:`~lassoprune.pruning.reconstruct.reconstruct` and
:func:`~lassoprune.training.bn_recalibration.recalibrate_batchnorm` after a
cut, so that every route (``lp.prune``, ``lassoprune prune``, ``lassoprune run``,
the benchmark protocol, a Torch-Pruning peer's cut) gives the same model for the
same settings:

1. with ``reconstruct``: when an evaluation is given, a copy of the plain cut
   gets its BatchNorm statistics re-estimated and is evaluated (the ``cut``
   metrics); then every layer that lost input channels is refitted;
2. the BatchNorm running statistics of the pruned model are re-estimated on the
   calibration images (after a cut every later BatchNorm sees other inputs);
3. when an evaluation is given, the model is evaluated (``reconstructed``, or
   ``cut`` without reconstruction).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from lassoprune.channels import ChannelGroup
from lassoprune.errors import LassopruneError
from lassoprune.pruning.reconstruct import LayerRefit, reconstruct
from lassoprune.training.bn_recalibration import recalibrate_batchnorm

__all__ = ["Evaluate", "PostCut", "after_cut"]

Batch = tuple[torch.Tensor, torch.Tensor]
Evaluate = Callable[[nn.Module], dict[str, Any]]
"""Metrics of a model on an evaluation set, e.g. ``{"top1": ..., "worst_class": ...}``."""


@dataclass(frozen=True)
class PostCut:
    """What :func:`after_cut` did.

    Attributes:
        reconstruction: one record per refitted layer (empty without reconstruction).
        one_shot: ``{"cut": metrics, "reconstructed": metrics}``, each present when it was measured.
        recalibrated_images: images the BatchNorm statistics were re-estimated on (0: not re-estimated).
        seconds: wall time of reconstruction and re-estimation (the evaluations excluded).
    """

    reconstruction: tuple[LayerRefit, ...] = ()
    one_shot: dict[str, dict[str, Any]] = field(default_factory=dict)
    recalibrated_images: int = 0
    seconds: float = 0.0


def after_cut(
    original: nn.Module,
    pruned: nn.Module,
    data: Sequence[Batch] | None,
    groups: Sequence[ChannelGroup] | None = None,
    keep: Mapping[str, Sequence[int]] | None = None,
    reconstruct_layers: bool = False,
    recalibrate: bool = True,
    evaluate: Evaluate | None = None,
    seed: int = 0,
) -> PostCut:
    """Reconstruct (optionally), re-estimate BatchNorm and evaluate ``pruned`` in place (module docstring).

    Args:
        original: the unpruned model (read only; needed for reconstruction).
        pruned: the cut model, changed in place.
        data: calibration batches ``(x, y)``; None or empty: nothing to do but evaluate.
        groups, keep: the cut (``PruneResult.groups`` / ``.keep``); needed for reconstruction.
        reconstruct_layers: refit the layers that lost input channels.
        recalibrate: re-estimate BatchNorm running statistics on ``data``.
        evaluate: metrics of a model; given, the one-shot metrics are recorded.
        seed: seed of the positions reconstruction samples.

    Raises:
        LassopruneError: reconstruction asked without data or without the cut's groups.
    """
    batches = list(data or ())
    if reconstruct_layers and not batches:
        raise LassopruneError("reconstruction refits layers on calibration images: give data=[(x, y), ...] "
                              "(a few hundred training images with their labels)")
    if reconstruct_layers and (groups is None or keep is None):
        raise LassopruneError("reconstruction needs the cut's channel groups and keep sets")
    one_shot: dict[str, dict[str, Any]] = {}
    refits: tuple[LayerRefit, ...] = ()
    if reconstruct_layers:
        assert groups is not None and keep is not None
        if evaluate is not None:
            plain = copy.deepcopy(pruned)
            if recalibrate:
                recalibrate_batchnorm(plain, batches)
            one_shot["cut"] = evaluate(plain)
            del plain
    started = time.perf_counter()
    if reconstruct_layers:
        refits = reconstruct(original, pruned, groups, keep, batches, seed=seed)
    images = recalibrate_batchnorm(pruned, batches) if recalibrate and batches else 0
    seconds = time.perf_counter() - started
    if evaluate is not None:
        one_shot["reconstructed" if reconstruct_layers else "cut"] = evaluate(pruned)
    return PostCut(reconstruction=refits, one_shot=one_shot, recalibrated_images=images, seconds=seconds)
