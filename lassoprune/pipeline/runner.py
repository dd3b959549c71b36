"""Run the stages of :mod:`lassoprune.pipeline.stages` in order, resuming a killed run.

Example::

    from lassoprune.pipeline import load_config, run_pipeline
    outcome = run_pipeline(load_config("configs/demo.yaml"), "runs/demo")
    print(outcome.summary["metrics"]["final"]["top1"])
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lassoprune.errors import LassopruneError
from lassoprune.io import atomic_write_json
from lassoprune.pipeline.config import RunConfig
from lassoprune.pipeline.run_dir import RunDirectory
from lassoprune.pipeline.stages import STAGES, Stage, StageContext
from lassoprune.report import SCHEMA_VERSION
from lassoprune.utils import get_logger

SUMMARY_NAME = "summary.json"
SUMMARY_SCHEMA = SCHEMA_VERSION


@dataclass(frozen=True)
class RunOutcome:
    """What :func:`run_pipeline` returns.

    Attributes:
        root: the run directory.
        summary: the ``summary.json`` document (the report's input).
        ran: stages executed by this call (the others were already finished).
        report_files: files written by the report stage.
    """

    root: Path
    summary: dict[str, Any]
    ran: tuple[str, ...]
    report_files: tuple[Path, ...]


def run_pipeline(config: RunConfig, out: str | Path, progress: bool = True) -> RunOutcome:
    """Run (or resume) every stage of ``config`` in the directory ``out``, then write the report.

    Raises:
        CheckpointError: ``out`` holds a run of a different config.
    """
    run, ctx, ran = run_stages(config, out, progress)
    summary = build_summary(config, run, ctx.info)
    atomic_write_json(run.path(SUMMARY_NAME), summary)
    from lassoprune.report import render_report

    files = render_report([summary], run.root)
    return RunOutcome(run.root, summary, tuple(ran), tuple(files.paths()))


def run_stages(
    config: RunConfig,
    out: str | Path,
    progress: bool = True,
    replace: Mapping[str, Stage] | None = None,
    extra_state: Mapping[str, Any] | None = None,
    stop_after: str | None = None,
) -> tuple[RunDirectory, StageContext, list[str]]:
    """Run (or resume) the stages of ``config`` in ``out``, without the report.

    Args:
        replace: stage name -> a function used instead of the library's stage
            (same contract: takes the :class:`StageContext`, writes its
            artefacts under ``RUN/STAGE/``, returns a JSON-safe record). Lets
            a study run another tool's pruner or sparse training between the
            library's own stages; a replaced ``sparse`` stage runs even when
            ``config.sparse`` is None.
        extra_state: JSON-safe values stored with the config in ``state.json``;
            a run directory refuses to resume under different ones (e.g. the
            name of the replacing pruner).
        stop_after: the last stage to run (e.g. ``sparse``: a sparse-trained
            model shared by several pruning runs); None = all.

    Returns:
        ``(run directory, stage context, names of the stages run by this call)``.
    """
    replace = dict(replace or {})
    unknown = sorted((set(replace) | {stop_after} - {None}) - set(STAGES))
    if unknown:
        raise LassopruneError(f"unknown stage(s) {', '.join(unknown)}; the stages are {', '.join(STAGES)}")
    run = RunDirectory.open(out, {**config.to_dict(), **(extra_state or {})}, defaults=RunConfig().to_dict())
    ctx = StageContext(config, run, progress=progress)
    log = get_logger()
    ran = []
    for name, stage in STAGES.items():
        if name == "sparse" and config.sparse is None and name not in replace:
            continue
        if run.is_done(name):
            log.info("[%s] already finished, skipped", name)
        else:
            log.info("[%s] ...", name)
            started = time.perf_counter()
            record = replace.get(name, stage)(ctx)
            record["seconds"] = time.perf_counter() - started
            run.finish(name, record)
            ran.append(name)
            log.info("[%s] done in %.1f s", name, record["seconds"])
        if name == stop_after:
            break
    return run, ctx, ran


def build_summary(config: RunConfig, run: RunDirectory, info: Any) -> dict[str, Any]:
    """The ``summary.json`` of a finished run (schema of :mod:`lassoprune.report`)."""
    stages = run.stages
    prune_record = json.loads(run.path("prune", "prune.json").read_text())
    details = prune_record.get("diagnostics") or prune_record.get("details") or {}  # "details": older runs
    sparse = None
    if config.sparse is not None:
        sparse = {"regularizer": config.sparse.regularizer, "lam": config.sparse.lam,
                  "alpha": config.sparse.alpha, "epochs": config.sparse.epochs}
    target = prune_record.get("target") or {"kind": "threshold", "ratio": None}
    steps = {"prune_steps": prune_record["steps"]} if prune_record.get("steps") else {}  # prune.steps > 1
    return {
        "schema": SUMMARY_SCHEMA,
        "name": run.root.resolve().name,
        "model": _model_name(config, run),
        "dataset": config.data.name,
        "class_names": list(info.class_names),
        "method": config.prune.method,
        "sparse": sparse,
        "target": target,
        **{k: prune_record[k] for k in ("macs_before", "macs_after", "params_before", "params_after")},
        "groups": [{"id": gid, "kept": g["kept"], "total": g["total"], "eltwise": g["eltwise"]}
                   for gid, g in prune_record["groups"].items()],
        "metrics": {
            "baseline": _metrics(stages["pretrain"]),
            "unreconstructed": (_metrics({"metrics": stages["prune"]["unreconstructed"]})
                                if stages["prune"].get("unreconstructed") else None),
            "pruned": _metrics(stages["prune"]),
            "final": _metrics(stages["evaluate"]),
        },
        "class_structure": details.get("structure"),
        "latency": stages["evaluate"].get("latency"),
        "stages": {name: {"seconds": record["seconds"]} for name, record in stages.items()},
        "method_seconds": stages["prune"].get("method_seconds"),
        "reconstruction": prune_record.get("reconstruction") or None,
        **steps,
    }


def _metrics(record: dict[str, Any]) -> dict[str, Any]:
    m = record["metrics"]
    return {k: m[k] for k in ("top1", "top5", "worst_class", "per_class")}


def _model_name(config: RunConfig, run: RunDirectory) -> str:
    if config.model is not None:
        return config.model
    from lassoprune.io import read_model_file

    spec = read_model_file(run.path("pretrain", "model.pt")).spec
    return spec["name"] if spec else "custom"
