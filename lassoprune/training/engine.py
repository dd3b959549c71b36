"""The training loop: SGD, schedules, per-epoch checkpoints, resume, metrics.

One call to :func:`fit` trains a model for ``cfg.epochs`` epochs. With an
``out_dir`` it keeps, in that directory:

``last.pt``        full training state after the last finished epoch
                   (atomic write; ``resume=True`` continues from it),
``metrics.jsonl``  one JSON line per finished epoch: ``epoch``, ``train``
                   (``loss``, ``top1``), ``test`` (``top1``, ``top5``, ``loss``,
                   ``worst_class``), ``lr``, ``images_per_s``, ``seconds``,
``metrics.json``   the final metrics on the test batches (``top1``, ``top5``,
                   ``loss``, ``worst_class``, ``per_class``, ``confusion``,
                   ``num_samples``), ``epochs``, ``config``, ``history``,
``model.pt``       the trained model as a lassoprune model file; its extra's
                   ``metrics`` holds ``top1``, ``top5``, ``worst_class``, ``epochs``.

The metric names are those of :mod:`lassoprune.training.metrics`, which also
reads the files of older runs.

Every epoch's shuffling, augmentation and in-model randomness are seeded from
``(cfg.seed, epoch)`` only, so stopping after epoch e and resuming gives the
same weights as an uninterrupted run (on CPU with the same thread count).

Under ``torchrun`` (``dist=`` a distributed context) the model is trained in
DistributedDataParallel and only rank 0 writes these files; see
:mod:`lassoprune.training.distributed`.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn
from tqdm.auto import tqdm

from lassoprune.errors import CheckpointError
from lassoprune.io import atomic_write_json, atomic_write_text, load_checkpoint, save, save_checkpoint
from lassoprune.training.config import TrainConfig
from lassoprune.training.bn_recalibration import recalibrate_batchnorm
from lassoprune.training.distributed import (
    SINGLE,
    DistContext,
    all_reduce_sum,
    barrier,
    broadcast_buffers,
    broadcast_object,
    check_replicas_agree,
    wrap_model,
)
from lassoprune.training.evaluate import EvalResult, evaluate
from lassoprune.training.metrics import current_epoch_record, epoch_metrics, headline
from lassoprune.training.optim import build_optimizer, build_scheduler
from lassoprune.utils.enums import NamedEnum
from lassoprune.utils.runtime import default_device, epoch_seed, get_logger

CHECKPOINT_NAME = "last.pt"
MODEL_NAME = "model.pt"


class EpochBatches(Protocol):
    """What :func:`fit` needs from a data loader (see :class:`lassoprune.data.BatchLoader`)."""

    def __iter__(self) -> Any: ...

    def __len__(self) -> int: ...

    def set_epoch(self, epoch: int) -> None: ...


class SparseTerm(Protocol):
    """What ``fit`` needs of a sparse-training regulariser (:class:`lassoprune.regularizers.Regularizer`).

    ``penalty()`` is added to the loss (:attr:`RegularizerMode.PENALTY`), or
    ``prox_(lr)`` runs after each optimiser step (:attr:`RegularizerMode.PROX`).
    """

    def penalty(self) -> torch.Tensor: ...

    def prox_(self, lr: float) -> None: ...


class RegularizerMode(NamedEnum):
    """How a sparse-training term enters training."""

    PROX = "prox"  # proximal step after each optimiser step
    PENALTY = "penalty"  # added to the loss (subgradient)


@dataclass(frozen=True)
class FitResult:
    """What :func:`fit` returns.

    Attributes:
        final: metrics of the trained model on the test batches.
        history: one dict per epoch (the lines of ``metrics.jsonl``; see the module docstring).
        resumed_from: epochs already done when the run was resumed, else 0.
    """

    final: EvalResult
    history: tuple[dict[str, Any], ...]
    resumed_from: int


# Long on purpose: the epoch loop with resume, checkpoints and distributed branches reads best in one place.
def fit(
    model: nn.Module,
    train_batches: EpochBatches,
    test_batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    cfg: TrainConfig,
    *,
    num_classes: int,
    class_names: Sequence[str] | None = None,
    out_dir: str | Path | None = None,
    resume: bool = False,
    device: torch.device | str | None = None,
    regularizer: SparseTerm | None = None,
    regularizer_mode: str = "prox",
    model_extra: dict[str, Any] | None = None,
    progress: bool = True,
    on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None,
    bn_batches: Sequence[tuple[torch.Tensor, torch.Tensor]] | None = None,
    dist: DistContext | None = None,
    after_backward: Callable[[nn.Module], None] | None = None,
) -> FitResult:
    """Train ``model`` in place and evaluate it after every epoch.

    Args:
        model: the network; moved to ``device``.
        train_batches: yields (images (B,C,H,W) float, labels (B,) long); its
            ``set_epoch(e)`` is called before epoch e.
        test_batches: evaluation batches, same format.
        cfg: hyper-parameters.
        num_classes, class_names: for the metrics.
        out_dir: run directory for checkpoints and metrics (None = keep nothing).
        resume: continue from ``out_dir/last.pt`` when it exists.
        regularizer: optional sparse-training term (see :class:`SparseTerm`).
        regularizer_mode: ``prox`` (proximal step after the optimiser step) or
            ``penalty`` (the term is added to the loss).
        model_extra: stored in the ``model.pt`` file beside the architecture.
        on_epoch_end: called with (epoch, record) after each epoch (on every rank).
        bn_batches: when given, BatchNorm running statistics are re-estimated on
            these batches before every evaluation (sparse training shrinks
            weights faster than the running averages follow; training itself
            uses batch statistics and is unaffected).
        after_backward: called as ``after_backward(model)`` after every
            ``backward()`` and before gradient clipping and the optimiser
            step: the hook for methods that edit gradients, e.g.
            Torch-Pruning's sparse learning (``pruner.regularize``).
        dist: this process's place in a ``torchrun`` run (from
            :func:`~lassoprune.training.distributed.init_distributed`); None =
            one process. Every rank passes its own share of the training
            batches; the model is trained in DistributedDataParallel, rank 0
            evaluates on all of ``test_batches`` (every rank gets the result),
            writes ``out_dir``, logs and shows progress; on resume every rank
            loads ``last.pt``. ``model`` ends with the trained weights on every rank.
    """
    dist = SINGLE if dist is None else dist
    device = torch.device(device) if device is not None else default_device()
    use_cuda = device.type == "cuda"
    amp = use_cuda if cfg.amp is None else cfg.amp
    channels_last = use_cuda if cfg.channels_last is None else cfg.channels_last
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)

    optimizer = build_optimizer(model, cfg)
    scheduler = build_scheduler(optimizer, cfg, len(train_batches))
    run = _RunDir(Path(out_dir)) if out_dir is not None else None
    history: list[dict[str, Any]] = []
    start_epoch = 0
    if run is not None:
        start_epoch, history = run.prepare(model, optimizer, scheduler, cfg, resume)

    log = get_logger()
    if start_epoch > 0 and dist.is_main:
        log.info("resuming %s after epoch %d", run.root, start_epoch)
    step = _TrainStep(model, optimizer, scheduler, cfg, device, amp, channels_last, regularizer, regularizer_mode,
                      net=wrap_model(model, dist), after_backward=after_backward)
    for epoch in range(start_epoch, cfg.epochs):
        torch.manual_seed(_rank_seed(epoch_seed(cfg.seed, epoch), dist.rank))
        train_batches.set_epoch(epoch)
        started = time.perf_counter()
        train_stats = _train_epoch(step, train_batches, epoch, cfg, progress and dist.is_main, dist)
        result = _evaluate(model, test_batches, num_classes, device, channels_last, bn_batches, dist)
        record = _epoch_record(epoch, train_stats, result, time.perf_counter() - started)
        history.append(record)
        if dist.is_main:
            log.info(
                "epoch %d/%d  loss %.4f  train %.4f  test top1 %.4f  top5 %.4f  %.0f img/s",
                epoch + 1, cfg.epochs, record["train"]["loss"], record["train"]["top1"],
                record["test"]["top1"], record["test"]["top5"], record["images_per_s"],
            )
        if run is not None:
            if dist.is_main:
                run.save_epoch(model, optimizer, scheduler, cfg, epoch + 1, history)
            barrier(dist)
        if on_epoch_end is not None:
            on_epoch_end(epoch, record)

    final = _evaluate(model, test_batches, num_classes, device, channels_last, bn_batches, dist)
    _check_replicas(model, dist)
    if run is not None:
        if dist.is_main:
            run.save_final(model, cfg, final, history, class_names, model_extra or {})
        barrier(dist)
    return FitResult(final=final, history=tuple(history), resumed_from=start_epoch)


def _rank_seed(seed: int, rank: int) -> int:
    """The seed of one rank: ``seed`` on rank 0, so a one-process run is unchanged."""
    return (seed + rank) % 2**63


def _evaluate(
    model: nn.Module,
    test_batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    num_classes: int,
    device: torch.device,
    channels_last: bool,
    bn_batches: Sequence[tuple[torch.Tensor, torch.Tensor]] | None,
    dist: DistContext = SINGLE,
) -> EvalResult:
    """Metrics on all of ``test_batches``: rank 0 computes them, every rank receives them.

    Under ``torchrun`` the BatchNorm buffers of rank 0 (after its per-rank
    training steps and any re-estimation on ``bn_batches``) are then copied
    to the other ranks, so all replicas are identical again.
    """
    result = None
    if dist.is_main:
        if bn_batches is not None:
            recalibrate_batchnorm(model, bn_batches, device)
        result = evaluate(model, test_batches, num_classes, device, channels_last)
    if dist.enabled:
        result = broadcast_object(result, dist)
        broadcast_buffers(model, dist)
    return result


def _check_replicas(model: nn.Module, dist: DistContext) -> None:
    """Under ``torchrun``: raise unless every rank ends with the same weights and buffers."""
    if not dist.enabled:
        return
    fingerprint = check_replicas_agree(model, dist)
    if dist.is_main:
        get_logger().info("all %d ranks hold identical weights (sha256 %s)", dist.world_size, fingerprint)


class _TrainStep:
    """One optimisation step; holds everything that does not change between steps."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        cfg: TrainConfig,
        device: torch.device,
        amp: bool,
        channels_last: bool,
        regularizer: SparseTerm | None,
        regularizer_mode: str,
        net: nn.Module | None = None,
        after_backward: Callable[[nn.Module], None] | None = None,
    ) -> None:
        """``net`` runs the forward pass (``model`` in DistributedDataParallel); default ``model``."""
        regularizer_mode = RegularizerMode.parse(regularizer_mode)
        self.model, self.optimizer, self.scheduler, self.cfg = model, optimizer, scheduler, cfg
        self.net = model if net is None else net
        self.device, self.amp, self.channels_last = device, amp, channels_last
        self.regularizer, self.regularizer_mode = regularizer, regularizer_mode
        self.criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
        self.after_backward = after_backward

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns the (detached) loss and the number of correct predictions, as tensors."""
        images = images.to(self.device, non_blocking=True)
        labels = labels.to(self.device, non_blocking=True)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        autocast = (
            torch.autocast(self.device.type, dtype=torch.bfloat16) if self.amp else contextlib.nullcontext()
        )
        with autocast:
            logits = self.net(images)
            loss = self.criterion(logits.float(), labels)
        total = loss
        if self.regularizer is not None and self.regularizer_mode is RegularizerMode.PENALTY:
            total = loss + self.regularizer.penalty()
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        if self.after_backward is not None:
            self.after_backward(self.model)
        if self.cfg.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.optimizer.step()
        if self.regularizer is not None and self.regularizer_mode is RegularizerMode.PROX:
            self.regularizer.prox_(self.optimizer.param_groups[0]["lr"])
        self.scheduler.step()
        correct = (logits.detach().argmax(dim=1) == labels).sum()
        return loss.detach(), correct


def _train_epoch(
    step: _TrainStep, batches: EpochBatches, epoch: int, cfg: TrainConfig, progress: bool, dist: DistContext = SINGLE
) -> dict[str, float]:
    """Train for one epoch: mean ``loss``, ``top1`` and ``images_per_s`` (all ranks together), the last ``lr``."""
    step.model.train()
    loss_sum = torch.zeros((), device=step.device)
    correct_sum = torch.zeros((), dtype=torch.long, device=step.device)
    seen = 0
    started = time.perf_counter()
    bar = tqdm(
        total=len(batches), desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch",
        disable=None if progress else True, leave=False, dynamic_ncols=True,
    )
    with bar:
        for i, (images, labels) in enumerate(batches):
            loss, correct = step(images, labels)
            loss_sum += loss * labels.numel()
            correct_sum += correct
            seen += labels.numel()
            bar.update(1)
            if (i + 1) % cfg.log_every == 0:
                rate = seen / max(time.perf_counter() - started, 1e-9)
                bar.set_postfix(loss=f"{loss_sum.item() / seen:.3f}", img_s=f"{rate:.0f}")
    if seen == 0:
        raise ValueError("the training loader produced no batch; is the training set smaller than one batch?")
    elapsed = time.perf_counter() - started
    loss_total, correct_total, seen = _sum_over_ranks(loss_sum, correct_sum, seen, dist)
    return {
        "loss": loss_total / seen,
        "top1": correct_total / seen,
        "images_per_s": seen / elapsed,
        "lr": step.optimizer.param_groups[0]["lr"],
    }


def _sum_over_ranks(
    loss_sum: torch.Tensor, correct_sum: torch.Tensor, seen: int, dist: DistContext
) -> tuple[float, int, int]:
    """(summed loss, correct predictions, images) of the epoch, added over all ranks."""
    if not dist.enabled:
        return loss_sum.item(), correct_sum.item(), seen
    totals = torch.stack([loss_sum.double(), correct_sum.double(), loss_sum.new_tensor(seen, dtype=torch.float64)])
    all_reduce_sum(totals, dist)
    loss_total, correct_total, seen_total = totals.tolist()
    return loss_total, int(correct_total), int(seen_total)


def _epoch_record(epoch: int, train: dict[str, float], test: EvalResult, seconds: float) -> dict[str, Any]:
    """One line of ``metrics.jsonl``: the split of each metric is the dict it sits in."""
    return {
        "epoch": epoch + 1,
        "train": {"loss": train["loss"], "top1": train["top1"]},
        "test": epoch_metrics(test),
        "lr": train["lr"],
        "images_per_s": train["images_per_s"],
        "seconds": seconds,
    }


class _RunDir:
    """The files of one training run (see the module docstring)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.checkpoint = root / CHECKPOINT_NAME

    def prepare(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        cfg: TrainConfig,
        resume: bool,
    ) -> tuple[int, list[dict[str, Any]]]:
        """Create the directory or resume from its checkpoint; returns (start epoch, history)."""
        self.root.mkdir(parents=True, exist_ok=True)
        if not self.checkpoint.exists():
            return 0, []
        if not resume:
            raise CheckpointError(
                f"{self.root} already holds a training run ({self.checkpoint.name}); "
                "pass resume=True to continue it (--resume on the command line), or choose another out_dir"
            )
        state = load_checkpoint(self.checkpoint, required=("model", "optimizer", "scheduler", "epoch", "config"))
        _check_same_config(self.checkpoint, state["config"], cfg)
        try:
            model.load_state_dict(state["model"])
        except RuntimeError as exc:
            raise CheckpointError(f"{self.checkpoint} was written for another model: {exc}") from exc
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        return int(state["epoch"]), [current_epoch_record(record) for record in state.get("history", [])]

    def save_epoch(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        cfg: TrainConfig,
        epochs_done: int,
        history: list[dict[str, Any]],
    ) -> None:
        state = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "epoch": epochs_done,
            "config": cfg.resume_signature(),
            "history": history,
        }
        save_checkpoint(state, self.checkpoint)
        lines = "".join(_json_line(record) for record in history)
        atomic_write_text(self.root / "metrics.jsonl", lines)

    def save_final(
        self,
        model: nn.Module,
        cfg: TrainConfig,
        final: EvalResult,
        history: list[dict[str, Any]],
        class_names: Sequence[str] | None,
        model_extra: dict[str, Any],
    ) -> None:
        metrics = _final_metrics(final, history, cfg, class_names)
        if getattr(model, "lp_spec", None) is not None:
            save(model, self.root / MODEL_NAME,
                 extra={**model_extra, "metrics": {**headline(final), "epochs": metrics["epochs"]}})
        atomic_write_json(self.root / "metrics.json", metrics)


def _final_metrics(
    final: EvalResult, history: list[dict[str, Any]], cfg: TrainConfig, class_names: Sequence[str] | None
) -> dict[str, Any]:
    """``metrics.json``: the final metrics on the test batches, then ``epochs``, ``config``, ``history``."""
    return {**final.to_dict(class_names), "epochs": len(history), "config": cfg.to_dict(), "history": history}


def _check_same_config(path: Path, saved: dict[str, Any], cfg: TrainConfig) -> None:
    current = cfg.resume_signature()
    changed = {k: (saved.get(k), v) for k, v in current.items() if saved.get(k) != v}
    if changed:
        details = ", ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in sorted(changed.items()))
        raise CheckpointError(
            f"cannot resume {path}: the training settings changed ({details}). "
            "Resume with the original settings, or train into a new out_dir."
        )


def _json_line(record: dict[str, Any]) -> str:
    return json.dumps(record) + "\n"
