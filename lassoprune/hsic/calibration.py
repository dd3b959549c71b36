"""One forward pass over calibration batches that records what the HSIC lasso needs.

For every channel group g (:class:`~lassoprune.channels.groups.ChannelGroup`):

- its feature map as the consumers read it: the *input* of ``g.observe.module``
  at ``g.observe.indices`` (after BN and activation; for a residual group, the
  summed stream), average-pooled to at most P x P and stored as ``(N, C, D)``
  in group-channel order;
- the output of that consuming layer in the unpruned network, pooled the same
  way and flattened to ``(N, D_out)`` (the ``output`` / ``class-output``
  targets).

And once: the penultimate features (the input of the classifier layer, the
layer that produces the logits), reduced to the class means ``(K, D)`` that the
class graph and tree are built from (docs/METHODS.md 1.3).

Only pooled features are kept, never full maps, so memory is
``N * sum_g C_g * P^2`` floats.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lassoprune.errors import LassopruneError
from lassoprune.hsic.kernels import pool_features
from lassoprune.channels.groups import ChannelGroup
from lassoprune.channels.outputs import first_output_producer, flatten_outputs

__all__ = ["CalibrationFeatures", "classifier_layer", "collect_features"]


@dataclass(frozen=True)
class CalibrationFeatures:
    """Pooled features of the calibration set.

    Attributes:
        inputs: group id -> ``(N, C, D)`` float32 channel features (group-channel order).
        outputs: group id -> ``(N, D_out)`` float32 consumer outputs (empty when not asked).
        labels: ``(N,)`` int64 class indices.
        class_means: ``(K, D)`` float64 class means of the penultimate features.
        num_classes: K (the width of the logits).
        classifier: name of the layer whose input gave the penultimate features.
        seconds: wall time of the pass.
    """

    inputs: dict[str, Tensor]
    outputs: dict[str, Tensor]
    labels: Tensor
    class_means: Tensor
    num_classes: int
    classifier: str
    seconds: float


def classifier_layer(model: nn.Module, x: Tensor) -> str:
    """Name of the conv / linear layer that produces the channels of the model's first output (the logits).

    The logits need not be that layer's output itself: a conv classifier
    followed by pooling and flattening, or a linear head followed by a scale,
    is found by tracing the output back
    (:func:`~lassoprune.channels.outputs.first_output_producer`). A model with
    several outputs is read by its first one.
    """
    names = {m: n for n, m in model.named_modules()}
    producer, logits = first_output_producer(model, x)
    if logits is None or logits.dim() < 2:
        raise LassopruneError(
            "the lasso methods need a model whose (first) output holds the class logits, shaped (N, K) or "
            "(N, K, H, W); use a criterion such as l1 for this model"
        )
    if producer is None:
        raise LassopruneError(
            "could not find the classifier layer (the conv / linear that produces the logits' channels); "
            "the lasso methods need its input for the class means: use a criterion such as l1 for this model"
        )
    return names[producer]


def _channel_positions(group: ChannelGroup) -> tuple[Tensor, Tensor]:
    """(positions in the observed input, group channels), grouped so each channel's positions are contiguous."""
    assert group.observe is not None
    pairs = sorted(zip(group.observe.channels, group.observe.indices))
    channels = torch.tensor([c for c, _ in pairs], dtype=torch.long)
    positions = torch.tensor([i for _, i in pairs], dtype=torch.long)
    return positions, channels


def _group_features(x: Tensor, positions: Tensor, channels: Tensor, num_channels: int, pool: int | None) -> Tensor:
    """The group's channels of one batch of a layer input, as ``(n, C, D)`` float32."""
    picked = x.index_select(1, positions.to(x.device))
    per = channels.numel() // max(1, torch.unique(channels).numel())
    if picked.dim() == 2 and per > 1:  # a linear layer reading a flattened map: several positions per channel
        picked = picked.reshape(picked.shape[0], -1, per)
        channels = channels[::per]
    pooled = pool_features(picked, pool).float().cpu()
    if channels.numel() == num_channels and bool((channels == torch.arange(num_channels)).all()):
        return pooled
    out = torch.zeros(pooled.shape[0], num_channels, pooled.shape[2])
    out[:, channels] = pooled
    return out


# Long on purpose: the hooks it installs, the one pass and their removal (in finally) read as one unit.
def collect_features(
    model: nn.Module,
    groups: Sequence[ChannelGroup],
    batches: Iterable[tuple[Tensor, Tensor]],
    pool: int | None = 4,
    outputs: bool = True,
) -> CalibrationFeatures:
    """Run ``batches`` through ``model`` (eval mode, no grad) and record the features (module docstring).

    Args:
        model: the unpruned network.
        groups: its channel groups (each with an ``observe`` point).
        batches: ``(x, y)`` pairs; every class of the logits must occur.
        pool: average-pool maps to at most ``pool`` x ``pool`` (None: keep).
        outputs: also record each group's consumer output.

    Raises:
        LassopruneError: no batches, a group without an observation point, or
            a class absent from the calibration set (the message names it).
    """
    started = time.perf_counter()
    batches = list(batches)
    if not batches:
        raise LassopruneError("the lasso methods need calibration batches (x, y); give data=...")
    modules = dict(model.named_modules())
    was_training = model.training
    model.eval()
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    classifier = classifier_layer(model, batches[0][0][:1].to(device))

    by_module: dict[str, list[tuple[ChannelGroup, Tensor, Tensor]]] = {}
    out_owner: dict[str, list[str]] = {}
    for group in groups:
        if group.observe is None:
            raise LassopruneError(f"group {group.id} has no consuming layer to observe its channels at")
        by_module.setdefault(group.observe.module, []).append((group, *_channel_positions(group)))
        out_owner.setdefault(group.observe.module, []).append(group.id)
    inputs: dict[str, list[Tensor]] = {g.id: [] for g in groups}
    outs: dict[str, list[Tensor]] = {name: [] for name in out_owner}
    penultimate: list[Tensor] = []

    def read_input(name: str):
        def hook(module: nn.Module, args: tuple[Any, ...]) -> None:
            x = args[0]
            if isinstance(module, nn.Linear) and x.dim() > 2:  # channels last (e.g. ConvNeXt's MLP): (N, ..., C)
                x = x.movedim(-1, 1)
            for group, positions, channels in by_module[name]:
                inputs[group.id].append(_group_features(x, positions, channels, group.num_channels, pool))

        return hook

    def read_output(name: str):
        def hook(_module: nn.Module, _args: Any, output: Tensor) -> None:
            pooled = pool_features(output.detach(), pool).float().cpu()
            outs[name].append(pooled.reshape(pooled.shape[0], -1))

        return hook

    def read_penultimate(_module: nn.Module, args: tuple[Any, ...]) -> None:
        x = args[0].detach()
        if x.dim() > 2:
            x = F.adaptive_avg_pool2d(x, 1) if x.dim() == 4 else x
            x = x.reshape(x.shape[0], -1)
        penultimate.append(x.double().cpu())

    handles = [modules[name].register_forward_pre_hook(read_input(name)) for name in by_module]
    if outputs:
        handles += [modules[name].register_forward_hook(read_output(name)) for name in out_owner]
    handles.append(modules[classifier].register_forward_pre_hook(read_penultimate))
    labels: list[Tensor] = []
    num_classes = 0
    try:
        with torch.no_grad():
            for x, y in batches:
                logits = flatten_outputs(model(x.to(device)))[0]
                num_classes = int(logits.shape[1])
                labels.append(torch.as_tensor(y).reshape(-1).long().cpu())
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    label_vec = torch.cat(labels)
    feats = torch.cat(penultimate)
    _check_classes(label_vec, num_classes)
    sums = torch.zeros(num_classes, feats.shape[1], dtype=torch.float64).index_add_(0, label_vec, feats)
    means = sums / torch.bincount(label_vec, minlength=num_classes).double().unsqueeze(1)
    group_outputs = {gid: torch.cat(outs[name]) for name, gids in out_owner.items() for gid in gids} if outputs else {}
    return CalibrationFeatures(
        inputs={gid: torch.cat(parts) for gid, parts in inputs.items()},
        outputs=group_outputs,
        labels=label_vec,
        class_means=means,
        num_classes=num_classes,
        classifier=classifier,
        seconds=time.perf_counter() - started,
    )


def _check_classes(labels: Tensor, num_classes: int) -> None:
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise LassopruneError(
            f"calibration labels must lie in [0, {num_classes}) (the model has {num_classes} logits); "
            f"found {int(labels.min())}..{int(labels.max())}"
        )
    counts = torch.bincount(labels, minlength=num_classes)
    missing = torch.nonzero(counts == 0).flatten().tolist()
    if missing:
        shown = ", ".join(str(k) for k in missing[:20]) + (" ..." if len(missing) > 20 else "")
        raise LassopruneError(
            f"the calibration set has no image of class {shown} (of {num_classes}); the class-wise lasso needs "
            f"every class: use a class-balanced calibration set with at least one image of each of the {num_classes} "
            "classes"
        )
