"""The benchmark protocol: every pruning method, Torch-Pruning's pruners, converged baselines, seeds, error bars.

Every row is one run of the library's own pipeline (:func:`lassoprune.pipeline.run_stages`,
the stages of ``lassoprune run``): the shipped converged model is copied in
(``pretrain``), optionally sparse-trained (``sparse``), cut to the MACs target
with BatchNorm statistics re-estimated on the calibration images and
evaluated (``prune``: the one-shot "pruned" accuracy), fine-tuned
(``finetune``) and evaluated again (``evaluate``: "final"). Torch-Pruning's
pruners (``benchmarks/compare_peers.py``) replace the ``prune`` stage (and,
for ``tp-group-sl``, the ``sparse`` stage); everything around them is the
same code. A row's run directory resumes after a crash at its first
unfinished stage and its last finished epoch; finished rows are skipped.

Three phases, in this order (``--phase all`` runs them one after the other):

``select``  the fine-tuning learning rate of every method, chosen once on
            ResNet-20 (the profile's first model) at the profile's selection
            target, seed 0: a short fine-tuning per candidate learning rate,
            judged on ``validation_size`` training images held out of every
            stage (class-stratified, the same for every seed). Never the test
            split.
``pilot``   a few methods fine-tuned for ``pilot_epochs`` at their chosen
            rate, validation accuracy after every epoch: where the ranking
            stops changing decides the profile's fine-tuning epochs.
``table``   every (model, method, target, seed) on the converged baseline,
            fine-tuned on all training images at the method's chosen rate,
            judged on the whole test split.

Seeds change the calibration set (scoring and BatchNorm re-estimation) and the
fine-tuning order; the dense start is the same shipped model. The report
(``RUNS/table.md``, ``RUNS/results.json``, ``RUNS/tradeoff-<model>.png``) gives
mean and standard error over seeds and marks which differences from the best
method at each target exceed two standard errors.

Profiles:

``--standard``  a 2-core CPU: resnet20 (seeds 0, 1) and resnet56 (seed 0), targets
                0.5 and 0.33, every method, 2 fine-tuning epochs; a resnet20 row takes
                about 9 minutes (one thread, two shards side by side), so every method
                is about 5 hours for resnet20 (docs/BENCHMARKS.md).
``--full``      a GPU: resnet56, seeds 0 and 1, 30 fine-tuning epochs (the engine's
                CUDA defaults: bfloat16 autocast, channels-last); other models with
                ``--checkpoint MODEL=FILE``.
``--short``     the standard rows with a twentieth of its fine-tuning (1 epoch on 6,000
                images), ResNet-20 seeds 0-2 and ResNet-56 seeds 0-1: what users with
                little compute see; learning rates from the standard study's select
                phase (``--select-runs``, default ``runs/compare-standard``).
``--tiny``      the full profile with a smoke-test budget on the synthetic dataset, for
                a baseline given with ``--checkpoint resnet20=FILE`` (numbers mean nothing).

    OMP_NUM_THREADS=1 python benchmarks/compare.py --standard --phase select --shard 0/2 &
    OMP_NUM_THREADS=1 python benchmarks/compare.py --standard --phase select --shard 1/2
    python benchmarks/compare.py --standard --report          # tables and plots of the finished rows
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compare_peers import DEFAULT_REG, make_pruner, peer_cut

import lassoprune as lp
from lassoprune.errors import LassopruneError
from lassoprune.io import atomic_write_json, atomic_write_text, load, save
from lassoprune.pipeline import (
    DataSection,
    EvaluateSection,
    FinetuneSection,
    PretrainSection,
    PruneSection,
    RunConfig,
    SparseSection,
    Stage,
    StageContext,
    run_stages,
)
from lassoprune.pipeline.config import FINETUNE_LR_AFTER_RECONSTRUCTION
from lassoprune.pipeline.stages import MODEL_FILE, metrics_record
from lassoprune.pruning import PruneSettings, after_cut

log = logging.getLogger("lassoprune.compare")

TOLERANCE = 0.01  # |MACs kept - target| allowed, as a fraction of the original (lp.prune's rule)
PHASES = ("select", "pilot", "table")

#: APIB's kernels and lasso (METHODS.md 1.1; APIB's final setting): fixed-bandwidth Laplace kernel,
#: unnormalised, signed lasso; APIB cuts only the inner channel of each residual block. These are the
#: lasso methods' library defaults; the rows spell them out so that a later change of defaults cannot
#: change what a finished row means.
APIB = {"kernel": "laplace", "normalise": False, "nonneg": False}


def row_cut(method: str, options: dict[str, Any] | None = None, **settings: Any) -> PruneSettings:
    """A row's prune settings: the library's :class:`PruneSettings`, with every choice that defines the row
    spelled out (reconstruction off unless asked, the residual stream cut unless kept, free widths) so that a
    later change of the library's defaults cannot change what a finished row means."""
    fixed = {"reconstruct": False, "prune_residual": True, "round_to": None, **settings}
    return PruneSettings(method=method, options=dict(options or {}), **fixed)


@dataclass(frozen=True)
class Method:
    """What one row's name stands for.

    Attributes:
        prune: the cut's settings (the target and calibration size are the row's and the profile's); for a
            Torch-Pruning peer the placeholder the config carries (its ``prune`` stage is replaced).
        sparse: sparse training before the cut: ``dwgl`` (the library's
            regulariser, proximal steps) or ``tp-group-sl`` (Torch-Pruning's
            GroupNormPruner hooked after every backward pass); None = none.
        peer: a Torch-Pruning pruner that makes the cut instead of ``lp.prune``.
        lr_from: the row whose selected fine-tuning learning rate this one uses (None = its own ``select``).
        lr: a fixed fine-tuning learning rate chosen elsewhere on held-out images (no ``select`` rows): the
            reconstructed rows use the library's rate after reconstruction, chosen on 5,000 held-out
            training images (docs/BENCHMARKS.md, "Defaults of the post-training path").
    """

    prune: PruneSettings
    sparse: str | None = None
    peer: str | None = None
    lr_from: str | None = None
    lr: float | None = None


LASSO_CROSS = {**APIB, "class_fit": "cross"}
METHODS: dict[str, Method] = {
    "l1": Method(row_cut("l1")),
    "hsic-ib": Method(row_cut("hsic-ib", APIB, prune_residual=False)),
    "tp-magnitude": Method(row_cut("l1"), peer="tp-magnitude"),
    "l1-rc": Method(row_cut("l1", reconstruct=True), lr=FINETUNE_LR_AFTER_RECONSTRUCTION),
    "hsic-ib-rc": Method(row_cut("hsic-ib", APIB, prune_residual=False, reconstruct=True),
                         lr=FINETUNE_LR_AFTER_RECONSTRUCTION),
    "random": Method(row_cut("random")),
    "sglp-ib": Method(row_cut("sglp-ib", LASSO_CROSS, prune_residual=False)),
    "stlp-ib": Method(row_cut("stlp-ib", LASSO_CROSS, prune_residual=False)),
    "class-lasso": Method(row_cut("class-lasso", LASSO_CROSS, prune_residual=False), lr_from="hsic-ib"),
    "tp-group-sl": Method(row_cut("l1"), sparse="tp-group-sl", peer="tp-group-sl"),
    "dwgl": Method(row_cut("dwgl-vote"), sparse="dwgl"),
    "bn-scale": Method(row_cut("bn-scale")),
    "taylor": Method(row_cut("taylor")),
    "sglp-ib-rc": Method(row_cut("sglp-ib", LASSO_CROSS, prune_residual=False, reconstruct=True),
                         lr=FINETUNE_LR_AFTER_RECONSTRUCTION),
    "l1-auto": Method(row_cut("l1", round_to="auto"), lr_from="l1"),
}
"""Every row name, in the order rows are run (the most informative first)."""

PRETRAINED = {
    "resnet20": "pretrained:resnet20-fashion-mnist",
    "resnet56": "pretrained:resnet56-fashion-mnist",
}


@dataclass(frozen=True)
class Profile:
    """Everything that must stay the same across the rows of one study.

    Attributes:
        dataset: a registered dataset name (``lassoprune info --datasets``).
        models: the models of the table, in order; the first one also runs ``select`` and ``pilot``.
        checkpoints: model -> model file (``pretrained:NAME`` or a path) of the converged baseline.
        seeds: model -> seeds of its table rows (a model not listed: seed 0).
        targets: MACs fractions kept.
        methods: row names (:data:`METHODS`).
        finetune_epochs, finetune_subset: the table's fine-tuning (None = all training images).
        lr_candidates: fine-tuning learning rates tried by ``select``.
        select_epochs, select_subset, select_target: ``select``'s short fine-tuning and its target.
        pilot_methods, pilot_epochs: the ``pilot`` rows (at ``select_target``, seed 0).
        validation_size: training images held out for ``select`` and ``pilot``.
        sparse_epochs, sparse_lr, sparse_subset: the sparse-training budget of ``dwgl`` and ``tp-group-sl``
            (``sparse_subset`` training images, None = all, whatever the row's phase).
        dwgl_lam, dwgl_alpha: DWGL strength and coefficient slope (linear schedule).
        tp_reg: GroupNormPruner's ``reg``.
        tp_weight_decay: SGD weight decay during Torch-Pruning's sparse learning (its benchmark turns it off).
        calib_size: class-balanced calibration images (scoring and BatchNorm re-estimation).
        batch_size: training batch size.
        select_from: another profile whose ``select`` phase (the same candidates, budget and target) gives
            this one's learning rates, read from that profile's runs directory (``--select-runs``); None: its own.
        notes: lines printed above the tables.
    """

    name: str
    dataset: str
    models: tuple[str, ...]
    checkpoints: dict[str, str]
    seeds: dict[str, tuple[int, ...]]
    targets: tuple[float, ...]
    methods: tuple[str, ...]
    finetune_epochs: int
    finetune_subset: int | None
    lr_candidates: tuple[float, ...]
    select_epochs: int
    select_subset: int | None
    select_target: float
    pilot_methods: tuple[str, ...]
    pilot_epochs: int
    validation_size: int
    sparse_epochs: int
    sparse_lr: float
    sparse_subset: int | None = None
    dwgl_lam: float = 0.5
    dwgl_alpha: float = 1.0
    tp_reg: float = DEFAULT_REG
    tp_weight_decay: float = 0.0
    calib_size: int = 500
    batch_size: int = 64
    test_images: int | None = 10_000  # the test split's size: the SE floor of the report (None: no floor)
    select_from: str | None = None
    notes: tuple[str, ...] = ()


STANDARD = Profile(
    name="standard", dataset="fashion-mnist", models=("resnet20", "resnet56"), checkpoints=PRETRAINED,
    seeds={"resnet20": (0, 1), "resnet56": (0,)}, targets=(0.5, 0.33), methods=tuple(METHODS),
    finetune_epochs=2, finetune_subset=None, lr_candidates=(0.01, 0.001), select_epochs=1,
    select_subset=20000, select_target=0.33, pilot_methods=("l1", "hsic-ib", "tp-magnitude"),
    pilot_epochs=3, validation_size=5000, sparse_epochs=2, sparse_lr=0.01, tp_reg=5e-3,
    notes=("tp-group-sl uses reg 5e-3, ten times Torch-Pruning's CIFAR value (meant for 100 sparse epochs), "
           "because its sparse budget here is 2 epochs",),
)  # fmt: skip
FULL = Profile(
    name="full", dataset="fashion-mnist", models=("resnet56",), checkpoints=PRETRAINED,
    seeds={"resnet56": (0, 1)}, targets=(0.5, 0.33), methods=tuple(METHODS),
    finetune_epochs=30, finetune_subset=None, lr_candidates=(0.01, 0.001), select_epochs=5,
    select_subset=None, select_target=0.33, pilot_methods=(), pilot_epochs=1, validation_size=5000,
    sparse_epochs=10, sparse_lr=0.01, batch_size=128,
)
TINY = dataclasses.replace(
    FULL, name="tiny", dataset="synthetic", models=("resnet20",), checkpoints={},
    seeds={"resnet20": (0, 1)}, targets=(0.5,), methods=("l1", "hsic-ib", "dwgl", "tp-group-sl"),
    finetune_epochs=1, select_epochs=1, select_target=0.5, pilot_methods=("l1",), pilot_epochs=2,
    validation_size=200, sparse_epochs=1, calib_size=100, batch_size=50, test_images=None,
    notes=("the full profile with a smoke-test budget on the synthetic dataset, for a model given with "
           "--checkpoint; numbers mean nothing",),
)  # fmt: skip
SHORT = dataclasses.replace(
    STANDARD, name="short", seeds={"resnet20": (0, 1, 2), "resnet56": (0, 1)},
    methods=("l1", "hsic-ib", "sglp-ib", "stlp-ib", "class-lasso", "tp-magnitude", "random", "l1-rc",
             "sglp-ib-rc"),
    finetune_epochs=1, finetune_subset=6000, pilot_methods=(), select_from="standard",
    notes=(("a fine-tuning budget of 1 epoch on 6,000 training images (1/20 of the standard's): what a user "
            "with little compute for fine-tuning sees; learning rates from the standard profile's select phase"),),
)  # fmt: skip
PROFILES: dict[str, Profile] = {p.name: p for p in (STANDARD, FULL, TINY, SHORT)}


# -- rows -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One pipeline run of the study; its directory is ``RUNS/<phase>/<model>/<method>/<settings>``."""

    phase: str
    model: str
    method: str
    target: float
    seed: int
    lr: float
    epochs: int

    def directory(self, runs: Path) -> Path:
        settings = f"t{self.target:g}-s{self.seed}-lr{self.lr:g}-e{self.epochs}"
        return runs / self.phase / self.model / self.method / settings


def row_config(profile: Profile, row: Row) -> RunConfig:
    """The pipeline configuration of ``row`` (what ``lassoprune run`` would be given)."""
    if row.model not in profile.checkpoints:
        raise LassopruneError(f"the {profile.name} profile has no baseline for {row.model}; "
                              f"give one with --checkpoint {row.model}=FILE")
    method = METHODS[row.method]
    judged_on_validation = row.phase != "table"
    sparse = None
    if method.sparse == "dwgl":
        sparse = SparseSection(regularizer="dwgl", lam=profile.dwgl_lam, alpha=profile.dwgl_alpha,
                               epochs=profile.sparse_epochs, lr=profile.sparse_lr, train_subset=profile.sparse_subset)
    return RunConfig(
        seed=row.seed,
        data=DataSection(name=profile.dataset, batch_size=profile.batch_size,
                         validation_size=profile.validation_size if judged_on_validation else 0),
        pretrain=PretrainSection(checkpoint=profile.checkpoints[row.model]),
        sparse=sparse,
        prune=dataclasses.replace(method.prune, target_macs=row.target, calib_size=profile.calib_size),
        finetune=FinetuneSection(epochs=row.epochs, lr=row.lr,
                                 train_subset=profile.select_subset if row.phase == "select" else
                                 profile.finetune_subset),
        evaluate=EvaluateSection(split="validation" if judged_on_validation else "test", latency=False),
    )  # fmt: skip


def run_row(profile: Profile, runs: Path, row: Row, progress: bool) -> dict[str, Any]:
    """Run (or resume) ``row`` through the pipeline's stages; returns its result record."""
    method = METHODS[row.method]
    replace: dict[str, Stage] = {}
    if method.sparse is not None:
        replace["sparse"] = shared_sparse_stage(profile, runs, row, progress)
    if method.peer is not None:
        replace["prune"] = peer_prune_stage(method.peer, profile.tp_reg)
    run, _, _ = run_stages(row_config(profile, row), row.directory(runs), progress=progress, replace=replace,
                           extra_state={"benchmark_row": dataclasses.asdict(row)})
    return row_result(row, run.stages, row.directory(runs))


def row_result(row: Row, stages: dict[str, Any], directory: Path) -> dict[str, Any]:
    """The numbers of a finished row, from its stage records."""
    prune = stages["prune"]
    history_file = directory / "finetune" / "metrics.jsonl"
    history = [json.loads(line) for line in history_file.read_text().splitlines()] if history_file.exists() else []
    return {
        **dataclasses.asdict(row),
        "dense_top1": stages["pretrain"]["metrics"]["top1"],
        "dense_worst": stages["pretrain"]["metrics"]["worst_class"],
        "macs_ratio": prune["macs_after"] / prune["macs_before"],
        "params_ratio": prune["params_after"] / prune["params_before"],
        "pruned_top1": prune["metrics"]["top1"], "pruned_worst": prune["metrics"]["worst_class"],
        "final_top1": stages["evaluate"]["metrics"]["top1"],
        "final_worst": stages["evaluate"]["metrics"]["worst_class"],
        "epoch_top1": [epoch["test_top1"] for epoch in history],
        "sparse_top1": stages["sparse"]["metrics"]["top1"] if "sparse" in stages else None,
        "prune_seconds": prune.get("method_seconds"),
        "finetune_seconds": stages["finetune"]["seconds"],
    }  # fmt: skip


# -- the stages that are not the library's ------------------------------------------------------------------


def shared_sparse_stage(profile: Profile, runs: Path, row: Row, progress: bool) -> Stage:
    """A ``sparse`` stage that copies one sparse-trained model shared by every target of (model, method, seed).

    The shared model is its own pipeline run in ``RUNS/sparse/<model>/<method>-s<seed>`` (stopped after
    ``sparse``), trained on the profile's sparse budget whatever the row's phase.
    """
    method = METHODS[row.method]

    def stage(ctx: StageContext) -> dict[str, Any]:
        shared = runs / "sparse" / row.model / f"{row.method}-s{row.seed}"
        config = dataclasses.replace(
            row_config(profile, dataclasses.replace(row, phase="table")),
            finetune=FinetuneSection(epochs=0), prune=PruneSection(target_macs=0.5, round_to=None),
        )
        replace = {"sparse": tp_sparse_stage(profile)} if method.sparse == "tp-group-sl" else {}
        run, _, _ = run_stages(config, shared, progress=progress, replace=replace, stop_after="sparse",
                               extra_state={"benchmark_sparse": method.sparse})
        target = ctx.run.path("sparse", MODEL_FILE)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(run.path(run.stages["sparse"]["model"]), target)
        return {"model": f"sparse/{MODEL_FILE}", "metrics": run.stages["sparse"]["metrics"],
                "shared": str(shared.relative_to(runs)), "train_seconds": run.stages["sparse"]["seconds"]}

    return stage


def tp_sparse_stage(profile: Profile) -> Stage:
    """Torch-Pruning's group sparse learning as a ``sparse`` stage: the engine's ``fit`` with
    ``GroupNormPruner.regularize`` called after every backward pass."""

    def stage(ctx: StageContext) -> dict[str, Any]:
        model = load(ctx.run.path("pretrain", MODEL_FILE))
        pruner = make_pruner("tp-group-sl", model, ctx.example, 0.5, ctx.info.num_classes, profile.tp_reg)
        result = ctx.fit(model, "sparse", profile.sparse_epochs, profile.sparse_lr, profile.sparse_subset, 1,
                         weight_decay=profile.tp_weight_decay, after_backward=pruner.regularize,
                         bn_batches=ctx.calibration)
        return {"model": f"sparse/{MODEL_FILE}", "metrics": metrics_record(result.final)}

    return stage


def peer_prune_stage(peer: str, reg: float) -> Stage:
    """Torch-Pruning's cut as a ``prune`` stage: the ``pruning_ratio`` keeping the MACs target is searched
    (``compare_peers.peer_cut``), then BatchNorm re-estimation and evaluation as the library's stage does."""

    def stage(ctx: StageContext) -> dict[str, Any]:
        source = ctx.run.stages.get("sparse", ctx.run.stages["pretrain"])["model"]
        target = ctx.config.prune.target_macs
        assert target is not None
        cut = peer_cut(peer, load(ctx.run.path(source)).eval(), ctx.example, target, ctx.info.num_classes, reg,
                       TOLERANCE)
        post = after_cut(cut.model, cut.model, ctx.calibration, evaluate=lambda m: metrics_record(ctx.evaluate(m)))
        metrics = post.one_shot["cut"]
        cut.model.to("cpu")
        counts = {"macs_before": cut.macs_before, "macs_after": cut.macs_after,
                  "params_before": cut.params_before, "params_after": cut.params_after}
        record = {"method": peer, "pruning_ratio": cut.ratio, "within_tolerance": cut.within_tolerance,
                  "trials": [list(t) for t in cut.trials], **counts}
        atomic_write_json(ctx.run.path("prune", "prune.json"), record)
        save(cut.model, ctx.run.path("prune", MODEL_FILE), extra=ctx.model_extra(pruning=record))
        return {"model": f"prune/{MODEL_FILE}", "metrics": metrics, "method_seconds": cut.seconds, **counts}

    return stage


# -- phases ------------------------------------------------------------------------------------------------


def select_rows(profile: Profile, methods: Sequence[str]) -> list[Row]:
    model = profile.models[0]
    own = dict.fromkeys(METHODS[m].lr_from or m for m in methods if METHODS[m].lr is None)
    return [Row("select", model, m, profile.select_target, 0, lr, profile.select_epochs)
            for m in own for lr in profile.lr_candidates]


def chosen_lr(profile: Profile, runs: Path, method: str) -> float:
    """The candidate learning rate with the best validation top-1 in ``select`` (ties: the larger rate), or
    the row's fixed rate."""
    if METHODS[method].lr is not None:
        return METHODS[method].lr
    method = METHODS[method].lr_from or method
    scores = {}
    for row in select_rows(profile, [method]):
        state = row.directory(runs) / "state.json"
        stages = json.loads(state.read_text())["stages"] if state.exists() else {}
        if "evaluate" not in stages:
            raise LassopruneError(f"{method}: the select phase has not finished ({row.directory(runs)}); "
                                  "run --phase select first")
        scores[row.lr] = stages["evaluate"]["metrics"]["top1"]
    return max(sorted(scores, reverse=True), key=lambda lr: scores[lr])


def pilot_rows(profile: Profile, runs: Path, methods: Sequence[str]) -> list[Row]:
    model = profile.models[0]
    return [Row("pilot", model, m, profile.select_target, 0, chosen_lr(profile, runs, m), profile.pilot_epochs)
            for m in profile.pilot_methods if m in methods]


def table_rows(profile: Profile, runs: Path, models: Sequence[str], methods: Sequence[str],
               targets: Sequence[float], select_runs: Path | None = None) -> list[Row]:  # fmt: skip
    """Method-major order (:data:`METHODS`' order), every seed of a method before the next method, so that an
    interrupted study has error bars for its first methods rather than one seed of every method. Learning
    rates come from the ``select`` phase under ``select_runs`` (default: ``runs``)."""
    rows = []
    for model in models:
        for m in methods:
            lr = chosen_lr(profile, select_runs or runs, m)
            rows += [Row("table", model, m, t, seed, lr, profile.finetune_epochs)
                     for seed in profile.seeds.get(model, (0,)) for t in targets]
    return rows


def shard(rows: Sequence[Row], index: int, count: int) -> list[Row]:
    """The rows of one of ``count`` processes: whole (model, method, seed) units, so a shared sparse model
    is trained by one process only."""
    units = list(dict.fromkeys((r.model, r.method, r.seed) for r in rows))
    mine = {u for i, u in enumerate(units) if i % count == index}
    return [r for r in rows if (r.model, r.method, r.seed) in mine]


def run_rows(profile: Profile, runs: Path, rows: Sequence[Row], progress: bool) -> None:
    for i, row in enumerate(rows, 1):
        started = time.perf_counter()
        result = run_row(profile, runs, row, progress)
        log.info("[%d/%d] %s %s %s @ %g seed %d lr %g: MACs %.3f, pruned %.4f, final %.4f (%.0f s)", i, len(rows),
                 row.phase, row.model, row.method, row.target, row.seed, row.lr, result["macs_ratio"],
                 result["pruned_top1"], result["final_top1"], time.perf_counter() - started)


# -- report ------------------------------------------------------------------------------------------------


def finished(runs: Path, phase: str) -> Iterator[dict[str, Any]]:
    """Result records of every finished row of ``phase`` under ``runs``."""
    for state_file in sorted((runs / phase).glob("*/*/*/state.json")):
        state = json.loads(state_file.read_text())
        if "evaluate" in state["stages"] and "benchmark_row" in state["config"]:
            yield row_result(Row(**state["config"]["benchmark_row"]), state["stages"], state_file.parent)


@dataclass(frozen=True)
class Estimate:
    """Mean and standard error (sample standard deviation / sqrt(n); None for n = 1) of ``n`` values."""

    mean: float
    se: float | None
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Estimate:
        n = len(values)
        mean = sum(values) / n
        se = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1) / n) if n > 1 else None
        return cls(mean, se, n)

    def text(self, digits: int = 4) -> str:
        return f"{self.mean:.{digits}f}" + (f" ± {self.se:.{digits}f}" if self.se is not None else "")


def differs(a: Estimate, b: Estimate, floor: float = 0.0) -> bool | None:
    """Whether two means differ by more than two standard errors of their difference (None: no SE).

    Each SE is at least ``floor``: with two seeds that happen to agree the sample SE is about 0,
    and a difference of a few test images would count as real. The table passes the test split's
    sampling error of one accuracy, ``sqrt(p (1 - p) / n_test)`` (:func:`sampling_se`). A single
    seed (no SE) is compared with the floor alone when there is one: the test-sampling part of
    the error only (the seed-to-seed part is unknown); None without a floor.
    """
    if (a.se is None or b.se is None) and floor <= 0:
        return None
    se_a, se_b = max(a.se or 0.0, floor), max(b.se or 0.0, floor)
    return abs(a.mean - b.mean) > 2 * math.sqrt(se_a**2 + se_b**2)


def sampling_se(accuracy: float, test_images: int | None) -> float:
    """Standard error of one accuracy measured on ``test_images`` images (binomial); 0 when unknown."""
    if not test_images:
        return 0.0
    return math.sqrt(max(accuracy * (1.0 - accuracy), 0.0) / test_images)


def model_table(rows: Sequence[dict[str, Any]], model: str, profile: Profile) -> str:
    """Markdown table of one model: per (target, method) the mean ± SE over seeds."""
    mine = [r for r in rows if r["model"] == model]
    if not mine:
        return ""
    dense = Estimate.of([r["dense_top1"] for r in mine])
    floor = sampling_se(dense.mean, profile.test_images)
    floor_text = f"{floor:.4f} at the dense accuracy" if floor else "unknown test size: no floor"
    lines = [f"#### {model} (`--{profile.name}` profile)", "",
             f"dense top-1 on the whole test split: {dense.mean:.4f}; top-1 / worst class, mean ± SE over seeds "
             "(n = seeds); **bold**: best mean final top-1 at the target; ≈: within two standard errors of it; "
             "<: lower by more than two standard errors; every SE in the comparison is at least the test split's "
             "sampling error of one accuracy at the best method's top-1 "
             f"({floor_text}); ¹: one seed on a side, compared by that sampling error alone (seed-to-seed "
             "variation unknown)", "",
             "| target | method | n | lr | MACs kept | params kept | pruned top-1 | pruned worst | final top-1 "
             "| final worst | vs best |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for target in sorted({r["target"] for r in mine}, reverse=True):
        groups: dict[str, list[dict[str, Any]]] = {}
        for r in mine:
            if r["target"] == target:
                groups.setdefault(r["method"], []).append(r)
        finals = {m: Estimate.of([r["final_top1"] for r in g]) for m, g in groups.items()}
        best = max(finals, key=lambda m: finals[m].mean)
        for m in sorted(groups, key=lambda m: -finals[m].mean):
            g = groups[m]
            floor = sampling_se(finals[best].mean, profile.test_images)
            mark = "best" if m == best else {True: "<", False: "≈", None: ""}[differs(finals[m], finals[best], floor)]
            if mark in ("<", "≈") and min(finals[m].n, finals[best].n) == 1:
                mark += "¹"
            name = f"**{m}**" if m == best else m
            lines.append(
                f"| {target:g} | {name} | {len(g)} | {g[0]['lr']:g} "
                f"| {Estimate.of([r['macs_ratio'] for r in g]).mean:.3f} "
                f"| {Estimate.of([r['params_ratio'] for r in g]).mean:.3f} "
                f"| {Estimate.of([r['pruned_top1'] for r in g]).text()} "
                f"| {Estimate.of([r['pruned_worst'] for r in g]).text(3)} | {finals[m].text()} "
                f"| {Estimate.of([r['final_worst'] for r in g]).text(3)} | {mark} |")
    return "\n".join(lines)


def select_table(rows: Sequence[dict[str, Any]]) -> str:
    """Validation top-1 of every (method, learning rate) of ``select``; the chosen rate in bold."""
    by_method: dict[str, dict[float, float]] = {}
    for r in rows:
        by_method.setdefault(r["method"], {})[r["lr"]] = r["final_top1"]
    rates = sorted({r["lr"] for r in rows}, reverse=True)
    lines = ["| method | " + " | ".join(f"lr {lr:g}" for lr in rates) + " |", "|---|" + "---|" * len(rates)]
    for m, scores in by_method.items():
        best = max(sorted(scores, reverse=True), key=lambda lr: scores[lr])
        cells = [("**%.4f**" if lr == best else "%.4f") % scores[lr] if lr in scores else "" for lr in rates]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def pilot_table(rows: Sequence[dict[str, Any]]) -> str:
    """Validation top-1 after every fine-tuning epoch and the methods' rank order at each epoch."""
    epochs = max((len(r["epoch_top1"]) for r in rows), default=0)
    lines = ["| method | " + " | ".join(f"epoch {e + 1}" for e in range(epochs)) + " |", "|---|" + "---|" * epochs]
    for r in rows:
        lines.append(f"| {r['method']} | " + " | ".join(f"{a:.4f}" for a in r["epoch_top1"]) + " |")
    for e in range(epochs):
        order = sorted((r for r in rows if len(r["epoch_top1"]) > e), key=lambda r: -r["epoch_top1"][e])
        lines.append(f"\nrank after epoch {e + 1}: " + " > ".join(r["method"] for r in order))
    return "\n".join(lines)


def plot_tradeoff(rows: Sequence[dict[str, Any]], model: str) -> Any:
    """Final top-1 and worst-class accuracy against MACs kept, one colour per method, error bars = 1 SE."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10.0, 4.2), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2)
    mine = [r for r in rows if r["model"] == model]
    methods = [m for m in METHODS if any(r["method"] == m for r in mine)]
    for i, m in enumerate(methods):
        for ax, key in zip(axes, ("final_top1", "final_worst")):
            points = []
            for target in sorted({r["target"] for r in mine if r["method"] == m}):
                g = [r for r in mine if r["method"] == m and r["target"] == target]
                est = Estimate.of([r[key] for r in g])
                points.append((Estimate.of([r["macs_ratio"] for r in g]).mean, est.mean, est.se or 0.0))
            xs, ys, es = zip(*points)
            ax.errorbar(xs, ys, yerr=es, marker="o", markersize=4, capsize=3, linewidth=1, color=f"C{i % 10}",
                        label=m, linestyle="-" if i < 10 else "--")
    for ax, title, key in zip(axes, ("top-1", "worst-class accuracy"), ("dense_top1", "dense_worst")):
        ax.axhline(mine[0][key], color="black", linestyle=":", linewidth=1, label="dense")
        ax.set_xlabel("MACs kept (fraction of the dense model)")
        ax.set_ylabel(f"{title}, mean ± SE over seeds")
        ax.set_title(f"{model}: {title} after fine-tuning", fontsize=9)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, loc="lower right", ncols=2)
    return fig


def write_report(profile: Profile, runs: Path) -> str:
    """``RUNS/table.md``, ``RUNS/results.json`` and one ``RUNS/tradeoff-<model>.png`` per model."""
    from lassoprune.report.plots import save_png

    results = {phase: list(finished(runs, phase)) for phase in PHASES}
    parts = [f"settings: {json.dumps(dataclasses.asdict(profile))}"]
    parts += [f"- {note}" for note in profile.notes]
    if results["select"]:
        parts += ["#### select: validation top-1 per fine-tuning learning rate", select_table(results["select"])]
    if results["pilot"]:
        parts += ["#### pilot: validation top-1 per fine-tuning epoch", pilot_table(results["pilot"])]
    for model in profile.models:
        table = model_table(results["table"], model, profile)
        if table:
            parts.append(table)
            save_png(plot_tradeoff(results["table"], model), runs / f"tradeoff-{model}.png")
    text = "\n\n".join(parts) + "\n"
    atomic_write_text(runs / "table.md", text)
    atomic_write_json(runs / "results.json", results)
    return text


# -- command line ------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    which = p.add_mutually_exclusive_group(required=True)
    for name in PROFILES:
        which.add_argument(f"--{name}", dest="profile", action="store_const", const=name,
                           help=argparse.SUPPRESS if name == "tiny" else f"the {name} profile")
    p.add_argument("--phase", choices=(*PHASES, "all"), default="all", help="which phase to run (default: all)")
    p.add_argument("--report", action="store_true", help="only write the tables and plots of the finished rows")
    p.add_argument("--runs", default=None, help="rows and reports (default: runs/compare-<profile>)")
    p.add_argument("--select-runs", default=None,
                   help="where the learning rates' select phase is (default: --runs, or runs/compare-<profile> "
                        "of the profile's select_from)")
    p.add_argument("--methods", nargs="+", choices=list(METHODS), default=None, metavar="METHOD",
                   help=f"default: the profile's ({', '.join(METHODS)} available)")
    p.add_argument("--models", nargs="+", choices=lp.list_models(), default=None, metavar="MODEL",
                   help=f"default: the profile's (shipped baselines: {', '.join(PRETRAINED)}; any zoo model "
                        "with --checkpoint MODEL=FILE)")
    p.add_argument("--checkpoint", nargs="+", default=[], metavar="MODEL=FILE",
                   help="start MODEL from FILE (a lassoprune model file) instead of the profile's baseline")
    p.add_argument("--targets", nargs="+", type=float, default=None, help="MACs kept (default: the profile's)")
    p.add_argument("--shard", default="0/1", help="I/N: run the I-th of N interleaved shares of the rows")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    if args.targets and not all(0.0 < t < 1.0 for t in args.targets):
        p.error(f"--targets are fractions of the MACs kept, in (0, 1); got {args.targets}")
    try:
        index, count = (int(x) for x in args.shard.split("/"))
        assert 0 <= index < count
    except (ValueError, AssertionError):
        p.error(f"--shard is I/N with 0 <= I < N, e.g. 0/2; got {args.shard}")
    args.shard_index, args.shard_count = index, count
    pairs = [c.split("=", 1) for c in args.checkpoint]
    if any(len(pair) != 2 or pair[0] not in lp.list_models() for pair in pairs):
        p.error(f"--checkpoint takes MODEL=FILE with MODEL a zoo model (lassoprune info); got {args.checkpoint}")
    args.checkpoints = dict(pairs)
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    profile = PROFILES[args.profile]
    profile = dataclasses.replace(profile, checkpoints={**profile.checkpoints, **args.checkpoints})
    runs = Path(args.runs or f"runs/compare-{profile.name}")
    select_runs = Path(args.select_runs or (f"runs/compare-{profile.select_from}" if profile.select_from else runs))
    methods = args.methods or list(profile.methods)
    models = args.models or list(profile.models)
    targets = args.targets or list(profile.targets)
    phases = [] if args.report else PHASES if args.phase == "all" else (args.phase,)
    if profile.select_from:  # the learning rates come from another study: nothing to select or pilot here
        phases = [phase for phase in phases if phase == "table"]
    started = time.perf_counter()
    try:
        for phase in phases:
            rows = {"select": lambda: select_rows(profile, methods),
                    "pilot": lambda: pilot_rows(profile, select_runs, methods),
                    "table": lambda: table_rows(profile, runs, models, methods, targets, select_runs)}[phase]()
            rows = shard(rows, args.shard_index, args.shard_count)
            log.info("%s: %d rows in this shard", phase, len(rows))
            run_rows(profile, runs, rows, progress=not args.no_progress)
    except LassopruneError as exc:
        raise SystemExit(f"error: {exc}") from None
    print(write_report(profile, runs), flush=True)
    log.info("done in %.0f s; %s", time.perf_counter() - started, runs / "table.md")


if __name__ == "__main__":
    main()
