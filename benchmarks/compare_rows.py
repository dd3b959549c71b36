"""The benchmark protocol's rows (``benchmarks/compare.py``): one pipeline run each, which rows each phase has,
their pipeline configuration, their numbers once finished, and how they are shared between processes.

A row's directory is ``RUNS/<phase>/<model>/<method>/<settings>``; its ``state.json`` is the pipeline's, with
the row itself under ``config.benchmark_row`` so that a finished row can be read back without its profile.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compare_profiles import METHODS, Profile

from lassoprune.errors import LassopruneError
from lassoprune.pipeline import (
    DataSection,
    EvaluateSection,
    FinetuneSection,
    PretrainSection,
    RunConfig,
    SparseSection,
)
from lassoprune.training.metrics import read_history


def target_label(macs: float | None, params: float | None = None) -> str:
    """``t0.39`` (MACs kept), ``p0.25`` (parameters kept) or ``t0.39-p0.15`` (both limits)."""
    parts = ([f"t{macs:g}"] if macs is not None else []) + ([f"p{params:g}"] if params is not None else [])
    return "-".join(parts)


@dataclass(frozen=True)
class Row:
    """One pipeline run of the study; its directory is ``RUNS/<phase>/<model>/<method>/<settings>``.

    ``target`` is the MACs kept (None: a parameter target only), ``target_params`` the parameters kept
    (None: none; both: two limits, the seed's headline pair).
    """

    phase: str
    model: str
    method: str
    target: float | None
    seed: int
    lr: float
    epochs: int
    target_params: float | None = None

    @property
    def label(self) -> str:
        return target_label(self.target, self.target_params)

    def directory(self, runs: Path) -> Path:
        """The row's run directory under ``runs``."""
        settings = f"{self.label}-s{self.seed}-lr{self.lr:g}-e{self.epochs}"
        return runs / self.phase / self.model / self.method / settings


def row_config(profile: Profile, row: Row) -> RunConfig:
    """The pipeline configuration of ``row`` (what ``lassoprune run`` would be given)."""
    if row.model not in profile.checkpoints:
        raise LassopruneError(f"the {profile.name} profile has no baseline for {row.model}; "
                              f"give one with --checkpoint {row.model}=FILE")
    method = METHODS[row.method]
    judged_on_validation = row.phase != "table"
    sparse = None
    if method.sparse in ("dwgl", "group-lasso"):
        sparse = SparseSection(regularizer=method.sparse, lam=profile.dwgl_lam, alpha=profile.dwgl_alpha,
                               epochs=profile.sparse_epochs, lr=profile.sparse_lr, train_subset=profile.sparse_subset)
    return RunConfig(
        seed=row.seed,
        data=DataSection(name=profile.dataset, batch_size=profile.batch_size,
                         validation_size=profile.validation_size if judged_on_validation else 0),
        pretrain=PretrainSection(checkpoint=profile.checkpoints[row.model]),
        sparse=sparse,
        prune=dataclasses.replace(method.prune, target_macs=row.target, target_params=row.target_params,
                                  calib_size=profile.calib_size),
        finetune=FinetuneSection(epochs=row.epochs, lr=row.lr,
                                 train_subset=profile.select_subset if row.phase == "select" else
                                 profile.finetune_subset),
        evaluate=EvaluateSection(split="validation" if judged_on_validation else "test", latency=False),
    )  # fmt: skip



def row_result(row: Row, stages: dict[str, Any], directory: Path) -> dict[str, Any]:
    """The numbers of a finished row, from its stage records."""
    prune = stages["prune"]
    history_file = directory / "finetune" / "metrics.jsonl"
    history = read_history(history_file) if history_file.exists() else []
    prune_file = directory / "prune" / "prune.json"
    residual = json.loads(prune_file.read_text()).get("residual_channels") if prune_file.exists() else None
    return {
        **dataclasses.asdict(row),
        "dense_top1": stages["pretrain"]["metrics"]["top1"],
        "dense_worst": stages["pretrain"]["metrics"]["worst_class"],
        "macs_ratio": prune["macs_after"] / prune["macs_before"],
        "params_ratio": prune["params_after"] / prune["params_before"],
        "pruned_top1": prune["metrics"]["top1"], "pruned_worst": prune["metrics"]["worst_class"],
        "final_top1": stages["evaluate"]["metrics"]["top1"],
        "final_worst": stages["evaluate"]["metrics"]["worst_class"],
        "epoch_top1": [epoch["test"]["top1"] for epoch in history],
        "sparse_top1": stages["sparse"]["metrics"]["top1"] if "sparse" in stages else None,
        "prune_seconds": prune.get("method_seconds"),
        "residual_removed": residual["removed"] if residual else None,
        "finetune_seconds": stages["finetune"]["seconds"],
    }  # fmt: skip



# -- the phases' rows --------------------------------------------------------------------------------------


def select_rows(profile: Profile, methods: Sequence[str]) -> list[Row]:
    """Every candidate learning rate of every method that selects its own (on the first model, seed 0)."""
    model = profile.models[0]
    own = dict.fromkeys(METHODS[m].lr_from or m for m in methods if METHODS[m].lr is None)
    return [Row("select", model, m, profile.select_target, 0, lr, profile.select_epochs)
            for m in own for lr in profile.lr_candidates]


def chosen_lr(profile: Profile, runs: Path, method: str) -> float:
    """The candidate learning rate with the best validation top-1 in ``select`` (ties: the larger rate), or
    the row's fixed rate."""
    if METHODS[method].lr is not None:
        return METHODS[method].lr
    if profile.finetune_epochs == 0:  # post-training rows: no fine-tuning, no rate to choose
        return 0.0
    if profile.fixed_lr is not None:
        return profile.fixed_lr
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
    """The profile's pilot methods among ``methods``, at their chosen rates (first model, seed 0)."""
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
        pairs = profile.model_targets.get(model, tuple((t, None) for t in targets))
        for m in methods:
            lr = chosen_lr(profile, select_runs or runs, m)
            epochs = profile.finetune_epochs + (profile.sparse_epochs if profile.equal_epochs and
                                                not METHODS[m].sparse else 0)
            rows += [Row("table", model, m, macs, seed, lr, epochs, params)
                     for seed in profile.seeds.get(model, (0,)) for macs, params in pairs
                     if METHODS[m].peer is None or macs is None or params is None]  # peers: one limit
    return rows


def shard(rows: Sequence[Row], index: int, count: int) -> list[Row]:
    """The rows of one of ``count`` processes: whole (model, method, seed) units, so a shared sparse model
    is trained by one process only."""
    units = list(dict.fromkeys((r.model, r.method, r.seed) for r in rows))
    mine = {u for i, u in enumerate(units) if i % count == index}
    return [r for r in rows if (r.model, r.method, r.seed) in mine]


def finished(runs: Path, phase: str) -> Iterator[dict[str, Any]]:
    """Result records of every finished row of ``phase`` under ``runs``."""
    for state_file in sorted((runs / phase).glob("*/*/*/state.json")):
        state = json.loads(state_file.read_text())
        if "evaluate" in state["stages"] and "benchmark_row" in state["config"]:
            yield row_result(Row(**state["config"]["benchmark_row"]), state["stages"], state_file.parent)

