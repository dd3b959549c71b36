"""Evaluation: top-1, top-5, per-class accuracy and the confusion matrix."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


@dataclass(frozen=True)
class EvalResult:
    """Classification metrics on one data split.

    Attributes:
        top1, top5: fractions in [0, 1] (top5 = top1 when there are < 5 classes).
        loss: mean cross-entropy.
        per_class: accuracy of each true class (K,), NaN for a class with no sample.
        confusion: (K, K) counts, rows = true class, columns = predicted class.
        num_samples: images evaluated.
    """

    top1: float
    top5: float
    loss: float
    per_class: tuple[float, ...]
    confusion: tuple[tuple[int, ...], ...]
    num_samples: int

    @property
    def worst_class(self) -> float:
        """The lowest per-class accuracy (the class the model serves worst)."""
        return min(a for a in self.per_class if a == a)

    def to_dict(self, class_names: Sequence[str] | None = None) -> dict[str, Any]:
        """JSON-safe dict; per-class accuracies are keyed by class name when given."""
        names = list(class_names) if class_names else [str(k) for k in range(len(self.per_class))]
        return {
            "top1": self.top1,
            "top5": self.top5,
            "loss": self.loss,
            "worst_class": self.worst_class,
            "per_class": dict(zip(names, self.per_class)),
            "confusion": [list(row) for row in self.confusion],
            "num_samples": self.num_samples,
        }


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    num_classes: int,
    device: torch.device | str = "cpu",
    channels_last: bool = False,
) -> EvalResult:
    """Run ``model`` in eval mode over ``batches`` of (images (B,C,H,W), labels (B,)).

    The model's train/eval mode is restored afterwards.
    """
    was_training = model.training
    model.eval()
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.long)
    top5_hits, loss_sum, seen = 0, 0.0, 0
    k = min(5, num_classes)
    try:
        for images, labels in batches:
            images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            logits = model(images).float()
            loss_sum += nn.functional.cross_entropy(logits, labels, reduction="sum").item()
            topk = logits.topk(k, dim=1).indices
            top5_hits += (topk == labels[:, None]).any(dim=1).sum().item()
            pred = topk[:, 0]
            confusion += torch.bincount(
                (labels * num_classes + pred).cpu(), minlength=num_classes * num_classes
            ).view(num_classes, num_classes)
            seen += labels.numel()
    finally:
        model.train(was_training)
    return _summarise(confusion, top5_hits, loss_sum, seen)


def _summarise(confusion: torch.Tensor, top5_hits: int, loss_sum: float, seen: int) -> EvalResult:
    if seen == 0:
        raise ValueError("evaluate() received no batches")
    support = confusion.sum(dim=1).double()
    per_class = (confusion.diag().double() / support).tolist()  # NaN where support == 0
    return EvalResult(
        top1=confusion.diag().sum().item() / seen,
        top5=top5_hits / seen,
        loss=loss_sum / seen,
        per_class=tuple(per_class),
        confusion=tuple(tuple(row) for row in confusion.tolist()),
        num_samples=seen,
    )
