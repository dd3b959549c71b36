"""The configuration of one pipeline run, from YAML or from a plain dict.

A run is described by sections, each with defaults; only ``model`` (or a
``pretrain.checkpoint``) and ``prune.target_macs`` / ``target_params`` are
needed. Everything is validated before any compute: an unknown key, model,
dataset, method or regulariser fails at once and lists the valid choices.

Example (``method: stlp-ib`` at 40% of the MACs)::

    model: resnet56
    data: {name: fashion-mnist}
    pretrain: {epochs: 3, lr: 0.1}          # or {checkpoint: pretrained:resnet56-fashion-mnist}
    sparse: null                             # or {regularizer: dwgl, lam: 0.5, epochs: 2}
    prune: {method: stlp-ib, target_macs: 0.4, calib_size: 500}
    finetune: {epochs: 1, lr: 0.01}
    evaluate: {latency: true}
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lassoprune.errors import LassopruneError, UnknownNameError
from lassoprune.pruning.settings import AUTO_ROUND_TO, PruneSettings
from lassoprune.training.finetune import FINETUNE_LR, FINETUNE_LR_AFTER_RECONSTRUCTION, FinetuneSettings

__all__ = [
    "AUTO_ROUND_TO", "FINETUNE_LR", "FINETUNE_LR_AFTER_RECONSTRUCTION", "DataSection", "EvaluateSection", "FinetuneSection", "PretrainSection", "PruneSection", "RunConfig",
    "SparseSection", "load_config", "parse_config", "apply_overrides", "read_config_document",
]  # fmt: skip


EVAL_SPLITS = ("test", "validation")


@dataclass(frozen=True)
class DataSection:
    """The dataset (a registered name; ``lassoprune info --datasets``) and how batches are made.

    ``validation_size`` images (class-stratified, the same for every seed) are
    held out of the training split: no stage trains or calibrates on them, and
    ``evaluate.split: validation`` judges the run on them instead of the test
    split (for choosing hyperparameters).
    """

    name: str = "fashion-mnist"
    root: str | None = None
    batch_size: int = 64
    image_size: int | None = None
    download: bool = True
    validation_size: int = 0


@dataclass(frozen=True)
class PretrainSection:
    """Start from a model file (``checkpoint``; ``pretrained:NAME`` for a shipped one) or train ``model``."""

    checkpoint: str | None = None
    epochs: int = 3
    lr: float = 0.1
    train_subset: int | None = None


@dataclass(frozen=True)
class SparseSection:
    """Optional sparse training before pruning (``lassoprune sparse-train``'s options).

    ``steer`` (default true): when the ``prune:`` section has a target, the regulariser acts only on the
    channels that a ``dwgl-vote`` cut at that target removes, and ``lam`` (the starting strength) grows until
    they are zero (:class:`~lassoprune.pruning.steering.TargetSteering`); false: a fixed ``lam``.
    """

    regularizer: str = "dwgl"
    lam: float = 0.5
    steer: bool = True
    alpha: float = 1.0
    schedule: str = "linear"
    mode: str = "prox"
    epochs: int = 2
    lr: float = 0.02
    train_subset: int | None = None


PruneSection = PruneSettings
"""The ``prune:`` section is :class:`~lassoprune.pruning.settings.PruneSettings` itself: the same fields and
defaults as ``lp.prune`` and ``lassoprune prune`` (``reconstruct`` null: on, since a run has calibration images).

``steps: k`` (> 1) prunes in k cuts on a geometric schedule with ``step_epochs`` whole epochs of fine-tuning
(the ``finetune:`` section's ``lr`` and ``train_subset``) after every cut but the last
(:mod:`lassoprune.pruning.iterative`); the ``finetune`` stage then fine-tunes the last cut as usual."""


FinetuneSection = FinetuneSettings
"""The ``finetune:`` section is :class:`~lassoprune.training.finetune.FinetuneSettings` itself (``epochs: 0``
skips the stage; ``lr`` null: :data:`FINETUNE_LR_AFTER_RECONSTRUCTION` when the prune stage reconstructed, else
:data:`FINETUNE_LR`), the settings of ``lassoprune prune --finetune-epochs`` and ``lassoprune finetune`` too."""


@dataclass(frozen=True)
class EvaluateSection:
    """Evaluation (every stage's metrics); ``latency`` times the pruned against the unpruned model (torch, CPU).

    ``split``: ``test``, or ``validation`` (the ``data.validation_size`` held-out training images).
    """

    split: str = "test"
    latency: bool = True
    latency_batch: int = 64
    latency_threads: int | None = None


@dataclass(frozen=True)
class RunConfig:
    """One run: pretrain -> [sparse] -> prune -> fine-tune -> evaluate -> report."""

    model: str | None = None
    num_classes: int | None = None
    in_channels: int | None = None
    seed: int = 0
    device: str | None = None
    data: DataSection = field(default_factory=DataSection)
    pretrain: PretrainSection = field(default_factory=PretrainSection)
    sparse: SparseSection | None = None
    prune: PruneSection = field(default_factory=PruneSection)
    finetune: FinetuneSection = field(default_factory=FinetuneSection)
    evaluate: EvaluateSection = field(default_factory=EvaluateSection)

    def to_dict(self) -> dict[str, Any]:
        """Plain, YAML/JSON-safe dict (tuples as lists); ``parse_config(c.to_dict()) == c``."""
        return _plain(dataclasses.asdict(self))


def load_config(path: str | Path) -> RunConfig:
    """Read and validate a YAML run configuration."""
    return parse_config(read_config_document(path), source=str(path))


def read_config_document(path: str | Path) -> dict[str, Any]:
    """The mapping a YAML config file holds (not validated yet; see :func:`parse_config`)."""
    file = Path(path)
    if not file.is_file():
        raise LassopruneError(f"config file {file} not found")
    try:
        document = yaml.safe_load(file.read_text())
    except yaml.YAMLError as exc:
        raise LassopruneError(f"{file} is not valid YAML: {exc}") from exc
    if document is None:
        return {}
    if not isinstance(document, Mapping):
        raise LassopruneError(f"{file} must hold a mapping of sections (model:, data:, prune:, ...)")
    return dict(document)


def parse_config(document: Mapping[str, Any], source: str = "the config") -> RunConfig:
    """Build a :class:`RunConfig` from a mapping and check every name in it.

    Raises:
        UnknownNameError: an unknown key, model, dataset, method or regulariser.
        LassopruneError: a value of the wrong type or out of range.
    """
    config = _build(RunConfig, document, source, "")
    _check_names(config)
    _check_values(config)
    _check_calibration(config)
    return config


def apply_overrides(document: dict[str, Any], assignments: list[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` assignments (values parsed as YAML scalars) to a config mapping."""
    result = {k: dict(v) if isinstance(v, Mapping) else v for k, v in document.items()}
    for assignment in assignments:
        key, sep, raw = assignment.partition("=")
        if not sep or not key:
            raise LassopruneError(f"--set expects KEY=VALUE (e.g. prune.target_macs=0.4), got {assignment!r}")
        value = yaml.safe_load(raw) if raw else None
        parts = key.split(".")
        node = result
        for part in parts[:-1]:
            child = node.get(part)
            node[part] = dict(child) if isinstance(child, Mapping) else {}
            node = node[part]
        node[parts[-1]] = value
    return result


def _build(cls: type, document: Any, source: str, where: str) -> Any:
    if not isinstance(document, Mapping):
        raise LassopruneError(f"{source}: {where or 'the top level'} must be a mapping, got {document!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(document) - set(fields))
    if unknown:
        raise UnknownNameError(f"key in {source}{' section ' + where if where else ''}", str(unknown[0]), fields)
    hints = typing.get_type_hints(cls)
    values = {name: _convert(hints[name], document[name], source, f"{where}.{name}".lstrip("."))
              for name in document}
    return cls(**values)


def _convert(hint: Any, value: Any, source: str, where: str) -> Any:
    """Check ``value`` against the annotation ``hint`` (nested sections are built recursively)."""
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if value is None:
        if type(None) in options:
            return None
        raise LassopruneError(f"{source}: {where} must not be empty")
    for option in options:
        if dataclasses.is_dataclass(option):
            return _build(option, {} if value is True else value, source, where)
    for option in options:
        converted = _scalar(option, value)
        if converted is not _NO:
            return converted
    expected = " or ".join(getattr(o, "__name__", str(o)) for o in options if o is not type(None))
    raise LassopruneError(f"{source}: {where} must be {expected}, got {value!r}")


_NO = object()


def _scalar(option: Any, value: Any) -> Any:
    origin = typing.get_origin(option)
    if option is bool:
        return value if isinstance(value, bool) else _NO
    if option is int:
        return value if isinstance(value, int) and not isinstance(value, bool) else _NO
    if option is float:
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else _NO
    if option is str:
        return value if isinstance(value, str) else _NO
    if origin is tuple:
        items = [value] if isinstance(value, str) else value
        return tuple(str(v) for v in items) if isinstance(items, (list, tuple)) else _NO
    if origin is dict:
        return dict(value) if isinstance(value, Mapping) else _NO
    return _NO


def _check_names(config: RunConfig) -> None:
    from lassoprune.data import list_datasets
    from lassoprune.models import model_entry
    from lassoprune.pruning import ALLOCATIONS, get_method
    from lassoprune.regularizers import REGULARIZERS, SCHEDULES
    from lassoprune.training import RegularizerMode

    if config.model is None and config.pretrain.checkpoint is None:
        raise LassopruneError("the config names no model: set `model:` (a zoo name) or `pretrain.checkpoint:`")
    if config.pretrain.checkpoint is not None:
        _check_checkpoint(config.pretrain.checkpoint)
    if config.model is not None:
        model_entry(config.model)  # an unknown name, or torchvision:/timm: without the vision extra
    if config.data.name not in list_datasets():
        raise UnknownNameError("dataset", config.data.name, list_datasets())
    spec = get_method(config.prune.method)
    ALLOCATIONS.get(config.prune.allocation)
    if config.sparse is not None:
        REGULARIZERS.get(config.sparse.regularizer)
        if config.sparse.schedule not in SCHEDULES:
            raise UnknownNameError("dwgl schedule", config.sparse.schedule, SCHEDULES)
        RegularizerMode.parse(config.sparse.mode, "regulariser mode")
    options = spec.parse_options(config.prune.options)
    try:
        spec.check_target(options, config.prune.target_macs is not None or config.prune.target_params is not None)
    except LassopruneError as exc:
        raise LassopruneError(f"prune: {exc} (in the config: prune.target_macs / prune.target_params"
                              " / prune.options.threshold)") from None


def _check_calibration(config: RunConfig) -> None:
    """The calibration set must hold every class at least once (class-balanced draw)."""
    from lassoprune.training.data_setup import check_calibration_size

    check_calibration_size(config.data.name, config.prune.calib_size, config.data.root, option="prune.calib_size")


def _check_checkpoint(checkpoint: str) -> None:
    from lassoprune.pretrained import PREFIX, resolve_model_path

    path = resolve_model_path(checkpoint)  # an unknown pretrained:NAME raises with the choices
    if not checkpoint.startswith(PREFIX) and not path.is_file():
        raise LassopruneError(
            f"pretrain.checkpoint {checkpoint} not found; give a lassoprune model file "
            "(`lassoprune train` writes RUN/model.pt) or a shipped one, e.g. pretrained:resnet56-fashion-mnist"
        )


def _check_values(config: RunConfig) -> None:
    prune = config.prune
    targets = [t for t in (prune.target_macs, prune.target_params) if t is not None]  # both: two limits
    for target in targets:
        if not 0 < target < 1:
            raise LassopruneError(f"prune targets are fractions of the original to keep, in (0, 1); got {target}")
    positives = {
        "data.batch_size": config.data.batch_size, "pretrain.epochs": config.pretrain.epochs,
        "prune.calib_size": prune.calib_size, "prune.min_channels": prune.min_channels,
        "evaluate.latency_batch": config.evaluate.latency_batch,
    }
    if config.sparse is not None:
        positives["sparse.epochs"] = config.sparse.epochs
    for name, value in positives.items():
        if value < 1:
            raise LassopruneError(f"{name} must be >= 1, got {value}")
    if isinstance(prune.round_to, str) and prune.round_to != "auto":
        raise LassopruneError(f"prune.round_to must be a width step (e.g. 8), null (free widths) or auto, "
                              f"got {prune.round_to!r}")
    if isinstance(prune.round_to, int) and prune.round_to < 1:
        raise LassopruneError(f"prune.round_to must be >= 1 (1 or null: free widths), got {prune.round_to}")
    if config.evaluate.split not in EVAL_SPLITS:
        raise UnknownNameError("evaluate.split", config.evaluate.split, EVAL_SPLITS)
    if config.data.validation_size < 0:
        raise LassopruneError(f"data.validation_size must be >= 0, got {config.data.validation_size}")
    if config.evaluate.split == "validation" and config.data.validation_size == 0:
        raise LassopruneError("evaluate.split: validation needs held-out images: set data.validation_size "
                              "(e.g. 5000)")
    if config.finetune.epochs < 0:
        raise LassopruneError(f"finetune.epochs must be >= 0, got {config.finetune.epochs}")
    _check_steps(prune)
    for name, lr in (("pretrain.lr", config.pretrain.lr), ("finetune.lr", config.finetune.lr)):
        if lr is not None and not lr > 0:
            raise LassopruneError(f"{name} must be > 0, got {lr}")


def _check_steps(prune: PruneSection) -> None:
    """``prune.steps`` / ``prune.step_epochs`` (the error names the config keys)."""
    from lassoprune.pruning.iterative import check_steps

    check_steps(prune, prefix="prune.")


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
