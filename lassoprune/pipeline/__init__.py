"""The staged, resumable pipeline behind ``lassoprune run``.

pretrain -> [sparse training] -> prune -> fine-tune -> evaluate -> report,
each stage writing its artefacts into the run directory; rerunning the same
config resumes at the first unfinished stage (:mod:`lassoprune.pipeline.stages`).
"""

from lassoprune.pipeline.config import (
    DataSection,
    EvaluateSection,
    FinetuneSection,
    PretrainSection,
    PruneSection,
    RunConfig,
    SparseSection,
    apply_overrides,
    load_config,
    parse_config,
    read_config_document,
)
from lassoprune.pipeline.runner import RunOutcome, build_summary, run_pipeline, run_stages
from lassoprune.pipeline.stages import STAGES, Stage, StageContext

__all__ = [
    "DataSection",
    "EvaluateSection",
    "FinetuneSection",
    "PretrainSection",
    "PruneSection",
    "RunConfig",
    "RunOutcome",
    "STAGES",
    "Stage",
    "StageContext",
    "SparseSection",
    "apply_overrides",
    "build_summary",
    "load_config",
    "parse_config",
    "read_config_document",
    "run_pipeline",
    "run_stages",
]
