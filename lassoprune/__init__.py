"""lassoprune: structured pruning of convolutional networks led by class structure.

Public API (``import lassoprune as lp``):

- models: :func:`create_model`, :func:`list_models`
- counting: :func:`count` (MACs, parameters, per layer)
- data: :func:`load_dataset`, :func:`list_datasets`
- training: :class:`TrainConfig`, :func:`fit`, :func:`evaluate`
- pruning: :func:`prune`, :func:`channel_groups` (the engine lives in :mod:`lassoprune.pruning`)
- files: :func:`save`, :func:`load` (safetensors + architecture JSON + pruned widths)
"""

from lassoprune._version import __version__
from lassoprune.analysis import CountResult, LayerCount, count, count_params
from lassoprune.data import dataset_info, list_datasets, load_dataset
from lassoprune.errors import (
    CheckpointError,
    DataNotFoundError,
    IntegrityError,
    LassopruneError,
    ModelConfigError,
    UnknownNameError,
)
from lassoprune.deployment import DeployResult, deploy, fold_batchnorm
from lassoprune.io import load, save
from lassoprune import lasso, pruning
from lassoprune import regularizers
from lassoprune.models import create_model, list_models
from lassoprune.pruning import ChannelGroup, PruneResult, channel_groups, prune
from lassoprune.training import EvalResult, FitResult, TrainConfig, evaluate, fit
from lassoprune.utils import seed_everything

__all__ = [
    "ChannelGroup",
    "CheckpointError",
    "CountResult",
    "DeployResult",
    "DataNotFoundError",
    "EvalResult",
    "FitResult",
    "IntegrityError",
    "LassopruneError",
    "LayerCount",
    "PruneResult",
    "ModelConfigError",
    "TrainConfig",
    "UnknownNameError",
    "__version__",
    "channel_groups",
    "count",
    "count_params",
    "create_model",
    "dataset_info",
    "deploy",
    "evaluate",
    "fit",
    "fold_batchnorm",
    "list_datasets",
    "list_models",
    "load",
    "load_dataset",
    "prune",
    "lasso",
    "pruning",
    "regularizers",
    "save",
    "seed_everything",
]
