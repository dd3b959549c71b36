"""Fine-tuning a (typically pruned) model: the one path of ``lassoprune finetune``, of
``lassoprune prune --finetune-epochs`` and of the pipeline's ``finetune`` stage.

:func:`finetune` chooses the learning rate (:meth:`FinetuneSettings.lr_after`),
builds the :class:`~lassoprune.training.TrainConfig`, trains with
:func:`~lassoprune.training.fit` in a run directory (resumable from its
``last.pt``), moves the model back to the CPU and returns the metrics in the
names of :mod:`lassoprune.training.metrics`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lassoprune.errors import LassopruneError
from lassoprune.training.config import TrainConfig
from lassoprune.training.data_setup import Loaders
from lassoprune.training.distributed import DistContext
from lassoprune.training.engine import FitResult, fit
from lassoprune.training.evaluate import EvalResult
from lassoprune.training.metrics import headline, metrics_record
from lassoprune.utils import seed_everything

__all__ = [
    "FINETUNE_LR",
    "FINETUNE_LR_AFTER_RECONSTRUCTION",
    "FINETUNE_SEED_OFFSET",
    "FinetuneResult",
    "FinetuneSettings",
    "finetune",
]

#: Fine-tuning learning rate of a plain cut: chosen by the benchmark protocol's select phase (docs/BENCHMARKS.md).
FINETUNE_LR = 0.01
#: Fine-tuning learning rate after least-squares reconstruction: chosen on 5,000 held-out training images
#: (docs/BENCHMARKS.md, "Defaults of the post-training path"); a reconstructed cut is close to the dense
#: model and the plain cuts' rate first undoes what reconstruction gave back.
FINETUNE_LR_AFTER_RECONSTRUCTION = 0.001
#: Added to the run's seed for the fine-tuning batches and training, by every route (``lassoprune run``: pretrain
#: adds 0, sparse training 1; ``lassoprune prune --finetune-epochs`` / ``--step-epochs`` add it too).
FINETUNE_SEED_OFFSET = 2


@dataclass(frozen=True)
class FinetuneSettings:
    """How a pruned model is fine-tuned (the pipeline's ``finetune:`` section; ``epochs: 0`` skips it there).

    Attributes:
        epochs: passes over the training batches.
        lr: peak learning rate; None (default): :data:`FINETUNE_LR_AFTER_RECONSTRUCTION` after a
            reconstructed cut, else :data:`FINETUNE_LR`.
        train_subset: fine-tune on a class-stratified subset of this many training images (the caller
            builds the batches with it); None = all.
    """

    epochs: int = 1
    lr: float | None = None
    train_subset: int | None = None

    def lr_after(self, reconstructed: bool) -> float:
        """The learning rate to use after a cut that was (or was not) reconstructed."""
        if self.lr is not None:
            return self.lr
        return FINETUNE_LR_AFTER_RECONSTRUCTION if reconstructed else FINETUNE_LR


@dataclass(frozen=True)
class FinetuneResult:
    """What :func:`finetune` returns.

    Attributes:
        lr: the peak learning rate used.
        fit: the training result (final metrics, per-epoch history, epochs done before a resume).
    """

    lr: float
    fit: FitResult

    @property
    def final(self) -> EvalResult:
        """The metrics of the fine-tuned model on the evaluation batches."""
        return self.fit.final

    @property
    def resumed_from(self) -> int:
        """Epochs already done when the run was resumed, else 0."""
        return self.fit.resumed_from

    @property
    def metrics(self) -> dict[str, Any]:
        """The final metrics as a pipeline stage records them (:func:`~lassoprune.training.metrics.metrics_record`)."""
        return metrics_record(self.final)

    def summary(self) -> dict[str, Any]:
        """``lr``, ``top1``, ``top5``, ``worst_class``, ``epochs``: what a command reports of the fine-tuning."""
        return {"lr": self.lr, **headline(self.final), "epochs": len(self.fit.history)}


def finetune(
    model: nn.Module,
    loaders: Loaders,
    settings: FinetuneSettings,
    out_dir: str | Path,
    *,
    reconstructed: bool = False,
    seed: int = 0,
    test_batches: Iterable[tuple[torch.Tensor, torch.Tensor]] | None = None,
    options: Mapping[str, Any] | None = None,
    resume: bool = True,
    device: torch.device | str | None = None,
    progress: bool = True,
    model_extra: dict[str, Any] | None = None,
    dist: DistContext | None = None,
) -> FinetuneResult:
    """Fine-tune ``model`` in place in the run directory ``out_dir``; the model ends on the CPU.

    Args:
        model: the network to train (e.g. the model of a :class:`~lassoprune.pruning.PruneResult`).
        loaders: ``loaders.train`` is trained on; ``loaders.info`` gives the classes; ``loaders.test`` is
            evaluated on unless ``test_batches`` is given.
        settings: epochs and learning rate (``settings.train_subset`` is already in ``loaders``).
        out_dir: the run directory of :func:`~lassoprune.training.fit` (``last.pt``, ``metrics.jsonl``,
            ``metrics.json``, ``model.pt``).
        reconstructed: whether the cut was reconstructed (chooses the default learning rate).
        seed: seeds the training (:class:`~lassoprune.training.TrainConfig` ``seed``) and, first, every
            generator (:func:`~lassoprune.utils.seed_everything`).
        test_batches: the evaluation batches (e.g. the held-out validation images); None = ``loaders.test``.
        options: more :class:`~lassoprune.training.TrainConfig` fields (momentum, schedule, ...); the
            defaults otherwise.
        resume: continue from ``out_dir/last.pt`` when it exists (else such a directory is refused).
        device, progress, model_extra, dist: as for :func:`~lassoprune.training.fit`.

    Raises:
        LassopruneError: ``loaders`` has no training batches, or a setting is out of range.
        CheckpointError: ``out_dir`` holds a run that cannot be resumed with these settings.
    """
    if loaders.train is None:
        raise LassopruneError("fine-tuning needs training batches (make_loaders(..., with_train=True))")
    lr = settings.lr_after(reconstructed)
    cfg = TrainConfig(**{**dict(options or {}), "epochs": settings.epochs, "lr": lr, "seed": seed})
    seed_everything(seed)
    fitted = fit(
        model, loaders.train, loaders.test if test_batches is None else test_batches, cfg,
        num_classes=loaders.info.num_classes, class_names=loaders.info.class_names, out_dir=out_dir,
        resume=resume, device=device, progress=progress, model_extra=model_extra, dist=dist,
    )
    model.to("cpu")
    return FinetuneResult(lr=lr, fit=fitted)
