"""Training engine: configuration, optimiser and schedules, the loop, evaluation."""

from lassoprune.training.config import SCHEDULES, TrainConfig
from lassoprune.training.engine import CHECKPOINT_NAME, MODEL_NAME, FitResult, RegularizerMode, SparseTerm, fit
from lassoprune.training.evaluate import EvalResult, evaluate
from lassoprune.training.optim import build_optimizer, build_scheduler, lr_factor

__all__ = [
    "CHECKPOINT_NAME",
    "MODEL_NAME",
    "SCHEDULES",
    "EvalResult",
    "FitResult",
    "RegularizerMode",
    "SparseTerm",
    "TrainConfig",
    "build_optimizer",
    "build_scheduler",
    "evaluate",
    "fit",
    "lr_factor",
]
