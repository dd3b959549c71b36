"""The names of the metrics in every record the library writes, and the reading of older records.

One vocabulary everywhere (training runs, model files, the command line's JSON, the pipeline, reports):

===============  ==============================================================
``top1``         top-1 accuracy, a fraction in [0, 1]
``top5``         top-5 accuracy (top-1 when there are fewer than 5 classes)
``worst_class``  the lowest per-class accuracy
``loss``         mean cross-entropy
``per_class``    the accuracy of each class (a list, or a dict keyed by class name)
``confusion``    (K, K) counts, rows = true class, columns = predicted class
``num_samples``  images evaluated
===============  ==============================================================

The split is said by where a dict sits, never by a prefix: an epoch record of
``metrics.jsonl`` holds ``{"train": {"loss", "top1"}, "test": {"top1", ...}}``;
every other record holds the metrics of one split, named by its documentation
(a training run's ``metrics.json`` and a model file's ``metrics``: the batches
the run was evaluated on).

Files written before this vocabulary (the shipped models in
:mod:`lassoprune.pretrained`, older run directories) carry ``test_top1``,
``test_top5``, ``test_worst_class``, ``test_loss``, ``per_class_accuracy``,
``confusion_matrix``, ``test_samples`` and, per epoch, ``train_loss`` and
``train_top1``. The readers here accept both and return today's names only.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lassoprune.errors import LassopruneError
from lassoprune.training.evaluate import EvalResult

#: The keys of older records -> today's.
LEGACY_KEYS: dict[str, str] = {
    "test_top1": "top1",
    "test_top5": "top5",
    "test_worst_class": "worst_class",
    "test_loss": "loss",
    "per_class_accuracy": "per_class",
    "confusion_matrix": "confusion",
    "test_samples": "num_samples",
}

#: The keys of older epoch records -> (split, today's name).
LEGACY_EPOCH_KEYS: dict[str, tuple[str, str]] = {
    "train_loss": ("train", "loss"),
    "train_top1": ("train", "top1"),
    **{old: ("test", new) for old, new in LEGACY_KEYS.items() if old.startswith("test_")},
}


def headline(result: EvalResult) -> dict[str, float]:
    """The metrics a model file and a command's summary carry: ``top1``, ``top5``, ``worst_class``."""
    return {"top1": result.top1, "top5": result.top5, "worst_class": result.worst_class}


def metrics_record(result: EvalResult) -> dict[str, Any]:
    """The metrics a pipeline stage records: the headline, ``per_class`` (a list of K) and ``loss``."""
    return {**headline(result), "per_class": list(result.per_class), "loss": result.loss}


def epoch_metrics(result: EvalResult) -> dict[str, float]:
    """The evaluation part of an epoch record: the headline and ``loss``."""
    return {**headline(result), "loss": result.loss}


def current_keys(record: Mapping[str, Any]) -> dict[str, Any]:
    """``record`` with older metric keys renamed to today's (a key present under both names keeps today's)."""
    out = {key: value for key, value in record.items() if key not in LEGACY_KEYS}
    for old, new in LEGACY_KEYS.items():
        if old in record:
            out.setdefault(new, record[old])
    return out


def current_epoch_record(record: Mapping[str, Any]) -> dict[str, Any]:
    """One epoch record (a line of ``metrics.jsonl``) with older keys moved under ``train`` / ``test``."""
    out = {key: dict(value) if isinstance(value, Mapping) else value
           for key, value in record.items() if key not in LEGACY_EPOCH_KEYS}
    for old, (split, name) in LEGACY_EPOCH_KEYS.items():
        if old in record:
            out.setdefault(split, {}).setdefault(name, record[old])
    return out


def model_metrics(extra: Mapping[str, Any]) -> dict[str, Any] | None:
    """The ``metrics`` of a model file's extra (``read_model_file(p).extra``, ``model.lp_extra``), or None.

    Older files (the shipped ones among them) are read too; the keys returned are today's.
    """
    metrics = extra.get("metrics")
    return current_keys(metrics) if isinstance(metrics, Mapping) else None


def current_extra(extra: Mapping[str, Any]) -> dict[str, Any]:
    """A model file's extra with its ``metrics`` (when any) in today's names, e.g. to save it again."""
    out = dict(extra)
    metrics = model_metrics(extra)
    if metrics is not None:
        out["metrics"] = metrics
    return out


def read_history(path: str | Path) -> list[dict[str, Any]]:
    """The epoch records of a training run's ``metrics.jsonl`` (older runs too), in today's names."""
    lines = _read_text(path).splitlines()
    return [current_epoch_record(_parse(line, path)) for line in lines if line.strip()]


def read_run_metrics(path: str | Path) -> dict[str, Any]:
    """A training run's ``metrics.json`` (older runs too), in today's names, its history included."""
    document = _parse(_read_text(path), path)
    if not isinstance(document, Mapping):
        raise LassopruneError(f"{path} is not a training run's metrics.json (a JSON object)")
    out = current_keys(document)
    out["history"] = [current_epoch_record(record) for record in document.get("history", [])]
    return out


def _read_text(path: str | Path) -> str:
    try:
        return Path(path).read_text()
    except OSError as exc:
        raise LassopruneError(f"cannot read {path}: {exc}") from exc


def _parse(text: str, path: str | Path) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise LassopruneError(f"{path} is damaged ({exc})") from exc
