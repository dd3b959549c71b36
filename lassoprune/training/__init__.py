"""Training engine: configuration, optimiser and schedules, the loop, evaluation, fine-tuning, metric names.

The fine-tuning function is :func:`lassoprune.training.finetune.finetune` (not re-exported here, so that
``lassoprune.training.finetune`` stays the module).
"""

from lassoprune.training.config import SCHEDULES, TrainConfig
from lassoprune.training.engine import CHECKPOINT_NAME, MODEL_NAME, FitResult, RegularizerMode, SparseTerm, fit
from lassoprune.training.evaluate import EvalResult, evaluate
from lassoprune.training.finetune import (
    FINETUNE_LR,
    FINETUNE_LR_AFTER_RECONSTRUCTION,
    FinetuneResult,
    FinetuneSettings,
)
from lassoprune.training.metrics import headline, metrics_record, model_metrics, read_history, read_run_metrics
from lassoprune.training.optim import build_optimizer, build_scheduler, lr_factor

__all__ = [
    "CHECKPOINT_NAME",
    "FINETUNE_LR",
    "FINETUNE_LR_AFTER_RECONSTRUCTION",
    "MODEL_NAME",
    "SCHEDULES",
    "EvalResult",
    "FinetuneResult",
    "FinetuneSettings",
    "FitResult",
    "RegularizerMode",
    "SparseTerm",
    "TrainConfig",
    "build_optimizer",
    "build_scheduler",
    "evaluate",
    "fit",
    "headline",
    "lr_factor",
    "metrics_record",
    "model_metrics",
    "read_history",
    "read_run_metrics",
]
