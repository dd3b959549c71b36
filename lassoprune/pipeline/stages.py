"""The stages of a pipeline run, each writing its artefacts into ``RUN/STAGE/``.

=========  ==========================================================  ====================
stage      does                                                        writes
=========  ==========================================================  ====================
pretrain   trains ``model`` (or copies ``pretrain.checkpoint``),       ``pretrain/model.pt``
           evaluates it (the baseline)                                 ``pretrain/metrics.json``
sparse     optional sparse training (dwgl, group-lasso, bn-l1)         ``sparse/model.pt``
prune      scores, allocates, cuts to the target; BatchNorm            ``prune/model.pt``
           statistics re-estimated on the calibration set; evaluated   ``prune/prune.json``
           (``prune.steps`` > 1: in steps, fine-tuning between them)   ``prune/step_I.json`` ...
finetune   fine-tunes the pruned model                                 ``finetune/model.pt``
evaluate   final metrics; latency of pruned vs unpruned (interleaved)  ``evaluate/metrics.json``
report     ``summary.json`` and the report (markdown, JSON, plots)     ``report.md`` ...
=========  ==========================================================  ====================

Every stage function takes the :class:`StageContext` and returns a JSON-safe
record that the runner stores in ``state.json``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import torch
from torch import nn

from lassoprune.analysis.latency import make_runner, summarize, time_interleaved
from lassoprune.channels.target import target_from
from lassoprune.data import dataset_info
from lassoprune.data.loader import BatchLoader
from lassoprune.errors import LassopruneError
from lassoprune.io import atomic_write_json, load, read_model_file, save
from lassoprune.models import create_model, model_entry
from lassoprune.pipeline.config import RunConfig
from lassoprune.pipeline.run_dir import RunDirectory
from lassoprune.pretrained import resolve_model_path
from lassoprune.pruning import prune_with
from lassoprune.pruning.api import modules_named
from lassoprune.pruning.iterative import IterativeResult, StepRecord, prune_iteratively
from lassoprune.pruning.method import get_method
from lassoprune.pruning.steering import TargetSteering, steering_summary
from lassoprune.regularizers import Regularizer, create_regularizer
from lassoprune.training import EvalResult, TrainConfig, evaluate, fit
from lassoprune.training.data_setup import Loaders, calibration_batches, make_loaders
from lassoprune.training.engine import SparseTerm
from lassoprune.training.finetune import FINETUNE_SEED_OFFSET, FinetuneSettings, finetune
from lassoprune.training.metrics import current_extra, metrics_record
from lassoprune.utils import get_logger, seed_everything
from lassoprune.utils.runtime import default_device

MODEL_FILE = "model.pt"


@dataclass
class StageContext:
    """What the stages share: the config, the run directory, data (built on first use)."""

    config: RunConfig
    run: RunDirectory
    progress: bool = True
    _loaders: dict[tuple[int | None, int], Loaders] = field(default_factory=dict)

    @cached_property
    def device(self) -> torch.device:
        return torch.device(self.config.device) if self.config.device else default_device()

    @cached_property
    def info(self) -> Any:
        return dataset_info(self.config.data.name, root=self.config.data.root)

    @cached_property
    def image_size(self) -> int:
        data = self.config.data
        if data.image_size is not None:
            return data.image_size
        if self.config.pretrain.checkpoint is not None:
            source = read_model_file(resolve_model_path(self.config.pretrain.checkpoint))
            size = source.extra.get("image_size")
            if size:
                return int(size)
            if source.spec is None:
                raise LassopruneError(
                    f"{source.path} records no architecture; `lassoprune run` needs a zoo model file "
                    "(for your own model use the Python API)")
            return model_entry(source.spec["name"]).default_image_size
        return model_entry(self.config.model).default_image_size

    @property
    def example(self) -> torch.Tensor:
        """One input (1, C, S, S) in the dataset's layout."""
        return torch.zeros(1, self.info.in_channels, self.image_size, self.image_size)

    def loaders(self, train_subset: int | None = None, seed_offset: int = 0) -> Loaders:
        """Train / test batches; the training split subsampled to ``train_subset`` images."""
        key = (train_subset, seed_offset)
        if key not in self._loaders:
            data = self.config.data
            self._loaders[key] = make_loaders(
                data.name, image_size=self.image_size, root=data.root, batch_size=data.batch_size,
                train_subset=train_subset, seed=self.config.seed + seed_offset, download=data.download,
                validation_size=data.validation_size,
            )
        return self._loaders[key]

    @cached_property
    def test(self) -> BatchLoader:
        """The batches every stage is judged on: the test split, or the held-out validation images."""
        data = self.config.data
        loaders = make_loaders(data.name, image_size=self.image_size, root=data.root, download=data.download,
                               with_train=False, validation_size=data.validation_size)
        if self.config.evaluate.split == "validation":
            assert loaders.validation is not None  # the config requires validation_size > 0
            return loaders.validation
        return loaders.test

    @cached_property
    def calibration(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return calibration_batches(
            self.config.data.name, image_size=self.image_size, size=self.config.prune.calib_size,
            root=self.config.data.root, seed=self.config.seed, download=self.config.data.download,
            validation_size=self.config.data.validation_size,
        )

    def model_extra(self, **more: Any) -> dict[str, Any]:
        return {"dataset": self.config.data.name, "image_size": self.image_size, **more}

    def evaluate(self, model: nn.Module) -> EvalResult:
        return evaluate(model, self.test, self.info.num_classes, self.device)

    def fit(self, model: nn.Module, stage: str, epochs: int, lr: float, train_subset: int | None,
            seed_offset: int, weight_decay: float | None = None, **kwargs: Any) -> Any:
        """Train ``model`` in ``RUN/stage`` (resumable per epoch); returns :class:`~lassoprune.FitResult`.

        ``weight_decay`` None keeps :class:`~lassoprune.TrainConfig`'s default; ``kwargs`` go to :func:`fit`.
        """
        loaders = self.loaders(train_subset, seed_offset)
        seed_everything(self.config.seed + seed_offset)
        decay = {} if weight_decay is None else {"weight_decay": weight_decay}
        cfg = TrainConfig(epochs=epochs, lr=lr, seed=self.config.seed + seed_offset, **decay)
        result = fit(
            model, loaders.train, self.test, cfg, num_classes=self.info.num_classes,
            class_names=self.info.class_names, out_dir=self.run.path(stage), resume=True, device=self.device,
            progress=self.progress, model_extra=self.model_extra(stage=stage), **kwargs,
        )
        model.to("cpu")
        return result


def run_pretrain(ctx: StageContext) -> dict[str, Any]:
    """Train the dense model, or copy the given model file; evaluate it."""
    cfg = ctx.config
    out = ctx.run.path("pretrain", MODEL_FILE)
    if cfg.pretrain.checkpoint is not None:
        model = load(resolve_model_path(cfg.pretrain.checkpoint))
        _check_classes(model, ctx)
        result = ctx.evaluate(model)
        model.to("cpu")
        save(model, out, extra={**current_extra(model.lp_extra), **ctx.model_extra(source=cfg.pretrain.checkpoint)})
    else:
        seed_everything(cfg.seed)
        model = create_model(cfg.model, num_classes=cfg.num_classes or ctx.info.num_classes,
                             in_channels=cfg.in_channels or ctx.info.in_channels)
        result = ctx.fit(model, "pretrain", cfg.pretrain.epochs, cfg.pretrain.lr, cfg.pretrain.train_subset, 0).final
    metrics = metrics_record(result)
    atomic_write_json(ctx.run.path("pretrain", "metrics.json"), metrics)
    return {"model": f"pretrain/{MODEL_FILE}", "metrics": metrics}


def run_sparse(ctx: StageContext) -> dict[str, Any]:
    """Sparse training of the dense model with the configured regulariser."""
    sparse = ctx.config.sparse
    assert sparse is not None
    model = load(ctx.run.path("pretrain", MODEL_FILE))
    reg = create_regularizer(sparse.regularizer, model, ctx.example, sparse.lam, sparse.schedule, sparse.alpha)
    term = _steered(ctx, reg)
    result = ctx.fit(model, "sparse", sparse.epochs, sparse.lr, sparse.train_subset, 1, regularizer=term,
                     regularizer_mode=sparse.mode, bn_batches=ctx.calibration)
    record = {"model": f"sparse/{MODEL_FILE}", "metrics": metrics_record(result.final)}
    if isinstance(term, TargetSteering):
        record["steering"] = steering_summary(term)
    return record


def _steered(ctx: StageContext, reg: Regularizer) -> SparseTerm:
    """``reg`` steered towards the prune stage's target (``sparse.steer`` and a target), else ``reg`` itself."""
    sparse, prune = ctx.config.sparse, ctx.config.prune
    assert sparse is not None
    target = target_from(prune.target_macs, prune.target_params)
    if not sparse.steer or target is None:
        return reg
    residual = prune.prune_residual
    if residual is None:
        residual = get_method(prune.method).prune_residual if isinstance(prune.method, str) else True
    steps = sparse.epochs * len(ctx.loaders(sparse.train_subset, 1).train)
    return TargetSteering(reg, ctx.example, target, steps, prune_residual=residual, min_channels=prune.min_channels)


def run_prune(ctx: StageContext) -> dict[str, Any]:
    """Prune the (sparse-trained) model by the one post-cut path (:func:`~lassoprune.pruning.prune_with`).

    Cut to the target, reconstruct (``prune.reconstruct``, on by default), re-estimate BatchNorm statistics
    on the calibration set and evaluate; with reconstruction the plain cut is evaluated too
    (``unreconstructed``).
    """
    p = ctx.config.prune
    source = ctx.run.stages.get("sparse", ctx.run.stages["pretrain"])["model"]
    model = load(ctx.run.path(source))
    modules_named(model, p.ignore, "prune.ignore")  # a clear error naming the config key
    if p.steps > 1:
        return _prune_in_steps(ctx, model, source)
    result = prune_with(model, ctx.example, p, data=ctx.calibration, seed=ctx.config.seed, inplace=True,
                        evaluate=lambda m: metrics_record(ctx.evaluate(m)))
    record = result.to_dict()
    metrics = result.final_one_shot
    reconstructed = "reconstructed" in result.one_shot
    result.model.to("cpu")
    atomic_write_json(ctx.run.path("prune", "prune.json"), record)
    save(result.model, ctx.run.path("prune", MODEL_FILE),
         extra=ctx.model_extra(pruning={k: record[k] for k in ("method", "target", "macs_before", "macs_after",
                                                               "params_before", "params_after")}))
    unreconstructed = result.one_shot["cut"] if reconstructed else None
    return {"model": f"prune/{MODEL_FILE}", "source": source, "metrics": metrics, "method_seconds": result.seconds,
            "unreconstructed": unreconstructed, "reconstructed": reconstructed,
            "round_to": result.round_to,
            **{k: record[k] for k in ("macs_before", "macs_after", "params_before", "params_after")}}


def _prune_in_steps(ctx: StageContext, model: nn.Module, source: str) -> dict[str, Any]:
    """``prune.steps`` cuts (:func:`~lassoprune.pruning.iterative.prune_iteratively`), resumable per step.

    After each step ``prune/step_I/model.pt`` and then ``prune/step_I.json`` are written atomically; a rerun
    continues from the last step whose record exists, and the fine-tuning between cuts
    (``prune/step_I/finetune/``) resumes from its last finished epoch.
    """
    p = ctx.config.prune
    done = _finished_steps(ctx)
    if done:
        model = load(ctx.run.path("prune", f"step_{done[-1].step}", MODEL_FILE))
        get_logger().info("[prune] steps 1-%d already finished, resuming", done[-1].step)
    tune = (lambda m, step: _finetune_step(ctx, m, step)) if p.step_epochs > 0 else None
    result = prune_iteratively(model, ctx.example, p, data=ctx.calibration, seed=ctx.config.seed, inplace=True,
                               evaluate=lambda m: _evaluate_on_cpu(ctx, m), finetune=tune, done=done,
                               on_step=lambda m, record: _save_step(ctx, m, record))
    return _write_pruned(ctx, result, source)


def _finished_steps(ctx: StageContext) -> list[StepRecord]:
    """The records of the steps finished by an earlier attempt, in order (up to the first missing one)."""
    records = []
    for step in range(1, ctx.config.prune.steps + 1):
        file = ctx.run.path("prune", f"step_{step}.json")
        if not file.is_file() or not ctx.run.path("prune", f"step_{step}", MODEL_FILE).is_file():
            break
        records.append(StepRecord.from_dict(json.loads(file.read_text())))
    return records


def _save_step(ctx: StageContext, model: nn.Module, record: StepRecord) -> None:
    """The model, then the record of a finished step (the record's presence marks the step finished)."""
    save(model, ctx.run.path("prune", f"step_{record.step}", MODEL_FILE),
         extra=ctx.model_extra(stage=f"prune step {record.step}"))
    atomic_write_json(ctx.run.path("prune", f"step_{record.step}.json"), record.to_dict())


def _finetune_step(ctx: StageContext, model: nn.Module, step: int) -> dict[str, Any]:
    """``prune.step_epochs`` epochs of fine-tuning after the cut of ``step`` (the ``finetune:`` lr and subset)."""
    f = ctx.config.finetune
    settings = FinetuneSettings(epochs=ctx.config.prune.step_epochs, lr=f.lr, train_subset=f.train_subset)
    result = finetune(
        model, ctx.loaders(f.train_subset, FINETUNE_SEED_OFFSET), settings,
        ctx.run.path("prune", f"step_{step}", "finetune"), reconstructed=ctx.config.prune.reconstructs(True),
        seed=ctx.config.seed + FINETUNE_SEED_OFFSET, test_batches=ctx.test, device=ctx.device,
        progress=ctx.progress, model_extra=ctx.model_extra(stage=f"prune step {step}"),
    )
    return result.metrics


def _evaluate_on_cpu(ctx: StageContext, model: nn.Module) -> dict[str, Any]:
    """Metrics of ``model``, which is left on the CPU for the next cut."""
    metrics = metrics_record(ctx.evaluate(model))
    model.to("cpu")
    return metrics


def _write_pruned(ctx: StageContext, result: IterativeResult, source: str) -> dict[str, Any]:
    """``prune/prune.json`` and ``prune/model.pt`` of a prune in steps; the stage record (with ``steps``)."""
    record = result.to_dict()
    counts = {k: record[k] for k in ("macs_before", "macs_after", "params_before", "params_after")}
    result.model.to("cpu")
    atomic_write_json(ctx.run.path("prune", "prune.json"), record)
    save(result.model, ctx.run.path("prune", MODEL_FILE),
         extra=ctx.model_extra(pruning={"method": record["method"], "target": record["target"], **counts}))
    one_shot = record["one_shot"]
    reconstructed = "reconstructed" in one_shot
    return {"model": f"prune/{MODEL_FILE}", "source": source,
            "metrics": one_shot.get("reconstructed", one_shot.get("cut")), "method_seconds": record["seconds"],
            "unreconstructed": one_shot["cut"] if reconstructed else None, "reconstructed": reconstructed,
            "round_to": record["round_to"], **counts, "steps": record["steps"]}


def run_finetune(ctx: StageContext) -> dict[str, Any]:
    """Fine-tune the pruned model (resumes from ``finetune/last.pt`` after a crash)."""
    f = ctx.config.finetune
    model = load(ctx.run.path("prune", MODEL_FILE))
    if f.epochs == 0:
        return {"model": f"prune/{MODEL_FILE}", "metrics": ctx.run.stages["prune"]["metrics"], "resumed_from": 0}
    seed = ctx.config.seed + FINETUNE_SEED_OFFSET
    result = finetune(
        model, ctx.loaders(f.train_subset, FINETUNE_SEED_OFFSET), f, ctx.run.path("finetune"),
        reconstructed=bool(ctx.run.stages["prune"].get("reconstructed")), seed=seed, test_batches=ctx.test,
        device=ctx.device, progress=ctx.progress, model_extra=ctx.model_extra(stage="finetune"),
    )
    return {"model": f"finetune/{MODEL_FILE}", "metrics": result.metrics, "resumed_from": result.resumed_from}


def run_evaluate(ctx: StageContext) -> dict[str, Any]:
    """Final metrics and, optionally, the measured latency ratio of pruned vs unpruned."""
    source = ctx.run.stages["finetune"]["model"]
    final = load(ctx.run.path(source))
    if source == ctx.run.stages["prune"]["model"]:  # no fine-tuning: the prune stage evaluated this very file
        metrics = ctx.run.stages["prune"]["metrics"]
    else:
        metrics = metrics_record(ctx.evaluate(final))
        final.to("cpu")
    record: dict[str, Any] = {"metrics": metrics, "latency": None}
    if ctx.config.evaluate.latency:
        dense = load(ctx.run.path("pretrain", MODEL_FILE))
        record["latency"] = measure_speedup(dense, final, ctx)
    atomic_write_json(ctx.run.path("evaluate", "metrics.json"), record)
    return record


def measure_speedup(dense: nn.Module, pruned: nn.Module, ctx: StageContext,
                    warmup: int = 10, repeats: int = 20) -> dict[str, Any]:
    """Median latency of both models, timed round-robin in one call (torch, CPU, eval mode).

    Runs in the pipeline's process after evaluation, i.e. with a warm memory
    allocator; CPU latencies of a fresh process are slower for large
    activations, which favours the smaller model (docs/BENCHMARKS.md).
    """
    e = ctx.config.evaluate
    threads = e.latency_threads or torch.get_num_threads()
    shape = (e.latency_batch, *ctx.example.shape[1:])
    runners = []
    for model in (dense, pruned):
        model.eval()
        runners.append(make_runner(model, shape, "torch", threads))
    get_logger().info("timing dense vs pruned (batch %d, %d threads, %d rounds)", e.latency_batch, threads, repeats)
    before, after = (summarize(t, "torch", e.latency_batch, threads) for t in
                     time_interleaved(runners, warmup, repeats, threads))
    return {"batch_size": e.latency_batch, "threads": threads, "before_ms": before.median_ms,
            "after_ms": after.median_ms, "speedup": before.median_ms / after.median_ms}


def _check_classes(model: nn.Module, ctx: StageContext) -> None:
    classes = model.lp_spec.kwargs.get("num_classes") if getattr(model, "lp_spec", None) else None
    if classes is not None and classes != ctx.info.num_classes:
        raise LassopruneError(
            f"{ctx.config.pretrain.checkpoint} has {classes} outputs but {ctx.config.data.name} has "
            f"{ctx.info.num_classes} classes; use a model trained on this dataset"
        )


Stage = Callable[[StageContext], dict[str, Any]]
"""A stage function: takes the context, writes under ``RUN/STAGE/``, returns a JSON-safe record."""

STAGES: dict[str, Stage] = {
    "pretrain": run_pretrain,
    "sparse": run_sparse,
    "prune": run_prune,
    "finetune": run_finetune,
    "evaluate": run_evaluate,
}
