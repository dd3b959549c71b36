"""Running the benchmark protocol's rows (``benchmarks/compare.py``) through the library's pipeline stages.

A row is :func:`lassoprune.pipeline.run_stages` on its configuration, with the stages that are not the
library's put in where a row needs them: a ``sparse`` stage that copies one sparse-trained model shared by
every target of (model, method, seed), Torch-Pruning's group sparse learning, and Torch-Pruning's cut.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from compare_peers import make_pruner, peer_cut
from compare_profiles import METHODS, PROFILES, TOLERANCE, Profile
from compare_rows import Row, chosen_lr, row_config, row_result

import torch
from torch import nn

from lassoprune.channels import channel_groups
from lassoprune.errors import LassopruneError
from lassoprune.io import atomic_write_json, load, save
from lassoprune.pipeline import FinetuneSection, Stage, StageContext, run_stages
from lassoprune.pipeline.stages import MODEL_FILE, STAGES, metrics_record, run_pretrain
from lassoprune.pretrained import resolve_model_path
from lassoprune.training.metrics import current_extra
from lassoprune.pruning import after_cut

log = logging.getLogger("lassoprune.compare")


def run_row(profile: Profile, runs: Path, row: Row, progress: bool, cuts: Path | None = None) -> dict[str, Any]:
    """Run (or resume) ``row`` through the pipeline's stages; returns its result record.

    ``cuts``: the runs directory of ``profile.cuts_from``, whose same row's cut this one copies when it can.
    """
    method = METHODS[row.method]
    replace: dict[str, Stage] = {"pretrain": shared_pretrain_stage(runs, row)}
    if method.sparse is not None:
        replace["sparse"] = shared_sparse_stage(profile, runs, row, progress)
    if method.peer is not None:
        replace["prune"] = peer_prune_stage(method.peer, profile.tp_reg)
    if profile.cuts_from is not None and cuts is not None:
        replace["prune"] = reused_prune_stage(PROFILES[profile.cuts_from], cuts, row,
                                              replace.get("prune", STAGES["prune"]))
    run, _, _ = run_stages(row_config(profile, row), row.directory(runs), progress=progress, replace=replace,
                           extra_state={"benchmark_row": dataclasses.asdict(row)})
    return row_result(row, run.stages, row.directory(runs))


def run_rows(profile: Profile, runs: Path, rows: Sequence[Row], progress: bool, cuts: Path | None = None) -> None:
    """Run (or resume) ``rows`` in order, logging each one's numbers and time."""
    for i, row in enumerate(rows, 1):
        started = time.perf_counter()
        result = run_row(profile, runs, row, progress, cuts)
        log.info("[%d/%d] %s %s %s @ %s seed %d lr %g: MACs %.3f, params %.3f, pruned %.4f, final %.4f (%.0f s)", i,
                 len(rows), row.phase, row.model, row.method, row.label, row.seed, row.lr, result["macs_ratio"],
                 result["params_ratio"], result["pruned_top1"], result["final_top1"], time.perf_counter() - started)


# -- the stages that are not the library's ------------------------------------------------------------------


def shared_pretrain_stage(runs: Path, row: Row) -> Stage:
    """The library's ``pretrain`` stage, its evaluation of the baseline done once per (model, phase).

    Every row of a phase copies the same baseline and evaluates it on the same split: the first row's
    metrics are kept in ``RUNS/baselines/<phase>-<model>.json`` and copied by the others.
    """

    def stage(ctx: StageContext) -> dict[str, Any]:
        cache = runs / "baselines" / f"{row.phase}-{row.model}.json"
        if not cache.exists():
            record = run_pretrain(ctx)
            atomic_write_json(cache, record["metrics"])
            return record
        model = load(resolve_model_path(ctx.config.pretrain.checkpoint))
        save(model, ctx.run.path("pretrain", MODEL_FILE),
             extra={**current_extra(model.lp_extra), **ctx.model_extra(source=ctx.config.pretrain.checkpoint)})
        metrics = json.loads(cache.read_text())
        atomic_write_json(ctx.run.path("pretrain", "metrics.json"), metrics)
        return {"model": f"pretrain/{MODEL_FILE}", "metrics": metrics}

    return stage


def shared_sparse_stage(profile: Profile, runs: Path, row: Row, progress: bool) -> Stage:
    """A ``sparse`` stage that copies one sparse-trained model shared by the rows of (model, method, target, seed).

    The shared model is its own pipeline run in ``RUNS/sparse/<model>/<method>-<target>-s<seed>`` (stopped after
    ``sparse``), trained on the profile's sparse budget whatever the row's phase. The library's regularisers
    (``dwgl``, ``group-lasso``) steer towards the row's target, so each target has its own; Torch-Pruning's
    group sparse learning has no target and one run (``<method>-s<seed>``) serves every target.
    """
    method = METHODS[row.method]

    def stage(ctx: StageContext) -> dict[str, Any]:
        steered = method.sparse != "tp-group-sl"  # the library's regularisers steer towards the row's target
        unit = f"{row.method}-{row.label}-s{row.seed}" if steered else f"{row.method}-s{row.seed}"
        shared = runs / "sparse" / row.model / unit
        # one config per shared directory: the row's target when steered, else the select phase's target
        source = (dataclasses.replace(row, phase="table") if steered else
                  dataclasses.replace(row, phase="table", target=profile.select_target, target_params=None))
        config = dataclasses.replace(row_config(profile, source), finetune=FinetuneSection(epochs=0))
        replace = {"sparse": tp_sparse_stage(profile)} if method.sparse == "tp-group-sl" else {}
        run, _, _ = run_stages(config, shared, progress=progress, replace=replace, stop_after="sparse",
                               extra_state={"benchmark_sparse": method.sparse})
        target = ctx.run.path("sparse", MODEL_FILE)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(run.path(run.stages["sparse"]["model"]), target)
        return {"model": f"sparse/{MODEL_FILE}", "metrics": run.stages["sparse"]["metrics"],
                "shared": str(shared.relative_to(runs)), "train_seconds": run.stages["sparse"]["seconds"]}

    return stage


#: The sections of a row's configuration that decide its cut (the rest, fine-tuning and evaluation, come after it).
CUT_SECTIONS = ("seed", "data", "pretrain", "sparse", "prune")


def reused_prune_stage(source: Profile, cuts: Path, row: Row, fallback: Stage) -> Stage:
    """A ``prune`` stage that copies the cut of the same row in ``source``'s runs directory ``cuts``.

    The same row there is the same model, method, targets and seed at ``source``'s rate and fine-tuning; it is
    used only when it finished its cut and its configuration's :data:`CUT_SECTIONS` equal this row's (so the cut
    is the one this row would make). Otherwise ``fallback`` cuts. The stage's record names the row it copied.
    """

    def stage(ctx: StageContext) -> dict[str, Any]:
        twin = dataclasses.replace(row, lr=chosen_lr(source, cuts, row.method), epochs=source.finetune_epochs)
        state_file = twin.directory(cuts) / "state.json"
        state = json.loads(state_file.read_text()) if state_file.exists() else {}
        record = state.get("stages", {}).get("prune")
        mine = ctx.config.to_dict()
        if record is None or any(state["config"].get(key) != mine.get(key) for key in CUT_SECTIONS):
            log.info("%s %s @ %s seed %d: no matching cut in %s, cutting", row.model, row.method, row.label,
                     row.seed, cuts)
            return fallback(ctx)
        for name in (MODEL_FILE, "prune.json"):
            if (twin.directory(cuts) / "prune" / name).exists():
                ctx.run.path("prune").mkdir(parents=True, exist_ok=True)
                shutil.copyfile(twin.directory(cuts) / "prune" / name, ctx.run.path("prune", name))
        return {**record, "reused_from": str(twin.directory(cuts).relative_to(cuts))}

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
        macs, params = ctx.config.prune.target_macs, ctx.config.prune.target_params
        if (macs is None) == (params is None):
            raise LassopruneError(f"{peer}: Torch-Pruning's pruners are run at one target, MACs or parameters")
        measure, target = ("macs", macs) if params is None else ("params", params)
        dense = load(ctx.run.path(source)).eval()
        cut = peer_cut(peer, dense, ctx.example, target, ctx.info.num_classes, reg, TOLERANCE, measure=measure)
        post = after_cut(cut.model, cut.model, ctx.calibration, evaluate=lambda m: metrics_record(ctx.evaluate(m)))
        metrics = post.one_shot["cut"]
        cut.model.to("cpu")
        counts = {"macs_before": cut.macs_before, "macs_after": cut.macs_after,
                  "params_before": cut.params_before, "params_after": cut.params_after}
        record = {"method": peer, "pruning_ratio": cut.ratio, "within_tolerance": cut.within_tolerance,
                  "trials": [list(t) for t in cut.trials],
                  "residual_channels": residual_channels(dense, cut.model, ctx.example), **counts}
        atomic_write_json(ctx.run.path("prune", "prune.json"), record)
        save(cut.model, ctx.run.path("prune", MODEL_FILE), extra=ctx.model_extra(pruning=record))
        return {"model": f"prune/{MODEL_FILE}", "metrics": metrics, "method_seconds": cut.seconds, **counts}

    return stage



def residual_channels(dense: nn.Module, pruned: nn.Module, example: torch.Tensor) -> dict[str, int]:
    """Channels of the residual (eltwise) groups, ``{"total": ..., "removed": ...}`` as
    :attr:`lassoprune.PruneResult.residual_channels` counts them, for a cut made outside the library."""

    def count(model: nn.Module) -> int:
        return sum(g.num_channels for g in channel_groups(model.eval(), example[:1]) if g.is_eltwise)

    total = count(dense)
    return {"total": total, "removed": total - count(pruned)}
